-- A submit answer that carries a request id is never "not sent", whatever else it says (an
-- error_code of any family, a 4xx or 5xx status): it is a submit of unknown outcome that keeps
-- the id, in err.request_id, the journal's submit_unknown line, --json and the terminal; the
-- engine never sends it again (not even after an HTTP 429), a batch never resubmits its line,
-- and `kling resume` looks the id up (collecting the job when the service knows it). A scripted
-- loopback API (spec/scripted_api.lua) answers the submits.
local helpers = require "helpers"
local kling = require "kling"
local journal = require "kling.journal"
local scripted = require "scripted_api"
local cli_run = require "cli_run"
local cjson = require "cjson"

local TOKEN = "submit-ids-token-5a7"
local q = helpers.quote
local MODEL_PATH = "/v1/models/acme/any-model"

local function lines_of(path)
  local list = {}
  for line in (helpers.read_file(path) or ""):gmatch("[^\n]+") do list[#list + 1] = cjson.decode(line) end
  return list
end

local function events(path, kind)
  local list = {}
  for _, ev in ipairs(lines_of(path)) do
    if ev.e == kind then list[#list + 1] = ev end
  end
  return list
end

describe("a submit answer that carries a request id", function()
  local dir, api, n = nil, nil, 0

  setup(function()
    dir = helpers.tmpdir()
    api = scripted.start(dir)
  end)
  teardown(function()
    if api then api.stop() end
    os.execute("rm -rf " .. q(dir))
  end)

  local function fresh_journal()
    n = n + 1
    return dir .. "/j" .. n .. ".jsonl"
  end

  local function client(jpath)
    return kling.new { base_url = api.api, token = TOKEN, timeout = 5, journal = jpath,
      retries = { max = 3, base = 0.01, cap = 0.02 }, poll = { initial = 0.02, min = 0.02, near = 0.05, max = 0.1 } }
  end

  local function serve_submit(status, body)
    api.serve { { "POST", "^/v1/models/", { { status, body } } } }
  end

  it("keeps the id of HTTP 200 with error_code 500001: err.request_id, tostring, the journal, resume()", function()
    serve_submit(200, '{"request_id":"req-lost-1","error_code":500001,"error_message":"x"}')
    local jpath = fresh_journal()
    local c = client(jpath)
    local job, err = c:submit("acme/any-model", { prompt = "p" })
    assert.is_nil(job)
    assert.equals("submit_unknown", err.kind)
    assert.equals("req-lost-1", err.request_id)
    assert.equals("server", err.answer_kind)
    assert.equals(500001, err.code)
    assert.is_false(err.retryable)
    assert.matches("req-lost-1", tostring(err), 1, true)
    local su = events(jpath, "submit_unknown")
    assert.equals(1, #su)
    assert.equals("req-lost-1", su[1].request_id)
    assert.equals(0, #events(jpath, "not_sent"))
    local jobs, unknown = assert(c:resume())
    assert.equals(0, #jobs)
    assert.equals(1, #unknown)
    assert.equals("req-lost-1", unknown[1].request_id)
    c:close()
  end)

  it("reads HTTP 200 with status in_queue and error_code 429001 as unknown, never not_sent, sent once", function()
    serve_submit(200, '{"request_id":"req-lost-2","status":"in_queue","error_code":429001}')
    local jpath = fresh_journal()
    local c = client(jpath)
    local _, err = c:submit("acme/any-model", { prompt = "p" })
    assert.equals("submit_unknown", err.kind)
    assert.equals("req-lost-2", err.request_id)
    assert.equals("rate_limited", err.answer_kind)
    assert.equals(1, api.count("POST", MODEL_PATH))
    assert.equals(0, #events(jpath, "not_sent"))
    assert.equals("req-lost-2", events(jpath, "submit_unknown")[1].request_id)
    c:close()
  end)

  local cases = {
    { "error_code 400002 (payment)", 200, '{"request_id":"r-pay","error_code":400002,"error_message":"no balance"}', "payment" },
    { "error_code 401001 (auth)", 200, '{"request_id":"r-auth","error_code":401001}', "auth" },
    { "error_code 404001 (not found)", 200, '{"request_id":"r-nf","error_code":404001}', "not_found" },
    { "error_code 400001 (bad request)", 200, '{"request_id":"r-bad","error_code":400001}', "bad_request" },
    { "error_code 408001 (timeout)", 200, '{"request_id":"r-408","error_code":"408001"}', "timeout" },
    { "HTTP 503", 503, '{"request_id":"r-503","error_message":"busy"}', "server" },
    { "HTTP 422", 422, '{"request_id":"r-422","detail":[{"loc":["body","prompt"],"msg":"bad"}]}', "bad_request" },
    { "HTTP 402", 402, '{"request_id":"r-402"}', "payment" },
    { "HTTP 429 (the engine never sends it again)", 429, '{"request_id":"r-429","error_message":"slow down"}', "rate_limited" },
  }
  for _, case in ipairs(cases) do
    it("keeps the id of an answer with " .. case[1] .. ": unknown outcome, sent once", function()
      serve_submit(case[2], case[3])
      local jpath = fresh_journal()
      local c = client(jpath)
      local id = case[3]:match('"request_id":"([^"]+)"')
      local _, err = c:submit("acme/any-model", { prompt = "p" })
      assert.equals("submit_unknown", err.kind)
      assert.equals(id, err.request_id)
      assert.equals(case[4], err.answer_kind)
      assert.equals(case[2], err.status)
      assert.equals(1, api.count("POST", MODEL_PATH))
      assert.equals(0, #events(jpath, "not_sent"))
      assert.equals(id, events(jpath, "submit_unknown")[1].request_id)
      c:close()
    end)
  end

  it("keeps an id it refuses, escaped, beside an error (request_id_raw), and a number id", function()
    local jpath = fresh_journal()
    local c = client(jpath)
    serve_submit(200, '{"request_id":"../x","error_code":400002}')
    local _, err = c:submit("acme/any-model", { prompt = "p" })
    assert.equals("submit_unknown", err.kind)
    assert.is_nil(err.request_id)
    assert.equals("../x", err.request_id_raw)
    serve_submit(503, '{"request_id":12345}')
    local _, err2 = c:submit("acme/any-model", { prompt = "p" })
    assert.equals("submit_unknown", err2.kind)
    assert.equals("12345", err2.request_id_raw)
    local su = events(jpath, "submit_unknown")
    assert.equals("../x", su[1].request_id_raw)
    assert.equals("12345", su[2].request_id_raw)
    assert.equals(0, #events(jpath, "not_sent"))
    c:close()
  end)

  it("leaves an error answer without a request id as it was: refused for sure, and a 429 is sent again", function()
    local jpath = fresh_journal()
    local c = client(jpath)
    serve_submit(200, '{"error_code":429001,"error_message":"slow"}')
    local _, err = c:submit("acme/any-model", { prompt = "p" })
    assert.equals("rate_limited", err.kind)
    assert.equals(1, #events(jpath, "not_sent"))
    api.serve { { "POST", "^/v1/models/", { { 429, '{"error_message":"slow"}' }, { 200, '{"request_id":"r-ok"}' } } } }
    local job = assert(c:submit("acme/any-model", { prompt = "p" }))
    assert.equals("r-ok", job.id)
    assert.equals(2, api.count("POST", MODEL_PATH))
    c:close()
  end)

  describe("the command line", function()
    local cli

    setup(function()
      cli = cli_run.new { api = api.api, token = TOKEN, dir = dir }
    end)

    it("kling submit: exit 7, the id on stderr, --json says unknown with the id", function()
      serve_submit(200, '{"request_id":"req-lost-2","status":"in_queue","error_code":429001}')
      local st = dir .. "/st-submit"
      local res = cli.run({ "submit", "p", "--model", "acme/any-model" }, { state = st })
      assert.equals(7, res.code, res.err)
      assert.equals("", res.out)
      assert.matches("req-lost-2", res.err, 1, true)
      assert.matches("kling status req-lost-2", res.err, 1, true)
      res = cli.run({ "submit", "p", "--model", "acme/any-model", "--json" }, { state = st })
      assert.equals(7, res.code, res.err)
      local o = cjson.decode(res.out)
      assert.equals("unknown", o.status)
      assert.equals("req-lost-2", o.id)
      assert.equals("req-lost-2", o.error.request_id)
      assert.equals("submit_unknown", o.error.kind)
      assert.equals(2, api.count("POST", MODEL_PATH))
    end)

    it("kling jobs lists it with its id; --json too; --forget takes the id", function()
      serve_submit(200, '{"request_id":"req-lost-3","error_code":500001,"error_message":"x"}')
      local st = dir .. "/st-jobs"
      assert.equals(7, cli.run({ "submit", "p", "--model", "acme/any-model" }, { state = st }).code)
      local res = cli.run({ "jobs" }, { state = st })
      assert.equals(0, res.code, res.err)
      assert.matches("answered request id req-lost-3 (check it: kling status req-lost-3", res.err, 1, true)
      res = cli.run({ "jobs", "--json" }, { state = st })
      local o = cjson.decode(res.out)
      assert.equals("unknown", o.status)
      assert.equals("req-lost-3", o.request_id)
      res = cli.run({ "jobs", "--forget", "req-lost-3" }, { state = st })
      assert.equals(0, res.code, res.err)
      res = cli.run({ "jobs", "--json" }, { state = st })
      assert.equals("", res.out)
    end)

    it("kling resume looks the id up: a job the service knows is collected and leaves the unknown list", function()
      serve_submit(200, '{"request_id":"req-real","error_code":500001,"error_message":"x"}')
      local st = dir .. "/st-resume"
      assert.equals(7, cli.run({ "submit", "p", "--model", "acme/any-model" }, { state = st }).code)
      api.serve {
        { "GET", "^/v1/requests/req%-real/status$", { { 200, '{"request_id":"req-real","status":"completed"}' } } },
        { "GET", "^/v1/requests/req%-real/result$",
          { { 200, '{"request_id":"req-real","status":"completed","output":{"video":"https://f.invalid/a.mp4"}}' } } },
      }
      local res = cli.run({ "resume", "--no-download" }, { state = st })
      assert.equals(0, res.code, res.err)
      assert.equals("req-real\thttps://f.invalid/a.mp4\n", res.out)
      assert.matches("request id req-real, which the service knows", res.err, 1, true)
      local j = st .. "/kling/jobs.jsonl"
      assert.equals("req-real", events(j, "submitted")[1].id)
      assert.equals("completed", events(j, "ended")[1].status)
      res = cli.run({ "jobs", "--all", "--json" }, { state = st })
      local o = cjson.decode(res.out)
      assert.equals("req-real", o.id)
      assert.equals("completed", o.status)
      assert.is_nil(res.out:find('"unknown"', 1, true))
      -- compaction drops the answered unknown outcome with the job's lines
      assert.equals(0, cli.run({ "jobs", "--compact" }, { state = st }).code)
      assert.equals("", helpers.read_file(j))
    end)

    it("kling resume says when the service does not know the id, and keeps listing it", function()
      serve_submit(200, '{"request_id":"req-ghost","error_code":500001}')
      local st = dir .. "/st-ghost"
      assert.equals(7, cli.run({ "submit", "p", "--model", "acme/any-model" }, { state = st }).code)
      api.serve {} -- every request: 404 with error_code 404001
      local res = cli.run({ "resume" }, { state = st })
      assert.equals(0, res.code, res.err)
      assert.matches("does not know its request id", res.err, 1, true)
      assert.matches("req-ghost", res.err, 1, true)
      local _, unknown = journal.open(st .. "/kling/jobs.jsonl"):state()
      assert.equals(1, #unknown)
    end)

    it("kling batch never sends such a line again, and names the id", function()
      serve_submit(200, '{"request_id":"req-batch","status":"in_queue","error_code":429001}')
      local file = dir .. "/b.jsonl"
      helpers.write_file(file, '{"name":"one","prompt":"x"}\n')
      local out = dir .. "/b-out"
      local st = dir .. "/st-batch"
      local res = cli.run({ "batch", file, "--out-dir", out, "--model", "acme/any-model", "--json" }, { state = st })
      assert.equals(7, res.code, res.err)
      local o = cjson.decode(res.out)
      assert.equals("unknown", o.status)
      assert.equals("req-batch", o.id)
      res = cli.run({ "batch", file, "--out-dir", out, "--model", "acme/any-model", "--json" }, { state = st })
      assert.equals(7, res.code, res.err)
      o = cjson.decode(res.out)
      assert.equals("unknown", o.status)
      assert.equals("req-batch", o.id)
      assert.matches("kling status req-batch", o.error.message, 1, true)
      assert.equals(1, api.count("POST", MODEL_PATH))
    end)
  end)
end)
