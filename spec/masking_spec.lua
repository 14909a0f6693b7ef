-- The token is masked where server text enters kling, and nowhere else:
-- * answers (messages, details, outputs and their URLs, status words, ids, field names, the
--   headers kept) are masked as they are read, through the client's scrubber on whole byte
--   strings, so the journal, --json, the terminal and file names derived from URLs never hold
--   it; kling's own protocol words ("status", "completed"...) are never masked;
-- * text kling builds from the user's own paths and options, and libcurl's own messages
--   about them, are never masked, whatever the token: with the token `dev`,
--   `Could not resolve host: devbox.invalid` reads as is;
-- * where a message kling builds quotes a server (a redirect's Location, a Content-Range),
--   that quoted part is masked.
-- Both directions with a long token and with tokens of 1 to 3 characters.
local helpers = require "helpers"
local kling = require "kling"
local cjson = require "cjson"
local scripted = require "scripted_api"
local cli_run = require "cli_run"

local q = helpers.quote
local LONG = "sekrit-token-123-long"

local function has(s, token) return (s or ""):find(token, 1, true) ~= nil end

describe("masking", function()
  local dir, api

  setup(function()
    dir = helpers.tmpdir()
    api = scripted.start(dir)
  end)
  teardown(function()
    if api then api.stop() end
    helpers.rm_rf(dir)
  end)

  local function scratch() return helpers.scratch(dir) end

  local function client(token, extra)
    local opts = { base_url = api.api, token = token, timeout = 5, retries = { max = 2, base = 0.01, cap = 0.02 },
      poll = { initial = 0.02, min = 0.02, near = 0.05, max = 0.1 }, on_warning = false }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return kling.new(opts)
  end

  -- one completed job "m-1" whose result is `result` (a table)
  local function serve_job(result, status_body)
    result.request_id, result.status = "m-1", result.status or "completed"
    api.serve {
      { "POST", "^/v1/models/", { { 200, '{"request_id":"m-1","status":"in_queue"}' } } },
      { "GET", "^/v1/requests/m%-1/status$", { { 200, status_body or '{"request_id":"m-1","status":"completed"}' } } },
      { "GET", "^/v1/requests/m%-1/result$", { { 200, cjson.encode(result) } } },
    }
  end

  describe("a long token, in what the server sends", function()
    local EVIL_URL = "http://127.0.0.1:1/\27]0;x\7" .. LONG .. ".mp4"

    it("masks a result's output (values past a NUL byte, URLs, field names) before the journal keeps it", function()
      serve_job { output = { video = EVIL_URL, note = "\27" .. LONG .. "\0" .. LONG, [LONG] = 1,
        deep = { { LONG .. "/x" } } } }
      local d = scratch()
      local c = client(LONG, { journal = d .. "/j.jsonl" })
      local job = assert(c:submit("acme/any-model", { prompt = "p" }))
      local out = assert(job:wait { timeout = 20 })
      assert.equals("http://127.0.0.1:1/\27]0;x\7***.mp4", out.video)
      assert.equals("\27***\0***", out.note)
      assert.equals(1, out["***"])
      assert.equals("***/x", out.deep[1][1])
      assert.equals(out.video, job.video_url)
      local text = helpers.read_file(d .. "/j.jsonl")
      assert.matches('"ended"', text, 1, true)
      assert.is_false(has(text, LONG))
      -- the direct route masks the same
      local again = assert(c:job("m-1"))
      local out2 = assert(again:result())
      assert.equals("\27***\0***", out2.note)
      c:close()
    end)

    it("keeps the token out of the CLI's terminal output, --json, the journal and the file name it derives", function()
      serve_job { output = { video = EVIL_URL, note = LONG } }
      local d = scratch()
      local cli = cli_run.new { api = api.api, token = LONG, dir = d }
      local res = cli.run { "generate", "x", "--model", "acme/any-model", "-q" }
      assert.equals(7, res.code, res.err) -- nothing listens on port 1
      assert.is_false(has(res.out .. res.err, LONG))
      assert.matches("downloading to __0_x____.mp4", res.err, 1, true)
      res = cli.run { "generate", "x", "--model", "acme/any-model", "--json" }
      assert.is_false(has(res.out .. res.err, LONG))
      local o = cjson.decode(res.out)
      assert.equals("http://127.0.0.1:1/\27]0;x\7***.mp4", o.video)
      res = cli.run { "jobs", "--all", "--json" }
      assert.equals(0, res.code, res.err)
      assert.is_false(has(res.out .. res.err, LONG))
      res = cli.run { "jobs", "--all" }
      assert.is_false(has(res.out .. res.err, LONG))
      assert.is_false(has(helpers.read_file(d .. "/state/kling/jobs.jsonl"), LONG))
      res = cli.run { "result", "m-1" }
      assert.is_false(has(res.out .. res.err, LONG))
    end)

    it("masks a status word, in the job, its warning and kling status", function()
      api.serve { { "GET", "^/v1/requests/m%-1/status$", { { 200, cjson.encode { status = "busy-" .. LONG } } } } }
      local warned = {}
      local c = client(LONG, { on_warning = function(m) warned[#warned + 1] = m end })
      local job = assert(c:job("m-1"))
      assert.equals("busy-***", assert(job:refresh()))
      local _, err = job:wait { timeout = 0.3 }
      assert.equals("timeout", err.kind)
      assert.equals("busy-***", job.status)
      assert.is_false(has(table.concat(warned, "\n"), LONG))
      assert.is_true(#warned > 0)
      local res = cli_run.new { api = api.api, token = LONG, dir = scratch() }.run { "status", "m-1" }
      assert.equals("m-1  busy-***\n", res.out)
      c:close()
    end)

    it("masks an id the server gave: a request id that holds the token is refused, and kept masked", function()
      api.serve { { "POST", "^/v1/models/", { { 200, cjson.encode { request_id = LONG } } } } }
      local d = scratch()
      local c = client(LONG, { journal = d .. "/j.jsonl" })
      local job, err = c:submit("acme/any-model", { prompt = "p" })
      assert.is_nil(job)
      assert.equals("submit_unknown", err.kind)
      assert.equals("***", err.request_id_raw)
      assert.is_false(has(tostring(err), LONG))
      assert.is_false(has(helpers.read_file(d .. "/j.jsonl"), LONG))
      -- and beside an error
      api.serve { { "POST", "^/v1/models/", { { 503, cjson.encode { request_id = "a" .. LONG } } } } }
      local _, err2 = c:submit("acme/any-model", { prompt = "p" })
      assert.equals("a***", err2.request_id_raw)
      c:close()
    end)

    it("masks an error body's message and detail, and the headers it keeps", function()
      api.serve { { "GET", "^/v1/requests/m%-1/status$",
        { { 403, cjson.encode { error_message = LONG .. "\0" .. LONG, detail = { { msg = LONG, loc = { LONG } } } },
          "application/json; x=" .. LONG } } } }
      local c = client(LONG)
      local _, err, res = c:_api("GET", api.api .. "/requests/m-1/status", nil, { request_id = "m-1" })
      assert.equals("auth", err.kind)
      assert.equals("***\0***", err.message)
      assert.equals("***", err.detail[1].msg)
      assert.equals("***", err.detail[1].loc[1])
      assert.equals("application/json; x=***", res.content_type)
      assert.is_false(has(res.body, LONG))
      c:close()
    end)

    -- A token with dots (a JWT's shape) split by a server into a detail's loc parts: no piece
    -- holds it, the message kling joins them into does.
    it("masks a token that only appears once kling joins an error detail's parts (loc with dots)", function()
      local JWT = "hdr-sekrit.payload-sekrit.sig-sekrit"
      api.serve { { "GET", "^/v1/requests/m%-1/status$",
        { { 422, cjson.encode { detail = { { msg = "x", loc = { "hdr-sekrit", "payload-sekrit", "sig-sekrit" } } } } } } } }
      local c = client(JWT)
      local _, err = c:_api("GET", api.api .. "/requests/m-1/status", nil, { request_id = "m-1" })
      assert.is_false(has(err.message, JWT))
      assert.is_false(has(tostring(err), JWT))
      assert.equals("***: x", err.message)
      c:close()
    end)

    it("masks a token that only appears once kling joins a failed job's detail parts", function()
      local JWT = "hdr-sekrit.payload-sekrit"
      api.serve {
        { "GET", "^/v1/requests/m%-1/status$", { { 200, cjson.encode { status = "failed",
          detail = { { msg = "bad", loc = { "hdr-sekrit", "payload-sekrit" } } } } } } },
        { "GET", "^/v1/requests/m%-1/result$", { { 200, cjson.encode { status = "failed",
          detail = { { msg = "bad", loc = { "hdr-sekrit", "payload-sekrit" } } } } } } },
      }
      local c = client(JWT)
      local job = assert(c:job("m-1"))
      local _, err = job:wait { timeout = 20 }
      assert.equals("failed", err.kind)
      assert.is_false(has(err.message, JWT))
      assert.is_false(has(tostring(err), JWT))
      c:close()
    end)

    it("masks a redirect's Location where the download error quotes it", function()
      api.serve { { "GET", "^/v/r%.mp4$", { { 302, "", "text/plain\r\nLocation: ftp://127.0.0.1/" .. LONG .. ".mp4" } } } }
      local d = scratch()
      local c = client(LONG)
      local got, err = c:download_url(api.base .. "/v/r.mp4", d .. "/r.mp4")
      assert.is_nil(got)
      assert.matches("refusing the redirect to ftp://127.0.0.1/***.mp4", err.message, 1, true)
      assert.is_false(has(err.message, LONG))
      -- a Location to plain http on another host: the reason quotes its host
      api.serve { { "GET", "^/v/r%.mp4$", { { 302, "", "text/plain\r\nLocation: http://" .. LONG .. ".example/a.mp4" } } } }
      local _, err2 = c:download_url(api.base .. "/v/r.mp4", d .. "/r2.mp4")
      assert.is_false(has(err2.message, LONG))
      assert.matches("***", err2.message, 1, true)
      c:close()
    end)

    it("masks a Content-Range where the download error quotes it", function()
      api.serve { { "GET", "^/v/c%.mp4$", { { 206, "0123456789", "video/mp4\r\nContent-Range: bytes 0-9/" .. LONG } } } }
      local d = scratch()
      local c = client(LONG)
      local got, err = c:download_url(api.base .. "/v/c.mp4", d .. "/c.mp4")
      assert.is_nil(got)
      assert.equals("protocol", err.kind)
      assert.matches("Content-Range 'bytes 0-9/***'", err.message, 1, true)
      assert.is_false(has(err.message, LONG))
      c:close()
    end)
  end)

  describe("short tokens, in what the server sends", function()
    for _, token in ipairs { "Q", "Zq", "dev" } do
      it("masks a " .. #token .. "-character token (" .. token .. ") in a failure, an output and a status word", function()
        api.serve {
          { "GET", "^/v1/requests/m%-1/status$", { { 200, cjson.encode { status = "odd" .. token } },
            { 200, '{"status":"completed"}' } } },
          { "GET", "^/v1/requests/m%-1/result$", { { 200, cjson.encode { status = "completed",
            output = { video = "https://files.invalid/a.mp4", note = "<" .. token .. ">" } } } } },
        }
        local c = client(token)
        local job = assert(c:job("m-1"))
        assert.equals("odd***", assert(job:refresh()))
        local out = assert(job:wait { timeout = 20 })
        assert.equals("<***>", out.note)
        assert.equals("https://files.invalid/a.mp4", out.video) -- no token in it: as it came
        assert.equals("completed", job.status) -- kling's own words are never masked
        c:close()
      end)
    end

    it("keeps kling's own words for a token they contain ('t': status, completed, output, request_id)", function()
      serve_job { output = { video = "https://files.invalid/a.mp4" } }
      local c = client("t")
      local job = assert(c:submit("acme/any-model", { prompt = "p" }))
      assert.equals("m-1", job.id)
      local out = assert(job:wait { timeout = 20 })
      assert.equals("completed", job.status)
      assert.equals("h***", out.video:sub(1, 4)) -- a URL is server text: masked, even so
      c:close()
    end)
  end)

  describe("the user's own text, with short tokens", function()
    it("leaves libcurl's message about the user's base URL alone (token dev, devbox.invalid)", function()
      local c = kling.new { base_url = "https://devbox.invalid/v1", token = "dev", retries = false, timeout = 5 }
      local _, err = assert(c:job("x1")):refresh()
      assert.equals("network", err.kind)
      assert.matches("devbox.invalid", err.message, 1, true)
      assert.is_nil(err.message:find("***", 1, true))
      local res = cli_run.new { api = "https://devbox.invalid/v1", token = "dev", dir = scratch() }
        .run { "status", "x1" }
      assert.equals(7, res.code)
      assert.matches("devbox.invalid", res.err, 1, true)
      assert.is_nil(res.err:find("***", 1, true))
      c:close()
    end)

    it("leaves it alone in a connection refused (token ost, localhost)", function()
      local c = kling.new { base_url = "http://localhost:1/v1", token = "ost", retries = false, timeout = 5 }
      local _, err = assert(c:job("x1")):refresh()
      assert.equals("network", err.kind)
      assert.matches("localhost port 1", err.message, 1, true)
      assert.is_nil(err.message:find("***", 1, true))
      -- and a submit that never left says so unmasked too
      local _, serr = c:submit("acme/any-model", { prompt = "p" })
      assert.matches("localhost", serr.message, 1, true)
      assert.is_nil(serr.message:find("***", 1, true))
      c:close()
    end)

    it("leaves kling's own download messages alone (token t: transfer ended after 50000 bytes)", function()
      local emu = helpers.start_emulator { "--token", "t", "--queue", "0", "--run", "0" }
      finally(function() emu:stop() end)
      local made = helpers.http("POST", emu.api .. "/models/kling/kling-3.0/pro/text-to-video",
        { token = "t", body = cjson.encode { prompt = "cut @emu:bytes=100000" } })
      local id = cjson.decode(made.body).request_id
      emu:set_faults { "download:cut:1" }
      local d = scratch()
      local c = kling.new { base_url = emu.api, token = "t", retries = false, timeout = 5 }
      local got, err = c:download_url(emu.files .. "/v/" .. id .. ".mp4", d .. "/tiny-t.mp4")
      assert.is_nil(got)
      assert.matches("transfer ended after 50000 bytes", err.message, 1, true)
      assert.is_nil(err.message:find("***", 1, true))
      c:close()
    end)

    it("leaves the user's paths alone in an io error (token t)", function()
      local d = scratch()
      local c = kling.new { base_url = api.api, token = "t", retries = false, timeout = 5 }
      api.serve { { "GET", "^/v/f%.mp4$", { { 200, "0123456789", "video/mp4" } } } }
      local _, err = c:download_url(api.base .. "/v/f.mp4", d .. "/no-such-dir/target.mp4")
      assert.equals("io", err.kind)
      assert.matches(d .. "/no-such-dir/target.mp4.part", err.message, 1, true)
      assert.is_nil(err.message:find("***", 1, true))
      c:close()
    end)
  end)
end)
