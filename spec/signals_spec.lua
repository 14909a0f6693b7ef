-- SIGTERM and SIGHUP are handled as Ctrl-C is: the queued jobs the command submitted are
-- cancelled, what runs is named with how to collect it, the journal keeps every id, and
-- the exit code is 128 + the signal's number (143, 129), as shells report it.
local helpers = require "helpers"
local cjson = require "cjson"
local cli_run = require "cli_run"

local TOKEN = "signals-token-3b7"
local eventually = cli_run.eventually

describe("kling on SIGTERM and SIGHUP", function()
  local emu, dir, cli

  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0.2", "--run", "0.2" }
    dir = helpers.tmpdir()
    cli = cli_run.new { api = emu.api, token = TOKEN, dir = dir }
  end)
  teardown(function()
    if cli then cli.cleanup() end
    if emu then emu:stop() end
    if dir then os.execute("rm -rf " .. helpers.quote(dir)) end
  end)

  local function submitted_id(state)
    return eventually(function()
      for _, ev in ipairs(cli.journal(state)) do
        if ev.e == "submitted" then return ev.id end
      end
    end, 10, "the submit")
  end

  local function ended(state, id)
    for _, ev in ipairs(cli.journal(state)) do
      if ev.e == "ended" and ev.id == id then return ev end
    end
  end

  for _, case in ipairs { { "TERM", 143, "terminated" }, { "HUP", 129, "hung up" } } do
    local sig, code, said = case[1], case[2], case[3]

    it("SIG" .. sig .. " during kling generate cancels the job it queued, says so and exits " .. code, function()
      local st = dir .. "/state-gen-" .. sig
      local p = cli.spawn({ "generate", "held in the queue @emu:queue=600" }, { state = st })
      local id = submitted_id(st)
      p.signal(sig)
      local res = p.wait(15)
      assert.equals(code, res.code, res.err)
      assert.matches("kling: " .. said, res.err, 1, true)
      assert.matches("cancelled " .. id .. " (it was still queued)", res.err, 1, true)
      assert.matches("every request id is in the journal", res.err, 1, true)
      assert.is_true(emu:job_record(id).cancelled)
      local ev = ended(st, id)
      assert.is_table(ev, "no ended line in the journal")
      assert.equals("cancelled", ev.status)
    end)
  end

  it("SIGTERM with --json still gives the job its object, error kind interrupted", function()
    local st = dir .. "/state-json"
    local p = cli.spawn({ "generate", "json held @emu:queue=600", "--json" }, { state = st })
    local id = submitted_id(st)
    p.signal("TERM")
    local res = p.wait(15)
    assert.equals(143, res.code, res.err)
    local o = cjson.decode(res.out)
    assert.equals(id, o.id)
    assert.equals("cancelled", o.status)
    assert.equals("interrupted", o.error.kind)
    assert.matches("SIGTERM", o.error.message, 1, true)
  end)

  it("SIGHUP during kling batch cancels its queued line, names the running one and how to collect it", function()
    local file = dir .. "/hup.jsonl"
    helpers.write_file(file, '{"prompt":"queued @emu:queue=600","name":"queued"}\n'
      .. '{"prompt":"running @emu:queue=0 @emu:run=600","name":"running"}\n')
    local out = dir .. "/hup-out"
    local st = dir .. "/state-batch"
    local p = cli.spawn({ "batch", file, "--out-dir", out }, { state = st })
    local ids = eventually(function()
      local got = {}
      for line in (helpers.read_file(out .. "/.kling-batch.jsonl") or ""):gmatch("[^\n]+") do
        local ev = cjson.decode(line)
        if ev.e == "submitted" then got[ev.key] = ev.id end
      end
      return got.queued and got.running and emu:job_record(got.running).state == "in_progress" and got
    end, 15, "both submits, one running")
    p.signal("HUP")
    local res = p.wait(15)
    assert.equals(129, res.code, res.err)
    assert.matches("cancelled " .. ids.queued .. " (it was still queued)", res.err, 1, true)
    assert.matches(ids.running .. " keeps running", res.err, 1, true)
    assert.matches("run the same kling batch command again", res.err, 1, true)
    assert.is_true(emu:job_record(ids.queued).cancelled)
    assert.is_false(emu:job_record(ids.running).cancelled)
    local state = helpers.read_file(out .. "/.kling-batch.jsonl")
    assert.matches('"e":"released"', state, 1, true)
  end)

  it("SIGTERM during kling wait cancels nothing it did not submit, names the job and exits 143", function()
    local st = dir .. "/state-wait"
    local res = cli.run({ "submit", "someone else's @emu:queue=600" }, { state = st })
    assert.equals(0, res.code, res.err)
    local id = res.out:gsub("%s+$", "")
    local p = cli.spawn({ "wait", id }, { state = st })
    eventually(function() return emu:job_record(id).status_polls >= 1 end, 10, "the wait's first poll")
    p.signal("TERM")
    res = p.wait(15)
    assert.equals(143, res.code, res.err)
    assert.matches(id .. " was not cancelled (this command did not submit it); collect it with: kling wait " .. id,
      res.err, 1, true)
    assert.is_false(emu:job_record(id).cancelled)
  end)

  it("quits at once on a second SIGTERM while a submit is in flight", function()
    -- an API that accepts the connection and never answers: the submit stays in flight
    local silent = helpers.silent_api(dir)
    finally(silent.stop)
    local p = cli.spawn({ "generate", "never answered" }, { base = silent.base, state = dir .. "/state-silent" })
    eventually(silent.arrived, 10, "the submit to go out")
    p.signal("TERM")
    eventually(function() return p.err():find("submit in flight", 1, true) end, 5, "the first SIGTERM")
    assert.is_false(p.done())
    p.signal("TERM")
    local res = p.wait(5)
    assert.equals(143, res.code)
  end)

  it("lists 129 and 143 among the exit codes of its help", function()
    local res = cli.run { "help", "generate" }
    assert.matches("143  terminated (SIGTERM)", res.out, 1, true)
    assert.matches("129  hangup (SIGHUP)", res.out, 1, true)
    assert.matches("SIGTERM", cli.run({ "--help" }).out, 1, true)
  end)
end)
