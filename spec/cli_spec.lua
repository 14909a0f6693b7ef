-- The command-line tool: the real bin/kling, run as a process against the emulator.
local helpers = require "helpers"
local cjson = require "cjson"

local q = helpers.quote
local TOKEN = "cli-spec-token-7c21"
local VIDEO = require "kling.emulator_video"

local cli_run = require "cli_run"

local emu, dir, state, runner

--- Runs bin/kling to the end: { code, out, err } (spec/cli_run.lua: the emulator, the token,
-- a journal of our own, fast polls; opts: base, state, token, env, cwd, stdin).
local function kling(args, opts) return runner.run(args, opts) end

--- Starts bin/kling in the background: { pid, done(), wait(seconds) -> res, signal(name) }.
local function spawn(args, opts) return runner.spawn(args, opts) end

local eventually = cli_run.eventually

local function journal_lines(st)
  local text = helpers.read_file((st or state) .. "/kling/jobs.jsonl") or ""
  local events = {}
  for line in text:gmatch("[^\n]+") do events[#events + 1] = cjson.decode(line) end
  return events
end

-- The request id of the first submitted line of a journal (its intent line comes before it).
local function first_submitted(st)
  for _, ev in ipairs(journal_lines(st)) do
    if ev.e == "submitted" then return ev.id end
  end
  return nil
end

local function json_lines(text)
  local list = {}
  for line in text:gmatch("[^\n]+") do list[#list + 1] = cjson.decode(line) end
  return list
end

local function jobs_created()
  return emu:stats().jobs_created
end

local function trim(s) return (s:gsub("%s+$", "")) end
local function esc(s) return (s:gsub("%p", "%%%0")) end

describe("kling (command line)", function()
  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0.2", "--run", "0.2" }
    dir = helpers.tmpdir()
    state = dir .. "/state"
    runner = cli_run.new { api = emu.api, token = TOKEN, dir = dir, state = state }
  end)

  teardown(function()
    if runner then runner.cleanup() end
    if emu then emu:stop() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  describe("help and usage", function()
    it("has --help for every command, with the exit codes", function()
      local main = kling { "--help" }
      assert.equals(0, main.code)
      for _, cmd in ipairs { "generate", "submit", "status", "wait", "result", "cancel", "download", "jobs",
        "resume", "batch", "validate", "models", "schema", "emulator", "help" } do
        assert.matches("\n  " .. cmd .. " ", main.out, 1, true)
        local res = kling { cmd, "--help" }
        assert.equals(0, res.code, cmd .. ": " .. res.err)
        if cmd == "emulator" then
          assert.matches("--port", res.out, 1, true)
        else
          assert.matches("Usage: kling " .. cmd, res.out, 1, true)
          assert.matches("130  interrupted", res.out, 1, true)
          assert.matches("6    timeout", res.out, 1, true)
        end
      end
      assert.equals(kling { "help", "batch" }.out, kling { "batch", "-h" }.out)
    end)

    it("exits 2 on usage errors, saying what is wrong, and sends nothing", function()
      local before = jobs_created()
      local cases = {
        { {}, "Usage: kling COMMAND" },
        { { "frobnicate" }, "unknown command 'frobnicate'" },
        { { "generate", "x", "--bogus" }, "unknown option '--bogus'" },
        { { "generate", "x", "--duration", "five" }, "--duration wants a number" },
        { { "generate", "x", "--duration" }, "--duration needs a value" },
        { { "generate", "x", "--shot", "no seconds" }, "--shot wants \"PROMPT:SECONDS\"" },
        { { "generate", "x", "--no-sound", "--sound" }, "contradict" },
        { { "generate", "x", "-o", "a.mp4", "--out-dir", "d" }, "not both" },
        { { "status" }, "give a request id" },
        { { "status", "../etc" }, "invalid request id" },
        { { "batch", "x.jsonl" }, "--out-dir DIR is required" },
        { { "batch", "x.jsonl", "--out-dir", "d", "--concurrency", "0" }, "--concurrency wants a whole number" },
        { { "wait", "a", "b", "-o", "f.mp4" }, "-o FILE takes one id" },
        { { "generate", "x", "--input", dir .. "/missing.json" }, "--input" },
        { { "generate", "x", "--timeout", "-1" }, "--timeout wants a number of seconds > 0" },
        { { "generate", "-x" }, "unknown option '-x'" },
      }
      for _, c in ipairs(cases) do
        local res = kling(c[1])
        assert.equals(2, res.code, table.concat(c[1], " ") .. ": " .. res.err)
        assert.matches(c[2], res.err, 1, true)
      end
      assert.equals(before, jobs_created())
    end)

    it("never takes the token from a flag, and reads it from --token-file", function()
      local res = kling({ "generate", "x", "--token", "sekret-value" }, { token = false })
      assert.equals(2, res.code)
      assert.matches("never taken from a flag", res.err, 1, true)
      assert.not_matches("sekret%-value", res.err)
      res = kling({ "submit", "x", "--token=sekret-value" }, { token = false })
      assert.equals(2, res.code)
      local file = dir .. "/token"
      helpers.write_file(file, TOKEN .. "\n")
      res = kling({ "submit", "from a token file", "--token-file", file }, { token = false })
      assert.equals(0, res.code, res.err)
      assert.matches("^[%w_-]+\n$", res.out)
      res = kling({ "submit", "from the other variable" }, { token = false, env = { RUNCOMFY_API_TOKEN = TOKEN } })
      assert.equals(0, res.code, res.err)
      res = kling({ "submit", "x", "--token-file", dir .. "/no-such-file" }, { token = false })
      assert.equals(2, res.code)
    end)

    it("refuses to overwrite an output file without --force, before submitting anything", function()
      local path = dir .. "/exists.mp4"
      helpers.write_file(path, "keep me")
      local before = jobs_created()
      local res = kling { "generate", "a clip", "-o", path }
      assert.equals(2, res.code)
      assert.matches("exists; pass --force", res.err, 1, true)
      assert.equals(before, jobs_created())
      assert.equals("keep me", helpers.read_file(path))
      res = kling { "generate", "a clip", "-o", path, "--force" }
      assert.equals(0, res.code, res.err)
      assert.equals(VIDEO, helpers.read_file(path))
    end)
  end)

  describe("generate", function()
    it("submits, waits, downloads the video and journals the job", function()
      local path = dir .. "/kite.mp4"
      local res = kling { "generate", "a red kite", "over a grey sea", "--duration", "5", "--aspect-ratio", "9:16",
        "--negative-prompt", "blur", "--cfg-scale", "0.7", "--no-sound", "-o", path }
      assert.equals(0, res.code, res.err)
      assert.equals(path, trim(res.out))
      assert.equals(VIDEO, helpers.read_file(path))
      assert.is_nil(io.open(path .. ".part", "rb"))
      -- plain log lines (stdout is no terminal): submitted, the states, saved
      assert.matches("submitted", res.err, 1, true)
      assert.matches("queued", res.err, 1, true)
      assert.matches("saved " .. path, res.err, 1, true)
      local ev = journal_lines()
      local id = ev[#ev].id
      local rec = emu:job_record(id)
      local sent = cjson.decode(rec.body)
      assert.same({ prompt = "a red kite over a grey sea", duration = 5, aspect_ratio = "9:16",
        negative_prompt = "blur", cfg_scale = 0.7, sound = false }, sent)
      local submitted, ended
      for _, e in ipairs(ev) do
        if e.id == id and e.e == "submitted" then submitted = e end
        if e.id == id and e.e == "ended" then ended = e end
      end
      assert.truthy(submitted)
      assert.equals("completed", ended.status)
    end)

    it("merges --input under the flags, and builds multi_prompt from --shot", function()
      local input = dir .. "/input.json"
      helpers.write_file(input, '{"prompt": "from the file", "aspect_ratio": "1:1", "cfg_scale": 0.2}')
      local res = kling { "submit", "--input", input, "--cfg-scale", "0.9", "--shot", "dawn: 3", "--shot",
        "dusk over the sea:4" }
      assert.equals(0, res.code, res.err)
      local sent = cjson.decode(emu:job_record(trim(res.out)).body)
      assert.same({ prompt = "from the file", aspect_ratio = "1:1", cfg_scale = 0.9, duration = 7,
        multi_prompt = { { prompt = "dawn", duration = 3 }, { prompt = "dusk over the sea", duration = 4 } } }, sent)
      res = kling({ "submit", "--input", "-", "--dry-run" }, { stdin = '{"prompt":"stdin","duration":5.0}' })
      assert.equals(0, res.code, res.err)
      assert.same({ prompt = "stdin", duration = 5 }, cjson.decode(res.out))
      assert.equals("5", res.out:match('"duration":(%d+)'))
    end)

    it("prints one JSON object with --json: id, model, status, video, path, bytes", function()
      local path = dir .. "/json.mp4"
      local res = kling { "generate", "json please", "-o", path, "--json" }
      assert.equals(0, res.code, res.err)
      local objs = json_lines(res.out)
      assert.equals(1, #objs)
      local o = objs[1]
      assert.matches("^[%w_-]+$", o.id)
      assert.equals("kling/kling-3.0/pro/text-to-video", o.model)
      assert.equals("completed", o.status)
      assert.equals(emu.files .. "/v/" .. o.id .. ".mp4", o.video)
      assert.equals(o.video, o.output.video)
      assert.equals(path, o.path)
      assert.equals(#VIDEO, o.bytes)
      assert.equals("", res.err)
    end)

    it("names the file from the URL in --out-dir, never overwriting, and --no-download prints the URL", function()
      local out = dir .. "/outdir"
      local res = kling { "generate", "into a directory", "--out-dir", out }
      assert.equals(0, res.code, res.err)
      local path = trim(res.out)
      assert.matches("^" .. out:gsub("%p", "%%%0") .. "/[%w_-]+%.mp4$", path)
      assert.equals(VIDEO, helpers.read_file(path))
      local id = path:match("([%w_-]+)%.mp4$")
      res = kling { "download", id, "--out-dir", out }
      assert.equals(0, res.code, res.err)
      assert.equals(out .. "/" .. id .. "-1.mp4", trim(res.out))
      res = kling { "generate", "just the URL", "--no-download" }
      assert.equals(0, res.code, res.err)
      assert.matches("^" .. emu.files:gsub("%p", "%%%0") .. "/v/[%w_-]+%.mp4\n$", res.out)
    end)
  end)

  describe("exit codes", function()
    it("3 for an invalid input, printing every problem with its path; nothing is sent", function()
      local before = jobs_created()
      local res = kling { "generate", "   ", "--duration", "16", "--aspect-ratio", "4:3", "--shot", "a:3", "--shot", "b:2.5" }
      assert.equals(3, res.code)
      assert.matches("/prompt: ", res.err, 1, true)
      assert.matches("/duration: ", res.err, 1, true)
      assert.matches("/aspect_ratio: ", res.err, 1, true)
      assert.matches("/multi_prompt/2/duration: ", res.err, 1, true)
      assert.matches("nothing was sent", res.err, 1, true)
      res = kling { "submit", "x", "--cfg-scale", "2", "--json" }
      assert.equals(3, res.code)
      local o = cjson.decode(res.out)
      assert.equals("validation", o.error.kind)
      assert.equals("/cfg_scale", o.error.errors[1].path)
      assert.equals(before, jobs_created())
    end)

    it("4 for a wrong token, or none", function()
      local res = kling({ "generate", "wrong token" }, { token = "not-the-token" })
      assert.equals(4, res.code)
      assert.matches("auth", res.err, 1, true)
      assert.matches("RUNCOMFY_TOKEN", res.err, 1, true)
      assert.not_matches(TOKEN, res.err, 1, true)
      res = kling({ "submit", "no token", "--json" }, { token = false })
      assert.equals(4, res.code)
      assert.equals("auth", cjson.decode(res.out).error.kind)
      res = kling({ "generate", "payment @emu:error200=400002" })
      assert.equals(4, res.code)
      assert.matches("payment", res.err, 1, true)
    end)

    it("5 for a failed job, with the service's reason (also in --json)", function()
      local res = kling { "generate", "this fails @emu:fail=Policy_says_no", "--json" }
      assert.equals(5, res.code)
      local o = cjson.decode(res.out)
      assert.equals("failed", o.status)
      assert.equals("failed", o.error.kind)
      assert.equals("Policy says no", o.error.message)
      assert.matches("Policy says no", res.err, 1, true)
      res = kling { "generate", "this fails too @emu:fail" }
      assert.equals(5, res.code)
      assert.equals("", res.out)
    end)

    it("6 when --timeout passes: the job goes on, and kling wait collects it", function()
      local res = kling { "generate", "slow @emu:queue=0 @emu:run=1.5", "--timeout", "0.3", "-o", dir .. "/slow.mp4" }
      assert.equals(6, res.code, res.err)
      local id = res.err:match("kling wait ([%w_-]+)")
      assert.truthy(id, res.err)
      assert.is_nil(io.open(dir .. "/slow.mp4", "rb"))
      res = kling { "wait", id }
      assert.equals(0, res.code, res.err)
      assert.equals(emu.files .. "/v/" .. id .. ".mp4", trim(res.out))
      res = kling { "download", id, "-o", dir .. "/slow.mp4" }
      assert.equals(0, res.code, res.err)
      assert.equals(VIDEO, helpers.read_file(dir .. "/slow.mp4"))
    end)

    it("7 when the API cannot be reached", function()
      local res = kling({ "generate", "nobody home" }, { base = "http://127.0.0.1:1/v1" })
      assert.equals(7, res.code)
      assert.matches("network", res.err, 1, true)
      res = kling { "status", "no-such-request", "--json" }
      assert.equals(7, res.code)
      assert.equals("not_found", cjson.decode(res.out).error.kind)
    end)
  end)

  describe("jobs by id", function()
    it("submit, status, result, cancel, wait and download", function()
      -- an emulator on a manual clock: no job moves on between two commands, however slow
      -- the machine is to start them
      local m = helpers.start_emulator { "--token", TOKEN, "--clock", "manual" }
      finally(function() m:stop() end)
      local function kling(args) return runner.run(args, { base = m.api }) end
      local res = kling { "submit", "by id @emu:queue=1.5 @emu:run=0.2" }
      assert.equals(0, res.code, res.err)
      local id = trim(res.out)
      res = kling { "status", id }
      assert.equals(0, res.code, res.err)
      assert.matches("^" .. esc(id) .. "  queued, position %d\n$", res.out)
      res = kling { "status", id, "--json" }
      local o = cjson.decode(res.out)
      assert.equals("in_queue", o.status)
      assert.equals("kling/kling-3.0/pro/text-to-video", o.model) -- from the journal
      res = kling { "result", id }
      assert.equals(6, res.code)
      assert.matches("has not ended", res.err, 1, true)
      res = kling { "cancel", id }
      assert.equals(0, res.code, res.err)
      assert.equals(id .. "  cancelled\n", res.out)
      assert.is_true(m:job_record(id).cancelled)
      res = kling { "wait", id, "--json" }
      assert.equals(5, res.code)
      assert.equals("cancelled", cjson.decode(res.out).error.kind)

      res = kling { "submit", "runs @emu:queue=0 @emu:run=0.6" }
      local id2 = trim(res.out)
      m:advance(0.1)
      assert.equals("in_progress", m:job_record(id2).state)
      res = kling { "cancel", id2 }
      assert.equals(5, res.code)
      assert.matches("not_cancellable", res.err, 1, true)
      m:advance(1)
      res = kling { "download", id2, "-o", dir .. "/byid.mp4", "--json" }
      assert.equals(0, res.code, res.err)
      o = cjson.decode(res.out)
      assert.equals(#VIDEO, o.bytes)
      assert.equals(VIDEO, helpers.read_file(dir .. "/byid.mp4"))
      res = kling { "result", id2 }
      assert.equals(0, res.code)
      assert.equals(m.files .. "/v/" .. id2 .. ".mp4\n", res.out)
      res = kling { "status", id2 }
      assert.equals(id2 .. "  completed  " .. m.files .. "/v/" .. id2 .. ".mp4\n", res.out)
    end)

    it("goes on with a download the file host cut, from its .part, in a later run", function()
      local res = kling { "submit", "cut download @emu:bytes=600000 @emu:queue=0 @emu:run=0.1" }
      assert.equals(0, res.code, res.err)
      local id = trim(res.out)
      eventually(function() return emu:job_record(id).state == "completed" end, 5, "the job to end")
      local path = dir .. "/cut.bin"
      emu:set_faults { "download:cut:1" }
      res = kling { "download", id, "-o", path }
      emu:set_faults {}
      assert.equals(7, res.code)
      local part = helpers.read_file(path .. ".part")
      assert.is_truthy(part and #part > 0 and #part < 600000)
      local sent = emu:stats().files.bytes_sent
      res = kling { "download", id, "-o", path, "--json" }
      assert.equals(0, res.code, res.err)
      assert.equals(600000, cjson.decode(res.out).bytes)
      assert.equals(require("kling.emulator").pattern_bytes(0, 600000), helpers.read_file(path))
      assert.equals(600000 - #part, emu:stats().files.bytes_sent - sent) -- only the rest came again
    end)

    it("waits for several ids at once", function()
      local a = trim(kling({ "submit", "one" }).out)
      local b = trim(kling({ "submit", "two @emu:fail" }).out)
      local res = kling { "wait", a, b, "--json" }
      assert.equals(5, res.code)
      local by = {}
      for _, o in ipairs(json_lines(res.out)) do by[o.id] = o end
      assert.equals("completed", by[a].status)
      assert.equals("failed", by[b].error.kind)
    end)
  end)

  describe("the journal", function()
    it("lists unfinished jobs, resumes them, and lists them all with --all", function()
      local st = dir .. "/state-resume"
      local ids = {}
      for i = 1, 2 do
        local res = kling({ "submit", "resume me " .. i }, { state = st })
        assert.equals(0, res.code, res.err)
        ids[i] = trim(res.out)
      end
      local res = kling({ "jobs" }, { state = st })
      assert.equals(0, res.code, res.err)
      for _, id in ipairs(ids) do assert.matches(esc(id) .. "  %d+%-%d+%-%d+ [%d:]+  unfinished", res.out) end
      res = kling({ "jobs", "--json" }, { state = st })
      local objs = json_lines(res.out)
      assert.equals(2, #objs)
      assert.equals("unfinished", objs[1].status)
      local out = dir .. "/resumed"
      res = kling({ "resume", "--out-dir", out }, { state = st })
      assert.equals(0, res.code, res.err)
      for _, id in ipairs(ids) do
        assert.matches(id .. "\t" .. out .. "/" .. id .. ".mp4", res.out, 1, true)
        assert.equals(VIDEO, helpers.read_file(out .. "/" .. id .. ".mp4"))
      end
      res = kling({ "jobs" }, { state = st })
      assert.equals("", res.out)
      assert.matches("no unfinished jobs", res.err, 1, true)
      res = kling({ "jobs", "--all" }, { state = st })
      for _, id in ipairs(ids) do assert.matches(esc(id) .. "  [%d%- :]+  completed", res.out) end
      res = kling({ "resume" }, { state = st })
      assert.equals(0, res.code)
      assert.matches("nothing to resume", res.err, 1, true)
      res = kling({ "jobs", "--compact" }, { state = st })
      assert.equals(0, res.code, res.err)
      assert.equals(0, #journal_lines(st))
    end)

    it("shows the submits of unknown outcome, and forgets ids on request", function()
      local st = dir .. "/state-unknown"
      os.execute("mkdir -p " .. q(st .. "/kling"))
      helpers.write_file(st .. "/kling/jobs.jsonl", table.concat({
        cjson.encode { e = "submit_unknown", model = "kling/kling-3.0/pro/text-to-video", t = os.time(),
          message = "timeout after the request was sent" },
        cjson.encode { e = "submitted", id = "expired-id-1", model = "kling/kling-3.0/pro/text-to-video", t = os.time() },
      }, "\n") .. "\n")
      local res = kling({ "jobs" }, { state = st })
      assert.equals(0, res.code)
      assert.matches("expired-id-1", res.out, 1, true)
      assert.matches("1 submit(s) of unknown outcome", res.err, 1, true)
      assert.matches("timeout after the request was sent", res.err, 1, true)
      res = kling({ "resume", "--no-download" }, { state = st })
      assert.equals(7, res.code)
      assert.matches("not_found", res.err, 1, true)
      res = kling({ "jobs", "--forget", "expired-id-1" }, { state = st })
      assert.equals(0, res.code, res.err)
      res = kling({ "jobs" }, { state = st })
      assert.equals("", res.out)
      res = kling({ "resume" }, { state = st })
      assert.equals(0, res.code)
    end)

    it("is at $XDG_STATE_HOME/kling/jobs.jsonl by default; --journal and --no-journal change that", function()
      local st = dir .. "/state-paths"
      local res = kling({ "submit", "default journal" }, { state = st })
      assert.equals(0, res.code, res.err)
      assert.equals(trim(res.out), first_submitted(st))
      local other = dir .. "/other/journal.jsonl"
      os.execute("mkdir -p " .. q(dir .. "/other"))
      res = kling({ "submit", "own journal", "--journal", other }, { state = st })
      assert.matches(trim(res.out), helpers.read_file(other), 1, true)
      res = kling({ "submit", "no journal", "--no-journal" }, { state = st })
      assert.equals(0, res.code)
      assert.equals(2, #journal_lines(st)) -- the first submit's intent and submitted lines
      res = kling({ "submit", "no XDG" }, { state = "", env = { HOME = dir .. "/home" } })
      assert.equals(0, res.code, res.err)
      assert.matches(trim(res.out), helpers.read_file(dir .. "/home/.local/state/kling/jobs.jsonl"), 1, true)
    end)
  end)

  describe("Ctrl-C", function()
    it("cancels the queued job it submitted and exits 130", function()
      local st = dir .. "/state-int1"
      local p = spawn({ "generate", "interrupt me @emu:queue=10" }, { state = st })
      local id = eventually(function() return first_submitted(st) end, 10, "the submit")
      p.signal("INT")
      local res = p.wait(10)
      assert.equals(130, res.code, res.err)
      assert.matches("cancelled " .. id .. " (it was still queued)", res.err, 1, true)
      assert.is_true(emu:job_record(id).cancelled)
      local ended
      for _, e in ipairs(journal_lines(st)) do if e.e == "ended" then ended = e end end
      assert.equals("cancelled", ended.status)
    end)

    it("leaves a running job running and says how to collect it", function()
      local st = dir .. "/state-int2"
      -- an emulator on a manual clock: the job cannot end before the signal
      local m = helpers.start_emulator { "--token", TOKEN, "--clock", "manual" }
      finally(function() m:stop() end)
      local p = spawn({ "generate", "keep running @emu:queue=0.5 @emu:run=1.5", "--json" }, { state = st, base = m.api })
      local id = eventually(function() return first_submitted(st) end, 10, "the submit")
      m:advance(1)
      local rec = m:job_record(id)
      assert.equals("in_progress", rec.state)
      local polls = rec.status_polls
      -- the command has asked for the job's status since: it knows the job runs
      eventually(function() return m:job_record(id).status_polls > polls end, 10, "a status poll")
      p.signal("INT")
      local res = p.wait(10)
      assert.equals(130, res.code, res.err)
      assert.matches(id .. " keeps running", res.err, 1, true)
      assert.matches("kling wait " .. id, res.err, 1, true)
      assert.is_false(m:job_record(id).cancelled)
      local o = cjson.decode(res.out)
      assert.equals(id, o.id)
      assert.equals("interrupted", o.error.kind)
      m:advance(2)
      res = kling({ "wait", id }, { state = st, base = m.api })
      assert.equals(0, res.code, res.err)
    end)

    it("quits at once on a second Ctrl-C", function()
      -- an API that accepts the connection and never answers: the submit stays in flight
      -- (it says when the request has arrived: the submit is in flight, no time window)
      local silent = helpers.silent_api(dir)
      finally(silent.stop)
      local p = spawn({ "generate", "never answered" }, { base = silent.base })
      eventually(silent.arrived, 10, "the submit to go out")
      p.signal("INT")
      eventually(function() return p.err():find("submit in flight", 1, true) end, 5, "the first Ctrl-C")
      assert.is_false(p.done())
      p.signal("INT")
      local res = p.wait(5)
      assert.equals(130, res.code)
    end)
  end)

  describe("batch", function()
    local function batch_file(name, lines)
      local path = dir .. "/" .. name
      helpers.write_file(path, table.concat(lines, "\n") .. "\n")
      return path
    end

    it("validates every line first: nothing is sent for a file with a bad line", function()
      local before = jobs_created()
      local file = batch_file("bad.jsonl", { '{"prompt":"fine"}', '{"prompt":"x","duration":99}', "not json" })
      local res = kling { "batch", file, "--out-dir", dir .. "/bad-out" }
      assert.equals(3, res.code)
      assert.matches("line 2 (line-2): /duration:", res.err, 1, true)
      assert.matches("line 3: not valid JSON", res.err, 1, true)
      assert.equals(before, jobs_created())
      res = kling { "validate", file }
      assert.equals(3, res.code)
      assert.matches("line 2: /duration:", res.err, 1, true)
    end)

    it("runs every line, with one JSON object per line, failures included", function()
      local file = batch_file("mixed.jsonl", {
        '{"prompt":"first","name":"alpha"}',
        '',
        '# a comment',
        '{"input":{"prompt":"fails @emu:fail"},"name":"beta"}',
        '{"prompt":"third","duration":5}',
      })
      local out = dir .. "/mixed-out"
      local res = kling { "batch", file, "--out-dir", out, "--concurrency", "2", "--json" }
      assert.equals(5, res.code, res.err)
      local by = {}
      for _, o in ipairs(json_lines(res.out)) do by[o.key] = o end
      assert.equals("completed", by.alpha.status)
      assert.equals(1, by.alpha.line)
      assert.equals(out .. "/alpha.mp4", by.alpha.path)
      assert.equals("failed", by.beta.error.kind)
      assert.equals(4, by.beta.line)
      assert.equals(#VIDEO, by["line-5"].bytes)
      assert.equals(VIDEO, helpers.read_file(out .. "/line-5.mp4"))
      -- the name field is not sent
      assert.same({ prompt = "first" }, cjson.decode(emu:job_record(by.alpha.id).body))
      -- run again: the done lines are skipped, the failed one is not sent again
      local before = jobs_created()
      res = kling { "batch", file, "--out-dir", out, "--json" }
      assert.equals(5, res.code)
      assert.equals(before, jobs_created())
      by = {}
      for _, o in ipairs(json_lines(res.out)) do by[o.key] = o end
      assert.is_true(by.alpha.skipped)
      assert.equals("failed", by.beta.status)
      -- unless asked to
      res = kling { "batch", file, "--out-dir", out, "--retry-failed" }
      assert.equals(5, res.code)
      assert.equals(before + 1, jobs_created())
    end)

    it("finishes after a SIGKILL without submitting any line twice", function()
      local lines = {}
      for i = 1, 5 do lines[i] = string.format('{"prompt":"line %d @emu:queue=0.3 @emu:run=1"}', i) end
      local file = batch_file("crash.jsonl", lines)
      local out = dir .. "/crash-out"
      local before = jobs_created()
      local p = spawn { "batch", file, "--out-dir", out, "--concurrency", "2" }
      -- killed while two jobs are in flight and no submit is (the next waits for a slot)
      eventually(function()
        local text = helpers.read_file(out .. "/.kling-batch.jsonl") or ""
        local _, n = text:gsub('"e":"submitted"', "")
        return n >= 2
      end, 10, "two submits")
      p.signal("KILL")
      p.wait(5)
      assert.equals(before + 2, jobs_created())
      local res = kling { "batch", file, "--out-dir", out, "--concurrency", "2" }
      assert.equals(0, res.code, res.err)
      assert.matches("re-attached", res.err, 1, true)
      assert.equals(before + 5, jobs_created())
      for i = 1, 5 do assert.equals(VIDEO, helpers.read_file(out .. "/line-" .. i .. ".mp4")) end
      res = kling { "batch", file, "--out-dir", out, "--json" }
      assert.equals(0, res.code)
      assert.equals(before + 5, jobs_created())
      for _, o in ipairs(json_lines(res.out)) do assert.is_true(o.skipped) end
    end)

    it("finds in the journal a job submitted just before a crash, and never resends an unknown submit", function()
      local st = dir .. "/state-adopt"
      local line = '{"prompt":"adopt me"}'
      local file = batch_file("adopt.jsonl", { line, '{"prompt":"unknown fate"}' })
      local out = dir .. "/adopt-out"
      os.execute("mkdir -p " .. q(out))
      local hash = require("kling.cli.batch").hash
      -- what a process killed right after its submit returned leaves behind: the mark in the
      -- batch state, the id only in the journal; and for line 2 a mark whose submit never answered
      local t = os.time() - 1
      local res = kling({ "submit", "adopt me" }, { state = st })
      assert.equals(0, res.code, res.err)
      local id = trim(res.out)
      helpers.write_file(out .. "/.kling-batch.jsonl", table.concat({
        cjson.encode { e = "submitting", key = "line-1", hash = hash(line), t = t },
        cjson.encode { e = "submitting", key = "line-2", hash = hash('{"prompt":"unknown fate"}'), t = t },
      }, "\n") .. "\n")
      local before = jobs_created()
      res = kling({ "batch", file, "--out-dir", out, "--json" }, { state = st })
      assert.equals(7, res.code, res.err)
      assert.equals(before, jobs_created())
      local by = {}
      for _, o in ipairs(json_lines(res.out)) do by[o.key] = o end
      assert.equals(id, by["line-1"].id)
      assert.equals("completed", by["line-1"].status)
      assert.equals("unknown", by["line-2"].status)
      assert.equals("submit_unknown", by["line-2"].error.kind)
      assert.matches("--retry-unknown", res.err, 1, true)
      res = kling({ "batch", file, "--out-dir", out, "--retry-unknown" }, { state = st })
      assert.equals(0, res.code, res.err)
      assert.equals(before + 1, jobs_created())
    end)

    it("finds the job of a crashed submit by its tag, even beside others submitted at the same time", function()
      local st = dir .. "/state-tag"
      os.execute("mkdir -p " .. q(st .. "/kling"))
      local line = '{"prompt":"tagged"}'
      local file = batch_file("tag.jsonl", { line })
      local out = dir .. "/tag-out"
      os.execute("mkdir -p " .. q(out))
      local hash = require("kling.cli.batch").hash
      -- two jobs of the same model journaled together: only the tag tells which is line 1's
      local c = require("kling").new { base_url = emu.api, token = TOKEN, journal = st .. "/kling/jobs.jsonl" }
      local other = assert(c:generate { prompt = "someone else's" })
      local mine = assert(c:submit(require("kling").DEFAULT_MODEL, { prompt = "tagged" }, { tag = "batch:line-1:test" }))
      c:close()
      helpers.write_file(out .. "/.kling-batch.jsonl",
        cjson.encode { e = "submitting", key = "line-1", hash = hash(line), t = os.time() - 1, tag = "batch:line-1:test" } .. "\n")
      local before = jobs_created()
      local res = kling({ "batch", file, "--out-dir", out, "--json" }, { state = st })
      assert.equals(0, res.code, res.err)
      assert.equals(before, jobs_created())
      local o = json_lines(res.out)[1]
      assert.equals(mine.id, o.id)
      assert.are_not.equal(other.id, o.id)
    end)

    it("on Ctrl-C cancels its queued jobs, which the next run submits again", function()
      local file = batch_file("int.jsonl", { '{"prompt":"a @emu:queue=10"}', '{"prompt":"b @emu:queue=10"}' })
      local out = dir .. "/int-out"
      local before = jobs_created()
      local p = spawn { "batch", file, "--out-dir", out }
      eventually(function()
        local _, n = (helpers.read_file(out .. "/.kling-batch.jsonl") or ""):gsub('"e":"submitted"', "")
        return n >= 2
      end, 10, "two submits")
      p.signal("INT")
      local res = p.wait(10)
      assert.equals(130, res.code, res.err)
      local _, cancelled = res.err:gsub("kling: cancelled ", "")
      assert.equals(2, cancelled)
      -- the cancelled lines are released: the next run submits them again
      local p2 = spawn { "batch", file, "--out-dir", out }
      eventually(function() return jobs_created() >= before + 4 end, 10, "the second run's submits")
      p2.signal("INT")
      assert.equals(130, p2.wait(10).code)
      assert.equals(before + 4, jobs_created())
    end)
  end)

  describe("validate, models, schema", function()
    it("validate says valid, or lists the problems with their paths", function()
      local res = kling({ "validate" }, { stdin = '{"prompt":"ok","duration":10}' })
      assert.equals(0, res.code, res.err)
      assert.equals("valid\n", res.out)
      res = kling({ "validate", "-", "--json" }, { stdin = '{"prompt":"","aspect":"1:1"}' })
      assert.equals(3, res.code)
      local o = cjson.decode(res.out)
      assert.is_false(o.valid)
      assert.equals("/prompt", o.errors[1].path)
      assert.equals("/aspect", o.errors[2].path)
      assert.matches("did you mean 'aspect_ratio'", res.err, 1, true)
      res = kling({ "validate", "--json" }, { stdin = '{"prompt":"n","duration":6.0}' })
      assert.same({ prompt = "n", duration = 6 }, cjson.decode(res.out).input)
    end)

    it("models lists the known models; schema shows fields, ranges and defaults", function()
      local res = kling { "models" }
      assert.equals(0, res.code)
      assert.matches("kling/kling-3.0/pro/text-to-video *", res.out, 1, true) -- the catalog, the default marked
      res = kling { "models", "--json" }
      assert.is_true(cjson.decode(res.out:match("^[^\n]+")).default)
      res = kling { "schema" }
      assert.equals(0, res.code)
      assert.matches("duration  integer, 3 to 15, default 5   [--duration]", res.out, 1, true)
      assert.matches("aspect_ratio  string, one of 16:9, 9:16, 1:1, default \"16:9\"", res.out, 1, true)
      assert.matches("cfg_scale  number, 0 to 1, default 0.5", res.out, 1, true)
      assert.matches("multi_prompt[].duration  integer, required, 3 to 15", res.out, 1, true)
      assert.matches("sum of multi_prompt[].duration", res.out, 1, true)
      res = kling { "schema", "kling/kling-3.0/pro/text-to-video", "--json" }
      local s = cjson.decode(res.out)
      local fields = {}
      for _, f in ipairs(s.fields) do fields[f.name] = f end
      assert.is_true(fields.prompt.required)
      assert.equals(15, fields.duration.maximum)
      assert.equals(0.5, fields.cfg_scale.default)
      assert.equals(20, fields.multi_prompt.max_items)
      assert.equals("duration", fields.multi_prompt.items.fields[2].name)
      res = kling { "schema", "acme/unknown" }
      assert.equals(2, res.code)
    end)

    it("runs the emulator", function()
      local p = spawn { "emulator", "--port", "0", "--quiet" }
      local line = eventually(function() return helpers.read_file(p.base .. ".out"):match("^(kling%-emulator api=%S+)") end,
        10, "the emulator's first line")
      p.signal("TERM")
      assert.equals(0, p.wait(5).code)
      assert.matches("^kling%-emulator api=http://127%.0%.0%.1:%d+/v1", line)
    end)
  end)
end)
