-- Answers are decoded as deep as kling's JSON writer writes (kling.core.json_max_depth,
-- 4096 levels; lua-cjson stops at 1000 by default), everywhere answers are decoded: the C
-- poller (job:wait), the engine's reading of error codes, the Lua layer (job:result,
-- job:refresh) and the journal. A result that still cannot be decoded ends with its job's
-- end recorded in the journal (the answer's own text kept, with a note), so `kling resume`
-- does not repeat the failure on every run. A scripted loopback API answers.
local helpers = require "helpers"
local kling = require "kling"
local core = require "kling.core"
local journal = require "kling.journal"
local scripted = require "scripted_api"
local cli_run = require "cli_run"
local cjson = require "cjson"

local q = helpers.quote
local TOKEN = "deep-answers-token-7e2"

local function nested(levels)
  return string.rep("[", levels) .. "1" .. string.rep("]", levels)
end

local function depth_of(v)
  local d = 0
  while type(v) == "table" do
    d = d + 1
    v = v[1]
  end
  return d
end

-- job "d-1": completed, its result's output.extra nested `levels` deep
local function serve(api, levels, status_body)
  local result = '{"request_id":"d-1","status":"completed","output":{"video":"https://f.invalid/d.mp4","extra":'
    .. nested(levels) .. '}}'
  api.serve {
    { "POST", "^/v1/models/", { { 200, '{"request_id":"d-1","status":"in_queue"}' } } },
    { "GET", "^/v1/requests/d%-1/status$", { { 200, status_body or '{"request_id":"d-1","status":"completed"}' } } },
    { "GET", "^/v1/requests/d%-1/result$", { { 200, result } } },
  }
  return result
end

describe("deep answers", function()
  local dir, api

  setup(function()
    dir = helpers.tmpdir()
    api = scripted.start(dir)
  end)
  teardown(function()
    if api then api.stop() end
    helpers.rm_rf(dir)
  end)

  local function scratch() return helpers.scratch(dir) end

  local function client(jpath)
    return kling.new { base_url = api.api, token = TOKEN, timeout = 5, journal = jpath,
      retries = { max = 2, base = 0.01, cap = 0.02 }, poll = { initial = 0.02, min = 0.02, near = 0.05, max = 0.1 } }
  end

  it("decodes as deep as the writer writes: 4096 levels", function()
    assert.equals(4096, core.json_max_depth)
    assert.equals(4096, require("kling.json").MAX_DEPTH)
  end)

  for _, levels in ipairs { 1100, 4094 } do
    it("completes a wait on a result nested " .. levels .. " levels, and journals its end with the output", function()
      serve(api, levels)
      local d = scratch()
      local c = client(d .. "/j.jsonl")
      local job = assert(c:submit("acme/any-model", { prompt = "deep" }))
      local out, err = job:wait { timeout = 20 }
      assert.is_nil(err)
      assert.equals(levels, depth_of(out.extra))
      local jobs = assert(journal.open(d .. "/j.jsonl"):state())
      assert.equals("completed", jobs["d-1"].status)
      assert.equals(levels, depth_of(jobs["d-1"].output.extra))
      -- the direct route reads it too
      local again = assert(c:job("d-1"))
      assert.equals(levels, depth_of(assert(again:result()).extra))
      c:close()
    end)
  end

  it("records the end of a job whose result is nested past the limit, with the answer's text and a note", function()
    local text = serve(api, 5000)
    local d = scratch()
    local c = client(d .. "/j.jsonl")
    local job = assert(c:submit("acme/any-model", { prompt = "too deep" }))
    local out, err = job:wait { timeout = 20 }
    assert.is_nil(out)
    assert.equals("protocol", err.kind)
    assert.matches("cannot be read as JSON", err.message, 1, true)
    assert.equals(core.unusable_tries, api.count("GET", "/v1/requests/d-1/result"))
    local jobs, unknown = assert(journal.open(d .. "/j.jsonl"):state())
    assert.equals(0, #unknown)
    local j = jobs["d-1"]
    assert.equals("completed", j.status)
    assert.equals(text, j.output_text)
    local list = assert(c:resume())
    assert.equals(0, #list) -- its end is recorded: nothing to pick up again
    c:close()
  end)

  it("records it on the direct route too, once the job is known to have ended", function()
    local text = serve(api, 5000)
    local d = scratch()
    local c = client(d .. "/j.jsonl")
    local job = assert(c:job("d-1"))
    assert.equals("completed", assert(job:refresh()))
    local out, err = job:result()
    assert.is_nil(out)
    assert.equals("protocol", err.kind)
    local jobs = assert(journal.open(d .. "/j.jsonl"):state())
    assert.equals(text, jobs["d-1"].output_text)
    assert.matches("could not be taken in", jobs["d-1"].output_note or "", 1, true)
    c:close()
  end)

  it("does not mark a job ended when its status answer is the one that cannot be read", function()
    serve(api, 1, '{"status":' .. nested(5000) .. '}')
    local d = scratch()
    local c = client(d .. "/j.jsonl")
    local job = assert(c:submit("acme/any-model", { prompt = "deep status" }))
    local _, err = job:wait { timeout = 20 }
    assert.equals("protocol", err.kind)
    local list = assert(c:resume())
    assert.equals(1, #list)
    c:close()
  end)

  describe("the command line", function()
    it("kling wait reads a result 1100 levels deep; kling resume then finds nothing to do", function()
      serve(api, 1100)
      local cli = cli_run.new { api = api.api, token = TOKEN, dir = scratch() }
      local res = cli.run { "submit", "deep", "--model", "acme/any-model" }
      assert.equals(0, res.code, res.err)
      res = cli.run { "wait", "d-1", "--json" }
      assert.equals(0, res.code, res.err)
      local deep = cjson.new()
      deep.decode_max_depth(4096)
      assert.equals(1100, depth_of(deep.decode(res.out).output.extra))
      res = cli.run { "resume", "--no-download" }
      assert.equals(0, res.code, res.err)
      assert.matches("nothing to resume", res.err, 1, true)
    end)

    it("kling resume does not repeat a result it cannot read: the end is in the journal", function()
      serve(api, 5000)
      local cli = cli_run.new { api = api.api, token = TOKEN, dir = scratch() }
      local res = cli.run { "submit", "too deep", "--model", "acme/any-model" }
      assert.equals(0, res.code, res.err)
      res = cli.run { "resume", "--no-download" }
      assert.equals(7, res.code, res.err)
      assert.matches("protocol", res.err, 1, true)
      local before = api.count("GET", "/v1/requests/d-1/result")
      res = cli.run { "resume", "--no-download" }
      assert.equals(0, res.code, res.err)
      assert.matches("nothing to resume", res.err, 1, true)
      assert.equals(before, api.count("GET", "/v1/requests/d-1/result"))
      res = cli.run { "jobs", "--all", "--json" }
      local o = cjson.decode(res.out)
      assert.equals("completed", o.status)
      assert.is_string(o.output_text)
    end)
  end)
end)
