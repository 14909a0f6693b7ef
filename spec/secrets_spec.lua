-- What a server sends never leaks the token nor drives the terminal:
-- * the scrubber masks the token in whole byte strings (past a NUL byte);
-- * it masks what the server sent, never text built from the user's own paths (a short
--   token such as "dev" leaves /nonexistent-dir/device-1.mp4 alone);
-- * everything the CLI prints that came from outside has its control characters escaped
--   (ESC of CSI/OSC, CR, BEL, C1, invalid UTF-8), on stdout and stderr.
local helpers = require "helpers"
local cjson = require "cjson"
local kling = require "kling"
local scripted = require "scripted_api"
local cli_run = require "cli_run"

local q = helpers.quote
local TOKEN = "nul-token-Zq81xK"
local eventually = cli_run.eventually

-- A hostile API (spec/hostile_api.lua) answering from a list of
-- { method, path pattern, status, body } (the first that matches; "{BASE}" in a body is
-- the server's own http://127.0.0.1:PORT).
local function hostile(dir)
  local self = { answers = dir .. "/answers.lua", port_file = dir .. "/hostile.port" }
  function self.serve(routes)
    local parts = { "local routes = {" }
    for _, r in ipairs(routes) do
      parts[#parts + 1] = string.format("{ %q, %q, %d, %q },", r[1], r[2], r[3], r[4])
    end
    parts[#parts + 1] = [[}
return function(method, path, base)
  for _, r in ipairs(routes) do
    if method == r[1] and path:match(r[2]) then return r[3], (r[4]:gsub("{BASE}", base)) end
  end
  return 404, '{"error_code":404001,"error_message":"no such route"}'
end]]
    helpers.write_file(self.answers, table.concat(parts, "\n"))
  end
  self.serve {}
  local p = io.popen("exec lua5.4 " .. q(helpers.root .. "/spec/hostile_api.lua") .. " " .. q(self.port_file) .. " "
    .. q(self.answers) .. " >/dev/null 2>&1 & echo $!")
  self.pid = tonumber(p:read("*l"))
  p:close()
  local port = eventually(function() return tonumber(helpers.read_file(self.port_file) or "") end, 10, "the port")
  self.base = "http://127.0.0.1:" .. port
  self.api = self.base .. "/v1"
  function self.stop() os.execute("kill " .. self.pid .. " 2>/dev/null") end
  return self
end

-- The routes of one job "h-1" that fails with the given error object.
local function failing_job(err)
  local failed = cjson.encode { request_id = "h-1", status = "failed", error = err }
  return {
    { "POST", "^/v1/models/", 200, '{"request_id":"h-1"}' },
    { "GET", "^/v1/requests/h%-1/status", 200, '{"request_id":"h-1","status":"failed"}' },
    { "GET", "^/v1/requests/h%-1/result", 200, failed },
  }
end

local function has_token(s) return s:find(TOKEN, 1, true) ~= nil end

describe("secrets", function()
  local dir, api, cli

  setup(function()
    dir = helpers.tmpdir()
    api = hostile(dir)
    cli = cli_run.new { api = api.api, token = TOKEN, dir = dir }
  end)
  teardown(function()
    if api then api.stop() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  describe("NUL bytes", function()
    it("masks the token after a NUL byte in a failed job's message: err.message, tostring, journal", function()
      api.serve(failing_job { error_code = 500001, error_message = "boom\0" .. TOKEN .. "\0and " .. TOKEN })
      local journal = dir .. "/nul.jsonl"
      local c = kling.new { base_url = api.api, token = TOKEN, journal = journal, poll = { initial = 0.05, near = 0.1 } }
      local job = assert(c:generate { prompt = "x" })
      local out, err = job:wait { timeout = 10 }
      assert.is_nil(out)
      assert.equals("failed", err.kind)
      assert.equals("boom\0***\0and ***", err.message)
      assert.is_false(has_token(tostring(err)))
      local text = helpers.read_file(journal)
      assert.matches('"ended"', text, 1, true)
      assert.is_false(has_token(text))
      c:close()
    end)

    it("masks it in an error body's message and detail, and on every route", function()
      api.serve {
        { "POST", "^/v1/models/", 422, cjson.encode { error_message = "bad\0" .. TOKEN,
          detail = { { loc = { "body", "prompt" }, msg = "x\0" .. TOKEN } } } },
        { "GET", "^/v1/requests/h%-2/status", 200, cjson.encode { error_code = 401001, error_message = "\0" .. TOKEN } },
        { "POST", "^/v1/requests/h%-2/cancel", 403, cjson.encode { error_message = TOKEN .. "\0" } },
      }
      local c = kling.new { base_url = api.api, token = TOKEN }
      local _, err = c:submit("acme/any-model", { prompt = "x" })
      assert.equals("bad_request", err.kind)
      assert.equals("bad\0***", err.message)
      assert.equals("x\0***", err.detail[1].msg)
      local job = assert(c:job("h-2"))
      local _, serr = job:refresh()
      assert.equals("auth", serr.kind)
      assert.equals("\0***", serr.message)
      local _, cerr = job:cancel()
      assert.equals("***\0", cerr.message)
      for _, e in ipairs { err, serr, cerr } do assert.is_false(has_token(tostring(e))) end
      c:close()
    end)

    it("keeps the token out of the CLI's output and its journal", function()
      api.serve(failing_job { error_code = 500001, error_message = "boom\0" .. TOKEN })
      local st = dir .. "/state-nul"
      local res = cli.run({ "generate", "leak?" }, { state = st })
      assert.equals(5, res.code, res.err)
      assert.matches("boom\\x00***", res.err, 1, true)
      assert.is_false(has_token(res.err .. res.out))
      res = cli.run({ "generate", "leak?", "--json" }, { state = st })
      assert.is_false(has_token(res.err .. res.out))
      assert.equals("boom\0***", cjson.decode(res.out).error.message)
      assert.is_false(has_token(helpers.read_file(st .. "/kling/jobs.jsonl")))
      res = cli.run({ "jobs", "--all" }, { state = st })
      assert.is_false(has_token(res.err .. res.out))
    end)

    it("reads a status word with a NUL byte as an unknown status, not as the word before it", function()
      api.serve {
        { "GET", "^/v1/requests/h%-3/status", 200, cjson.encode { request_id = "h-3", status = "completed\0x" } },
        { "GET", "^/v1/requests/h%-3/result", 200, cjson.encode { request_id = "h-3", status = "completed\0x" } },
      }
      local warnings = {}
      local c = kling.new { base_url = api.api, token = TOKEN, poll = { initial = 0.05, min = 0.05, near = 0.1, max = 0.1 },
        on_warning = function(m) warnings[#warnings + 1] = m end }
      local job = assert(c:job("h-3"))
      local out, err = job:wait { timeout = 0.5 }
      assert.is_nil(out)
      assert.equals("timeout", err.kind)
      assert.is_false(job:done())
      assert.equals(1, #warnings)
      assert.matches("unknown status", warnings[1], 1, true)
      assert(job:refresh())
      assert.equals("completed\0x", job.status)
      assert.is_false(job:done())
      c:close()
    end)

    it("never reads a URL with a NUL byte cut short", function()
      local c = kling.new { base_url = api.api, token = TOKEN }
      local got, err = c:download_url(api.base .. "/v/a.mp4\0.evil", dir .. "/cut.mp4")
      assert.is_nil(got)
      assert.equals("network", err.kind)
      assert.matches("NUL", err.message, 1, true)
      assert.is_nil(io.open(dir .. "/cut.mp4.part", "rb"))
      -- a status_url with a NUL byte from a submit answer is not used: the URL is built
      api.serve { { "POST", "^/v1/models/", 200,
        cjson.encode { request_id = "h-4", status_url = api.api .. "/requests/h-4/status\0x" } } }
      local job = assert(c:submit("acme/any-model", { prompt = "x" }))
      assert.equals(api.api .. "/requests/h-4/status", job.urls.status)
      c:close()
    end)
  end)

  describe("the service's job URLs", function()
    local api, dir
    setup(function()
      dir = helpers.tmpdir()
      api = scripted.start(dir)
    end)
    teardown(function()
      if api then api.stop() end
      helpers.rm_rf(dir)
    end)

    -- each given URL: is it taken (true), or is the job's URL built from the id (false)?
    local function status_url_for(base_url, given)
      api.serve { { "POST", "^/v1/models/", { { 200, cjson.encode { request_id = "u-1", status_url = given,
        result_url = given, cancel_url = given } } } } }
      local c = kling.new { base_url = base_url, token = TOKEN, on_warning = false, retries = false }
      local job = assert(c:submit("acme/any-model", { prompt = "x" }, { catalog = false }))
      c:close()
      return job.urls.status, job.urls.result, job.urls.cancel
    end

    it("takes a status, result and cancel URL only when it lies under base_url and a slash", function()
      local base = api.api -- http://127.0.0.1:PORT/v1
      local built = base .. "/requests/u-1/status"
      local host = api.base -- http://127.0.0.1:PORT
      for _, given in ipairs {
        base,                                                -- the base URL itself
        base .. "x/requests/u-1/status",                     -- a longer first path segment
        host .. "0/v1/requests/u-1/status",                  -- a longer port
        "http://127.0.0.1.evil.invalid" .. base:sub(#"http://127.0.0.1" + 1) .. "/requests/u-1/status", -- a longer host
        "http://evil.invalid/?" .. base .. "/requests/u-1/status", -- the base later in it
        "http://evil.invalid/" .. base .. "/",               -- the base later in it, then a slash
        base:upper() .. "/requests/u-1/status",              -- the base in other case
        base .. "\\requests/u-1/status",                     -- a backslash, no slash
      } do
        local s, r, cn = status_url_for(base, given)
        assert.same({ built, base .. "/requests/u-1/result", base .. "/requests/u-1/cancel" }, { s, r, cn }, given)
      end
      local under = base .. "/requests/u-1/status?x=1"
      local s, r, cn = status_url_for(base, under)
      assert.equals(under, s)
      assert.equals(under, r)
      assert.equals(under, cn)
    end)

    it("never takes a URL holding a byte from 0 to 32 or 127 (kling.protocol.url_under), wherever it is", function()
      local base = api.api
      local built = base .. "/requests/u-1/status"
      local protocol = require "kling.protocol"
      for b = 0, 128 do
        if b <= 32 or b == 127 then
          for _, given in ipairs { base .. "/requests/u-1/status" .. string.char(b),
            base .. "/requests/u-1" .. string.char(b) .. "/status", string.char(b) .. base .. "/x" } do
            assert.is_false(protocol.url_under(given, base), b)
          end
        end
      end
      -- each refused byte once through a submit answer: the job's URL is built from the id
      for _, b in ipairs { 0, 9, 10, 13, 31, 32, 127 } do
        assert.equals(built, (status_url_for(base, base .. "/requests/u-1/sta" .. string.char(b) .. "tus")), b)
      end
      -- bytes from 128 up are the file host's and the service's business: taken as given
      local high = base .. "/requests/u-1/status?n=\195\169"
      assert.is_true(protocol.url_under(high, base))
      assert.equals(high, (status_url_for(base, high)))
      assert.is_false(protocol.url_under(nil, base))
      assert.is_false(protocol.url_under(42, base))
      assert.is_false(protocol.url_under(base, base))
      assert.is_false(protocol.url_under(base .. "x/y", base))
    end)

    it("reads a base_url with pattern characters as plain text when it checks a URL under it", function()
      -- ".", "-", "%" and "(" are magic in a Lua pattern: a URL that such a pattern would
      -- match but that is not under the base is built from the id
      local base = api.base .. "/v1-a.b%25(c)"
      local built = base .. "/requests/u-1/status"
      api.serve { { "POST", "^/v1%-a%.b%%25%(c%)/models/", { { 200, cjson.encode { request_id = "u-1",
        status_url = api.base .. "/v1-aXb%25(c)/requests/u-1/status" } } } } }
      local c = kling.new { base_url = base, token = TOKEN, on_warning = false, retries = false }
      local job = assert(c:submit("acme/any-model", { prompt = "x" }, { catalog = false }))
      assert.equals(built, job.urls.status)
      api.serve { { "POST", "^/v1%-a%.b%%25%(c%)/models/", { { 200, cjson.encode { request_id = "u-1",
        status_url = base .. "/requests/u-1/status?given=1" } } } } }
      job = assert(c:submit("acme/any-model", { prompt = "x" }, { catalog = false }))
      assert.equals(base .. "/requests/u-1/status?given=1", job.urls.status)
      c:close()
    end)
  end)

  describe("short tokens", function()
    local emu, sdir

    setup(function()
      emu = helpers.start_emulator { "--token", "dev", "--queue", "0", "--run", "0" }
      sdir = helpers.tmpdir()
    end)
    teardown(function()
      if emu then emu:stop() end
      os.execute("rm -rf " .. q(sdir))
    end)

    local function done_job(c)
      local job = assert(c:generate { prompt = "device" })
      assert(job:wait { timeout = 10 })
      return job
    end

    it("leaves the user's own path alone in a download error", function()
      local c = kling.new { base_url = emu.api, token = "dev", poll = { initial = 0.05, near = 0.1 } }
      local job = done_job(c)
      local _, err = job:download("/nonexistent-dir/device-1.mp4")
      assert.matches("/nonexistent-dir/device-1.mp4.part", err.message, 1, true)
      assert.is_nil(err.message:find("***", 1, true))
      c:close()
    end)

    it("leaves it alone when the finished file cannot take its name, too", function()
      local c = kling.new { base_url = emu.api, token = "dev", poll = { initial = 0.05, near = 0.1 } }
      local job = done_job(c)
      local target = sdir .. "/devices/clip.mp4"
      assert(os.execute("mkdir -p " .. q(target .. "/inside"))) -- a non-empty directory: rename fails
      local _, err = job:download(target)
      assert.is_string(err and err.message)
      assert.matches(sdir .. "/devices/clip.mp4", err.message, 1, true)
      assert.is_nil(err.message:find("***", 1, true))
      c:close()
    end)

    it("still masks the token in what the server sent", function()
      local c = kling.new { base_url = emu.api, token = "dev", poll = { initial = 0.05, near = 0.1 } }
      local job = assert(c:generate { prompt = "@emu:fail=the_device_dev_failed" })
      local _, err = job:wait { timeout = 10 }
      assert.equals("failed", err.kind)
      assert.equals("the ***ice *** failed", err.message)
      c:close()
    end)

    it("shows the user's path intact in the CLI's message", function()
      local short = cli_run.new { api = emu.api, token = "dev", dir = sdir }
      local target = sdir .. "/devout"
      assert(os.execute("mkdir -p " .. q(target .. "/device-2.mp4.part")))
      local res = short.run { "generate", "devout", "-o", target .. "/device-2.mp4" }
      assert.is_true(res.code ~= 0)
      assert.matches(target .. "/device-2.mp4.part", res.err, 1, true)
    end)
  end)

  describe("terminals", function()
    local EVIL = "\27]0;pwned\7\27[2J\rfake line\nkling: cancelled nothing\t\194\155x\255\127end"

    local function clean(s)
      return not s:find("[%z\1-\8\11-\31\127]") and not s:find("\194[\128-\159]") and helpers.utf8_len(s) ~= nil
    end

    it("escapes a server's failure message on stderr (plain) and in the journal listing", function()
      api.serve(failing_job { error_code = 500001, error_message = EVIL })
      local st = dir .. "/state-evil"
      local res = cli.run({ "generate", "evil" }, { state = st })
      assert.equals(5, res.code, res.err)
      assert.is_true(clean(res.err), res.err)
      assert.is_true(clean(res.out), res.out)
      assert.matches("\\x1b]0;pwned\\x07\\x1b[2J\\rfake line\\nkling: cancelled nothing\\t\\u009bx\\xff\\x7fend",
        res.err, 1, true)
      res = cli.run({ "jobs", "--all" }, { state = st })
      assert.equals(0, res.code, res.err)
      assert.is_true(clean(res.out), res.out)
      assert.matches("\\x1b]0;pwned", res.out, 1, true)
    end)

    it("escapes a status word, a video URL and an id from the journal", function()
      api.serve {
        { "GET", "^/v1/requests/h%-5/status", 200, cjson.encode { request_id = "h-5", status = "\27[31mred\27[0m" } },
        { "GET", "^/v1/requests/h%-6/status", 200, '{"request_id":"h-6","status":"completed"}' },
        { "GET", "^/v1/requests/h%-6/result", 200,
          cjson.encode { request_id = "h-6", status = "completed", output = { video = "https://x.test/\27[2Ja.mp4" } } },
      }
      local res = cli.run { "status", "h-5" }
      assert.is_true(clean(res.out), res.out)
      assert.matches("h-5  \\x1b[31mred\\x1b[0m", res.out, 1, true)
      res = cli.run { "result", "h-6" }
      assert.equals(0, res.code, res.err)
      assert.equals("https://x.test/\\x1b[2Ja.mp4\n", res.out)
      res = cli.run { "wait", "h-6", "--no-download" }
      assert.is_true(clean(res.out .. res.err))
      -- a journal written by someone else, with an id no request would have
      local st = dir .. "/state-forged"
      os.execute("mkdir -p " .. q(st .. "/kling"))
      helpers.write_file(st .. "/kling/jobs.jsonl", cjson.encode { e = "submitted", id = "x\27[2Jy", model = "m\7", t = 1 }
        .. "\n" .. cjson.encode { e = "submit_unknown", model = "m\27]0;t\7", message = "lost\r\27[K", t = 2 } .. "\n")
      res = cli.run({ "jobs", "--all" }, { state = st })
      assert.is_true(clean(res.out .. res.err), res.out .. res.err)
      assert.matches("x\\x1b[2Jy", res.out, 1, true)
      assert.matches("lost\\r\\x1b[K", res.err, 1, true)
    end)

    it("escapes what it draws on a terminal, and keeps its own drawing", function()
      api.serve {
        { "GET", "^/v1/requests/h%-7/status", 200, cjson.encode { request_id = "h-7", status = "\27]0;title\7odd" } },
      }
      local res = cli.run({ "wait", "h-7", "--timeout", "1" }, { env = { KLING_TTY = "1", COLUMNS = "100", LINES = "20" } })
      assert.equals(6, res.code, res.err)
      assert.is_nil(res.out:find("\27]", 1, true))
      assert.is_nil(res.out:find("\7", 1, true))
      assert.matches("\\x1b]0;title\\x07odd", res.out, 1, true)
      assert.matches("\27[J", res.out, 1, true) -- the live area's own erase sequence
      assert.is_true(clean(res.err), res.err)
    end)

    it("keeps --json output valid JSON carrying the server's text as it was", function()
      api.serve(failing_job { error_code = 500001, error_message = "\27[2Jred\r" })
      local res = cli.run({ "generate", "json", "--json" }, { state = dir .. "/state-json" })
      local o = cjson.decode(res.out)
      assert.equals("\27[2Jred\r", o.error.message)
      assert.is_nil(res.out:find("\27", 1, true))
      assert.is_true(clean(res.err), res.err)
    end)
  end)
end)
