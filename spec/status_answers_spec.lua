-- A 2xx answer on the status or result route that holds no usable status string ({}, [],
-- {"status":null}, {"status":5}, {"status":""}, an error_code that is no error code with no
-- status, HTML, truncated JSON, an empty 204) is one bad answer, not the end of a job: it is
-- asked again like an answer that cannot be decoded, a few times in a row
-- (kling.core.unusable_tries, 5), then the wait ends with kind protocol. The same rule in the
-- C poller (job:wait and every wait built on it) and in the engine (job:refresh, job:result,
-- with the client's retries). A scripted loopback API (spec/scripted_api.lua) answers.
local helpers = require "helpers"
local kling = require "kling"
local core = require "kling.core"
local scripted = require "scripted_api"
local cli_run = require "cli_run"

local TOKEN = "status-answers-token-81c"
local q = helpers.quote

local QUEUED = '{"request_id":"r1","status":"in_queue","queue_position":0}'
local DONE = '{"request_id":"r1","status":"completed"}'
local RESULT = '{"request_id":"r1","status":"completed","output":{"video":"https://files.invalid/r1.mp4"}}'

-- Answers without a usable status, each with how it goes out: { name, HTTP status, body, type }.
local UNUSABLE = {
  { "{}", 200, "{}" },
  { "[]", 200, "[]" },
  { '{"status":null}', 200, '{"request_id":"r1","status":null}' },
  { '{"status":5}', 200, '{"request_id":"r1","status":5}' },
  { '{"status":""}', 200, '{"request_id":"r1","status":""}' },
  { '{"status":["in_queue"]}', 200, '{"request_id":"r1","status":["in_queue"]}' },
  { "error_code null and no status", 200, '{"error_code":null,"error_message":"x"}' },
  { "error_code 1.5 and no status", 200, '{"error_code":1.5,"error_message":"x"}' },
  { 'error_code "12abc" and no status', 200, '{"error_code":"12abc","error_message":"x"}' },
  { "error_code -1 and no status", 200, '{"error_code":-1,"error_message":"x"}' },
  { "HTML", 200, "<html><body>gateway</body></html>", "text/html" },
  { "truncated JSON", 200, '{"request_id":"r1","status":"in_qu' },
  { "a JSON string", 200, '"in_queue"' },
  { "an empty 204", 204, "" },
  { "an empty 200", 200, "" },
}

describe("a status or result answer without a usable status", function()
  local dir, api

  setup(function()
    dir = helpers.tmpdir()
    api = scripted.start(dir)
  end)
  teardown(function()
    if api then api.stop() end
    os.execute("rm -rf " .. q(dir))
  end)

  local function client(extra)
    local opts = { base_url = api.api, token = TOKEN, timeout = 5,
      retries = { max = 6, base = 0.01, cap = 0.02 },
      poll = { initial = 0.02, min = 0.02, near = 0.05, max = 0.1 } }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return kling.new(opts)
  end

  it("is asked again the same number of times by every layer: kling.core.unusable_tries", function()
    assert.equals(5, core.unusable_tries)
  end)

  describe("job:wait", function()
    for _, u in ipairs(UNUSABLE) do
      it("keeps polling after one status answer of " .. u[1] .. " (queued, it, queued, completed)", function()
        api.serve {
          { "GET", "^/v1/requests/r1/status$", { { 200, QUEUED }, { u[2], u[3], u[4] }, { 200, QUEUED }, { 200, DONE } } },
          { "GET", "^/v1/requests/r1/result$", { { 200, RESULT } } },
        }
        local c = client()
        local job = assert(c:job("r1"))
        local out, err = job:wait { timeout = 20 }
        assert.is_nil(err)
        assert.equals("https://files.invalid/r1.mp4", out.video)
        assert.equals(4, api.count("GET", "/v1/requests/r1/status"))
        c:close()
      end)
    end

    for _, u in ipairs { UNUSABLE[1], UNUSABLE[3], UNUSABLE[11], UNUSABLE[14] } do
      it("keeps fetching after one result answer of " .. u[1], function()
        api.serve {
          { "GET", "^/v1/requests/r1/status$", { { 200, DONE } } },
          { "GET", "^/v1/requests/r1/result$", { { u[2], u[3], u[4] }, { 200, RESULT } } },
        }
        local c = client()
        local out, err = assert(c:job("r1")):wait { timeout = 20 }
        assert.is_nil(err)
        assert.equals("https://files.invalid/r1.mp4", out.video)
        assert.equals(2, api.count("GET", "/v1/requests/r1/result"))
        c:close()
      end)
    end

    it("ends with kind protocol once the status route answered so unusable_tries times in a row", function()
      api.serve { { "GET", "^/v1/requests/r1/status$", { { 200, "{}" } } } }
      local c = client()
      local out, err = assert(c:job("r1")):wait { timeout = 20 }
      assert.is_nil(out)
      assert.equals("protocol", err.kind)
      assert.matches("answer without a status string", err.message, 1, true)
      assert.equals(core.unusable_tries, api.count("GET", "/v1/requests/r1/status"))
      c:close()
    end)

    it("counts the bad answers in a row: a usable one in between starts the count again", function()
      local script = {}
      for _ = 1, 4 do script[#script + 1] = { 200, "{}" } end
      script[#script + 1] = { 200, QUEUED }
      for _ = 1, 4 do script[#script + 1] = { 200, "[]" } end
      script[#script + 1] = { 200, DONE }
      api.serve {
        { "GET", "^/v1/requests/r1/status$", script },
        { "GET", "^/v1/requests/r1/result$", { { 200, RESULT } } },
      }
      local c = client()
      assert(assert(c:job("r1")):wait { timeout = 20 })
      assert.equals(10, api.count("GET", "/v1/requests/r1/status"))
      c:close()
    end)

    it("gives kling.wait_all every job's outcome: one job with a bad answer completes beside the others", function()
      api.serve {
        { "GET", "^/v1/requests/r1/status$", { { 200, "{}" }, { 200, DONE } } },
        { "GET", "^/v1/requests/r1/result$", { { 200, RESULT } } },
        { "GET", "^/v1/requests/r2/status$", { { 200, '{"request_id":"r2","status":"completed"}' } } },
        { "GET", "^/v1/requests/r2/result$", { { 200, (RESULT:gsub("r1", "r2")) } } },
      }
      local c = client()
      local outs, errs = kling.wait_all({ assert(c:job("r1")), assert(c:job("r2")) }, { timeout = 20 })
      assert.is_nil(errs[1])
      assert.is_nil(errs[2])
      assert.equals("https://files.invalid/r2.mp4", outs[2].video)
      c:close()
    end)
  end)

  describe("job:refresh and job:result (the engine, with the client's retries)", function()
    it("ask again after an answer without a status, and read the next one", function()
      api.serve {
        { "GET", "^/v1/requests/r1/status$", { { 200, "{}" }, { 200, '{"status":5}' }, { 200, QUEUED } } },
        { "GET", "^/v1/requests/r1/result$", { { 200, "<html>502</html>", "text/html" }, { 200, RESULT } } },
      }
      local c = client()
      local job = assert(c:job("r1"))
      assert.equals("in_queue", assert(job:refresh()))
      assert.equals(3, api.count("GET", "/v1/requests/r1/status"))
      local out = assert(job:result())
      assert.equals("https://files.invalid/r1.mp4", out.video)
      assert.equals(2, api.count("GET", "/v1/requests/r1/result"))
      c:close()
    end)

    it("end with kind protocol after unusable_tries such answers, as the wait does", function()
      api.serve { { "GET", "^/v1/requests/r1/status$", { { 200, '{"status":null}' } } } }
      local c = client()
      local st, err = assert(c:job("r1")):refresh()
      assert.is_nil(st)
      assert.equals("protocol", err.kind)
      assert.equals(core.unusable_tries, api.count("GET", "/v1/requests/r1/status"))
      c:close()
    end)

    it("ask no more than the client's retries allow (retries = false: once)", function()
      api.serve { { "GET", "^/v1/requests/r1/status$", { { 200, "[]" }, { 200, QUEUED } } } }
      local c = client { retries = false }
      local st, err = assert(c:job("r1")):refresh()
      assert.is_nil(st)
      assert.equals("protocol", err.kind)
      assert.equals(1, api.count("GET", "/v1/requests/r1/status"))
      c:close()
    end)

    it("do not ask the cancel route again for an answer without a status (it has an outcome)", function()
      api.serve { { "POST", "^/v1/requests/r1/cancel$", { { 200, '{"outcome":"cancelled"}' } } } }
      local c = client()
      assert.is_true(assert(c:job("r1")):cancel())
      assert.equals(1, api.count("POST", "/v1/requests/r1/cancel"))
      c:close()
    end)
  end)

  describe("the command line", function()
    it("kling wait completes through {} on the status route (queued, {}, queued, completed)", function()
      api.serve {
        { "GET", "^/v1/requests/r1/status$", { { 200, QUEUED }, { 200, "{}" }, { 200, QUEUED }, { 200, DONE } } },
        { "GET", "^/v1/requests/r1/result$", { { 200, RESULT } } },
      }
      local cli = cli_run.new { api = api.api, token = TOKEN, dir = dir }
      local res = cli.run { "wait", "r1", "-q" }
      assert.equals(0, res.code, res.err)
      assert.equals("https://files.invalid/r1.mp4\n", res.out)
    end)

    it("kling status asks again after [] and prints the status", function()
      api.serve { { "GET", "^/v1/requests/r1/status$", { { 200, "[]" }, { 200, QUEUED } } } }
      local cli = cli_run.new { api = api.api, token = TOKEN, dir = dir }
      local res = cli.run { "status", "r1" }
      assert.equals(0, res.code, res.err)
      assert.matches("r1  queued", res.out, 1, true)
    end)
  end)
end)

describe("the emulator's error bodies that hold no error code and no status", function()
  local emu

  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0.3", "--run", "0.2" }
  end)
  teardown(function()
    if emu then emu:stop() end
  end)

  for _, v in ipairs { "null", "1.5", "12abc", "-1" } do
    it("@emu:error_status=" .. v .. " sent once: the wait goes on and completes", function()
      local c = kling.new { base_url = emu.api, token = TOKEN, timeout = 5,
        poll = { initial = 0.05, min = 0.05, near = 0.2, max = 0.3 } }
      local job = assert(c:generate { prompt = "odd error @emu:error_status=" .. v })
      local out, err = job:wait { timeout = 20 }
      assert.is_nil(err, v)
      assert.is_string(out.video)
      assert.equals(1, emu:job_record(job.id).error_answers.status)
      c:close()
    end)
  end
end)
