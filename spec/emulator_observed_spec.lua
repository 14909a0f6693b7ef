-- Specs of the emulator's answers in the ways RunComfy's own clients observe the service
-- (doc/EMULATOR.md, "Observed behaviours"): results that are not ready (400005) before the
-- end and for a while after it, the shapes of a cancel's answer, failed statuses that carry
-- their error, results that are gone, outputs without a usable video, an empty file, a
-- slow submit, the model catalog, the input checks of its models, data: URIs and the body
-- limit. The emulator runs in this process on a manual clock (spec/emulator_harness.lua).
-- They do not use the kling client.
local helpers = require "helpers"
local harness = require "emulator_harness"
local cjson = require "cjson"
local emulator = require "kling.emulator"

local json, quote = helpers.json, helpers.quote
local TOKEN = "observed-token-789"
local MODEL = "kling/kling-3.0/pro/text-to-video"
local I2V = "kling/kling-3.0/pro/image-to-video"
local STD = "kling/kling-3.0/standard/text-to-video"
local NOT_READY = { error_code = 400005, error_message = "Request is not completed yet" }
local PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGBgAAAABQABpfZFQAAAAABJRU5ErkJggg=="

local function capture(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("*a")
  p:close()
  return out
end

describe("kling-emulator, as RunComfy's clients observe the service", function()
  local emu

  setup(function()
    emu = harness.start{ queue = 1, run = 2, token = TOKEN, seed = 11 }
  end)

  teardown(function()
    if emu then emu:stop() end
  end)

  before_each(function()
    emu:set_faults{}
  end)

  local function api(method, path, opts)
    return emu:call(method, path, opts)
  end

  -- submit an input (a prompt, or a table) to a model; -> the request id
  local function submit(input, model, e)
    if type(input) == "string" then input = { prompt = input } end
    local res = (e or emu):call("POST", "/models/" .. (model or MODEL), { body = cjson.encode(input) })
    assert.equal(200, res.status, res.body)
    return json(res.body).request_id
  end

  local function get(id, route, e)
    local res = (e or emu):call("GET", "/requests/" .. id .. "/" .. route)
    return res.status, json(res.body), res
  end

  local function cancel(id)
    local res = api("POST", "/requests/" .. id .. "/cancel")
    assert.equal(200, res.status, res.body)
    return json(res.body)
  end

  describe("results that are not ready", function()
    it("answers the result route with the status body before the end by default, as documented", function()
      local id = submit("a plain cat")
      local status, body = get(id, "result")
      assert.equal(200, status)
      assert.equal("in_queue", body.status)
      assert.equal(0, emu:job_record(id).not_ready_answers)
    end)

    it("answers HTTP 400 with error_code 400005 before the end for @emu:result_not_ready, then the output", function()
      local id = submit("an unready cat @emu:result_not_ready")
      local status, body = get(id, "result")
      assert.equal(400, status)
      assert.same(NOT_READY, body)
      emu:advance(1.5) -- in_progress
      assert.equal("in_progress", select(2, get(id, "status")).status)
      status, body = get(id, "result")
      assert.equal(400, status)
      assert.same(NOT_READY, body)
      emu:advance(2)
      status, body = get(id, "result")
      assert.equal(200, status)
      assert.equal("completed", body.status)
      assert.equal(emu.files .. "/v/" .. id .. ".mp4", body.output.video)
      local record = emu:job_record(id)
      assert.equal(2, record.not_ready_answers)
      assert.equal(3, record.result_fetches)
    end)

    it("answers 400005 for every unfinished job under result_not_ready = 400005, and the status body for @emu:result_not_ready=status", function()
      local e = harness.start{ queue = 1, run = 1, result_not_ready = "400005" }
      finally(function() e:stop() end)
      local plain = submit("a cat", nil, e)
      local odd = submit("a rendering cat @emu:status=rendering @emu:queue=0", nil, e)
      local documented = submit("a documented cat @emu:result_not_ready=status", nil, e)
      local status, body = get(plain, "result", e)
      assert.equal(400, status)
      assert.same(NOT_READY, body)
      status, body = get(odd, "result", e)
      assert.equal(400, status)
      assert.same(NOT_READY, body)
      status, body = get(documented, "result", e)
      assert.equal(200, status)
      assert.equal("in_queue", body.status)
      e:advance(2.5)
      status, body = get(plain, "result", e)
      assert.equal(200, status)
      assert.equal("completed", body.status)
    end)

    it("answers 400005 to the first N result requests after completed for @emu:result_lag=N, while the status says completed", function()
      local id = submit("a lagging cat @emu:result_lag=2")
      emu:advance(3.5)
      for _ = 1, 2 do
        assert.equal("completed", select(2, get(id, "status")).status)
        local status, body = get(id, "result")
        assert.equal(400, status)
        assert.same(NOT_READY, body)
      end
      local status, body = get(id, "result")
      assert.equal(200, status)
      assert.equal("completed", body.status)
      assert.is_string(body.output.video)
      status = get(id, "result")
      assert.equal(200, status)
      local record = emu:job_record(id)
      assert.equal(2, record.not_ready_answers)
      assert.is_number(record.noticed_at_clock)
      assert.is_true(record.result_at_clock > record.noticed_at_clock - 1e-9)
    end)

    it("answers 400005 for S seconds of the clock after the end for @emu:result_lag=Ss, however often it is asked", function()
      local id = submit("a slow result @emu:result_lag=2.5s @emu:queue=0 @emu:run=1")
      emu:advance(1.01)
      for _ = 1, 5 do assert.equal(400, (get(id, "result"))) end
      emu:advance(2.39)
      assert.equal(400, (get(id, "result")))
      emu:advance(0.2)
      local status, body = get(id, "result")
      assert.equal(200, status)
      assert.equal("completed", body.status)
      assert.equal(6, emu:job_record(id).not_ready_answers)
    end)

    it("lags only completed results: a failed or cancelled job's result comes at once", function()
      local failed = submit("a lagging failure @emu:result_lag=3 @emu:fail @emu:queue=0 @emu:run=0")
      local cancelled = submit("a lagging cancel @emu:result_lag=3 @emu:queue=9")
      emu:advance(0.01)
      assert.equal("cancelled", cancel(cancelled).outcome)
      local status, body = get(failed, "result")
      assert.equal(200, status)
      assert.equal("failed", body.status)
      status, body = get(cancelled, "result")
      assert.equal(200, status)
      assert.equal("cancelled", body.status)
    end)

    it("lags every completed job under result_lag, unless its own directive says otherwise", function()
      local e = harness.start{ queue = 0, run = 0, result_lag = "1" }
      finally(function() e:stop() end)
      local plain = submit("a cat", nil, e)
      local own = submit("a cat @emu:result_lag=0", nil, e)
      e:advance(0.01)
      assert.equal(400, (get(plain, "result", e)))
      assert.equal(200, (get(plain, "result", e)))
      assert.equal(200, (get(own, "result", e)))
    end)

    it("reads waits as N answers or S seconds, and refuses the rest in options and flags", function()
      assert.same({ answers = 3 }, emulator.parse_wait("3"))
      assert.same({ seconds = 2.5 }, emulator.parse_wait("2.5s"))
      assert.same({ seconds = 90 }, emulator.parse_wait("90s"))
      for _, bad in ipairs{ "", "-1", "1.5", "s", "abc", "2m", "1e3s" } do
        assert.is_nil(emulator.parse_wait(bad), bad)
      end
      assert.has_error(function() emulator.new{ result_lag = "soon" } end)
      assert.has_error(function() emulator.new{ result_not_ready = "never" } end)
      local opts = assert(emulator.parse_args{ "--result-not-ready", "400005", "--result-lag", "2s" })
      assert.equal("400005", opts.result_not_ready)
      assert.equal("2s", opts.result_lag)
      local root = quote(helpers.root)
      local out = capture("cd " .. root .. " && lua5.4 bin/kling-emulator --result-not-ready 404 2>&1; echo \"rc=$?\"")
      assert.matches("bad value for %-%-result%-not%-ready: 404", out)
      assert.matches("rc=2\n$", out)
      out = capture("cd " .. root .. " && lua5.4 bin/kling-emulator --result-lag 2m 2>&1; echo \"rc=$?\"")
      assert.matches("bad value for %-%-result%-lag: 2m", out)
      assert.matches("rc=2\n$", out)
    end)
  end)

  describe("cancel outcomes", function()
    it("answers outcome cancellation_requested with status cancelled for @emu:cancel=requested", function()
      local id = submit("a cat @emu:cancel=requested @emu:queue=9")
      assert.same({ request_id = id, status = "cancelled", outcome = "cancellation_requested" }, cancel(id))
      assert.equal("cancelled", select(2, get(id, "status")).status)
      assert.same({ request_id = id, status = "cancelled", outcome = "cancellation_requested" }, cancel(id))
    end)

    it("answers status cancelled without an outcome for @emu:cancel=bare", function()
      local id = submit("a cat @emu:cancel=bare @emu:queue=9")
      local res = api("POST", "/requests/" .. id .. "/cancel")
      assert.same({ request_id = id, status = "cancelled" }, json(res.body))
      assert.is_nil(res.body:find("outcome", 1, true))
      assert.equal("cancelled", select(2, get(id, "status")).status)
    end)

    it("spells the status canceled with @emu:spell=alt", function()
      local id = submit("a cat @emu:cancel=requested @emu:spell=alt @emu:queue=9")
      assert.same({ request_id = id, status = "canceled", outcome = "cancellation_requested" }, cancel(id))
    end)

    it("answers cancellation_requested without an outcome for @emu:cancel=pending; the next status says so, then cancelled", function()
      local id = submit("a cat @emu:cancel=pending @emu:queue=9")
      local res = api("POST", "/requests/" .. id .. "/cancel")
      assert.same({ request_id = id, status = "cancellation_requested" }, json(res.body))
      assert.is_nil(res.body:find("outcome", 1, true))
      local record = emu:job_record(id)
      assert.is_false(record.cancelled)
      assert.equal("cancelling", record.state)
      assert.is_number(record.cancel_requested_at_clock)
      assert.equal("cancellation_requested", select(2, get(id, "status")).status)
      assert.equal("cancelled", select(2, get(id, "status")).status)
      record = emu:job_record(id)
      assert.is_true(record.cancelled)
      local status, body = get(id, "result")
      assert.equal(200, status)
      assert.equal("cancelled", body.status)
      assert.same({ request_id = id, status = "cancelled", outcome = "cancelled" }, cancel(id))
    end)

    it("stays cancellation_requested for N status or result answers with @emu:cancel=pending:N; a cancel meanwhile says the same", function()
      local id = submit("a cat @emu:cancel=pending:3 @emu:queue=9")
      assert.equal("cancellation_requested", cancel(id).status)
      assert.equal("cancellation_requested", select(2, get(id, "status")).status)
      local status, body = get(id, "result")
      assert.equal(200, status)
      assert.equal("cancellation_requested", body.status)
      assert.same({ request_id = id, status = "cancellation_requested" }, cancel(id))
      assert.equal("cancellation_requested", select(2, get(id, "status")).status)
      assert.equal("cancelled", select(2, get(id, "status")).status)
    end)

    it("stays cancellation_requested for S seconds of the clock with @emu:cancel=pending:Ss, however often it is polled", function()
      local id = submit("a cat @emu:cancel=pending:2s @emu:queue=9")
      assert.equal("cancellation_requested", cancel(id).status)
      local at = emu:now()
      for _ = 1, 4 do assert.equal("cancellation_requested", select(2, get(id, "status")).status) end
      emu:advance(1.9)
      assert.equal("cancellation_requested", select(2, get(id, "status")).status)
      emu:advance(0.2)
      assert.equal("cancelled", select(2, get(id, "status")).status)
      local record = emu:job_record(id)
      assert.is_true(math.abs(record.cancelled_at_clock - (at + 2)) < 1e-5)
      assert.equal("cancelled", json(emu:http("GET", emu.root .. "/__emulator/jobs").body)[#emu.server.job_list].state)
    end)

    it("cancels at once after answering cancellation_requested for @emu:cancel=pending:0", function()
      local id = submit("a cat @emu:cancel=pending:0 @emu:queue=9")
      assert.same({ request_id = id, status = "cancellation_requested" }, cancel(id))
      assert.equal("cancelled", select(2, get(id, "status")).status)
    end)

    it("answers not_cancellable as usual for a running job, whatever @emu:cancel says", function()
      for _, kind in ipairs{ "requested", "bare", "pending", "pending:2s" } do
        local id = submit("a busy cat @emu:queue=0 @emu:run=9 @emu:cancel=" .. kind)
        emu:advance(0.01)
        assert.same({ request_id = id, status = "in_progress", outcome = "not_cancellable" }, cancel(id), kind)
      end
    end)

    it("reads @emu:cancel values and ignores the others", function()
      assert.same({ kind = "pending", wait = { answers = 1 } }, emulator.parse_cancel("pending"))
      assert.same({ kind = "pending", wait = { seconds = 1.5 } }, emulator.parse_cancel("pending:1.5s"))
      assert.same({ kind = "bare" }, emulator.parse_cancel("bare"))
      for _, bad in ipairs{ "sometimes", "pending:x", "bare:2", "" } do
        assert.is_nil(emulator.parse_cancel(bad), bad)
      end
      local id = submit("a cat @emu:cancel=sometimes @emu:queue=9")
      assert.same({ request_id = id, status = "cancelled", outcome = "cancelled" }, cancel(id))
    end)
  end)

  describe("failed statuses and results that are gone", function()
    it("puts the failure's message in the failed status answer as a string for @emu:fail_error=string", function()
      local id = submit("a cat @emu:fail=Model_run_failed @emu:fail_error=string @emu:queue=0 @emu:run=0")
      emu:advance(0.01)
      local _, body = get(id, "status")
      assert.equal("failed", body.status)
      assert.equal("Model run failed", body.error)
      _, body = get(id, "result")
      assert.equal("failed", body.status)
      assert.equal("Model run failed", body.error)
    end)

    it("puts it as an object with message for @emu:fail_error=object", function()
      local id = submit("a cat @emu:fail=Out_of_memory @emu:fail_error=object @emu:queue=0 @emu:run=0")
      emu:advance(0.01)
      assert.same({ message = "Out of memory" }, select(2, get(id, "status")).error)
      assert.same({ message = "Out of memory" }, select(2, get(id, "result")).error)
    end)

    it("keeps a plain failed status without error, and the result's error_code object", function()
      local id = submit("a cat @emu:fail @emu:queue=0 @emu:run=0")
      emu:advance(0.01)
      assert.is_nil(select(2, get(id, "status")).error)
      assert.same({ error_code = 500001, error_message = "Generation failed: content policy violation" },
        select(2, get(id, "result")).error)
    end)

    it("answers the result route 404 (404001) once the job ended for @emu:no_result, failed, completed or cancelled", function()
      local failed = submit("a cat @emu:fail=Model_run_failed @emu:fail_error=string @emu:no_result @emu:run=1")
      local done = submit("a cat @emu:no_result @emu:run=1")
      local cancelled = submit("a cat @emu:no_result @emu:queue=9")
      -- before the end, the result route answers as usual
      local status, body = get(failed, "result")
      assert.equal(200, status)
      assert.equal("in_queue", body.status)
      assert.equal("cancelled", cancel(cancelled).outcome)
      emu:advance(2.5)
      assert.equal("failed", select(2, get(failed, "status")).status)
      assert.equal("Model run failed", select(2, get(failed, "status")).error)
      for _, id in ipairs{ failed, done, cancelled } do
        status, body = get(id, "result")
        assert.equal(404, status)
        assert.same({ error_code = 404001, error_message = "Request result not found" }, body)
      end
      assert.equal(1, emu:job_record(failed).no_result_answers)
      assert.is_true(emu:job_record(done).result_at_clock == cjson.null)
    end)

    it("answers 400 (400001) instead for @emu:no_result=400", function()
      local id = submit("a cat @emu:fail @emu:no_result=400 @emu:queue=0 @emu:run=0")
      emu:advance(0.01)
      local status, body = get(id, "result")
      assert.equal(400, status)
      assert.same({ error_code = 400001, error_message = "Request result not available" }, body)
    end)
  end)

  describe("outputs without a usable video", function()
    local function output_of(kind)
      local id = submit("a cat @emu:queue=0 @emu:run=0 @emu:output=" .. kind)
      emu:advance(0.01)
      local status, body, res = get(id, "result")
      assert.equal(200, status)
      assert.equal("completed", body.status)
      return body, res.body, id
    end

    it("answers output.video as an empty string for @emu:output=empty", function()
      local body, text = output_of("empty")
      assert.same({ video = "" }, body.output)
      assert.is_truthy(text:find('"output":{"video":""}', 1, true))
    end)

    it("answers an output without video for @emu:output=missing, video null for =null, no output for =none", function()
      local _, text = output_of("missing")
      assert.is_truthy(text:find('"output":{}', 1, true), text)
      _, text = output_of("null")
      assert.is_truthy(text:find('"output":{"video":null}', 1, true), text)
      local body
      body, text = output_of("none")
      assert.is_nil(body.output)
      assert.is_nil(text:find('"output"', 1, true))
    end)

    it("answers videos: [] for @emu:output=videos_empty, and a one-element videos list for =videos", function()
      local _, text = output_of("videos_empty")
      assert.is_truthy(text:find('"output":{"videos":[]}', 1, true), text)
      local body, _, id = output_of("videos")
      assert.equal(1, #body.output.videos)
      assert.is_nil(body.output.video)
      local file = emu:http("GET", body.output.videos[1])
      assert.equal(200, file.status)
      assert.equal(#emulator.sample_video(), #file.body)
      assert.matches(id, body.output.videos[1], 1, true)
    end)
  end)

  describe("the file host's empty answers", function()
    it("serves 200 with Content-Length 0 and no body for @emu:bytes=0, to GET and HEAD", function()
      local id = submit("an empty cat @emu:bytes=0 @emu:queue=0 @emu:run=0")
      emu:advance(0.01)
      local url = select(2, get(id, "result")).output.video
      for _, method in ipairs{ "GET", "HEAD" } do
        local res = emu:http(method, url)
        assert.equal(200, res.status, method)
        assert.equal("0", res.headers["content-length"], method)
        assert.equal("", res.body, method)
      end
    end)
  end)

  describe("slow submits", function()
    it("answers a submit 90 s of the clock late under submit:slow:1:90, having created the job at once", function()
      emu:set_faults{ "submit:slow:1:90" }
      local before = emu.server.counters.jobs_created
      local pending = emu:start("POST", emu.api .. "/models/" .. MODEL, { token = TOKEN, body = '{"prompt":"a patient cat"}' })
      emu:wait_for(function() return emu.server.counters.jobs_created == before + 1 end, "the job")
      emu:advance(89.9)
      assert.is_false(pending.done)
      emu:advance(0.2)
      local res = pending:wait()
      assert.equal(200, res.status)
      assert.matches("^%x+%-", json(res.body).request_id)
    end)

    it("answers a submit S seconds of the clock late for @emu:submit_delay=S, and only that one", function()
      local pending = emu:start("POST", emu.api .. "/models/" .. MODEL,
        { token = TOKEN, body = '{"prompt":"a slow answer @emu:submit_delay=120"}', fresh = true })
      emu:wait_for(function() return emu.server.job_list[#emu.server.job_list].submit_delay == 120 end, "the job")
      submit("a quick answer") -- answered at once, meanwhile
      emu:advance(119)
      assert.is_false(pending.done)
      emu:advance(1)
      local res = pending:wait()
      assert.equal(200, res.status)
      assert.equal(120, emu:job_record(json(res.body).request_id).submit_delay)
    end)
  end)

  describe("the model catalog", function()
    local function catalog(query)
      local res = api("GET", "/models" .. (query or ""))
      assert.equal(200, res.status, res.body)
      return json(res.body), res
    end

    local function ids(list)
      local t = {}
      for i, m in ipairs(list.models) do t[i] = m.model_id end
      return t
    end

    it("lists the models with their prices, categories and inputs, without schemas", function()
      local list, res = catalog()
      assert.equal("application/json", res.headers["content-type"])
      assert.same({ MODEL, I2V, STD }, ids(list))
      assert.equal(3, list.total)
      assert.equal(100, list.limit)
      assert.equal(0, list.offset)
      local pro = list.models[1]
      assert.equal("Kling 3.0 Pro Text to Video", pro.display_name)
      assert.same({ "text-to-video" }, pro.categories)
      assert.equal(0.112, pro.base_price_usd)
      assert.equal("second", pro.price_unit)
      assert.matches("not RunComfy's", pro.pricing_note)
      assert.equal("model", pro.kind)
      assert.same({ "prompt", "negative_prompt", "duration", "aspect_ratio", "cfg_scale", "sound", "multi_prompt",
        "shot_type" }, pro.inputs)
      assert.same({ "prompt" }, pro.required_inputs)
      assert.same({ "prompt", "image_url" }, list.models[2].required_inputs)
      assert.equal(0.07, list.models[3].base_price_usd)
      for _, m in ipairs(list.models) do assert.is_nil(m.input_schema) end
    end)

    it("pages with limit and offset, total counting every match", function()
      local list = catalog("?limit=1&offset=1")
      assert.same({ I2V }, ids(list))
      assert.equal(3, list.total)
      local _, res = catalog("?offset=5")
      assert.is_truthy(res.body:find('"models":[]', 1, true), res.body)
      assert.equal(3, json(res.body).total)
    end)

    it("searches the id, display name and description without regard to case", function()
      assert.same({ STD }, ids(catalog("?search=standard")))
      assert.same({ I2V }, ids(catalog("?search=IMAGE")))
      assert.same({ MODEL }, ids(catalog("?search=pro%20text")))
      assert.same({ MODEL, STD }, ids(catalog("?search=text+to")))
      assert.same({ I2V }, ids(catalog("?search=first%20frame")))
      local none = catalog("?search=%25")
      assert.equal(0, none.total)
    end)

    it("filters by category and kind", function()
      assert.same({ I2V }, ids(catalog("?category=image-to-video")))
      assert.same({ MODEL, STD }, ids(catalog("?category=text-to-video&limit=5")))
      assert.equal(0, catalog("?category=text-to-image").total)
      assert.equal(3, catalog("?kind=model").total)
      assert.equal(0, catalog("?kind=workflow").total)
      assert.same({ STD }, ids(catalog("?category=text-to-video&search=standard")))
    end)

    it("inlines every input_schema with include_schema=true", function()
      local list = catalog("?include_schema=true")
      for _, m in ipairs(list.models) do
        assert.equal("object", m.input_schema.type, m.model_id)
        assert.is_table(m.input_schema.properties.prompt, m.model_id)
      end
      assert.is_nil(catalog("?include_schema=false").models[1].input_schema)
    end)

    it("refuses a limit outside 1 to 500, a negative offset and a bad include_schema with 422 and a detail", function()
      for _, case in ipairs{ { "limit=0", "limit" }, { "limit=501", "limit" }, { "limit=ten", "limit" },
          { "offset=-1", "offset" }, { "include_schema=maybe", "include_schema" } } do
        local res = api("GET", "/models?" .. case[1])
        assert.equal(422, res.status, case[1])
        local body = json(res.body)
        assert.same({ "query", case[2] }, body.detail[1].loc, case[1])
        assert.matches(case[2], body.error_message, 1, true)
      end
      assert.equal(200, api("GET", "/models?limit=500").status)
    end)

    it("lists the categories", function()
      local res = api("GET", "/models/categories")
      assert.equal(200, res.status)
      assert.same({ categories = { "image-to-video", "text-to-video" } }, json(res.body))
    end)

    it("answers a model with its input schema; Kling 3.0 Pro's is the schema the library ships, in its order", function()
      local res = api("GET", "/models/" .. MODEL)
      assert.equal(200, res.status)
      local model = json(res.body)
      assert.equal(MODEL, model.model_id)
      assert.equal("Kling 3.0 Pro Text to Video", model.display_name)
      assert.same({ "text-to-video" }, model.categories)
      assert.equal(0.112, model.base_price_usd)
      assert.equal("second", model.price_unit)
      assert.is_string(model.pricing_note)
      local shipped = assert(helpers.read_file(helpers.root .. "/lua/kling/schemas/kling_3_0_pro_text_to_video.json"))
      assert.same(cjson.decode(shipped), model.input_schema)
      -- the properties come in the file's order
      local text = res.body
      local last = 0
      for _, name in ipairs(model.inputs) do
        local at = text:find('"' .. name .. '": {', 1, true)
        assert.is_truthy(at and at > last, name)
        last = at
      end
    end)

    it("answers the two other models with schemas in the same dialect", function()
      local i2v = api("GET", "/models/" .. I2V)
      assert.equal(200, i2v.status)
      local model = json(i2v.body)
      assert.same({ "image-to-video" }, model.categories)
      local props = model.input_schema.properties
      assert.equal("image_uri", props.image_url.format)
      assert.equal("float", props.cfg_scale.type)
      assert.is_truthy(i2v.body:find('"default": null', 1, true))
      assert.equal("integer", props.multi_prompt.items.duration.type) -- fields directly under items
      local std = api("GET", "/models/" .. STD)
      assert.equal(200, std.status)
      model = json(std.body)
      assert.equal(10, model.input_schema.properties.duration.maximum)
      assert.equal(cjson.null, model.input_schema.properties.cfg_scale.default)
      assert.equal("float", model.input_schema.properties.cfg_scale.type)
    end)

    it("answers 404 (404001) for a model it does not have, and needs the token", function()
      for _, id in ipairs{ "kling/kling-3.0/4k/text-to-video", "nobody/nothing", "x" } do
        local res = api("GET", "/models/" .. id)
        assert.equal(404, res.status, id)
        assert.same({ error_code = 404001, error_message = "Model not found" }, json(res.body))
      end
      for _, path in ipairs{ "/models", "/models/categories", "/models/" .. MODEL } do
        assert.equal(401, api("GET", path, { token = false }).status, path)
      end
    end)

    it("counts catalog requests, and keeps POST on the same paths a submit", function()
      emu:reset()
      catalog()
      api("GET", "/models/categories")
      api("GET", "/models/" .. MODEL)
      local id = submit({ prompt = "a cat" }, "categories")
      local stats = emu:stats()
      assert.equal(3, stats.requests.catalog)
      assert.equal(1, stats.requests.submit)
      assert.equal("categories", emu:job_record(id).model_id)
    end)

    it("takes faults on the catalog route (catalog:FAULT, all:FAULT)", function()
      emu:set_faults{ "catalog:503:1" }
      assert.equal(503, api("GET", "/models").status)
      assert.equal(503, api("GET", "/models/" .. MODEL).status)
      emu:set_faults{ "all:truncated_json:1" }
      local res = api("GET", "/models/categories")
      assert.equal(200, res.status)
      assert.is_nil(pcall(cjson.decode, res.body) and true or nil)
      emu:set_faults{ "catalog:slow:1:30" }
      local pending = emu:start("GET", emu.api .. "/models", { token = TOKEN })
      emu:settle()
      assert.is_false(pending.done)
      emu:advance(30)
      assert.equal(200, pending:wait().status)
    end)
  end)

  describe("submits to the catalog's models", function()
    local function refusal(input, model)
      local res = api("POST", "/models/" .. model, { body = cjson.encode(input) })
      assert.equal(422, res.status, res.body)
      return json(res.body).detail[1]
    end

    it("checks the required fields of the model's schema: image-to-video needs image_url", function()
      local detail = refusal({ prompt = "a cat" }, I2V)
      assert.same({ "body", "image_url" }, detail.loc)
      assert.equal("field required", detail.msg)
      detail = refusal({ image_url = "https://example.com/cat.png" }, I2V)
      assert.same({ "body", "prompt" }, detail.loc)
      local id = submit({ prompt = "a cat", image_url = "https://example.com/cat.png?sig=1" }, I2V)
      assert.equal(I2V, emu:job_record(id).model_id)
      id = submit({ prompt = "a cat" }, STD)
      assert.equal(STD, emu:job_record(id).model_id)
    end)

    it("takes an http(s) URL or a data: URI in a URL field, and refuses anything else", function()
      for _, value in ipairs{ "ftp://example.com/cat.png", "cat.png", "", "https://" } do
        assert.same({ "body", "image_url" }, refusal({ prompt = "a cat", image_url = value }, I2V).loc, value)
      end
      assert.equal("type_error.str", refusal({ prompt = "a cat", image_url = 5 }, I2V).type)
      assert.equal("value_error.url", refusal({ prompt = "a cat", image_url = "https://example.com/a.png",
        end_image_url = "file:///etc/passwd" }, I2V).type)
      local id = submit({ prompt = "a cat", image_url = PNG, end_image_url = cjson.null }, I2V)
      local record = emu:job_record(id)
      assert.same({ { field = "image_url", media_type = "image/png", bytes = 70 } }, record.data_uris)
    end)

    it("records the data: URIs of any model's input, in arrays too, and refuses malformed ones", function()
      local id = submit({ prompt = "a cat", image_urls = { "https://example.com/x.png", PNG } }, "someone/other-model")
      assert.same({ { field = "image_urls", index = 1, media_type = "image/png", bytes = 70 } },
        emu:job_record(id).data_uris)
      for _, bad in ipairs{ "data:image/png;base64", "data:image/png;base64,abc", "data:image/png;base64,ab!d",
          "data:image/png;base64,a=bc" } do
        local detail = refusal({ prompt = "a cat", image_url = bad }, I2V)
        assert.equal("value_error.data_uri", detail.type, bad)
      end
      assert.same({}, emu:job_record(submit("a cat")).data_uris)
    end)

    it("refuses a data: URI over the limit of its media type (image 6 MiB), and takes a video of 24 MiB", function()
      local MiB = 1024 * 1024
      local over = "data:image/jpeg;base64," .. string.rep("A", (6 * MiB + 3) // 3 * 4)
      local detail = refusal({ prompt = "a cat", image_url = over }, I2V)
      assert.equal("value_error.too_large", detail.type)
      assert.matches("over the 6 MiB limit for image", detail.msg)
      local at = "data:image/jpeg;base64," .. string.rep("A", 6 * MiB // 3 * 4)
      submit({ prompt = "a cat", image_url = at }, I2V)
      local video = "data:video/mp4;base64," .. string.rep("A", 24 * MiB // 3 * 4)
      local id = submit({ prompt = "a cat", video_url = video }, "someone/video-model")
      local record = emu:job_record(id)
      assert.equal(24 * MiB, record.data_uris[1].bytes)
      assert.is_true(record.body_bytes > 32 * MiB)
    end)

    it("refuses a body over 64 MiB with 413 before reading it", function()
      local head = "POST /v1/models/" .. MODEL .. " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " .. TOKEN
        .. "\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
      local answer = emu:raw(emu.api, string.format(head, 64 * 1024 * 1024 + 1))
      assert.matches("^HTTP/1%.1 413 ", answer)
      assert.matches('"error_code":413001', answer)
      assert.equal(64 * 1024 * 1024, emulator.DEFAULTS.max_body)
    end)

    it("charges the model's price per second: 0.35 for 5 s of Kling 3.0 Standard", function()
      local id = submit({ prompt = "a cheap cat @emu:queue=0 @emu:run=0" }, STD)
      emu:advance(0.01)
      local res = api("GET", "/requests/" .. id .. "/result?include_cost=true")
      assert.equal(0.35, json(res.body).cost)
      assert.equal(0.07, emu:job_record(id).price_per_second)
    end)
  end)
end)
