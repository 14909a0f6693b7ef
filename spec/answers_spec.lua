-- One rule for what an answer of the service means, on every route a wait uses: an
-- error whose kind is retryable (408, 429, 5xx, as an HTTP status or as the family of an
-- error_code inside an HTTP 200 body) is tried again until the wait's deadline; one that
-- is not (auth, payment, not found) ends the wait with its kind. The rule lives in the C
-- core (kanswer_kind, kcore_error_code) and the engine, the poller and errors.lua all use
-- it. The emulator's @emu:error_ROUTE directives answer a job's first requests on a route
-- with an error body (doc/EMULATOR.md).
local helpers = require "helpers"
local kling = require "kling"
local core = require "kling.core"
local errors = require "kling.errors"

local TOKEN = "answers-token-5e1"

describe("one rule for error answers", function()
  local emu

  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0.3", "--run", "0.2" }
  end)
  teardown(function()
    if emu then emu:stop() end
  end)

  local function client(extra)
    local opts = { base_url = emu.api, token = TOKEN, timeout = 5,
      retries = { max = 3, base = 0.01, cap = 0.05 },
      poll = { initial = 0.05, min = 0.05, near = 0.2, max = 0.3 } }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return kling.new(opts)
  end

  local function served(id, route)
    return emu:job_record(id).error_answers[route]
  end

  describe("the rule itself (kling.core)", function()
    it("reads an error_code only from a whole number or a string of digits", function()
      assert.equals(500001, core.error_code(500001))
      assert.equals(500001, core.error_code(500001.0))
      assert.equals(404001, core.error_code("404001"))
      for _, v in ipairs { 1.5, "12abc", "", " 5", "5 ", -1, 2 ^ 60, 0 / 0, 1 / 0, true, {} } do
        assert.is_nil(core.error_code(v), tostring(v))
      end
      assert.is_nil(core.error_code(require("cjson").null))
      assert.is_nil(errors.numeric_code(nil))
    end)

    it("says the kind and whether to retry, the same for a status and a code's family", function()
      local cases = {
        { 500, nil, "server", true }, { 501, nil, "server", true }, { 503, nil, "server", true },
        { 599, nil, "server", true }, { 429, nil, "rate_limited", true }, { 408, nil, "timeout", true },
        { 401, nil, "auth", false }, { 403, nil, "auth", false }, { 402, nil, "payment", false },
        { 404, nil, "not_found", false }, { 400, nil, "bad_request", false }, { 422, nil, "bad_request", false },
        { 302, nil, "protocol", false },
        { 200, 500001, "server", true }, { 200, 503001, "server", true }, { 200, 429001, "rate_limited", true },
        { 200, 408001, "timeout", true }, { 200, 401001, "auth", false }, { 200, 403001, "auth", false },
        { 200, 402001, "payment", false }, { 200, 400002, "payment", false }, { 200, 400004, "auth", false },
        { 200, 404001, "not_found", false }, { 200, 404002, "not_found", false }, { 200, 400001, "bad_request", false },
        { 200, 12, "protocol", false }, { 503, 404001, "not_found", false }, { 503, 400002, "payment", false },
        { 404, 500001, "not_found", false },
      }
      for _, c in ipairs(cases) do
        local kind, retryable = core.answer_kind(c[1], c[2])
        assert.equals(c[3], kind, c[1] .. "/" .. tostring(c[2]))
        assert.equals(c[4], retryable, c[1] .. "/" .. tostring(c[2]))
        local err = errors.from_answer(c[1], { error_code = c[2] }, function(s) return s end)
        assert.equals(c[3], err.kind)
        assert.equals(c[4], err.retryable)
      end
      assert.is_nil(core.answer_kind(200))
      assert.is_nil(core.answer_kind(204, nil))
      assert.is_nil(errors.from_answer(200, { status = "in_queue", error_code = 1.5 }, tostring))
      assert.is_nil(errors.from_answer(200, { status = "in_queue", error_code = "12abc" }, tostring))
    end)
  end)

  describe("job:wait", function()
    for _, code in ipairs { "500001", "502001", "503001", "504001", "429001", "408001", "599001" } do
      it("keeps polling after a status answered once with HTTP 200 and error_code " .. code .. ", and completes", function()
        local c = client()
        local job = assert(c:generate { prompt = "status " .. code .. " @emu:error_status=" .. code })
        local out, err = job:wait()
        assert.is_nil(err)
        assert.is_string(out.video)
        assert.equals("completed", job.status)
        assert.equals(1, served(job.id, "status"))
        c:close()
      end)
    end

    it("completes the same schedule when the error comes as HTTP 503 (the neighbour)", function()
      local c = client()
      local job = assert(c:generate { prompt = "status 503 @emu:error_status=503001@503" })
      assert(job:wait())
      assert.equals(1, served(job.id, "status"))
      c:close()
    end)

    it("keeps polling through several error bodies in a row, until the deadline", function()
      local c = client()
      local job = assert(c:generate { prompt = "many @emu:error_status=500001*4" })
      assert(job:wait())
      assert.equals(4, served(job.id, "status"))
      -- and past the deadline it is a timeout (the job goes on), not a server error
      local held = assert(c:generate { prompt = "forever @emu:error_status=503001*100000" })
      local out, err = held:wait { timeout = 0.6 }
      assert.is_nil(out)
      assert.equals("timeout", err.kind)
      assert.is_true(served(held.id, "status") >= 2)
      c:close()
    end)

    it("keeps fetching after a result answered once with HTTP 200 and error_code 500001", function()
      local c = client()
      local job = assert(c:generate { prompt = "result @emu:error_result=500001" })
      local out = assert(job:wait())
      assert.is_string(out.video)
      assert.equals(1, served(job.id, "result"))
      c:close()
    end)

    it("retries a 429-family error body on the result route too", function()
      local c = client()
      local job = assert(c:generate { prompt = "result 429 @emu:error_result=429001*2" })
      assert(job:wait())
      assert.equals(2, served(job.id, "result"))
      c:close()
    end)

    local final = {
      { "401001", "auth" }, { "403001", "auth" }, { "402001", "payment" }, { "400002", "payment" },
      { "404001", "not_found" }, { "404002", "not_found" }, { "400004", "auth" },
    }
    for _, case in ipairs(final) do
      local code, kind = case[1], case[2]
      it("ends the wait with kind " .. kind .. " on a status answered HTTP 200 with error_code " .. code, function()
        local c = client()
        local job = assert(c:generate { prompt = "final @emu:error_status=" .. code })
        local out, err = job:wait()
        assert.is_nil(out)
        assert.equals(kind, err.kind)
        assert.equals(tonumber(code), err.code)
        assert.equals(200, err.status)
        assert.is_false(err.retryable)
        assert.equals(1, served(job.id, "status"))
        c:close()
      end)
    end

    it("ends the wait with not_found on a result answered HTTP 200 with error_code 404001", function()
      local c = client()
      local job = assert(c:generate { prompt = "gone @emu:error_result=404001" })
      local out, err = job:wait()
      assert.is_nil(out)
      assert.equals("not_found", err.kind)
      c:close()
    end)

    it("reads error_code 1.5, \"12abc\" and null beside a status as no error: the job completes", function()
      local c = client()
      for _, v in ipairs { "1.5", "12abc", "null" } do
        local job = assert(c:generate { prompt = "odd code @emu:extra_code=" .. v })
        local out, err = job:wait()
        assert.is_nil(err, v)
        assert.is_string(out.video, v)
        assert.equals(v, tostring(emu:job_record(job.id).directives.extra_code))
      end
      c:close()
    end)

    it("ends the wait with kind protocol on a 200 with error_code 1.5, \"12abc\" or null and no status, "
      .. "answered so again and again (once is retried: spec/status_answers_spec.lua)", function()
      local c = client()
      for _, v in ipairs { "1.5", "12abc", "null" } do
        local job = assert(c:generate { prompt = "odd error @emu:error_status=" .. v .. "*20" })
        local out, err = job:wait()
        assert.is_nil(out, v)
        assert.equals("protocol", err.kind, v)
        assert.is_nil(err.code, v)
        -- the direct route says the same
        local job2 = assert(c:generate { prompt = "odd error @emu:error_status=" .. v .. "*20" })
        local st, err2 = job2:refresh()
        assert.is_nil(st)
        assert.equals("protocol", err2.kind, v)
      end
      c:close()
    end)
  end)

  describe("a submit", function()
    it("reads HTTP 200 with error_code 500001 as a submit of unknown outcome, sent once, as an HTTP 500", function()
      local dir = helpers.tmpdir()
      local c = client { journal = dir .. "/j.jsonl" }
      local before = emu:stats().faults.submit_attempts
      local job, err = c:generate { prompt = "paid @emu:error200=500001" }
      assert.is_nil(job)
      assert.equals("submit_unknown", err.kind)
      assert.is_false(err.retryable)
      assert.equals(500001, err.code)
      assert.equals(1, emu:stats().faults.submit_attempts - before)
      local _, unknown = c:resume()
      assert.equals(1, #unknown)
      -- a definite refusal inside a 200 stays what it is
      local _, perr = c:generate { prompt = "broke @emu:error200=400002" }
      assert.equals("payment", perr.kind)
      c:close()
      os.execute("rm -rf " .. helpers.quote(dir))
    end)
  end)

  describe("the other routes a wait uses", function()
    it("cancel: an HTTP 200 error body with error_code 500001 is tried again, then the wait ends cancelled", function()
      local c = client()
      local job = assert(c:generate { prompt = "cancel me @emu:queue=30 @emu:error_cancel=500001" })
      local ok, err = job:cancel()
      assert.is_nil(err)
      assert.is_true(ok)
      assert.equals(1, served(job.id, "cancel"))
      assert.is_true(emu:job_record(job.id).cancelled)
      local out, werr = job:wait()
      assert.is_nil(out)
      assert.equals("cancelled", werr.kind)
      c:close()
    end)

    it("cancel: a non-retryable error body (404001) is not tried again", function()
      local c = client()
      local job = assert(c:generate { prompt = "cancel gone @emu:queue=30 @emu:error_cancel=404001*5" })
      local ok, err = job:cancel()
      assert.is_nil(ok)
      assert.equals("not_found", err.kind)
      assert.equals(1, served(job.id, "cancel"))
      assert.is_false(emu:job_record(job.id).cancelled)
      c:close()
    end)

    it("refresh and result: HTTP 200 error bodies are retried with the client's backoff, up to retries.max", function()
      local c = client()
      local job = assert(c:generate { prompt = "direct @emu:error_status=503001*2 @emu:error_result=500001" })
      assert(job:refresh())
      assert.equals(2, served(job.id, "status"))
      local _, err = job:result() -- the retried answer says the job has not ended
      assert.equals("not_ready", err.kind)
      assert.equals(1, served(job.id, "result"))
      local stats = c._engine:stats()
      assert.equals(3, stats.retries)
      -- past retries.max (3) the error comes back, as for an HTTP 503
      local stuck = assert(c:generate { prompt = "direct stuck @emu:error_status=500001*10" })
      local st, serr = stuck:refresh()
      assert.is_nil(st)
      assert.equals("server", serr.kind)
      assert.equals(200, serr.status)
      assert.equals(500001, serr.code)
      assert.equals(4, served(stuck.id, "status"))
      c:close()
    end)

    it("kling.wait_all, kling.wait_any, kling.run and job:download go on after a retryable error body", function()
      local c = client()
      local dir = helpers.tmpdir()
      local a = assert(c:generate { prompt = "all a @emu:error_status=500001" })
      local b = assert(c:generate { prompt = "all b @emu:error_result=503001" })
      local outs, errs = kling.wait_all { a, b }
      assert.is_nil(errs[1])
      assert.is_nil(errs[2])
      assert.is_string(outs[1].video)
      assert.is_string(outs[2].video)
      local d = assert(c:generate { prompt = "any @emu:error_status=429001" })
      local first = kling.wait_any { d }
      assert.equals(d, first)
      local ran = kling.run(function()
        local job = assert(c:generate { prompt = "run @emu:error_status=500001 @emu:error_result=500001" })
        return job:wait()
      end)
      assert.is_string(ran.video)
      local dl = assert(c:generate { prompt = "download @emu:error_status=502001" })
      local path, bytes = dl:download(dir .. "/clip.mp4")
      assert.equals(dir .. "/clip.mp4", path)
      assert.is_true(bytes > 0)
      os.execute("rm -rf " .. helpers.quote(dir))
      c:close()
    end)

    it("the command line waits, cancels and downloads through retryable error bodies", function()
      local dir = helpers.tmpdir()
      local cli = require("cli_run").new { api = emu.api, token = TOKEN, dir = dir }
      local res = cli.run { "generate", "cli @emu:error_status=500001*2 @emu:error_result=503001", "-o", dir .. "/c.mp4" }
      assert.equals(0, res.code, res.err)
      assert.equals(dir .. "/c.mp4\n", res.out)
      res = cli.run { "submit", "cli cancel @emu:queue=30 @emu:error_cancel=500001" }
      local id = res.out:gsub("%s+$", "")
      res = cli.run { "cancel", id }
      assert.equals(0, res.code, res.err)
      assert.is_true(emu:job_record(id).cancelled)
      res = cli.run { "submit", "cli payment @emu:error_status=402001" }
      res = cli.run { "wait", (res.out:gsub("%s+$", "")) }
      assert.equals(4, res.code, res.err)
      os.execute("rm -rf " .. helpers.quote(dir))
    end)

    it("kling.wait_all ends only the job whose error is not retryable", function()
      local c = client()
      local ok = assert(c:generate { prompt = "fine @emu:error_status=500001" })
      local bad = assert(c:generate { prompt = "bad @emu:error_status=402001" })
      local outs, errs = kling.wait_all { ok, bad }
      assert.is_string(outs[1].video)
      assert.equals("payment", errs[2].kind)
      c:close()
    end)
  end)
end)
