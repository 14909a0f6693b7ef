-- include_cost (issue 13): kling.new{ include_cost = true }, or per call (client:submit's
-- opts, job:wait's, job:result's), asks the result route with ?include_cost=true; the
-- service's `cost` goes to job.cost and the journal's ended line, `kling jobs` shows it, and
-- the CLI's --cost asks for it (generate, wait, result; --json shows it). The emulator
-- answers cost = the model's price per second times the duration (0.56 for a 5 s Pro clip).
local helpers = require "helpers"
local kling = require "kling"
local cjson = require "cjson"
local cli_run = require "cli_run"

local TOKEN = "cost-token-13"
local MODEL = "kling/kling-3.0/pro/text-to-video"

describe("include_cost", function()
  local emu, dir

  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0", "--run", "0.2" }
    dir = helpers.tmpdir()
  end)
  teardown(function()
    if emu then emu:stop() end
    if dir then os.execute("rm -rf " .. helpers.quote(dir)) end
  end)

  local function client(opts)
    opts = opts or {}
    opts.base_url, opts.token, opts.on_warning = emu.api, TOKEN, false
    opts.poll = { initial = 0.05, near = 0.1 }
    return kling.new(opts)
  end

  local function ended_line(path, id)
    for line in (helpers.read_file(path) or ""):gmatch("[^\n]+") do
      local ev = cjson.decode(line)
      if ev.e == "ended" and ev.id == id then return ev end
    end
  end

  it("kling.new{ include_cost = true }: job:wait keeps the cost in job.cost and the journal", function()
    local path = dir .. "/cost.jsonl"
    local c = client { include_cost = true, journal = path }
    local job = assert(c:generate { prompt = "a priced cat", duration = 5 })
    assert(job:wait())
    assert.equal(0.56, job.cost)
    assert.equal(0.56, ended_line(path, job.id).cost)
    local jobs = require("kling.journal").open(path):state()
    assert.equal(0.56, jobs[job.id].cost)
    c:close()
  end)

  it("without include_cost asks no cost, and job.cost stays nil", function()
    local path = dir .. "/nocost.jsonl"
    local c = client { journal = path }
    local job = assert(c:generate { prompt = "an unpriced cat", duration = 5 })
    assert(job:wait())
    assert.is_nil(job.cost)
    assert.is_nil(ended_line(path, job.id).cost)
    c:close()
  end)

  it("asks for the cost per call: client:submit, job:wait and job:result", function()
    local c = client()
    local a = assert(c:submit(MODEL, { prompt = "priced at submit", duration = 10 }, { include_cost = true }))
    assert(a:wait())
    assert.equal(1.12, a.cost)
    local b = assert(c:generate { prompt = "priced at wait", duration = 5 })
    assert(b:wait { include_cost = true })
    assert.equal(0.56, b.cost)
    local r = assert(c:job(b.id, MODEL))
    assert(r:result())
    assert.is_nil(r.cost)
    assert(r:result { include_cost = true })
    assert.equal(0.56, r.cost)
    -- and a client that asks by default can be told not to
    local c2 = client { include_cost = true }
    local r2 = assert(c2:job(b.id, MODEL))
    assert(r2:result { include_cost = false })
    assert.is_nil(r2.cost)
    c:close()
    c2:close()
  end)

  it("kling generate/wait/result --cost --json show the cost, and kling jobs shows what the journal kept", function()
    local cdir = dir .. "/cli"
    os.execute("mkdir -p " .. helpers.quote(cdir))
    local cli = cli_run.new { api = emu.api, token = TOKEN, dir = cdir }
    local function one(res)
      assert.equal(0, res.code, res.err)
      return cjson.decode((res.out:match("[^\n]+")))
    end
    local gen = one(cli.run { "generate", "a priced cli cat", "--duration", "5", "--no-download", "--cost", "--json" })
    assert.equal(0.56, gen.cost)
    local sub = one(cli.run { "submit", "a cat priced later", "--duration", "10", "--json" })
    local waited = one(cli.run { "wait", sub.id, "--cost", "--json" })
    assert.equal(1.12, waited.cost)
    assert.equal(1.12, one(cli.run { "result", sub.id, "--cost", "--json" }).cost)
    assert.is_nil(one(cli.run { "result", sub.id, "--json" }).cost) -- not asked: not shown
    -- kling jobs: the cost the journal kept, in --json and in the table
    local res = cli.run { "jobs", "--all", "--json" }
    assert.equal(0, res.code, res.err)
    local costs = {}
    for line in res.out:gmatch("[^\n]+") do
      local j = cjson.decode(line)
      costs[j.id] = j.cost
    end
    assert.equal(0.56, costs[gen.id])
    assert.equal(1.12, costs[sub.id])
    res = cli.run { "jobs", "--all" }
    assert.equal(0, res.code, res.err)
    assert.matches("(cost 0.56)", res.out, 1, true)
    cli.cleanup()
  end)

  it("refuses an include_cost that is not a boolean", function()
    local c = client()
    assert.has_error(function() client { include_cost = 1 } end,
      "kling.new: option 'include_cost' must be a boolean, got number")
    assert.has_error(function() c:submit(MODEL, { prompt = "x" }, { include_cost = "yes" }) end,
      "client:submit: opts.include_cost must be a boolean")
    local job = assert(c:job("00000000-0000-4000-8000-000000000000", MODEL))
    assert.has_error(function() job:result { include_cost = 1 } end, "job:result: opts.include_cost must be a boolean")
    assert.has_error(function() job:wait { include_cost = "no" } end, "job:wait: opts.include_cost must be a boolean")
    c:close()
  end)

  it("keeps no cost that is not a finite number, warns, and journals the output whole", function()
    local scripted = require "scripted_api"
    local sdir = helpers.scratch(dir)
    local api = scripted.start(sdir)
    local ok, e = pcall(function()
      for i, cost in ipairs { "1e999", "-1e999", "NaN", '"0.5"', "{}" } do
        local id = "cost" .. i
        api.serve {
          { "GET", "^/v1/requests/" .. id .. "/status", { { 200, '{"status":"completed"}' } } },
          { "GET", "^/v1/requests/" .. id .. "/result", { { 200, '{"request_id":"' .. id
            .. '","status":"completed","output":{"video":"https://f.invalid/v.mp4"},"cost":' .. cost .. '}' } } },
          { "POST", "^/v1/models/", { { 200, '{"request_id":"' .. id .. '","status_url":"{BASE}/v1/requests/'
            .. id .. '/status","result_url":"{BASE}/v1/requests/' .. id .. '/result"}' } } },
        }
        local path = sdir .. "/" .. id .. ".jsonl"
        local warnings = {}
        local c = kling.new { base_url = api.api, token = TOKEN, include_cost = true, journal = path,
          on_warning = function(w) warnings[#warnings + 1] = w end, poll = { initial = 0.05 } }
        local job = assert(c:generate { prompt = "a hostile price" })
        local out = assert(job:wait { timeout = 20 })
        assert.equals("https://f.invalid/v.mp4", out.video, cost)
        assert.is_nil(job.cost, cost) -- no inf, nan or string passed on as a price
        local line = assert(ended_line(path, id), cost)
        assert.is_nil(line.cost, cost)
        assert.is_nil(line.output_note, cost) -- the output is journaled as it is, not as text
        assert.equals("https://f.invalid/v.mp4", line.output.video, cost)
        assert.matches("cost", table.concat(warnings, "\n"), 1, true)
        c:close()
      end
    end)
    api.stop()
    assert(ok, e)
    -- a journal whose ended lines hold hostile costs: none is read as a price
    local path = sdir .. "/hostile.jsonl"
    local f = assert(io.open(path, "w"))
    for i, cost in ipairs { "1e999", "-1e999", '"0.5"', "{}", "0.25" } do
      f:write('{"e":"submitted","id":"h', i, '","model":"', MODEL, '","t":1000}\n')
      f:write('{"e":"ended","id":"h', i, '","model":"', MODEL, '","status":"completed","t":1001,"cost":', cost, '}\n')
    end
    f:close()
    local c = client { journal = path }
    local state = c._journal:state()
    for i = 1, 4 do assert.is_nil(state["h" .. i].cost, "h" .. i) end
    assert.equals(0.25, state.h5.cost)
    c:close()
  end)
end)
