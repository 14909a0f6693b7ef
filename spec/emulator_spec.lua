-- Specs of the emulator itself. Most run the emulator in this process on a manual clock
-- (spec/emulator_harness.lua) and talk HTTP to it over loopback from the same loop: no
-- process per request, no window of real time. The program's own behaviour (its first
-- line, flags, signals, log) is specced on bin/kling-emulator, with the same client.
-- They do not use the kling client.
local helpers = require "helpers"
local harness = require "emulator_harness"
local cjson = require "cjson"
local cqueues = require "cqueues"
local emulator = require "kling.emulator"

local json, quote = helpers.json, helpers.quote
local TOKEN = "sekret-token-123"
local MODEL = "kling/kling-3.0/pro/text-to-video"
local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

local now = cqueues.monotime

local function capture(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("*a")
  p:close()
  return out
end

-- A shell command run in the repository.
local function in_root(cmd)
  return capture("cd " .. quote(helpers.root) .. " && " .. cmd)
end

describe("kling-emulator", function()
  local emu

  setup(function()
    emu = harness.start{ queue = 0.3, run = 0.3, token = TOKEN, seed = 7 }
  end)

  teardown(function()
    if emu then emu:stop() end
  end)

  local function api(method, path, opts)
    return emu:call(method, path, opts)
  end

  -- submit a prompt; returns the decoded answer
  local function submit(prompt, extra)
    local input = { prompt = prompt }
    for k, v in pairs(extra or {}) do input[k] = v end
    local res = api("POST", "/models/" .. MODEL, { body = cjson.encode(input) })
    assert.equal(200, res.status, res.body)
    return json(res.body)
  end

  local function status_of(id)
    local res = api("GET", "/requests/" .. id .. "/status")
    assert.equal(200, res.status, res.body)
    return json(res.body)
  end

  local function result_of(id, query)
    local res = api("GET", "/requests/" .. id .. "/result" .. (query or ""))
    assert.equal(200, res.status, res.body)
    return json(res.body)
  end

  -- submit, then move the clock past the job's queue + run time (default 0.3 + 0.3)
  local function finished_job(prompt, extra, seconds)
    local answer = submit(prompt, extra)
    emu:advance((seconds or 0.6) + 0.15)
    return answer.request_id
  end

  describe("the program", function()
    it("prints 'kling-emulator api=... files=... stats=...' as its first line", function()
      local e = helpers.start_emulator{}
      finally(function() e:stop() end)
      local api_port, files_port, stats_port = e.first_line:match(
        "^kling%-emulator api=http://127%.0%.0%.1:(%d+)/v1 files=http://127%.0%.0%.1:(%d+) "
        .. "stats=http://127%.0%.0%.1:(%d+)/__emulator/stats$")
      assert.is_not_nil(api_port, e.first_line)
      assert.equal(api_port, stats_port)
      assert.are_not.equal(api_port, files_port)
    end)

    it("prints its usage for --help and -h and exits 0", function()
      for _, flag in ipairs{ "--help", "-h" } do
        local out = in_root("lua5.4 bin/kling-emulator " .. flag .. "; echo \"rc=$?\"")
        assert.matches("^Usage: kling%-emulator", out)
        assert.matches("%-%-video%-bytes", out)
        assert.matches("rc=0\n$", out)
      end
    end)

    it("refuses an unknown flag with exit status 2, suggesting the flag meant", function()
      local out = in_root("lua5.4 bin/kling-emulator --bogus 2>&1; echo \"rc=$?\"")
      assert.matches("unknown argument: %-%-bogus", out)
      assert.matches("Usage: kling%-emulator", out)
      assert.matches("rc=2\n$", out)
      out = in_root("lua5.4 bin/kling-emulator --prot 0 2>&1; echo \"rc=$?\"")
      assert.matches("unknown argument: %-%-prot\nDid you mean '%-%-port'%?", out)
      assert.matches("rc=2\n$", out)
      out = in_root("lua5.4 bin/kling-emulator stray 2>&1; echo \"rc=$?\"")
      assert.matches("unknown argument: stray", out)
      assert.matches("rc=2\n$", out)
    end)

    it("refuses a bad value with exit status 2, naming the flag", function()
      for _, case in ipairs{
        { "--port 70000", "bad value for %-%-port: 70000" },
        { "--queue 3:2", "bad value for %-%-queue: 3:2" },
        { "--seed 1.5", "bad value for %-%-seed: 1.5" },
        { "--clock sundial", "bad value for %-%-clock: sundial" },
        { "--token ''", "bad value for %-%-token" },
        { "--port", "option '%-%-port' requires an argument" },
        { "--quiet=yes", "option '%-%-quiet' does not take arguments" },
      } do
        local out = in_root("lua5.4 bin/kling-emulator " .. case[1] .. " 2>&1; echo \"rc=$?\"")
        assert.matches(case[2], out, nil, case[1])
        assert.matches("rc=2\n$", out, nil, case[1])
      end
    end)

    -- the emulator is killed once it has printed its first line, which it prints after its
    -- signal handlers are in place: no window in which the signal could come too early
    it("exits with status 0 on SIGTERM and on SIGINT", function()
      for _, sig in ipairs{ "TERM", "INT" } do
        local dir = helpers.tmpdir()
        local out = in_root(string.format("lua5.4 bin/kling-emulator --port 0 --quiet >%s & p=$!; "
          .. "n=0; until [ -s %s ] || [ $n -ge 1000 ]; do sleep 0.02; n=$((n+1)); done; "
          .. "kill -%s $p; wait $p; echo \"rc=$?\"", quote(dir .. "/out"), quote(dir .. "/out"), sig))
        os.execute("rm -rf " .. quote(dir))
        assert.equal("rc=0\n", out, "after SIG" .. sig)
      end
    end)

    it("exits with status 0 when stdin reaches EOF under --exit-on-stdin-eof", function()
      local out = in_root("lua5.4 bin/kling-emulator --port 0 --quiet --exit-on-stdin-eof </dev/null >/dev/null; "
        .. "echo \"rc=$?\"")
      assert.equal("rc=0\n", out)
    end)

    it("logs one line per request on stderr unless --quiet", function()
      local e = harness.remote(helpers.start_emulator({ "--token", "t" }, { quiet = false }))
      finally(function() e:stop() end)
      assert.equal(401, e:call("GET", "/requests/abc/status", { token = false }).status)
      assert.equal(404, e:call("GET", "/requests/abc/status", { token = "t" }).status)
      e:stats() -- answered after the lines of the requests before it were written
      local log = e.process:stderr()
      assert.matches("api GET /v1/requests/abc/status 401\n", log, 1, true)
      assert.matches("api GET /v1/requests/abc/status 404\n", log, 1, true)
    end)

    it("presets --load: jobs finish 1 to 5 s after submit, no request log", function()
      local opts = assert(emulator.parse_args{ "--load" })
      local server = emulator.new(opts)
      assert.is_true(server.quiet)
      assert.same({ 0, 1, 1, 4 }, { server.queue_lo, server.queue_hi, server.run_lo, server.run_hi })
      local kept = emulator.new(assert(emulator.parse_args{ "--load", "--run", "7", "--queue", "0" }))
      assert.same({ 0, 0, 7, 7 }, { kept.queue_lo, kept.queue_hi, kept.run_lo, kept.run_hi })
      -- the program itself, without --quiet: nothing on stderr
      local e = harness.remote(helpers.start_emulator({ "--load", "--seed", "3" }, { quiet = false }))
      finally(function() e:stop() end)
      assert.equal("[]", e:http("GET", e.root .. "/__emulator/jobs").body)
      for _ = 1, 4 do
        local res = e:call("POST", "/models/" .. MODEL, { token = "t", body = '{"prompt":"x"}' })
        assert.equal(200, res.status)
        assert.equal(200, e:http("GET", json(res.body).status_url, { token = "t" }).status)
      end
      local list = json(e:http("GET", e.root .. "/__emulator/jobs").body)
      assert.equal(4, #list)
      for _, j in ipairs(list) do
        assert.is_true(j.queue_seconds >= 0 and j.queue_seconds <= 1)
        assert.is_true(j.run_seconds >= 1 and j.run_seconds <= 4)
        local total = j.ends_at - j.created_at_clock
        assert.is_true(total >= 1 - 1e-6 and total <= 5 + 1e-6)
      end
      assert.equal("", e.process:stderr())
    end)

    it("runs on a manual clock under --clock manual, driven by POST /__emulator/clock", function()
      local e = harness.remote(helpers.start_emulator{ "--clock", "manual", "--queue", "10", "--run", "20" })
      finally(function() e:stop() end)
      local clock = e:get_json("/__emulator/clock")
      assert.equal("manual", clock.clock)
      local id = json(e:call("POST", "/models/" .. MODEL, { token = "t", body = '{"prompt":"x"}' }).body).request_id
      assert.equal("in_queue", json(e:call("GET", "/requests/" .. id .. "/status", { token = "t" }).body).status)
      -- the clock stands still between requests, however long they take
      assert.equal(clock.now, e:get_json("/__emulator/clock").now)
      assert.near(clock.now + 10.5, e:advance(10.5), 1e-6)
      assert.equal("in_progress", json(e:call("GET", "/requests/" .. id .. "/status", { token = "t" }).body).status)
      local at = e:get_json("/__emulator/clock", "POST", cjson.encode{ now = clock.now + 31 })
      assert.near(clock.now + 31, at.now, 1e-6)
      assert.equal("completed", json(e:call("GET", "/requests/" .. id .. "/status", { token = "t" }).body).status)
      local record = e:job_record(id)
      assert.near(record.created_at_clock + 30, record.ends_at, 1e-6)
    end)
  end)

  describe("authentication", function()
    it("answers 401 with error_code 403001 when the bearer token is missing", function()
      local res = api("GET", "/requests/abc/status", { token = false })
      assert.equal(401, res.status)
      local body = json(res.body)
      assert.equal(403001, body.error_code)
      assert.equal("Missing bearer token", body.error_message)
    end)

    it("answers 403 with error_code 403001 for a wrong token and does not echo it", function()
      local res = api("POST", "/models/" .. MODEL, { token = "wrong-token-xyz", body = '{"prompt":"a cat"}' })
      assert.equal(403, res.status)
      local body = json(res.body)
      assert.equal(403001, body.error_code)
      assert.equal("Invalid token", body.error_message)
      assert.is_nil(res.body:find("wrong-token-xyz", 1, true))
      assert.is_nil(res.head:find("wrong-token-xyz", 1, true))
    end)

    it("answers 403 for an Authorization header that is not a bearer token", function()
      local res = api("GET", "/requests/abc/status", { token = false, headers = { "Authorization: Basic Zm9vOmJhcg==" } })
      assert.equal(403, res.status)
      assert.equal(403001, json(res.body).error_code)
    end)

    it("counts refused requests as auth_failures", function()
      local before = emu:stats().auth_failures
      api("GET", "/requests/abc/status", { token = false })
      api("GET", "/requests/abc/status", { token = "nope" })
      assert.equal(before + 2, emu:stats().auth_failures)
    end)

    it("accepts any non-empty bearer token when started without --token", function()
      local open = harness.start{}
      finally(function() open:stop() end)
      local res = open:call("POST", "/models/" .. MODEL, { token = "anything", body = '{"prompt":"a cat"}' })
      assert.equal(200, res.status)
      res = open:call("GET", "/requests/abc/status", { token = false })
      assert.equal(401, res.status)
    end)
  end)

  describe("submit", function()
    it("answers request_id and the status, result and cancel URLs on the API host", function()
      local answer = submit("a red fox in the snow")
      assert.matches(UUID, answer.request_id)
      assert.matches("^[A-Za-z0-9_-]+$", answer.request_id)
      local base = emu.api .. "/requests/" .. answer.request_id
      assert.equal(base .. "/status", answer.status_url)
      assert.equal(base .. "/result", answer.result_url)
      assert.equal(base .. "/cancel", answer.cancel_url)
    end)

    it("answers with Content-Type application/json and a correct Content-Length", function()
      local res = api("POST", "/models/" .. MODEL, { body = '{"prompt":"a cat"}' })
      assert.equal("application/json", res.headers["content-type"])
      assert.equal(#res.body, tonumber(res.headers["content-length"]))
    end)

    it("gives every job a different id", function()
      local a, b = submit("one"), submit("two")
      assert.are_not.equal(a.request_id, b.request_id)
    end)

    it("derives the same ids from the same --seed", function()
      local ids = {}
      for i = 1, 2 do
        local e = harness.start(assert(emulator.parse_args{ "--seed", "42" }))
        local res = e:call("POST", "/models/" .. MODEL, { token = "t", body = '{"prompt":"x"}' })
        e:stop()
        ids[i] = json(res.body).request_id
      end
      assert.equal(ids[1], ids[2])
    end)

    it("answers 422 with a detail array when prompt is missing", function()
      local res = api("POST", "/models/" .. MODEL, { body = '{"duration":5}' })
      assert.equal(422, res.status)
      local body = json(res.body)
      assert.is_string(body.error_message)
      assert.same({ { loc = { "body", "prompt" }, msg = "field required", type = "value_error.missing" } }, body.detail)
    end)

    it("answers 422 for an empty prompt, a non-string prompt and a non-object body", function()
      for _, text in ipairs{ '{"prompt":""}', '{"prompt":"   "}', '{"prompt":5}', '["a"]', '"a"' } do
        local res = api("POST", "/models/" .. MODEL, { body = text })
        assert.equal(422, res.status, text)
        local body = json(res.body)
        assert.is_string(body.error_message)
        assert.is_table(body.detail)
      end
    end)

    it("answers 400 with error_message for malformed JSON", function()
      local res = api("POST", "/models/" .. MODEL, { body = '{"prompt": "a cat"' })
      assert.equal(400, res.status)
      assert.is_string(json(res.body).error_message)
    end)

    it("reads a chunked request body", function()
      local res = api("POST", "/models/" .. MODEL, {
        body = '{"prompt":"chunked cat"}', headers = { "Transfer-Encoding: chunked" },
      })
      assert.equal(200, res.status, res.body)
      local record = emu:job_record(json(res.body).request_id)
      assert.equal("chunked cat", record.input.prompt)
    end)

    -- the client sends the body only once the 100 has come: without it, no answer
    it("answers Expect: 100-continue with 100 Continue before reading the body", function()
      local res = api("POST", "/models/" .. MODEL, { body = '{"prompt":"patient cat"}', expect100 = true })
      assert.equal(200, res.status, res.body)
      assert.is_true(res.continued)
      assert.equal("patient cat", emu:job_record(json(res.body).request_id).input.prompt)
    end)

    it("accepts any slash-separated model id", function()
      local res = api("POST", "/models/kling/kling-3.0/standard/image-to-video", { body = '{"prompt":"x"}' })
      assert.equal(200, res.status)
      assert.equal("kling/kling-3.0/standard/image-to-video", emu:job_record(json(res.body).request_id).model_id)
    end)
  end)

  describe("job lifecycle", function()
    it("goes in_queue with a falling queue_position, then in_progress, then completed", function()
      local answer = submit("a slow cat @emu:queue=0.9 @emu:run=0.3")
      local id = answer.request_id
      local s1 = status_of(id)
      assert.equal("in_queue", s1.status)
      assert.equal(3, s1.queue_position)
      assert.equal(id, s1.request_id)
      assert.equal(answer.status_url, s1.status_url)
      assert.equal(answer.result_url, s1.result_url)
      emu:advance(0.55)
      local s2 = status_of(id)
      assert.equal("in_queue", s2.status)
      assert.equal(1, s2.queue_position) -- 3 * (0.9 - 0.55) / 0.9, rounded
      emu:advance(0.45)
      local s3 = status_of(id)
      assert.equal("in_progress", s3.status)
      assert.is_string(s3.instance_id)
      assert.is_nil(s3.queue_position)
      emu:advance(0.35)
      local s4 = status_of(id)
      assert.equal("completed", s4.status)
      assert.is_nil(s4.instance_id)
    end)

    it("follows --queue and --run when the prompt sets no timing", function()
      local answer = submit("an ordinary cat")
      assert.equal("in_queue", status_of(answer.request_id).status)
      emu:advance(0.29)
      assert.equal("in_queue", status_of(answer.request_id).status)
      emu:advance(0.02)
      assert.equal("in_progress", status_of(answer.request_id).status)
      emu:advance(0.28)
      assert.equal("in_progress", status_of(answer.request_id).status)
      emu:advance(0.02)
      assert.equal("completed", status_of(answer.request_id).status)
    end)

    it("answers the result route with the current status before the job is done", function()
      local answer = submit("an impatient cat")
      local result = result_of(answer.request_id)
      assert.equal("in_queue", result.status)
      assert.equal(answer.request_id, result.request_id)
      assert.is_number(result.queue_position)
      assert.is_nil(result.output)
    end)

    it("answers the result with output.video on the file host once completed", function()
      local id = finished_job("a finished cat")
      local result = result_of(id)
      assert.equal("completed", result.status)
      assert.equal(id, result.request_id)
      assert.equal(emu.files .. "/v/" .. id .. ".mp4", result.output.video)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", result.created_at)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", result.finished_at)
      assert.is_true(result.finished_at >= result.created_at)
      assert.is_nil(result.cost)
    end)

    it("adds a numeric cost with ?include_cost=true that scales with the duration", function()
      local a = submit("a priced cat @emu:queue=0 @emu:run=0")
      local b = submit("a longer priced cat @emu:queue=0 @emu:run=0", { duration = 10 })
      emu:advance(0.05)
      assert.equal(0.56, result_of(a.request_id, "?include_cost=true").cost)
      assert.equal(1.12, result_of(b.request_id, "?include_cost=true").cost)
      assert.is_nil(result_of(a.request_id, "?include_cost=false").cost)
    end)

    it("reports cost 0 for a failed and a cancelled job, and none before the end", function()
      local failed = submit("a priced failure @emu:fail @emu:queue=0 @emu:run=0")
      local queued = submit("a priced wait @emu:queue=5")
      emu:advance(0.05)
      assert.equal(0, result_of(failed.request_id, "?include_cost=1").cost)
      assert.is_nil(result_of(queued.request_id, "?include_cost=true").cost)
      api("POST", "/requests/" .. queued.request_id .. "/cancel")
      assert.equal(0, result_of(queued.request_id, "?include_cost=true").cost)
    end)

    it("cancels a queued job, answers the same for a second cancel, and reports it cancelled", function()
      local answer = submit("a cat to cancel @emu:queue=5")
      local id = answer.request_id
      local res = api("POST", "/requests/" .. id .. "/cancel")
      assert.equal(200, res.status)
      assert.same({ request_id = id, status = "cancelled", outcome = "cancelled" }, json(res.body))
      res = api("POST", "/requests/" .. id .. "/cancel")
      assert.same({ request_id = id, status = "cancelled", outcome = "cancelled" }, json(res.body))
      assert.equal("cancelled", status_of(id).status)
      local result = result_of(id)
      assert.equal("cancelled", result.status)
      assert.is_string(result.created_at)
      assert.is_nil(result.output)
      emu:advance(10) -- and it stays cancelled after its queue and run time
      assert.equal("cancelled", status_of(id).status)
      assert.equal(404, emu:http("GET", emu.files .. "/v/" .. id .. ".mp4").status)
    end)

    it("refuses to cancel a running job with outcome not_cancellable", function()
      local answer = submit("a busy cat @emu:queue=0 @emu:run=5")
      emu:advance(0.05)
      local res = api("POST", "/requests/" .. answer.request_id .. "/cancel")
      assert.equal(200, res.status)
      assert.same({ request_id = answer.request_id, status = "in_progress", outcome = "not_cancellable" }, json(res.body))
      assert.equal("in_progress", status_of(answer.request_id).status)
    end)

    it("refuses to cancel a finished job with outcome not_cancellable", function()
      local answer = submit("a done cat @emu:queue=0 @emu:run=0")
      emu:advance(0.05)
      local body = json(api("POST", "/requests/" .. answer.request_id .. "/cancel").body)
      assert.same({ request_id = answer.request_id, status = "completed", outcome = "not_cancellable" }, body)
    end)

    it("answers 404 with error_code 404001 for an unknown request id", function()
      for _, route in ipairs{ "status", "result" } do
        local res = api("GET", "/requests/00000000-0000-4000-8000-000000000000/" .. route)
        assert.equal(404, res.status)
        assert.same({ error_code = 404001, error_message = "Request not found" }, json(res.body))
      end
      local res = api("POST", "/requests/no-such-id/cancel")
      assert.equal(404, res.status)
      assert.equal(404001, json(res.body).error_code)
    end)

    it("answers 400 with error_code 400001 for a request id of the wrong shape", function()
      for _, id in ipairs{ "bad.id", "bad%20id", string.rep("a", 129) } do
        local res = api("GET", "/requests/" .. id .. "/status")
        assert.equal(400, res.status, id)
        assert.same({ error_code = 400001, error_message = "Invalid resource identifier" }, json(res.body))
      end
      assert.equal(404, api("GET", "/requests/" .. string.rep("a", 128) .. "/status").status)
    end)

    it("answers 404 with error_code 404001 for an unknown route", function()
      local res = api("GET", "/nothing/here")
      assert.equal(404, res.status)
      assert.equal(404001, json(res.body).error_code)
      res = emu:http("GET", emu.root .. "/elsewhere")
      assert.equal(404, res.status)
      assert.equal(404001, json(res.body).error_code)
    end)

    it("answers 405 with an Allow header for a wrong method", function()
      local res = api("PUT", "/models/" .. MODEL)
      assert.equal(405, res.status)
      assert.equal("GET, POST", res.headers.allow)
      res = api("POST", "/models")
      assert.equal(405, res.status)
      assert.equal("GET", res.headers.allow)
      res = api("DELETE", "/requests/abc/status")
      assert.equal(405, res.status)
      assert.equal("GET", res.headers.allow)
      res = emu:http("PUT", emu.root .. "/__emulator/clock", { body = "{}" })
      assert.equal(405, res.status)
      assert.equal("GET, POST", res.headers.allow)
    end)
  end)

  describe("directives", function()
    it("reads @emu:queue and @emu:run from the prompt, which keeps the words", function()
      local answer = submit("a cat @emu:queue=0.1 @emu:run=0.2")
      local record = emu:job_record(answer.request_id)
      assert.equal(0.1, record.queue_seconds)
      assert.equal(0.2, record.run_seconds)
      assert.equal("a cat @emu:queue=0.1 @emu:run=0.2", record.input.prompt)
      emu:advance(0.15)
      assert.equal("in_progress", status_of(answer.request_id).status)
      emu:advance(0.2)
      assert.equal("completed", status_of(answer.request_id).status)
    end)

    it("ends a job failed with the default message for @emu:fail", function()
      local id = finished_job("a doomed cat @emu:fail @emu:queue=0 @emu:run=0.1", nil, 0.1)
      assert.equal("failed", status_of(id).status)
      local result = result_of(id)
      assert.equal("failed", result.status)
      assert.same({ error_code = 500001, error_message = "Generation failed: content policy violation" }, result.error)
      assert.is_string(result.created_at)
      assert.is_string(result.finished_at)
      assert.is_nil(result.output)
      assert.equal(404, emu:http("GET", emu.files .. "/v/" .. id .. ".mp4").status)
    end)

    it("uses the message of @emu:fail=Some_message with underscores as spaces", function()
      local id = finished_job("@emu:fail=GPU_fell_over @emu:queue=0 @emu:run=0", nil, 0)
      assert.equal("GPU fell over", result_of(id).error.error_message)
    end)

    it("reports the word of @emu:status after the queue time, forever", function()
      local answer = submit("a strange cat @emu:status=rendering @emu:queue=0.1 @emu:run=0.1")
      assert.equal("in_queue", status_of(answer.request_id).status)
      emu:advance(0.4)
      assert.equal("rendering", status_of(answer.request_id).status)
      assert.equal("rendering", result_of(answer.request_id).status)
      local cancel = json(api("POST", "/requests/" .. answer.request_id .. "/cancel").body)
      assert.equal("not_cancellable", cancel.outcome)
      assert.equal("rendering", cancel.status)
      emu:advance(1000)
      assert.equal("rendering", status_of(answer.request_id).status)
      assert.equal(cjson.null, emu:job_record(answer.request_id).finished_at_clock)
    end)

    it("spells completed as succeeded and cancelled as canceled for @emu:spell=alt", function()
      local done = submit("@emu:spell=alt @emu:queue=0 @emu:run=0")
      local queued = submit("@emu:spell=alt @emu:queue=5")
      emu:advance(0.05)
      assert.equal("succeeded", status_of(done.request_id).status)
      local result = result_of(done.request_id)
      assert.equal("succeeded", result.status)
      assert.is_string(result.output.video)
      local cancel = json(api("POST", "/requests/" .. queued.request_id .. "/cancel").body)
      assert.same({ request_id = queued.request_id, status = "canceled", outcome = "cancelled" }, cancel)
      assert.equal("canceled", status_of(queued.request_id).status)
      assert.equal("canceled", result_of(queued.request_id).status)
    end)

    it("answers the submit with only request_id for @emu:nourls", function()
      local answer = submit("a terse cat @emu:nourls")
      assert.matches(UUID, answer.request_id)
      assert.is_nil(answer.status_url)
      assert.is_nil(answer.result_url)
      assert.is_nil(answer.cancel_url)
      assert.equal("in_queue", status_of(answer.request_id).status)
    end)

    it("answers HTTP 200 with an error body and creates no job for @emu:error200", function()
      local before = emu:stats().jobs_created
      local cases = { ["400002"] = "Insufficient balance", ["400004"] = "User account error", ["500123"] = "Error" }
      for code, message in pairs(cases) do
        local res = api("POST", "/models/" .. MODEL, { body = cjson.encode{ prompt = "@emu:error200=" .. code } })
        assert.equal(200, res.status)
        assert.same({ error_code = tonumber(code), error_message = message }, json(res.body))
      end
      assert.equal(before, emu:stats().jobs_created)
    end)

    it("serves N bytes of the pattern as the video for @emu:bytes=N", function()
      local id = finished_job("a pattern cat @emu:bytes=200000 @emu:queue=0 @emu:run=0", nil, 0)
      local res = emu:http("GET", emu.files .. "/v/" .. id .. ".mp4")
      assert.equal(200, res.status)
      assert.equal(200000, #res.body)
      assert.equal("200000", res.headers["content-length"])
      assert.is_true(res.body == emulator.pattern_bytes(0, 200000))
      assert.equal(200000, emu:job_record(id).video_bytes)
    end)

    it("answers a status request with an error body for @emu:error_status, N times, without acting", function()
      local id = submit("an erring cat @emu:error_status=503001@503*2 @emu:extra_code=12abc").request_id
      for _ = 1, 2 do
        local res = api("GET", "/requests/" .. id .. "/status")
        assert.equal(503, res.status)
        assert.equal('{"error_code":503001,"error_message":"Injected error 503001"}', res.body)
      end
      local res = api("GET", "/requests/" .. id .. "/status")
      assert.equal(200, res.status)
      assert.matches('^{"error_code":"12abc",', res.body)
      assert.equal("in_queue", json(res.body).status)
      local record = emu:job_record(id)
      assert.equal(1, record.status_polls)
      assert.same({ status = 2, result = 0, cancel = 0 }, record.error_answers)
    end)
  end)

  describe("file host", function()
    local id, video

    setup(function()
      id = finished_job("a cat for the file host @emu:queue=0 @emu:run=0", nil, 0)
      video = emulator.sample_video()
    end)

    it("serves the sample MP4 byte for byte with video/mp4 and Accept-Ranges", function()
      local res = emu:http("GET", emu.files .. "/v/" .. id .. ".mp4")
      assert.equal(200, res.status)
      assert.equal("video/mp4", res.headers["content-type"])
      assert.equal("bytes", res.headers["accept-ranges"])
      assert.equal(tostring(#video), res.headers["content-length"])
      assert.is_true(res.body == video)
      assert.equal("\0\0\0 ftyp", res.body:sub(1, 8))
    end)

    it("serves an MP4 that ffprobe opens as one H.264 stream", function()
      if os.execute("command -v ffprobe >/dev/null 2>&1") ~= true then
        pending("ffprobe is not installed")
        return
      end
      local dir = helpers.tmpdir()
      finally(function() os.execute("rm -rf " .. quote(dir)) end)
      helpers.write_file(dir .. "/v.mp4", emu:http("GET", emu.files .. "/v/" .. id .. ".mp4").body)
      local out = capture("ffprobe -v error -select_streams v:0 -show_entries stream=codec_name,width,height "
        .. "-of csv=p=0 " .. quote(dir .. "/v.mp4") .. " 2>&1")
      assert.equal("h264,160,90\n", out)
    end)

    it("answers HEAD with the headers of a GET and no body", function()
      local res = emu:http("HEAD", emu.files .. "/v/" .. id .. ".mp4")
      assert.equal(200, res.status)
      assert.equal(tostring(#video), res.headers["content-length"])
      assert.equal("video/mp4", res.headers["content-type"])
      -- on one connection, the answer to a GET follows the HEAD's head directly
      local path = "/v/" .. id .. ".mp4"
      local reply = emu:raw(emu.files, "HEAD " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n"
        .. "GET " .. path .. " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      local first, second = reply:match("^(HTTP/1%.1 200 OK\r\n.-\r\n\r\n)(HTTP/1%.1 200 OK\r\n.*)$")
      assert.is_not_nil(first)
      assert.is_true(second:sub(-#video) == video)
      assert.equal(#reply, #first + #second)
    end)

    it("answers Range bytes=a-b, bytes=a- and bytes=-n with 206 and Content-Range", function()
      local size = #video
      local cases = {
        { "bytes=0-9", 0, 9 },
        { "bytes=100-", 100, size - 1 },
        { "bytes=-50", size - 50, size - 1 },
        { "bytes=10-999999", 10, size - 1 },
        { "bytes=-999999", 0, size - 1 },
      }
      for _, case in ipairs(cases) do
        local res = emu:http("GET", emu.files .. "/v/" .. id .. ".mp4", { headers = { "Range: " .. case[1] } })
        assert.equal(206, res.status, case[1])
        assert.equal(string.format("bytes %d-%d/%d", case[2], case[3], size), res.headers["content-range"])
        assert.equal(tostring(case[3] - case[2] + 1), res.headers["content-length"])
        assert.is_true(res.body == video:sub(case[2] + 1, case[3] + 1), case[1])
      end
    end)

    it("ignores a Range it does not serve (several ranges, another unit, last before first)", function()
      for _, range in ipairs{ "bytes=0-1,5-6", "lines=0-9", "bytes=9-0", "bytes=-" } do
        local res = emu:http("GET", emu.files .. "/v/" .. id .. ".mp4", { headers = { "Range: " .. range } })
        assert.equal(200, res.status, range)
        assert.is_true(res.body == video, range)
      end
    end)

    it("answers 416 with Content-Range bytes */SIZE for an unsatisfiable range", function()
      for _, range in ipairs{ "bytes=" .. #video .. "-", "bytes=999999-1000000", "bytes=-0" } do
        local res = emu:http("GET", emu.files .. "/v/" .. id .. ".mp4", { headers = { "Range: " .. range } })
        assert.equal(416, res.status, range)
        assert.equal("bytes */" .. #video, res.headers["content-range"])
      end
    end)

    it("answers 404 for an unknown id and for a job without output", function()
      assert.equal(404, emu:http("GET", emu.files .. "/v/00000000-0000-4000-8000-000000000000.mp4").status)
      local queued = submit("a waiting cat @emu:queue=5")
      assert.equal(404, emu:http("GET", emu.files .. "/v/" .. queued.request_id .. ".mp4").status)
      assert.equal(404, emu:http("GET", emu.files .. "/elsewhere").status)
    end)

    it("needs no token and records the requests that carried an Authorization header", function()
      local before = emu:stats().files
      local path = "/v/" .. id .. ".mp4"
      assert.equal(200, emu:http("GET", emu.files .. path).status)
      assert.equal(200, emu:http("GET", emu.files .. path, { token = "leaked-token" }).status)
      local after = emu:stats().files
      assert.equal(before.authorization_headers + 1, after.authorization_headers)
      assert.equal(path, after.authorization_paths[#after.authorization_paths])
      assert.equal(before.requests + 2, after.requests)
      assert.equal(before.bytes_sent + 2 * #video, after.bytes_sent)
    end)

    it("serves N pattern bytes for every output under --video-bytes N", function()
      local e = harness.start(assert(emulator.parse_args{ "--queue", "0", "--run", "0", "--video-bytes", "300000" }))
      finally(function() e:stop() end)
      local res = e:call("POST", "/models/" .. MODEL, { token = "t", body = '{"prompt":"x"}' })
      local job = json(res.body).request_id
      e:advance(0.05)
      local url = json(e:call("GET", "/requests/" .. job .. "/result", { token = "t" }).body).output.video
      local file = e:http("GET", url)
      assert.equal(300000, #file.body)
      assert.is_true(file.body == emulator.pattern_bytes(0, 300000))
      local part = e:http("GET", url, { headers = { "Range: bytes=70000-70999" } })
      assert.equal(206, part.status)
      assert.is_true(part.body == emulator.pattern_bytes(70000, 1000))
    end)

    it("defines the pattern as byte i = (i * 31 + 7) % 251", function()
      local bytes = emulator.pattern_bytes(1000, 600)
      assert.equal(600, #bytes)
      for i = 0, 599 do
        assert.equal(((1000 + i) * 31 + 7) % 251, bytes:byte(i + 1))
      end
      assert.equal("", emulator.pattern_bytes(5, 0))
      assert.equal(emulator.pattern_bytes(0, 200000):sub(65530, 65600), emulator.pattern_bytes(65529, 71))
    end)
  end)

  describe("connections", function()
    local status_url

    setup(function()
      status_url = submit("a cat to poll").status_url
    end)

    it("keeps a connection alive for several requests", function()
      local before = emu.server.api.total
      assert.equal(200, emu:http("GET", status_url, { token = TOKEN, fresh = true }).status)
      assert.equal(200, emu:http("GET", status_url, { token = TOKEN }).status)
      local stats = emu:stats()
      assert.equal(before + 1, stats.connections.total)
    end)

    it("closes the connection after a request with Connection: close", function()
      local before = emu:stats().connections.total -- on a kept-alive connection
      for _ = 1, 2 do
        local res = emu:http("GET", status_url, { token = TOKEN, fresh = true, headers = { "Connection: close" } })
        assert.equal("close", res.headers.connection)
      end
      assert.equal(before + 2, emu:stats().connections.total)
      -- an HTTP/1.0 request is closed unless it asks for keep-alive
      local reply = emu:raw(emu.root, "GET /__emulator/clock HTTP/1.0\r\n\r\n")
      assert.matches("\r\nConnection: close\r\n", reply)
    end)

    -- 1000 when this process may open enough descriptors (the client's and the emulator's)
    local many = 300
    do
      local limit = capture("ulimit -n"):match("%S+")
      if limit == "unlimited" or (tonumber(limit) or 0) >= 2100 then many = 1000 end
    end

    it("holds " .. many .. " connections open at once and answers each of them", function()
      local socket = require "cqueues.socket"
      local host, port = emu.root:match("^http://([^:/]+):(%d+)$")
      local n, conns, answered = many, {}, 0
      local id = status_url:match("/requests/([^/]+)/status$")
      local request = "GET /v1/requests/" .. id .. "/status HTTP/1.1\r\nHost: " .. host
        .. "\r\nAuthorization: Bearer " .. TOKEN .. "\r\nConnection: close\r\n\r\n"
      local base = emu.server.api.current
      harness.run_on(emu.cq, function()
        for i = 1, n do
          local so = socket.connect{ host = host, port = tonumber(port) }
          so:onerror(function(_, _, why) return why end)
          assert(so:connect(harness.GUARD))
          so:setmode("b", "bn")
          conns[i] = so
          -- let the emulator accept it (this loop is also the emulator's)
          while emu.server.api.current < base + i do cqueues.sleep(0) end
        end
      end)
      assert.equal(base + n, emu.server.api.current)
      local done = 0
      for i = 1, n do
        emu.cq:wrap(function()
          local so = conns[i]
          so:xwrite(request, "bn", harness.GUARD)
          local reply = so:xread("*a", "b", harness.GUARD)
          if reply and reply:match("^HTTP/1%.1 200 ") and reply:find('"status":"', 1, true) then
            answered = answered + 1
          end
          so:close()
          done = done + 1
        end)
      end
      emu:wait_for(function() return done == n end, "the answers")
      assert.equal(n, answered)
      emu:wait_for(function() return emu.server.api.current == base end, "the closes")
      local stats = emu:stats()
      assert.is_true(stats.connections.peak >= n)
    end)

    it("counts every connection in total and never more at once than the client had open", function()
      -- 4 workers, each opening 100 connections one after the other (closing one before
      -- opening the next): the peak must not count a closed one the emulator has not yet
      -- read the end of
      local e = harness.remote(helpers.start_emulator{ "--token", TOKEN })
      finally(function() e:stop() end)
      local id = json(e:call("POST", "/models/" .. MODEL, { body = '{"prompt":"x"}' }).body).request_id
      local socket = require "cqueues.socket"
      local condition = require "cqueues.condition"
      local host, port = e.root:match("^http://([^:/]+):(%d+)$")
      local request = "GET /v1/requests/" .. id .. "/status HTTP/1.1\r\nHost: " .. host
        .. "\r\nAuthorization: Bearer " .. TOKEN .. "\r\n\r\n"
      local workers, per_worker, answered = 4, 100, 0
      e.client:close()
      e:reset()
      e.client:close() -- the reset's connection: closed before the workers start
      local cq = cqueues.new()
      for _ = 1, workers do
        cq:wrap(function()
          for _ = 1, per_worker do
            -- one coroutine per connection, so no closed descriptor stays registered
            local done, finished = condition.new(), false
            cq:wrap(function()
              local so = socket.connect{ host = host, port = tonumber(port) }
              so:setmode("b", "bn")
              assert(so:connect(harness.GUARD))
              assert(so:xwrite(request, "bn", harness.GUARD))
              assert(harness.read_answer(so, "GET").status == 200)
              answered = answered + 1
              so:close()
              finished = true
              done:signal()
            end)
            if not finished then done:wait() end
          end
        end)
      end
      assert(cq:loop())
      assert.equal(workers * per_worker, answered)
      local connections = e:stats().connections
      assert.equal(workers * per_worker + 1, connections.total) -- and this stats request
      assert.is_true(connections.peak <= workers, "peak " .. connections.peak .. " with at most " .. workers .. " open")
      assert.is_true(connections.peak >= 1)
    end)

    it("answers pipelined requests on one connection in order", function()
      local id = submit("a pipelined cat @emu:queue=0 @emu:run=0").request_id
      emu:advance(0.02)
      local one = "GET /v1/requests/" .. id .. "/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " .. TOKEN .. "\r\n\r\n"
      local last = "GET /__emulator/jobs/" .. id .. " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
      local reply = emu:raw(emu.api, one:rep(3) .. last)
      local answers = {}
      for status, body in reply:gmatch("HTTP/1%.1 (%d+) [^\r]*\r\n.-\r\n\r\n([^H]*)") do
        answers[#answers + 1] = { tonumber(status), body }
      end
      assert.equal(4, #answers)
      for i = 1, 3 do
        assert.equal(200, answers[i][1])
        assert.equal("completed", json(answers[i][2]).status)
      end
      assert.equal(3, json(answers[4][2]).status_polls)
    end)
  end)

  describe("stats and control", function()
    it("counts requests per route and leaves its own out of requests_total", function()
      emu:reset()
      local answer = submit("a counted cat")
      status_of(answer.request_id)
      status_of(answer.request_id)
      result_of(answer.request_id)
      api("POST", "/requests/" .. answer.request_id .. "/cancel")
      api("GET", "/nothing")
      emu:stats()
      local stats = emu:stats()
      assert.same({ submit = 1, status = 2, result = 1, cancel = 1, catalog = 0, download = 0, stats = 2, other = 1 },
        stats.requests)
      assert.equal(6, stats.requests_total)
      assert.equal(1, stats.jobs_created)
      assert.equal(1, stats.submits_answered)
      assert.equal(0, stats.auth_failures)
      assert.is_table(stats.jobs)
      for _, key in ipairs{ "in_queue", "in_progress", "completed", "failed", "cancelled" } do
        assert.is_number(stats.jobs[key])
      end
      assert.is_true(stats.jobs.cancelled >= 1)
      for _, key in ipairs{ "current", "peak", "total" } do
        assert.is_number(stats.connections[key])
        assert.is_number(stats.files.connections[key])
      end
      assert.is_number(stats.files.connections_total)
    end)

    it("has a request counter for every kind of route in the route table, and other", function()
      local kinds = { other = true }
      for _, list in ipairs{ emulator.API_ROUTES, emulator.FILE_ROUTES } do
        for _, route in ipairs(list) do kinds[route.kind] = true end
      end
      local counters = emu:stats().requests
      for kind in pairs(kinds) do assert.is_number(counters[kind], kind) end
      for kind in pairs(counters) do assert.is_true(kinds[kind], kind) end
    end)

    it("zeroes the counters on reset and keeps the jobs", function()
      local answer = submit("a cat that survives a reset")
      api("GET", "/requests/" .. answer.request_id .. "/status")
      emu:reset()
      local stats = emu:stats()
      assert.equal(0, stats.requests_total)
      assert.equal(0, stats.jobs_created)
      assert.equal(0, stats.submits_answered)
      assert.equal(0, stats.files.requests)
      assert.same({}, stats.files.authorization_paths)
      assert.equal(0, stats.connections.total) -- the kept-alive connection was opened before
      assert.equal(200, api("GET", "/requests/" .. answer.request_id .. "/status").status)
    end)

    it("writes an empty authorization_paths list as []", function()
      emu:reset()
      local res = emu:http("GET", emu.stats_url)
      assert.matches('"authorization_paths":%[%]', res.body)
    end)

    it("returns a job's record with the input exactly as it went over the wire", function()
      local body = '{"prompt":"a recorded cat","duration":5,"multi_prompt":[],"shot_type":"customize"}'
      local res = api("POST", "/models/" .. MODEL, { body = body, headers = { "X-Trace: 1" } })
      local id = json(res.body).request_id
      local raw = emu:http("GET", emu.root .. "/__emulator/jobs/" .. id)
      assert.equal(200, raw.status)
      assert.matches('"input":' .. body:gsub("%p", "%%%0") .. "}$", raw.body)
      local record = json(raw.body)
      assert.equal(body, record.body)
      assert.equal(id, record.request_id)
      assert.equal(MODEL, record.model_id)
      assert.equal("a recorded cat", record.input.prompt)
      assert.equal("1", record.headers["x-trace"])
      assert.equal("application/json", record.headers["content-type"])
      assert.is_nil(record.headers.authorization)
      assert.is_nil(raw.body:find(TOKEN, 1, true))
      assert.equal(404, emu:http("GET", emu.root .. "/__emulator/jobs/unknown").status)
    end)
  end)

  describe("timing ranges, the clock and the job list", function()
    -- the jobs a fresh emulator started with flags creates for the prompts, in order;
    -- -> their records
    local function records_of(flags, prompts)
      local e = harness.start(assert(emulator.parse_args(flags)))
      local records = {}
      for i, prompt in ipairs(prompts) do
        local res = e:call("POST", "/models/" .. MODEL, { token = "t", body = cjson.encode{ prompt = prompt } })
        assert.equal(200, res.status, res.body)
        records[i] = e:job_record(json(res.body).request_id)
      end
      e:stop()
      return records
    end

    it("draws each job's times from --queue LO:HI and --run LO:HI, the same for the same --seed", function()
      local prompts = { "a", "b", "c", "d", "e", "f @emu:run=7", "g @emu:queue=3:4" }
      local flags = { "--seed", "11", "--queue", "0.5:1.5", "--run", "2:3" }
      local first = records_of(flags, prompts)
      local again = records_of(flags, prompts)
      local other = records_of({ "--seed", "12", "--queue", "0.5:1.5", "--run", "2:3" }, prompts)
      local distinct, differs = {}, false
      for i, r in ipairs(first) do
        local q = (i == 7) and { 3, 4 } or { 0.5, 1.5 }
        assert.is_true(r.queue_seconds >= q[1] and r.queue_seconds <= q[2], "queue_seconds " .. r.queue_seconds)
        if i == 6 then
          assert.equal(7, r.run_seconds)
        else
          assert.is_true(r.run_seconds >= 2 and r.run_seconds <= 3, "run_seconds " .. r.run_seconds)
        end
        assert.near(r.created_at_clock + r.queue_seconds + r.run_seconds, r.ends_at, 1e-5)
        assert.equal(r.request_id, again[i].request_id)
        assert.equal(r.queue_seconds, again[i].queue_seconds)
        assert.equal(r.run_seconds, again[i].run_seconds)
        distinct[r.queue_seconds] = true
        if other[i].queue_seconds ~= r.queue_seconds then differs = true end
      end
      local n = 0
      for _ in pairs(distinct) do n = n + 1 end
      assert.is_true(n >= 6, "the queue times are not drawn per job")
      assert.is_true(differs, "another seed gave the same times")
    end)

    it("keeps the bounds and spreads the draws over the range (in-process, 2000 jobs)", function()
      local server = emulator.new{ quiet = true, seed = 5, queue = "1:3", run = { 0, 0.5 } }
      local low, high, sum = math.huge, -math.huge, 0
      for _ = 1, 2000 do
        local job = server:create_job(MODEL, "{}", {}, {}, {})
        assert.is_true(job.queue >= 1 and job.queue <= 3)
        assert.is_true(job.run >= 0 and job.run <= 0.5)
        low, high, sum = math.min(low, job.queue), math.max(high, job.queue), sum + job.queue
      end
      assert.is_true(low < 1.01 and high > 2.99, low .. " " .. high)
      assert.near(2, sum / 2000, 0.05)
      -- the ids of a seed do not depend on the times
      local fixed = emulator.new{ quiet = true, seed = 5, queue = 2, run = 5 }
      local ranged = emulator.new{ quiet = true, seed = 5, queue = "1:3", run = "0:0.5" }
      for _ = 1, 5 do
        assert.equal(fixed:create_job(MODEL, "{}", {}, {}, {}).id, ranged:create_job(MODEL, "{}", {}, {}, {}).id)
      end
    end)

    it("reads times and ranges, and refuses the rest", function()
      assert.same({ 2, 2 }, { emulator.parse_timing("2") })
      assert.same({ 0.5, 1.5 }, { emulator.parse_timing("0.5:1.5") })
      assert.same({ 60, 300 }, { emulator.parse_timing("60:300") })
      assert.same({ 1, 1 }, { emulator.parse_timing(1) })
      for _, bad in ipairs{ "5:1", "-1", "a:b", "1:", ":2", "1:2:3", "inf", "" } do
        assert.is_nil(emulator.parse_timing(bad), bad)
      end
      assert.same({ run = "60:300" }, emulator.parse_args{ "--run", "60:300" })
      local opts, err = emulator.parse_args{ "--queue=3:2" }
      assert.is_nil(opts)
      assert.matches("bad value for %-%-queue: 3:2", err)
      -- an invalid directive falls back to the server's time
      local server = emulator.new{ quiet = true, queue = 2, run = 5 }
      local job = server:create_job(MODEL, "{}", {}, emulator.parse_directives("@emu:run=9:1 @emu:queue=x"), {})
      assert.equal(2, job.queue)
      assert.equal(5, job.run)
    end)

    it("reads every flag into the options of emulator.new", function()
      assert.same({
        host = "0.0.0.0", port = 0, files_port = 9000, token = "t", queue = "1:2", run = "3", load = true,
        queue_position = 5, video_bytes = 10, seed = -3, faults = { "status:503:0.2", "all:429:0.1" },
        clock = "manual", exit_on_stdin_eof = true, quiet = true,
      }, assert(emulator.parse_args{ "--host", "0.0.0.0", "--port", "0", "--files-port=9000", "--token", "t",
        "--queue", "1:2", "--run", "3", "--load", "--queue-position", "5", "--video-bytes", "10", "--seed=-3",
        "--faults", "status:503:0.2", "--faults", "all:429:0.1", "--clock", "manual", "--exit-on-stdin-eof",
        "--quiet" }))
      assert.same({ help = true }, emulator.parse_args{ "--help" })
      assert.same({}, emulator.parse_args{})
    end)

    it("answers /__emulator/clock with now on the machine's monotonic clock", function()
      local e = harness.start{ clock = "monotonic" }
      finally(function() e:stop() end)
      local before = now()
      local res = e:http("GET", e.root .. "/__emulator/clock")
      local after = now()
      assert.equal(200, res.status)
      assert.equal("application/json", res.headers["content-type"])
      local clock = json(res.body)
      assert.equal("monotonic", clock.clock)
      -- cqueues.monotime is CLOCK_MONOTONIC, the same in every process of the machine
      assert.is_true(clock.now >= before - 1e-6 and clock.now <= after + 1e-6,
        string.format("%.6f not in [%.6f, %.6f]", clock.now, before, after))
      assert.is_true(math.abs(clock.wall - os.time()) < 2)
      -- which cannot be driven
      res = e:http("POST", e.root .. "/__emulator/clock", { body = '{"advance":1}' })
      assert.equal(400, res.status)
      assert.matches("the clock is not manual", json(res.body).error_message)
    end)

    it("drives a manual clock: advance, now, and refusals that leave it where it was", function()
      local e = harness.start{}
      finally(function() e:stop() end)
      local t0 = e:get_json("/__emulator/clock").now
      assert.equal("manual", e:get_json("/__emulator/clock").clock)
      local wall0 = e:get_json("/__emulator/clock").wall
      local moved = e:get_json("/__emulator/clock", "POST", '{"advance":2.5}')
      assert.near(t0 + 2.5, moved.now, 1e-6)
      assert.near(wall0 + 2.5, moved.wall, 1e-3)
      assert.near(t0 + 4, e:get_json("/__emulator/clock", "POST", string.format('{"now":%.6f}', t0 + 4)).now, 1e-6)
      for body, why in pairs{
        ['{"advance":-1}'] = "Bad clock: expected seconds >= 0",
        ['{"now":1}'] = "Bad clock: the clock does not go back",
        ['{"advance":1,"now":2}'] = 'Bad clock: give one of "advance" and "now"',
        ['{}'] = 'Bad clock: give one of "advance" and "now"',
        ['{"speed":2}'] = "Bad clock: unknown field speed",
        ['{"advance":"1"}'] = "Bad clock: expected seconds >= 0",
        ['nope'] = "Expected a JSON object",
      } do
        local res = e:http("POST", e.root .. "/__emulator/clock", { body = body })
        assert.equal(400, res.status, body)
        assert.equal(400001, json(res.body).error_code)
        assert.is_truthy(json(res.body).error_message:find(why, 1, true), json(res.body).error_message)
      end
      assert.near(t0 + 4, e:get_json("/__emulator/clock").now, 1e-6)
      assert.has_error(function() emulator.new{ clock = "sundial" } end)
    end)

    it("records when a job ended, when a client first saw it, and when it fetched the result", function()
      local t0 = emu:now()
      local answer = submit("a timed cat @emu:queue=0.1 @emu:run=0.1")
      local id = answer.request_id
      local record = emu:job_record(id)
      assert.near(t0, record.created_at_clock, 1e-6)
      assert.near(record.created_at_clock + 0.2, record.ends_at, 1e-5)
      assert.equal(cjson.null, record.finished_at_clock)
      assert.equal(cjson.null, record.noticed_at_clock)
      status_of(id)
      emu:advance(0.25)
      local seen = emu:now()
      status_of(id)
      emu:advance(0.1)
      status_of(id)
      result_of(id)
      record = emu:job_record(id)
      assert.equal(record.ends_at, record.finished_at_clock)
      assert.near(seen, record.noticed_at_clock, 1e-6)
      assert.near(seen + 0.1, record.result_at_clock, 1e-6)
      assert.equal(3, record.status_polls)
      assert.equal(1, record.result_fetches)
      -- a cancelled job finished when it was cancelled
      local queued = submit("a cancelled cat @emu:queue=5")
      emu:advance(1)
      api("POST", "/requests/" .. queued.request_id .. "/cancel")
      local cancelled = emu:job_record(queued.request_id)
      assert.near(emu:now(), cancelled.cancelled_at_clock, 1e-6)
      assert.equal(cancelled.cancelled_at_clock, cancelled.finished_at_clock)
      assert.is_true(cancelled.finished_at_clock < cancelled.ends_at)
    end)

    it("lists every job in creation order at /__emulator/jobs", function()
      local a = submit("listed cat one @emu:queue=0 @emu:run=0").request_id
      local b = submit("listed cat two @emu:queue=5").request_id
      emu:advance(0.01)
      status_of(a)
      result_of(a)
      api("POST", "/requests/" .. b .. "/cancel")
      local res = emu:http("GET", emu.root .. "/__emulator/jobs")
      assert.equal(200, res.status)
      local list = json(res.body)
      assert.equal(emu:stats().requests_by_job.jobs, #list)
      assert.equal(a, list[#list - 1].request_id)
      assert.equal(b, list[#list].request_id)
      local ja, jb = list[#list - 1], list[#list]
      local ra = emu:job_record(a)
      for _, key in ipairs{ "created_at_clock", "queue_seconds", "run_seconds", "ends_at",
          "finished_at_clock", "noticed_at_clock", "result_at_clock" } do
        assert.near(ra[key], ja[key], 1e-6, key)
      end
      assert.equal(MODEL, ja.model_id)
      assert.equal("completed", ja.state)
      assert.equal(1, ja.status_polls)
      assert.equal(1, ja.result_fetches)
      assert.equal(0, ja.cancel_requests)
      assert.is_false(ja.cancelled)
      assert.equal("cancelled", jb.state)
      assert.is_true(jb.cancelled)
      assert.equal(1, jb.cancel_requests)
      assert.equal(cjson.null, jb.noticed_at_clock)
      assert.equal(jb.cancelled_at_clock, jb.finished_at_clock)
    end)

    it("summarizes the requests per job in the stats", function()
      local server = emulator.new{ quiet = true, queue = 0, run = 0 }
      server.api_url, server.files_url = "http://127.0.0.1:1/v1", "http://127.0.0.1:2" -- not listening
      local empty = json(emulator.handlers.stats(server).body).requests_by_job
      assert.same({ jobs = 0, status_polls = { min = 0, max = 0, mean = 0 }, result_fetches = { min = 0, max = 0, mean = 0 } }, empty)
      local jobs = {}
      for i = 1, 3 do jobs[i] = server:create_job(MODEL, "{}", {}, {}, {}) end
      for i = 1, 3 do
        for _ = 1, i do emulator.handlers.status(server, {}, jobs[i].id) end
      end
      emulator.handlers.result(server, { query = {} }, jobs[3].id)
      local by_job = json(emulator.handlers.stats(server).body).requests_by_job
      assert.near(1 / 3, by_job.result_fetches.mean, 1e-9)
      by_job.result_fetches.mean = nil
      assert.same({ jobs = 3, status_polls = { min = 1, max = 3, mean = 2 }, result_fetches = { min = 0, max = 1 } }, by_job)
    end)

    it("builds the list of 10,000 jobs quickly", function()
      local server = emulator.new{ quiet = true, queue = "0:1", run = "1:4", seed = 1 }
      for _ = 1, 10000 do server:create_job(MODEL, "{}", {}, {}, {}) end
      assert.equal("[]", emulator.handlers.jobs(emulator.new{ quiet = true }).body)
      local t = os.clock()
      local reply = emulator.handlers.jobs(server)
      local took = os.clock() - t
      local list = json(reply.body)
      assert.equal(10000, #list)
      assert.equal(server.job_list[10000].id, list[10000].request_id)
      assert.is_true(took < 0.5, "took " .. took .. " s of CPU")
    end)

    it("answers status polls from a cache that follows the queue position and the state", function()
      local t = 100
      local server = emulator.new{ quiet = true, queue = 1, run = 1, queue_position = 3, clock = function() return t end }
      server.api_url, server.files_url = "http://127.0.0.1:1/v1", "http://127.0.0.1:2" -- not listening
      local id = server:create_job(MODEL, "{}", {}, {}, {}).id
      local seen = {}
      for _, at in ipairs{ 100, 100.1, 100.5, 100.5, 100.9, 101.2, 101.9, 102.1, 103 } do
        t = at
        local body = json(emulator.handlers.status(server, {}, id).body)
        seen[#seen + 1] = body.status .. (body.queue_position and string.format(":%d", body.queue_position) or "")
      end
      assert.same({ "in_queue:3", "in_queue:3", "in_queue:2", "in_queue:2", "in_queue:0", "in_progress",
        "in_progress", "completed", "completed" }, seen)
      assert.equal(9, server.jobs[id].polls.status)
      assert.equal(102.1, server.jobs[id].noticed_at)
      assert.equal("custom", json(emulator.handlers.clock(server).body).clock)
    end)

    it("has a load generator that reports requests per second", function()
      local out = in_root("lua5.4 spec/emulator_load.lua --seconds 0.3 --connections 2 2>&1; echo \"rc=$?\"")
      assert.matches("2 connections, [%d.]+ s: %d+ answers %(0 not 200%), %d+ requests/s", out)
      assert.matches("requests per emulator CPU%-second", out)
      assert.matches("rc=0\n$", out)
    end)
  end)

  describe("the module", function()
    it("parses @emu: directives from whitespace-separated words", function()
      assert.same({ queue = "0.5", fail = true, spell = "alt" },
        emulator.parse_directives("a cat\t@emu:queue=0.5 @emu:fail\n@emu:spell=alt not@emu:run=1"))
    end)

    it("runs in-process with listen(), loop() and stop()", function()
      local server = emulator.new{ port = 0, quiet = true, queue = 0, run = 0 }
      local api_url, files_url = assert(server:listen())
      assert.matches("^http://127%.0%.0%.1:%d+/v1$", api_url)
      assert.matches("^http://127%.0%.0%.1:%d+$", files_url)
      local socket = require "cqueues.socket"
      local reply
      server.cq:wrap(function()
        local host, port = api_url:match("^http://([^:]+):(%d+)")
        local so = socket.connect{ host = host, port = tonumber(port) }
        so:setmode("b", "bn")
        so:xwrite("GET /__emulator/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "bn")
        reply = so:xread("*a", "b", 5)
        so:close()
        server:stop()
      end)
      server:loop()
      assert.matches("^HTTP/1%.1 200 OK\r\n", reply)
      assert.matches('"requests_total":0', reply)
    end)

    it("keeps its API: the functions and tables of require('kling.emulator')", function()
      for _, name in ipairs{ "new", "parse_args", "main", "parse_timing", "parse_fault", "parse_faults",
          "parse_directives", "parse_error_directive", "pattern_bytes", "sample_video", "http_date",
          "encode_json", "job_state" } do
        assert.is_function(emulator[name], name)
      end
      for _, name in ipairs{ "ODD_IDS", "ODD_OUTPUTS", "FAULTS", "FAULT_ROUTES", "API_ROUTES", "FILE_ROUTES",
          "handlers", "DEFAULTS" } do
        assert.is_table(emulator[name], name)
      end
      assert.is_string(emulator.RESET_METHOD)
      assert.matches("^Usage: kling%-emulator", emulator.USAGE)
      assert.same({ "submit", "status", "result", "cancel", "catalog", "download", "all" }, emulator.FAULT_ROUTES)
      local server = emulator.new{ quiet = true }
      for _, name in ipairs{ "listen", "loop", "step", "stop", "set_faults", "create_job", "advance",
          "set_clock", "read_request", "write_reply", "dispatch", "faulted", "draw_fault" } do
        assert.is_function(server[name], name)
      end
    end)
  end)
end)
