-- Specs of the emulator's fault injection (--faults, /__emulator/faults). The emulator runs
-- in this process on a manual clock (spec/emulator_harness.lua): requests go over loopback
-- from the same loop, and the delays of slow and trickle pass when the spec moves the clock.
-- They do not use the kling client.
local helpers = require "helpers"
local harness = require "emulator_harness"
local cjson = require "cjson"
local cqueues = require "cqueues"
local socket = require "cqueues.socket"
local emulator = require "kling.emulator"

local json, quote = helpers.json, helpers.quote
local TOKEN = "fault-token-456"
local MODEL = "kling/kling-3.0/pro/text-to-video"
local NO_JOB = "00000000-0000-4000-8000-000000000000"

local function capture(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("*a")
  p:close()
  return out
end

-- n requests to url on kept-alive connections, one after the other; -> list of statuses
local function codes(e, url, n, token, method)
  return harness.run_on(e.cq, function()
    local list = {}
    for i = 1, n do
      local res = e.client:exchange(method or "GET", url .. "?n=" .. i, { token = token })
      list[i] = res.status or 0
    end
    return list
  end)
end

local function count(list, value)
  local n = 0
  for _, v in ipairs(list) do
    if v == value then n = n + 1 end
  end
  return n
end

-- |observed - n p| within 4 standard deviations (plus one for small counts)
local function assert_rate(observed, n, p, what)
  local sd = math.sqrt(n * p * (1 - p))
  assert.is_true(math.abs(observed - n * p) <= 4 * sd + 1,
    string.format("%s: %d of %d, expected about %.0f", what, observed, n, n * p))
end

local function refused(res)
  return res.status == nil
end

describe("kling-emulator faults", function()
  local emu

  setup(function()
    emu = harness.start{ queue = 0, run = 0, token = TOKEN, seed = 9 }
  end)

  teardown(function()
    if emu then emu:stop() end
  end)

  -- every spec starts without faults and with zeroed counters (the jobs stay)
  before_each(function()
    emu:set_faults{}
    emu:reset()
  end)

  local function api(method, path, opts)
    return emu:call(method, path, opts)
  end

  local function post_submit(prompt, opts)
    opts = opts or {}
    opts.body = cjson.encode{ prompt = prompt }
    return api("POST", "/models/" .. MODEL, opts)
  end

  -- a job created while no fault is set, then the clock moved past its end; -> its id
  local function job(prompt)
    local res = post_submit(prompt or "a cat @emu:queue=0 @emu:run=0")
    assert.equal(200, res.status, res.body)
    emu:advance(0.01)
    return json(res.body).request_id
  end

  local function last_job()
    local list = json(emu:http("GET", emu.root .. "/__emulator/jobs").body)
    return list[#list], #list
  end

  local function injected(route, fault)
    local by_route = emu:stats().faults.injected[route]
    return by_route and by_route[fault] or 0
  end

  -- Send a request on a connection of its own and leave it waiting; -> the socket
  local function send_only(method, path, body)
    return harness.run_on(emu.cq, function()
      local host, port = emu.root:match("^http://([^:/]+):(%d+)$")
      local so = socket.connect{ host = host, port = tonumber(port) }
      so:setmode("b", "bn")
      so:onerror(function(_, _, e) return e end)
      assert(so:connect(harness.GUARD))
      body = body or ""
      assert(so:xwrite(string.format("%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        .. "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", method, path, TOKEN, #body, body), "bn"))
      return so
    end)
  end

  describe("the fault table", function()
    it("reads ROUTE:FAULT:RATE[:ARG] and refuses what does not apply", function()
      assert.same({ route = "status", fault = "503", rate = 0.2, spec = "status:503:0.2" },
        emulator.parse_fault("status:503:0.2"))
      assert.same({ route = "all", fault = "429", rate = 0.2, arg = 2, spec = "all:429:0.2:2" },
        emulator.parse_fault("all:429:0.2:2"))
      assert.same({ route = "submit", fault = "slow", rate = 1, arg = 0.5, spec = "submit:slow:1:0.5" },
        emulator.parse_fault("submit:slow:1.0:0.5"))
      assert.equal("download:cut:0.3", emulator.parse_fault{ route = "download", fault = "cut", rate = 0.3 }.spec)
      for spec, why in pairs{
        ["status:cut:1"] = "cut does not apply to status",
        ["download:truncated_json:1"] = "truncated_json does not apply to download",
        ["status:drop_after_create:1"] = "drop_after_create does not apply to status",
        ["download:error200:1"] = "error200 does not apply to download",
        ["nowhere:503:1"] = "unknown route (submit, status, result, cancel, catalog, download or all)",
        ["status:418:1"] = "unknown fault",
        ["status:503:1.5"] = "rate must be a number from 0 to 1",
        ["status:503:-0.1"] = "rate must be a number from 0 to 1",
        ["status:503:x"] = "rate must be a number from 0 to 1",
        ["status:reset:1:2"] = "reset takes no argument",
        ["status:429:1:1.5"] = "whole seconds",
        ["status:slow:1:-1"] = "seconds >= 0",
        ["download:trickle:1:0"] = "whole bytes per second >= 1",
        ["status:503"] = "expected ROUTE:FAULT:RATE",
        ["status:503:1:2:3"] = "expected ROUTE:FAULT:RATE",
      } do
        local entry, err = emulator.parse_fault(spec)
        assert.is_nil(entry, spec)
        assert.is_truthy(err:find(why, 1, true), spec .. " -> " .. tostring(err))
      end
      -- --faults is repeatable and takes comma-separated lists
      local opts = assert(emulator.parse_args{ "--faults", "status:503:0.2", "--faults=all:429:0.1:2,download:cut:1" })
      local list = assert(emulator.parse_faults(opts.faults))
      assert.same({ "status:503:0.2", "all:429:0.1:2", "download:cut:1" }, { list[1].spec, list[2].spec, list[3].spec })
      local none, err = emulator.parse_args{ "--faults", "status:cut:1" }
      assert.is_nil(none)
      assert.equal("bad value for --faults: status:cut:1: cut does not apply to status", err)
      assert.has_error(function() emulator.new{ faults = "status:nothing:1" } end)
    end)

    it("refuses a bad --faults with exit status 2 and starts with good ones", function()
      local out = capture("cd " .. quote(helpers.root)
        .. " && lua5.4 bin/kling-emulator --port 0 --faults status:cut:1 2>&1; echo \"rc=$?\"")
      assert.matches("bad value for %-%-faults: status:cut:1: cut does not apply to status", out)
      assert.matches("rc=2\n$", out)
      local e = harness.remote(helpers.start_emulator{ "--faults", "status:503:0.25:3", "--faults", "all:429:0.1,download:cut:1" })
      finally(function() e:stop() end)
      local table = e:faults()
      assert.equal(emulator.RESET_METHOD, table.reset)
      assert.same({
        { route = "status", fault = "503", rate = 0.25, arg = 3, spec = "status:503:0.25:3" },
        { route = "all", fault = "429", rate = 0.1, spec = "all:429:0.1" },
        { route = "download", fault = "cut", rate = 1, spec = "download:cut:1" },
      }, table.faults)
    end)

    it("is replaced by POST /__emulator/faults, answered by GET, and refused when bad", function()
      assert.same({ faults = {}, reset = emulator.RESET_METHOD }, emu:faults())
      assert.matches('"faults":%[%]', emu:http("GET", emu.root .. "/__emulator/faults").body) -- a list, even empty
      local answer = emu:set_faults{ "status:503:0.5", "all:slow:0.1:2" }
      assert.same({ "status:503:0.5", "all:slow:0.1:2" }, { answer.faults[1].spec, answer.faults[2].spec })
      assert.same(answer, emu:faults())
      -- entries as objects, and a bare list
      local res = emu:http("POST", emu.root .. "/__emulator/faults",
        { body = '{"faults":[{"route":"result","fault":"500","rate":0.5},{"route":"cancel","fault":503,"rate":1,"arg":4}]}' })
      assert.equal(200, res.status, res.body)
      assert.same({ "result:500:0.5", "cancel:503:1:4" }, { json(res.body).faults[1].spec, json(res.body).faults[2].spec })
      res = emu:http("POST", emu.root .. "/__emulator/faults", { body = '["download:cut:0.5"]' })
      assert.equal(200, res.status, res.body)
      assert.equal("download:cut:0.5", emu:faults().faults[1].spec)
      -- refused: the table stays
      for body, why in pairs{
        ['{"faults":["status:cut:1"]}'] = "Bad faults: status:cut:1: cut does not apply to status",
        ['{"faults":["status:503:1"],"rates":1}'] = "Bad faults: unknown field rates",
        ['{"faults":[],"seed":1.5}'] = "Bad faults: seed: expected an integer",
        ['{"faults":'] = "Expected a JSON object",
      } do
        res = emu:http("POST", emu.root .. "/__emulator/faults", { body = body })
        assert.equal(400, res.status, body)
        assert.equal(400001, json(res.body).error_code)
        assert.is_truthy(json(res.body).error_message:find(why, 1, true), json(res.body).error_message)
      end
      assert.equal("download:cut:0.5", emu:faults().faults[1].spec)
      assert.equal(405, emu:http("PUT", emu.root .. "/__emulator/faults", { body = "[]" }).status)
      -- {} and {"faults":[]} empty it
      res = emu:http("POST", emu.root .. "/__emulator/faults", { body = "{}" })
      assert.same({}, json(res.body).faults)
    end)
  end)

  describe("each fault, at rate 1", function()
    it("429: Retry-After ARG seconds (default 1) and an error body", function()
      local id = job()
      emu:set_faults{ "status:429:1:2", "result:429:1" }
      local conns = emu.server.api.total
      local res = api("GET", "/requests/" .. id .. "/status")
      assert.equal(429, res.status)
      assert.equal("2", res.headers["retry-after"])
      assert.equal("application/json", res.headers["content-type"])
      assert.same({ error_code = 429001, error_message = "Too many requests (injected fault)" }, json(res.body))
      res = api("GET", "/requests/" .. id .. "/result")
      assert.equal(429, res.status)
      assert.equal("1", res.headers["retry-after"])
      -- not acted on: the job saw no request
      local record = emu:job_record(id)
      assert.equal(0, record.status_polls)
      assert.equal(0, record.result_fetches)
      -- both on the one kept-alive connection: it stays open
      assert.equal(conns, emu.server.api.total)
    end)

    it("429date: Retry-After as an HTTP date ARG seconds ahead, rounded up", function()
      emu:set_faults{ "submit:429date:1:3" }
      local before = emu:stats().jobs_created
      local wall = emu:get_json("/__emulator/clock").wall -- the clock stands still meanwhile
      local res = post_submit("a cat")
      assert.equal(429, res.status)
      assert.equal(429001, json(res.body).error_code)
      assert.equal(emulator.http_date(math.ceil(wall + 3)), res.headers["retry-after"])
      assert.equal(emulator.http_date(wall), res.headers.date)
      assert.matches("^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$", res.headers["retry-after"])
      assert.equal(before, emu:stats().jobs_created)
    end)

    it("500, 502, 503, 504: that status and an error body; Retry-After only with ARG", function()
      local id = job()
      for _, status in ipairs{ 500, 502, 503, 504 } do
        emu:set_faults{ "cancel:" .. status .. ":1" }
        local res = api("POST", "/requests/" .. id .. "/cancel")
        assert.equal(status, res.status)
        assert.equal(status * 1000 + 1, json(res.body).error_code)
        assert.matches("%(injected fault%)$", json(res.body).error_message)
        assert.is_nil(res.headers["retry-after"])
      end
      emu:set_faults{ "status:503:1:7" }
      local res = api("GET", "/requests/" .. id .. "/status")
      assert.equal(503, res.status)
      assert.matches("^HTTP/1%.1 503 Service Unavailable\r\n", res.head)
      assert.equal("7", res.headers["retry-after"])
      assert.equal(0, emu:job_record(id).cancel_requests)
    end)

    it("reset: closes the connection after reading the request, creating no job", function()
      emu:set_faults{ "submit:reset:1", "status:reset:1", "download:reset:1" }
      local before = emu:stats()
      local res = post_submit("a cat that never was")
      assert.is_true(refused(res), tostring(res.status))
      if emu:faults().reset == "rst" then
        assert.equal("Connection reset by peer", res.err)
      else
        assert.equal("eof", res.err)
      end
      local after = emu:stats()
      assert.equal(before.jobs_created, after.jobs_created)
      assert.equal(before.faults.submit_attempts + 1, after.faults.submit_attempts)
      assert.equal(before.submits_answered, after.submits_answered)
      assert.equal(1, after.faults.injected.submit.reset)
      assert.is_true(refused(api("GET", "/requests/" .. NO_JOB .. "/status")))
      assert.is_true(refused(emu:http("GET", emu.files .. "/v/" .. NO_JOB .. ".mp4")))
      assert.equal(1, injected("status", "reset"))
      assert.equal(1, injected("download", "reset"))
    end)

    it("reset_reused: resets only a request on a connection that already served one", function()
      emu:set_faults{ "submit:reset_reused:1", "status:reset_reused:1" }
      local before = emu:stats()
      -- the first request of a fresh connection is answered as usual...
      local first = post_submit("a cat on a new connection", { fresh = true })
      assert.equal(200, first.status, first.body)
      local id = json(first.body).request_id
      -- ...the next one on the same kept-alive connection is reset, and creates no job
      local second = post_submit("a cat on a reused connection")
      assert.is_true(refused(second), tostring(second.status))
      local after = emu:stats()
      assert.equal(before.jobs_created + 1, after.jobs_created)
      assert.equal(before.faults.submit_attempts + 2, after.faults.submit_attempts)
      assert.equal(1, after.faults.injected.submit.reset_reused)
      -- a status on a fresh connection is answered; the same route reused is reset
      assert.equal(200, api("GET", "/requests/" .. id .. "/status", { fresh = true }).status)
      assert.is_true(refused(api("GET", "/requests/" .. id .. "/status")))
      assert.equal(1, injected("status", "reset_reused"))
    end)

    it("drop_after_create: creates the job, then closes without answering", function()
      emu:set_faults{ "submit:drop_after_create:1" }
      local before = emu:stats()
      local res = post_submit("a dropped cat")
      assert.is_true(refused(res), tostring(res.status))
      assert.equal("eof", res.err) -- an empty reply: a close (FIN), no RST
      local after = emu:stats()
      assert.equal(before.jobs_created + 1, after.jobs_created)
      assert.equal(before.faults.jobs_created_by_attempt + 1, after.faults.jobs_created_by_attempt)
      assert.equal(before.submits_answered, after.submits_answered)
      local listed = last_job()
      assert.is_true(listed.created_by_dropped_submit)
      assert.equal("drop_after_create", listed.submit_fault)
      local record = emu:job_record(listed.request_id)
      assert.is_true(record.created_by_dropped_submit)
      assert.equal("a dropped cat", record.input.prompt)
      -- the job is real: it can be polled
      emu:set_faults{}
      assert.equal(200, api("GET", "/requests/" .. listed.request_id .. "/status").status)
    end)

    it("slow: acts on the request, then answers once ARG seconds of the emulator's clock have passed", function()
      local id = job("a slow cat @emu:queue=5")
      emu:set_faults{ "status:slow:1:1.5", "cancel:slow:1:0.4" }
      local pending = emu:start("GET", emu.api .. "/requests/" .. id .. "/status", { token = TOKEN })
      -- acted on at once ...
      emu:wait_for(function() return emu.server.jobs[id].polls.status == 1 end, "the poll")
      emu:settle()
      assert.is_false(pending.done)          -- ... answered only when the clock has moved on
      emu:advance(1.4)
      assert.is_false(pending.done)
      emu:advance(0.1)
      local res = pending:wait()
      assert.equal(200, res.status)
      assert.equal("in_queue", json(res.body).status)
      -- waited for, the cancel is answered after its delay, and it was acted on
      pending = emu:start("POST", emu.api .. "/requests/" .. id .. "/cancel", { token = TOKEN })
      emu:wait_for(function() return emu.server.jobs[id].cancelled_at ~= nil end, "the cancel")
      emu:advance(0.4)
      res = pending:wait()
      assert.equal(200, res.status)
      assert.equal("cancelled", json(res.body).outcome)
      local record = emu:job_record(id)
      assert.equal(1, record.status_polls)
      assert.is_true(record.cancelled)
      assert.equal(2, injected("status", "slow") + injected("cancel", "slow"))
    end)

    it("slow: a submit whose client gives up before the answer still created its job", function()
      emu:set_faults{ "submit:slow:1:1" }
      local before = emu:stats().jobs_created
      local so = send_only("POST", "/v1/models/" .. MODEL, '{"prompt":"an unknown cat"}')
      emu:wait_for(function() return emu.server.counters.jobs_created == before + 1 end, "the job")
      harness.run_on(emu.cq, function() so:close() end) -- the client gives up
      emu:advance(1)
      assert.equal(before + 1, emu:stats().jobs_created)
      local listed = last_job()
      assert.equal("slow", listed.submit_fault)
      assert.is_false(listed.created_by_dropped_submit)
    end)

    it("truncated_json: a complete 200 answer whose JSON body is cut in the middle", function()
      local id = job()
      emu:set_faults{ "result:truncated_json:1", "submit:truncated_json:1" }
      local res = api("GET", "/requests/" .. id .. "/result")
      assert.equal(200, res.status)
      assert.equal(#res.body, tonumber(res.headers["content-length"]))
      assert.equal("application/json", res.headers["content-type"])
      assert.is_false(pcall(cjson.decode, res.body))
      assert.equal('{"', res.body:sub(1, 2))
      assert.equal(1, emu:job_record(id).result_fetches)
      -- the submit created its job, but the id cannot be read
      local before = emu:stats().jobs_created
      res = post_submit("a cat cut short")
      assert.equal(200, res.status)
      assert.is_false(pcall(cjson.decode, res.body))
      assert.equal(before + 1, emu:stats().jobs_created)
      assert.equal("truncated_json", last_job().submit_fault)
    end)

    it("malformed_json: a 200 whose body is not JSON", function()
      local id = job()
      emu:set_faults{ "status:malformed_json:1" }
      local res = api("GET", "/requests/" .. id .. "/status")
      assert.equal(200, res.status)
      assert.equal(#res.body, tonumber(res.headers["content-length"]))
      assert.is_false(pcall(cjson.decode, res.body))
      assert.equal(1, emu:job_record(id).status_polls)
    end)

    it("error200: HTTP 200 with an error body, without acting", function()
      local id = job("a queued cat @emu:queue=5")
      emu:set_faults{ "status:error200:1", "result:error200:1", "cancel:error200:1" }
      for _, r in ipairs{ { "GET", "status" }, { "GET", "result" }, { "POST", "cancel" } } do
        local res = api(r[1], "/requests/" .. id .. "/" .. r[2])
        assert.equal(200, res.status)
        assert.equal('{"error_code":500001,"error_message":"Injected error"}', res.body)
      end
      local record = emu:job_record(id)
      assert.is_false(record.cancelled)
      assert.equal("in_queue", record.state)
      assert.same({ 0, 0, 0 }, { record.status_polls, record.result_fetches, record.cancel_requests })
      assert.equal(1, injected("cancel", "error200"))
    end)

    it("cut: announces the whole Content-Length, sends about half, then closes", function()
      local id = job("a long cat @emu:queue=0 @emu:run=0 @emu:bytes=100000")
      emu:set_faults{ "download:cut:1" }
      local sent = emu:stats().files.bytes_sent
      local res = emu:http("GET", emu.files .. "/v/" .. id .. ".mp4")
      assert.equal(200, res.status)
      assert.equal("100000", res.headers["content-length"])
      assert.equal(50000, #res.body)
      assert.equal(emulator.pattern_bytes(0, 50000), res.body)
      assert.matches("^cut: 50000 of 100000 bytes", res.err)
      assert.equal(sent + 50000, emu:stats().files.bytes_sent)
      res = emu:http("GET", emu.files .. "/v/" .. id .. ".mp4", { headers = { "Range: bytes=1000-1999" } })
      assert.equal(206, res.status)
      assert.equal("1000", res.headers["content-length"])
      assert.equal(emulator.pattern_bytes(1000, 500), res.body)
      -- nothing to cut: HEAD and a 404 go out whole, and do not count
      assert.equal(200, emu:http("HEAD", emu.files .. "/v/" .. id .. ".mp4").status)
      assert.equal(404, emu:http("GET", emu.files .. "/v/" .. NO_JOB .. ".mp4").status)
      assert.equal(2, injected("download", "cut"))
    end)

    it("trickle: ARG bytes, then a second of the emulator's clock before the next", function()
      local id = job("a trickling cat @emu:queue=0 @emu:run=0 @emu:bytes=7")
      emu:set_faults{ "download:trickle:1:3" }
      local files = emu.server.counters.files
      local pending = emu:start("GET", emu.files .. "/v/" .. id .. ".mp4")
      emu:wait_for(function() return files.bytes_sent == 3 end, "the first 3 bytes")
      emu:settle()
      assert.equal(3, files.bytes_sent)
      emu:advance(1)
      emu:wait_for(function() return files.bytes_sent == 6 end, "the next 3 bytes")
      assert.is_false(pending.done)
      emu:advance(1)
      local res = pending:wait()
      assert.equal(200, res.status)
      assert.equal(emulator.pattern_bytes(0, 7), res.body)
      assert.equal(1, injected("download", "trickle"))
    end)

    it("trickle: ARG larger than the writer's 64 KiB pieces still sends the file's own bytes", function()
      local id = job("a fast trickle @emu:queue=0 @emu:run=0 @emu:bytes=300000")
      emu:set_faults{ "download:trickle:1:200000" }
      local files = emu.server.counters.files
      local pending = emu:start("GET", emu.files .. "/v/" .. id .. ".mp4")
      emu:wait_for(function() return files.bytes_sent == 200000 end, "the first 200000 bytes")
      emu:advance(1)
      local res = pending:wait()
      assert.equal(200, res.status)
      assert.equal(300000, #res.body)
      assert.is_true(res.body == emulator.pattern_bytes(0, 300000), "the bytes differ from the pattern")
    end)

    it("empty: 200 with Content-Length 0 and no body to a GET of a file that exists; HEAD and 404 untouched", function()
      local id = job("an emptied cat @emu:queue=0 @emu:run=0 @emu:bytes=1000")
      emu:set_faults{ "download:empty:1" }
      local res = emu:http("GET", emu.files .. "/v/" .. id .. ".mp4", { headers = { "Range: bytes=10-19" } })
      assert.equal(200, res.status)
      assert.equal("0", res.headers["content-length"])
      assert.is_nil(res.headers["content-range"])
      assert.equal("", res.body)
      res = emu:http("HEAD", emu.files .. "/v/" .. id .. ".mp4")
      assert.equal("1000", res.headers["content-length"])
      assert.equal(404, emu:http("GET", emu.files .. "/v/" .. NO_JOB .. ".mp4").status)
      assert.equal(1, injected("download", "empty"))
    end)

    it("not_ready: HTTP 400 with error_code 400005 on the result route, whatever the job's state, without acting", function()
      local done = job()
      local queued = job("a waiting cat @emu:queue=9")
      emu:set_faults{ "result:not_ready:1" }
      for _, id in ipairs{ done, queued, NO_JOB } do
        local res = api("GET", "/requests/" .. id .. "/result")
        assert.equal(400, res.status, id)
        assert.same({ error_code = 400005, error_message = "Request is not completed yet (injected fault)" }, json(res.body))
      end
      assert.equal(0, emu:job_record(done).result_fetches)
      assert.equal(3, injected("result", "not_ready"))
      emu:set_faults{}
      assert.equal("completed", json(api("GET", "/requests/" .. done .. "/result").body).status)
      assert.is_nil((emulator.parse_fault("status:not_ready:1")))
    end)

    it("cancel_requested, cancel_bare: an accepted cancel answers outcome cancellation_requested, or no outcome", function()
      local a, b = job("one to cancel @emu:queue=9"), job("two to cancel @emu:queue=9")
      emu:set_faults{ "cancel:cancel_requested:1" }
      assert.same({ request_id = a, status = "cancelled", outcome = "cancellation_requested" },
        json(api("POST", "/requests/" .. a .. "/cancel").body))
      emu:set_faults{ "cancel:cancel_bare:1" }
      assert.same({ request_id = b, status = "cancelled" }, json(api("POST", "/requests/" .. b .. "/cancel").body))
      for _, id in ipairs{ a, b } do
        assert.equal("cancelled", json(api("GET", "/requests/" .. id .. "/status").body).status)
      end
      -- a cancel that is refused goes out as usual and does not count
      local running = job("a running cat @emu:queue=0 @emu:run=9")
      assert.same({ request_id = running, status = "in_progress", outcome = "not_cancellable" },
        json(api("POST", "/requests/" .. running .. "/cancel").body))
      assert.equal(1, injected("cancel", "cancel_requested"))
      assert.equal(1, injected("cancel", "cancel_bare"))
    end)

    it("cancel_pending: cancellation_requested without outcome, then the status says so for ARG answers (default 1)", function()
      local a, b = job("one pending @emu:queue=9"), job("two pending @emu:queue=9")
      emu:set_faults{ "cancel:cancel_pending:1" }
      assert.same({ request_id = a, status = "cancellation_requested" }, json(api("POST", "/requests/" .. a .. "/cancel").body))
      emu:set_faults{ "cancel:cancel_pending:1:2" }
      assert.same({ request_id = b, status = "cancellation_requested" }, json(api("POST", "/requests/" .. b .. "/cancel").body))
      emu:set_faults{}
      local function status(id) return json(api("GET", "/requests/" .. id .. "/status").body).status end
      assert.equal("cancellation_requested", status(a))
      assert.equal("cancelled", status(a))
      assert.equal("cancellation_requested", status(b))
      assert.equal("cancellation_requested", status(b))
      assert.equal("cancelled", status(b))
      assert.equal(2, injected("cancel", "cancel_pending"))
      assert.is_nil((emulator.parse_fault("cancel:cancel_pending:1:-1")))
      assert.is_nil((emulator.parse_fault("cancel:cancel_bare:1:2")))
    end)

    it("all: applies each fault to the routes it fits; never to /__emulator/*", function()
      local id = job()
      emu:set_faults{ "all:cut:1", "all:drop_after_create:1" }
      assert.equal(200, api("GET", "/requests/" .. id .. "/status").status)
      assert.is_true(refused(post_submit("x")))
      emu:set_faults{ "all:503:1:1" }
      for _, res in ipairs{
        api("GET", "/requests/" .. id .. "/status"), api("GET", "/requests/" .. id .. "/result"),
        api("POST", "/requests/" .. id .. "/cancel"), post_submit("x"),
        emu:http("GET", emu.files .. "/v/" .. id .. ".mp4"), api("GET", "/models"),
      } do
        assert.equal(503, res.status)
      end
      for _, path in ipairs{ "/__emulator/stats", "/__emulator/jobs", "/__emulator/jobs/" .. id,
          "/__emulator/clock", "/__emulator/faults" } do
        assert.equal(200, emu:http("GET", emu.root .. path).status, path)
      end
      -- refused requests and unknown routes are answered as usual, and draw nothing
      assert.equal(401, api("GET", "/requests/" .. id .. "/status", { token = false }).status)
      assert.equal(405, api("DELETE", "/models/" .. MODEL).status)
      assert.equal(400, api("GET", "/requests/bad.id/status").status)
      assert.equal(404, api("GET", "/nothing").status)
      local by_route = emu:stats().faults.injected
      for _, route in ipairs{ "submit", "status", "result", "cancel", "catalog", "download" } do
        assert.equal(1, by_route[route]["503"], route)
      end
    end)
  end)

  describe("rates and seeds", function()
    local FAULTS = "status:503:0.2,status:429:0.1:1,all:500:0.1"

    -- a fresh emulator with FAULTS and seed: 300 status then 100 result requests
    local function run(seed)
      local e = harness.start{ seed = seed, faults = FAULTS }
      local status = codes(e, e.api .. "/requests/" .. NO_JOB .. "/status", 300, "t")
      local result = codes(e, e.api .. "/requests/" .. NO_JOB .. "/result", 100, "t")
      return status, result, e
    end

    it("honours the rates roughly over 400 requests, the same way for the same seed", function()
      local status, result, e = run(21)
      finally(function() e:stop() end)
      assert_rate(count(status, 503), 300, 0.2, "503 on status")
      assert_rate(count(status, 429), 300, 0.1, "429 on status")
      assert_rate(count(status, 500), 300, 0.1, "500 on status")
      assert_rate(count(status, 404), 300, 0.6, "unfaulted status")
      assert_rate(count(result, 500), 100, 0.1, "500 on result")
      assert.equal(100, count(result, 500) + count(result, 404))
      local stats = e:stats()
      assert.same({
        status = { ["503"] = count(status, 503), ["429"] = count(status, 429), ["500"] = count(status, 500) },
        result = { ["500"] = count(result, 500) },
      }, stats.faults.injected)
      assert.equal(400, stats.requests_total)
      -- the same seed: the same faults on the same requests
      local status2, result2, e2 = run(21)
      e2:stop()
      assert.same(status, status2)
      assert.same(result, result2)
      -- another seed: other requests
      local status3, _, e3 = run(22)
      e3:stop()
      assert.are_not.same(status, status3)
      -- POST /__emulator/faults with the seed restarts the stream as --seed did
      e:set_faults({ "status:503:0.2", "status:429:0.1:1", "all:500:0.1" }, 21)
      assert.same(status, codes(e, e.api .. "/requests/" .. NO_JOB .. "/status", 300, "t"))
    end)

    it("draws from a stream of its own: faults change neither ids nor times", function()
      local ids = {}
      for i, opts in ipairs{ { seed = 5, queue = "0:1" },
          { seed = 5, queue = "0:1", faults = "status:503:0.5,submit:429:0.5" } } do
        local e = harness.start(opts)
        -- polls in between draw faults; the submits must still get the ids and times of the seed
        local got = {}
        while #got < 3 do
          codes(e, e.api .. "/requests/" .. NO_JOB .. "/status", 3, "t")
          local res = e:call("POST", "/models/" .. MODEL, { token = "t", body = '{"prompt":"x"}' })
          if res.status == 200 then
            local record = e:job_record(json(res.body).request_id)
            got[#got + 1] = record.request_id .. " " .. record.queue_seconds
          end
        end
        e:stop()
        ids[i] = got
      end
      assert.same(ids[1], ids[2])
    end)
  end)

  describe("stats", function()
    it("count faults by route, submit attempts and the jobs they created; reset zeroes them", function()
      emu:reset()
      local _, jobs_before = last_job()
      assert.same({ injected = {}, submit_attempts = 0, jobs_created_by_attempt = 0 }, emu:stats().faults)
      assert.matches('"injected":{}', emu:http("GET", emu.stats_url).body)
      emu:set_faults{ "submit:drop_after_create:1" }
      post_submit("dropped one")
      post_submit("dropped two")
      emu:set_faults{ "submit:reset:1" }
      post_submit("reset one")
      emu:set_faults{ "submit:503:1", "status:error200:1" }
      post_submit("refused one")
      api("GET", "/requests/" .. NO_JOB .. "/status")
      emu:set_faults{}
      post_submit("plain one")
      post_submit("unauthenticated one", { token = false })
      local stats = emu:stats()
      assert.same({
        injected = { submit = { drop_after_create = 2, reset = 1, ["503"] = 1 }, status = { error200 = 1 } },
        submit_attempts = 5,
        jobs_created_by_attempt = 3,
      }, stats.faults)
      assert.equal(3, stats.jobs_created)
      assert.equal(6, stats.requests.submit)
      assert.equal(3, stats.submits_answered) -- the 503, the plain one and the 401
      local list = json(emu:http("GET", emu.root .. "/__emulator/jobs").body)
      local dropped = 0
      for i = jobs_before + 1, #list do
        if list[i].created_by_dropped_submit then dropped = dropped + 1 end
      end
      assert.equal(3, #list - jobs_before)
      assert.equal(stats.faults.injected.submit.drop_after_create, dropped)
      emu:reset()
      assert.same({ injected = {}, submit_attempts = 0, jobs_created_by_attempt = 0 }, emu:stats().faults)
    end)
  end)
end)
