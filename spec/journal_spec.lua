-- The durable journal: every accepted request id on disk before submit
-- returns, resume after SIGKILL, torn lines, several writers, compaction,
-- and no token in it.
local helpers = require "helpers"
local kling = require "kling"
local json = require "kling.json"

local TOKEN = "journal-token-5b1e"
local q = helpers.quote

local function lines(path)
  local t = {}
  for l in (helpers.read_file(path) or ""):gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

describe("the journal", function()
  local emu, dir

  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0.2", "--run", "0.5" }
    dir = helpers.tmpdir()
  end)
  teardown(function()
    if emu then emu:stop() end
    os.execute("rm -rf " .. q(dir))
  end)

  local function client(path)
    return kling.new { base_url = emu.api, token = TOKEN, journal = path, poll = { initial = 0.05, near = 0.1 } }
  end

  it("has each request id on disk when submit returns, and the end once the job ends", function()
    local path = dir .. "/a.jsonl"
    local c = client(path)
    local job = assert(c:generate { prompt = "journaled" })
    local l = lines(path)
    assert.equals(1, #l)
    local ev = json.decode(l[1])
    assert.equals("submitted", ev.e)
    assert.equals(job.id, ev.id)
    assert.equals(kling.DEFAULT_MODEL, ev.model)
    assert(job:wait())
    l = lines(path)
    assert.equals(2, #l)
    local ended = json.decode(l[2])
    assert.equals("ended", ended.e)
    assert.equals("completed", ended.status)
    assert.equals(job.output.video, ended.output.video)
    assert.is_nil(helpers.read_file(path):find(TOKEN, 1, true))
    c:close()
  end)

  it("records failed and cancelled ends too", function()
    local path = dir .. "/b.jsonl"
    local c = client(path)
    local f = assert(c:generate { prompt = "bad @emu:fail=Nope" })
    local k = assert(c:generate { prompt = "cancel @emu:queue=5" })
    f:wait()
    assert(k:cancel())
    local jobs = select(1, require("kling.journal").open(path):state())
    assert.equals("failed", jobs[f.id].status)
    assert.equals("Nope", jobs[f.id].error)
    assert.equals("cancelled", jobs[k.id].status)
    c:close()
  end)

  it("lets a new process resume every unfinished job after the first was killed with SIGKILL", function()
    local path = dir .. "/killed.jsonl"
    local script = dir .. "/victim.lua"
    helpers.write_file(script, string.format([[
      local kling = require "kling"
      local c = kling.new { base_url = %q, token = %q, journal = %q }
      local jobs = {}
      for i = 1, 5 do jobs[i] = assert(c:generate { prompt = "victim " .. i .. " @emu:run=1.5" }) end
      io.write("submitted\n") io.flush()
      kling.wait_all(jobs)
      io.write("finished\n")
    ]], emu.api, TOKEN, path))
    local out = dir .. "/victim.out"
    os.execute(string.format("cd %s && LUA_PATH=%s LUA_CPATH=%s lua5.4 %s > %s 2>&1 & echo $! > %s",
      q(helpers.root), q(helpers.root .. "/lua/?.lua;;"), q(helpers.root .. "/build/?.so;;"), q(script), q(out),
      q(dir .. "/victim.pid")))
    local deadline = os.time() + 10
    while not (helpers.read_file(out) or ""):find("submitted") and os.time() < deadline do helpers.sleep(0.05) end
    local pid = tonumber(helpers.read_file(dir .. "/victim.pid"))
    os.execute("kill -KILL " .. pid)
    helpers.sleep(0.1)
    assert.is_nil((helpers.read_file(out) or ""):find("finished"))

    local c = client(path)
    local jobs, unknown = c:resume()
    assert.equals(5, #jobs)
    assert.equals(0, #unknown)
    local outs, errs = kling.wait_all(jobs)
    for i = 1, 5 do
      assert.is_nil(errs[i])
      assert.is_string(outs[i].video)
    end
    assert.equals(0, #(c:resume()))
    c:close()
  end)

  it("skips a torn last line", function()
    local path = dir .. "/torn.jsonl"
    local c = client(path)
    local job = assert(c:generate { prompt = "before the tear" })
    local f = assert(io.open(path, "ab"))
    f:write('{"e":"submitted","id":"half-writ')
    f:close()
    local jobs = c:resume()
    assert.equals(1, #jobs)
    assert.equals(job.id, jobs[1].id)
    local _, _, bad = require("kling.journal").open(path):state()
    assert.equals(1, bad)
    c:close()
  end)

  it("takes appends from several processes at once without losing or mixing lines", function()
    local path = dir .. "/shared.jsonl"
    local code = string.format([[
      local j = require("kling.journal").open(%q)
      for i = 1, 200 do assert(j:append { e = "submitted", id = "p" .. arg[1] .. "-" .. i, model = "m" }) end
    ]], path)
    local script = dir .. "/writer.lua"
    helpers.write_file(script, code)
    local cmd = string.format("cd %s && LUA_PATH=%s LUA_CPATH=%s", q(helpers.root), q(helpers.root .. "/lua/?.lua;;"),
      q(helpers.root .. "/build/?.so;;"))
    os.execute(string.format("%s lua5.4 %s 1 & %s lua5.4 %s 2 & %s lua5.4 %s 3 & wait", cmd, q(script), cmd, q(script), cmd, q(script)))
    local jobs, _, bad = require("kling.journal").open(path):state()
    local n = 0
    for _ in pairs(jobs) do n = n + 1 end
    assert.equals(600, n)
    assert.equals(0, bad)
  end)

  it("compacts away the jobs that have ended, keeping the others", function()
    local path = dir .. "/compact.jsonl"
    local c = client(path)
    local done = assert(c:generate { prompt = "done" })
    assert(done:wait())
    local open_job = assert(c:generate { prompt = "still queued @emu:queue=30" })
    assert.equals(3, #lines(path))
    assert.equals(2, c:compact_journal())
    local l = lines(path)
    assert.equals(1, #l)
    assert.equals(open_job.id, json.decode(l[1]).id)
    local again = assert(c:generate { prompt = "after compaction" })
    assert.equals(2, #lines(path))
    assert.equals(again.id, json.decode(lines(path)[2]).id)
    c:close()
  end)

  it("writes the caller's tag with the request, and refuses a tag that is not a short string", function()
    local path = dir .. "/tag.jsonl"
    local c = client(path)
    local job = assert(c:submit(kling.DEFAULT_MODEL, { prompt = "tagged" }, { tag = "mine-1" }))
    local jobs = require("kling.journal").open(path):state()
    assert.equals("mine-1", jobs[job.id].tag)
    assert.has_error(function() c:submit(kling.DEFAULT_MODEL, { prompt = "x" }, { tag = 42 }) end)
    assert.has_error(function() c:submit(kling.DEFAULT_MODEL, { prompt = "x" }, { tag = string.rep("t", 257) }) end)
    c:close()
  end)

  it("needs a journal to resume", function()
    local c = client(nil)
    local jobs, err = c:resume()
    assert.is_nil(jobs)
    assert.equals("validation", err.kind)
    c:close()
  end)
end)
