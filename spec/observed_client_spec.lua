-- The client against the service's observed answers (the emulator answers each way, by
-- directive and by fault; doc/EMULATOR.md): a result that is not ready (HTTP 400 with
-- error_code 400005, also for a while after the status said completed), the cancel
-- outcomes (cancelled with outcome cancellation_requested, cancelled without an outcome,
-- cancellation_requested then cancelled), a failed or cancelled job whose result route
-- answers 404 or 400, a completed job without a usable output. Every wait goes through the
-- same reading (job:wait, kling.wait_all, job:download, the command line's wait and result).
local helpers = require "helpers"
local kling = require "kling"
local cli_run = require "cli_run"

local TOKEN = "observed-client-token-5d1"
local FAST = { initial = 0.02, min = 0.02, near = 0.05, max = 0.1 }
local q = helpers.quote

describe("the client, against the service's observed answers", function()
  local emu, client, dir, cli

  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0.05", "--run", "0.05" }
    client = kling.new { base_url = emu.api, token = TOKEN, poll = FAST }
    dir = helpers.tmpdir()
    cli = cli_run.new { api = emu.api, token = TOKEN, dir = dir }
  end)

  teardown(function()
    if client then client:close() end
    if emu then emu:stop() end
    if cli then cli.cleanup() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  before_each(function() emu:set_faults {} end)

  local function submit(prompt)
    return assert(client:generate { prompt = prompt })
  end

  -- a second job object of the same request: nothing cached from the first
  local function fresh(job)
    return assert(client:job(job.id, job.model))
  end

  describe("a result that is not ready (error_code 400005)", function()
    it("gives job:result() of a running job kind not_ready with job_status, not bad_request", function()
      local job = submit("an unready cat @emu:result_not_ready @emu:queue=60")
      local out, err = job:result()
      assert.is_nil(out)
      assert.equals("not_ready", err.kind)
      assert.equals("in_queue", err.job_status)
      assert.equals(400005, err.code)
      assert.equals(1, emu:job_record(job.id).not_ready_answers)
    end)

    it("reads 400005 inside an HTTP 200 answer of the result route as not_ready too", function()
      local job = submit("a cat @emu:error_result=400005 @emu:queue=60")
      local _, err = job:result()
      assert.equals("not_ready", err.kind)
    end)

    it("reads 400005 on the status route by the usual rule (it is no result): bad_request", function()
      local job = submit("a cat @emu:error_status=400005@400 @emu:queue=60")
      local _, err = job:refresh()
      assert.equals("bad_request", err.kind)
    end)

    it("exits 6 from kling result ID for a running job answered 400005, and 0 once it is done", function()
      local job = submit("an unready cat @emu:result_not_ready @emu:queue=60")
      local res = cli.run { "result", job.id }
      assert.equals(6, res.code, res.err)
      assert.matches("has not ended", res.err, 1, true)
      local done = submit("a done cat @emu:result_not_ready @emu:queue=0 @emu:run=0")
      assert(done:wait { timeout = 30 })
      res = cli.run { "result", done.id }
      assert.equals(0, res.code, res.err)
      assert.matches(emu.files, res.out, 1, true)
    end)

    it("keeps fetching the result after completed while it answers 400005, and returns the output (job:wait)", function()
      local job = submit("a lagging cat @emu:result_lag=3 @emu:queue=0 @emu:run=0")
      local out, err = job:wait { timeout = 30 }
      assert.is_nil(err)
      assert.matches("^" .. emu.files:gsub("%p", "%%%0"), out.video)
      assert.equals(out.video, job.video_url)
      assert.equals(3, emu:job_record(job.id).not_ready_answers)
    end)

    it("does the same for kling.wait_all, job:download and a result lag in seconds", function()
      local a = submit("lag a @emu:result_lag=2 @emu:queue=0 @emu:run=0")
      local b = submit("lag b @emu:result_lag=0.3s @emu:queue=0 @emu:run=0")
      local outs, errs = kling.wait_all({ a, b }, { timeout = 30 })
      for i, job in ipairs { a, b } do
        assert.is_nil(errs[i], tostring(errs[i]))
        assert.equals(job.video_url, outs[i].video)
      end
      local c = submit("lag c @emu:result_lag=2 @emu:queue=0 @emu:run=0")
      local path, bytes = c:download(dir .. "/lag.mp4", { timeout = 30 })
      assert.equals(dir .. "/lag.mp4", path)
      assert.is_true(bytes > 0)
    end)

    it("makes kling.wait_any wait for the output of a job whose status already said completed (job:refresh)", function()
      local job = submit("a lagging cat @emu:result_lag=3 @emu:queue=0 @emu:run=0")
      assert.equals("completed", job:refresh())
      assert.is_nil(job.video_url)
      local first, err = kling.wait_any({ job }, { timeout = 30 })
      assert.is_nil(err)
      assert.equals(job, first)
      assert.matches("%.mp4$", job.video_url)
      assert.equals(3, emu:job_record(job.id).not_ready_answers)
      -- and a failed job whose result cannot be had is no winner with no error: its end is known
      local failed = submit("a cat @emu:fail=Model_run_failed @emu:fail_error=string @emu:no_result @emu:queue=0 @emu:run=0")
      assert.equals("failed", failed:refresh())
      assert.equals(failed, kling.wait_any({ failed }, { timeout = 30 }))
      assert.equals("failed", failed.error.kind)
    end)

    it("never keeps a not-ready result as the job's end: a wait past its deadline times out, a later one asks again", function()
      local job = submit("a cat @emu:queue=0 @emu:run=0")
      assert(fresh(job):wait { timeout = 30 }) -- it has completed
      emu:set_faults { "result:not_ready:1" }
      local late = fresh(job)
      local out, err = late:wait { timeout = 0.5 }
      assert.is_nil(out)
      assert.equals("timeout", err.kind)
      emu:set_faults {}
      out, err = late:wait { timeout = 30 }
      assert.is_nil(err)
      assert.equals(job.id, out.video:match("/v/([^/.]+)%.mp4$"))
    end)

    it("exits 0 from kling wait ID for a job whose result lags after completed", function()
      local job = submit("a lagging cat @emu:result_lag=2 @emu:queue=0 @emu:run=0")
      local res = cli.run { "wait", job.id }
      assert.equals(0, res.code, res.err)
      assert.matches(emu.files, res.out, 1, true)
    end)
  end)

  describe("cancel outcomes", function()
    for _, case in ipairs {
      { "requested", '{"status":"cancelled","outcome":"cancellation_requested"}' },
      { "bare", '{"status":"cancelled"} without an outcome' },
    } do
      it("returns true, the job cancelled, for " .. case[2], function()
        local job = submit("a cat @emu:cancel=" .. case[1] .. " @emu:queue=60")
        local ok, err = job:cancel()
        assert.is_nil(err)
        assert.is_true(ok)
        assert.equals("cancelled", job.status)
        local _, err = job:wait()
        assert.equals("cancelled", err.kind)
      end)
    end

    it("follows {\"status\":\"cancellation_requested\"} until the status says cancelled: true, the job cancelled", function()
      local job = submit("a cat @emu:cancel=pending:2 @emu:queue=60")
      local ok, err = job:cancel()
      assert.is_nil(err)
      assert.is_true(ok)
      assert.equals("cancelled", job.status)
      assert.is_true(job.cancel_requested)
    end)

    it("returns true with job.cancel_requested when the status does not say cancelled within the cancel's timeout", function()
      local job = submit("a cat @emu:cancel=pending:100000 @emu:queue=60")
      local ok, err = job:cancel { timeout = 0.3 }
      assert.is_nil(err)
      assert.is_true(ok)
      assert.is_true(job.cancel_requested)
      assert.equals("in_queue", job.status)
      local other = submit("a cat @emu:cancel=pending:100000 @emu:queue=60")
      assert.is_true(other:cancel { timeout = 0 })
      assert.is_true(other.cancel_requested)
    end)

    it("reads the faults cancel_requested, cancel_bare and cancel_pending the same way", function()
      for _, f in ipairs { "cancel_requested", "cancel_bare", "cancel_pending" } do
        emu:set_faults { "cancel:" .. f .. ":1" }
        local job = submit("a cat @emu:queue=60")
        local ok, err = job:cancel()
        assert.is_true(ok, f .. ": " .. tostring(err))
        assert.equals("cancelled", job.status, f)
      end
    end)

    it("exits 0 from kling cancel ID for each accepted answer", function()
      for _, kind in ipairs { "requested", "bare", "pending" } do
        local job = submit("a cat @emu:cancel=" .. kind .. " @emu:queue=60")
        local res = cli.run { "cancel", job.id }
        assert.equals(0, res.code, kind .. ": " .. res.err)
        assert.matches(job.id .. "  cancelled", res.out, 1, true)
      end
    end)
  end)

  describe("a failed or cancelled job whose result route answers an error", function()
    for _, shape in ipairs { "string", "object" } do
      it("ends the wait with kind failed and the status answer's message (error as a " .. shape .. "), result 404", function()
        local job = submit("a cat @emu:fail=Model_run_failed @emu:fail_error=" .. shape .. " @emu:no_result @emu:queue=0 @emu:run=0")
        local out, err = job:wait { timeout = 30 }
        assert.is_nil(out)
        assert.equals("failed", err.kind)
        assert.equals("Model run failed", err.message)
        assert.equals("not_found", err.result_error.kind)
        assert.is_true(emu:job_record(job.id).no_result_answers >= 1)
      end)
    end

    it("does the same for a result answered 400 (@emu:no_result=400), and for job:result() of a fresh job", function()
      local job = submit("a cat @emu:fail=Model_run_failed @emu:fail_error=string @emu:no_result=400 @emu:queue=0 @emu:run=0")
      local _, err = job:wait { timeout = 30 }
      assert.equals("failed", err.kind)
      assert.equals("Model run failed", err.message)
      assert.equals("bad_request", err.result_error.kind)
      local _, err2 = fresh(job):result()
      assert.equals("failed", err2.kind)
      assert.equals("Model run failed", err2.message)
    end)

    it("ends a cancelled job's wait with kind cancelled when its result route answers 404", function()
      local job = submit("a cat @emu:no_result @emu:queue=60")
      assert(job:cancel())
      local _, err = fresh(job):wait { timeout = 30 }
      assert.equals("cancelled", err.kind)
      assert.equals("not_found", err.result_error.kind)
      local _, err2 = fresh(job):result()
      assert.equals("cancelled", err2.kind)
    end)

    it("gives kind failed or cancelled, not not_ready, from job:result() when the status says so and the result route answers 400005", function()
      local job = submit("a cat @emu:fail=Model_run_failed @emu:fail_error=string @emu:error_result=400005@400*100 @emu:queue=0 @emu:run=0")
      local _, err = fresh(job):result()
      assert.equals("failed", err.kind)
      assert.equals("Model run failed", err.message)
      assert.equals("not_ready", err.result_error.kind)
      local res = cli.run { "result", job.id }
      assert.equals(5, res.code, res.err)
      assert.matches("Model run failed", res.err, 1, true)
      local gone = submit("a cat @emu:error_result=400005@400*100 @emu:queue=60")
      assert(gone:cancel())
      local _, err2 = fresh(gone):result()
      assert.equals("cancelled", err2.kind)
      res = cli.run { "result", gone.id }
      assert.equals(5, res.code, res.err)
    end)

    it("exits 5 from kling wait ID and kling result ID for such a failed job", function()
      local job = submit("a cat @emu:fail=Model_run_failed @emu:fail_error=string @emu:no_result @emu:queue=0 @emu:run=0")
      local res = cli.run { "wait", job.id }
      assert.equals(5, res.code, res.err)
      assert.matches("Model run failed", res.err, 1, true)
      res = cli.run { "result", job.id }
      assert.equals(5, res.code, res.err)
    end)
  end)

  describe("a completed job without a usable output", function()
    for _, shape in ipairs { "empty", "missing", "null", "videos_empty", "none" } do
      it("ends the wait with kind protocol, no usable output, for @emu:output=" .. shape .. "; job.video_url stays nil", function()
        local job = submit("a cat @emu:output=" .. shape .. " @emu:queue=0 @emu:run=0")
        local out, err = job:wait { timeout = 30 }
        assert.is_nil(out)
        assert.equals("protocol", err.kind)
        assert.matches("without a usable output", err.message, 1, true)
        assert.is_nil(job.video_url)
        assert.is_nil(job.output)
      end)
    end

    it("takes output.videos with one URL as the video", function()
      local job = submit("a cat @emu:output=videos @emu:queue=0 @emu:run=0")
      local out = assert(job:wait { timeout = 30 })
      assert.equals(out.videos[1], job.video_url)
    end)

    it("writes the end in the journal with the reason, and job:download leaves nothing behind", function()
      local jpath = dir .. "/journal.jsonl"
      local c = kling.new { base_url = emu.api, token = TOKEN, poll = FAST, journal = jpath }
      local job = assert(c:generate { prompt = "a cat @emu:output=empty @emu:queue=0 @emu:run=0" })
      local path, err = job:download(dir .. "/empty.mp4", { timeout = 30 })
      assert.is_nil(path)
      assert.equals("protocol", err.kind)
      assert.is_nil(io.open(dir .. "/empty.mp4"))
      assert.is_nil(io.open(dir .. "/empty.mp4.part"))
      local text = assert(helpers.read_file(jpath))
      local ended
      for line in text:gmatch("[^\n]+") do
        local v = helpers.json(line)
        if v.e == "ended" and v.id == job.id then ended = v end
      end
      assert.is_not_nil(ended)
      assert.matches("without a usable output", ended.error, 1, true)
      c:close()
    end)

    it("exits 7 from kling wait ID, naming the reason", function()
      local job = submit("a cat @emu:output=empty @emu:queue=0 @emu:run=0")
      local res = cli.run { "wait", job.id }
      assert.equals(7, res.code, res.err)
      assert.matches("without a usable output", res.err, 1, true)
    end)
  end)
  describe("timeouts like the service's own clients", function()
    it("waits 90 s for a submit's answer by default, whatever the requests' timeout", function()
      assert.equals(90, require("kling.core").DEFAULTS.submit_timeout)
      local c = kling.new { base_url = emu.api, token = TOKEN, poll = FAST, timeout = 1 }
      assert.equals(90, c.submit_timeout)
      local job, err = c:generate { prompt = "a slow submit @emu:submit_delay=2 @emu:queue=60" }
      assert.is_nil(err)
      assert.equals("in_queue", job.status)
      assert.equals(120, kling.new { base_url = emu.api, token = TOKEN, timeout = 120 }.submit_timeout)
      c:close()
    end)

    it("turns a submit not answered within submit_timeout into submit_unknown, sent once", function()
      local c = kling.new { base_url = emu.api, token = TOKEN, submit_timeout = 0.5 }
      local before = emu:stats()
      local job, err = c:generate { prompt = "a slower submit @emu:submit_delay=3 @emu:queue=60" }
      assert.is_nil(job)
      assert.equals("submit_unknown", err.kind)
      local after = emu:stats()
      assert.equals(1, after.faults.submit_attempts - before.faults.submit_attempts)
      assert.equals(1, after.jobs_created - before.jobs_created)
      assert.has_error(function() kling.new { submit_timeout = 0 } end, "kling.new: option 'submit_timeout' must be > 0")
      c:close()
    end)

    it("refuses a submit_timeout above 1e7 s in kling.new, and --submit-timeout 1e9 (exit 2), journaling no submit", function()
      for _, t in ipairs { 1e8, 1 / 0 } do
        assert.has_error(function() kling.new { base_url = emu.api, token = TOKEN, submit_timeout = t } end,
          "kling.new: option 'submit_timeout' must be > 0 and at most 10000000 seconds (about 115 days)")
      end
      local state = dir .. "/huge-submit-timeout"
      os.execute("mkdir -p " .. q(state))
      local before = emu:stats().requests.submit
      local res = cli.run({ "submit", "a cat", "--submit-timeout", "1e9" }, { state = state })
      assert.equals(2, res.code, res.err)
      assert.matches("submit_timeout' must be > 0 and at most 10000000 seconds", res.err, 1, true)
      assert.same({}, cli.journal(state))
      assert.equals(before, emu:stats().requests.submit)
    end)

    it("takes --submit-timeout S on the command line (exit 7, submit of unknown outcome)", function()
      local res = cli.run { "submit", "a slower submit @emu:submit_delay=3 @emu:queue=60", "--submit-timeout", "0.5" }
      assert.equals(7, res.code, res.err)
      assert.matches("submit_unknown", res.err, 1, true)
      res = cli.run { "submit", "a slow submit @emu:submit_delay=1 @emu:queue=60" }
      assert.equals(0, res.code, res.err)
      res = cli.run { "status", "x", "--submit-timeout", "1" }
      assert.equals(2, res.code, res.err)
    end)
  end)

  describe("the token", function()
    it("missing, ends a wait at once with kind auth, polling nothing (job:wait, kling.wait_all, kling wait)", function()
      local job = submit("a cat @emu:queue=60")
      local c = kling.new { base_url = emu.api, poll = FAST, cache_dir = false }
      local before = emu:stats().requests_total
      local _, err = assert(c:job(job.id)):wait { timeout = 5 }
      assert.equals("auth", err.kind)
      local _, errs = kling.wait_all({ assert(c:job(job.id)) }, { timeout = 5 })
      assert.equals("auth", errs[1].kind)
      assert.equals(before, emu:stats().requests_total)
      local res = cli.run({ "wait", job.id, "--timeout", "5" }, { token = false })
      assert.equals(4, res.code, res.err)
    end)

    it("is read from RUNCOMFY_API_KEY after RUNCOMFY_TOKEN and RUNCOMFY_API_TOKEN", function()
      local job = submit("a cat @emu:queue=60")
      local res = cli.run({ "status", job.id }, { token = false, env = { RUNCOMFY_API_KEY = TOKEN } })
      assert.equals(0, res.code, res.err)
      res = cli.run({ "status", job.id }, { token = false,
        env = { RUNCOMFY_API_TOKEN = TOKEN, RUNCOMFY_API_KEY = "wrong-key" } })
      assert.equals(0, res.code, res.err)
      res = cli.run({ "status", job.id }, { token = false,
        env = { RUNCOMFY_TOKEN = "wrong-token", RUNCOMFY_API_KEY = TOKEN } })
      assert.equals(4, res.code, res.err)
    end)

    for _, case in ipairs {
      { "a leading Bearer", "Bearer sekret-b1", "Bearer" },
      { "a space", "sekret b2", "whitespace" },
      { "a line break", "sekret-b3\n", "whitespace" },
      { "a control character", "sekret\1b4", "control character" },
      { "a byte that is not ASCII", "sekret\195\169b5", "not ASCII" },
    } do
      it("is refused by kling.new with " .. case[1] .. ", naming the rule and not the token", function()
        local ok, msg = pcall(kling.new, { base_url = emu.api, token = case[2] })
        assert.is_false(ok)
        assert.matches(case[3], msg, 1, true)
        assert.matches("option token", msg, 1, true)
        assert.is_nil(msg:find("sekret", 1, true))
      end)
    end

    it("is refused from the environment before anything is sent: the command exits 2 naming the variable", function()
      local before = emu:stats().requests_total
      local res = cli.run({ "submit", "a cat" }, { token = false, env = { RUNCOMFY_API_KEY = "Bearer sekret-e1" } })
      assert.equals(2, res.code, res.err)
      assert.matches("RUNCOMFY_API_KEY", res.err, 1, true)
      assert.is_nil((res.out .. res.err):find("sekret", 1, true))
      assert.equals(before, emu:stats().requests_total)
    end)
  end)
end)

describe("cancel answers that contradict themselves or say nothing (a scripted API)", function()
  local scripted = require "scripted_api"
  local ID = "0123456789abcdef0123456789abcdef"
  local dir, api

  setup(function()
    dir = helpers.tmpdir()
    api = scripted.start(dir)
  end)
  teardown(function()
    if api then api.stop() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  local function cancel_with(body, status)
    api.serve {
      { "POST", "/cancel$", { { 200, body } } },
      { "GET", "/status$", { { 200, '{"status":"' .. status .. '"}' } } },
      { "GET", "/result$", { { 200, '{"status":"completed","output":{"video":"{BASE}/v.mp4"}}' } } },
    }
    local c = kling.new { base_url = api.api, token = "t", retries = false, poll = FAST }
    local job = assert(c:job(ID, "acme/x"))
    local ok, err = job:cancel { timeout = 0 }
    return job, ok, err
  end

  for _, st in ipairs { "completed", "failed" } do
    it("never takes a status " .. st .. " with the outcome cancelled as cancelled: not_cancellable, the status stands", function()
      local job, ok, err = cancel_with('{"status":"' .. st .. '","outcome":"cancelled"}', st)
      assert.is_nil(ok)
      assert.equals("not_cancellable", err.kind)
      assert.equals(st, err.job_status)
      assert.equals(st, job.status)
      assert.is_nil(job.error)
      if st == "completed" then
        local out = assert(job:wait { timeout = 30 })
        assert.matches("/v.mp4$", out.video)
      end
    end)
  end

  for _, body in ipairs { "{}", '{"request_id":"' .. ID .. '"}', '{"status":"CANCELLED"}', '{"status":"weird_word"}' } do
    it("gives kind protocol, not not_cancellable, for the cancel answer " .. body, function()
      local job, ok, err = cancel_with(body, "in_queue")
      assert.is_nil(ok)
      assert.equals("protocol", err.kind)
      assert.matches("cancel answer", err.message, 1, true)
      assert.is_nil(job.error)
    end)
  end
end)

describe("long request ids in the command line's columns (a scripted API)", function()
  local scripted = require "scripted_api"
  local cli_run2 = require "cli_run"
  local dir, api, cli

  setup(function()
    dir = helpers.tmpdir()
    api = scripted.start(dir)
    cli = cli_run2.new { api = api.api, token = "t", dir = dir }
  end)
  teardown(function()
    if api then api.stop() end
    if cli then cli.cleanup() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  it("kling jobs lists a request id of 120 bytes (wider than string.format pads) without an internal error", function()
    local id = string.rep("a", 120)
    api.serve {
      { "POST", "^/v1/models/", { { 200, '{"request_id":"' .. id .. '"}' } } },
      { "GET", "/status$", { { 200, '{"status":"in_queue"}' } } },
    }
    local res = cli.run { "submit", "a cat", "--model", "acme/x" }
    assert.equals(0, res.code, res.err)
    res = cli.run { "jobs" }
    assert.equals(0, res.code, res.err)
    assert.matches(id .. "  ", res.out, 1, true)
    assert.matches("ID" .. string.rep(" ", 118) .. "  SUBMITTED", res.out, 1, true)
  end)
end)

describe("output.videos whose first element is no URL (a scripted API)", function()
  local scripted = require "scripted_api"
  local ID = "0123456789abcdef0123456789abcdef"
  local TOK = "videos-shape-token-3c8"
  local dir, api

  setup(function()
    dir = helpers.tmpdir()
    api = scripted.start(dir)
  end)
  teardown(function()
    if api then api.stop() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  for _, first in ipairs { '""', "null", '"  "' } do
    it("takes the first usable URL of output.videos [" .. first .. ", URL] as the video: the wait, job.video_url, job:download", function()
      api.serve {
        { "GET", "/status$", { { 200, '{"status":"completed"}' } } },
        { "GET", "/result$", { { 200, '{"status":"completed","output":{"videos":[' .. first .. ',"{BASE}/v.mp4"]}}' } } },
        { "GET", "^/v%.mp4", { { 200, "MP4DATA", "video/mp4" } } },
      }
      local c = kling.new { base_url = api.api, token = TOK, retries = false, poll = FAST }
      local job = assert(c:job(ID, "acme/x"))
      assert(job:wait { timeout = 30 })
      assert.equals(api.base .. "/v.mp4", job.video_url)
      local path = assert(job:download(dir .. "/v.mp4"))
      assert.equals("MP4DATA", helpers.read_file(path))
    end)
  end
end)

describe("a failed job's blank message (a scripted API)", function()
  local scripted = require "scripted_api"
  local ID = "0123456789abcdef0123456789abcdef"
  local dir, api

  setup(function()
    dir = helpers.tmpdir()
    api = scripted.start(dir)
  end)
  teardown(function()
    if api then api.stop() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  it("passes over a blank error message to the status answer's, else says the service gave no reason", function()
    api.serve {
      { "GET", "/status$", { { 200, '{"status":"failed","error":"Model run failed"}' } } },
      { "GET", "/result$", { { 200, '{"status":"failed","error":{"message":"  \\t "}}' } } },
    }
    local c = kling.new { base_url = api.api, token = "blank-message-token-0a1", retries = false, poll = FAST }
    local _, err = assert(c:job(ID, "acme/x")):wait { timeout = 30 }
    assert.equals("failed", err.kind)
    assert.equals("Model run failed", err.message)
    api.serve {
      { "GET", "/status$", { { 200, '{"status":"failed","error":" "}' } } },
      { "GET", "/result$", { { 200, '{"status":"failed","error_message":"   "}' } } },
    }
    _, err = assert(c:job(ID, "acme/x")):wait { timeout = 30 }
    assert.equals("failed", err.kind)
    assert.equals("the job failed (the service gave no reason)", err.message)
  end)
end)
