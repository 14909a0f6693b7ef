-- The C core (kling.core) and the client's transport behaviour, over real HTTP.
local helpers = require "helpers"
local kling = require "kling"
local core = require "kling.core"
local cqueues = require "cqueues"
local csocket = require "cqueues.socket"

local TOKEN = "core-spec-token"

-- A TCP listener that never accepts: the kernel completes the handshake, the
-- request goes out, and no answer ever comes.
local function silent_listener()
  local s = assert(csocket.listen { host = "127.0.0.1", port = 0 })
  assert(s:listen())
  local _, _, port = s:localname()
  return s, port
end

-- A closed port: bound, then closed again.
local function closed_port()
  local s, port = silent_listener()
  s:close()
  return port
end

local function drive(engine, x)
  local deadline = core.now() + 10
  while not x:done() and core.now() < deadline do engine:step(0.5) end
  return x:result()
end

describe("kling.core", function()
  local emu, dir

  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0.1", "--run", "0.1" }
    dir = helpers.tmpdir()
  end)
  teardown(function()
    if emu then emu:stop() end
    os.execute("rm -rf " .. helpers.quote(dir))
  end)

  it("reports libcurl's version and HTTP/2 support", function()
    assert.matches("^%d+%.%d+", core.curl_version)
    assert.is_boolean(core.http2)
  end)

  it("is the sanitized build under make check", function()
    assert.equals(os.getenv("KLING_EXPECT_SANITIZED") == "1", core.sanitized)
  end)

  it("reads an answer's status, body and headers", function()
    local e = core.new { base_url = emu.api, token = TOKEN }
    local r = drive(e, assert(e:request { url = emu.api .. "/requests/nope-1/status" }))
    assert.equals(404, r.status)
    assert.matches("404001", r.body)
    assert.matches("^application/json", r.content_type)
    assert.equals(tostring(#r.body), r.content_length)
    assert.is_nil(r.error)
    e:close()
  end)

  it("caps an in-memory body at max_body and says so", function()
    local c = kling.new { base_url = emu.api, token = TOKEN, max_body = 4096, poll = { initial = 0.05 } }
    local job = assert(c:generate { prompt = "big @emu:bytes=100000" })
    assert(job:wait())
    local e = c._engine
    local r = drive(e, assert(e:request { url = job.output.video }))
    assert.equals("too_large", r.error.kind)
    assert.matches("4096%-byte cap", r.error.message)
    c:close()
  end)

  it("sends the token to the API's origin only", function()
    local e = core.new { base_url = emu.api, token = TOKEN }
    -- the file host is another origin (another port): no token, so a request
    -- there is not authenticated even on an API path
    local files_api = emu.files .. "/v1/requests/x/status"
    drive(e, assert(e:request { url = files_api }))
    assert.equals(0, emu:stats().files.authorization_headers)
    e:close()
  end)

  it("refuses plain http to a host other than loopback", function()
    local e = core.new { base_url = emu.api, token = TOKEN }
    local x, err = e:request { url = "http://example.com/v1/x" }
    assert.is_nil(x)
    assert.matches("refusing plain http", err)
    for _, host in ipairs { "127.evil.example", "127.0.0.1.evil.example", "127..0.1" } do
      local z, why = e:request { url = "http://" .. host .. "/v1/x" }
      assert.is_nil(z, host)
      assert.matches("refusing plain http", why)
    end
    local y, err2 = e:request { url = "ftp://127.0.0.1/x" }
    assert.is_nil(y)
    assert.matches("scheme", err2)
    e:close()
    assert.has_error(function() kling.new { base_url = "http://api.example.com/v1" } end)
    local ok = pcall(kling.new, { base_url = "http://api.example.com/v1", allow_insecure_http = true })
    assert.is_true(ok)
  end)

  it("classifies a refused connection as never sent", function()
    local port = closed_port()
    local e = core.new { base_url = "http://127.0.0.1:" .. port .. "/v1" }
    local r = drive(e, assert(e:request { url = "http://127.0.0.1:" .. port .. "/v1/x" }))
    assert.equals("connect", r.error.kind)
    assert.is_false(r.error.sent)
    e:close()
  end)

  it("tries a submit that could not connect again, then returns kind network (not submit_unknown)", function()
    local port = closed_port()
    local c = kling.new { base_url = "http://127.0.0.1:" .. port .. "/v1", token = TOKEN,
      retries = { max = 3, base = 0.01 } }
    local job, err = c:generate { prompt = "nobody home" }
    assert.is_nil(job)
    assert.equals("network", err.kind)
    assert.is_true(err.retryable)
    assert.equals(3, c._engine:stats().retries)
    c:close()
  end)

  it("returns kind submit_unknown when a submit times out after it was sent, and never resends it", function()
    local s, port = silent_listener()
    local c = kling.new { base_url = "http://127.0.0.1:" .. port .. "/v1", token = TOKEN, timeout = 0.3,
      retries = { base = 0.01 } }
    local job, err = c:generate { prompt = "into the void" }
    assert.is_nil(job)
    assert.equals("submit_unknown", err.kind)
    assert.matches("not sent again", err.message)
    assert.equals(0, c._engine:stats().retries)
    c:close()
    s:close()
  end)

  it("tries a status request past its timeout again, then returns kind timeout", function()
    local s, port = silent_listener()
    local c = kling.new { base_url = "http://127.0.0.1:" .. port .. "/v1", token = TOKEN, timeout = 0.2,
      retries = { max = 2, base = 0.01 } }
    local job = assert(c:job("req-1"))
    local st, err = job:refresh()
    assert.is_nil(st)
    assert.equals("timeout", err.kind)
    assert.equals(2, c._engine:stats().retries)
    c:close()
    s:close()
  end)

  it("aborts a transfer in flight when its client is closed", function()
    local s, port = silent_listener()
    local e = core.new { base_url = "http://127.0.0.1:" .. port .. "/v1" }
    local x = assert(e:request { url = "http://127.0.0.1:" .. port .. "/v1/x" })
    e:step(0.05)
    assert.is_false(x:done())
    assert.equals(1, e:pending())
    e:close()
    assert.is_true(x:done())
    assert.equals("aborted", x:result().error.kind)
    assert.has_error(function() e:step(0) end)
    s:close()
  end)

  it("streams a download to path.part and renames it only when complete", function()
    local c = kling.new { base_url = emu.api, token = TOKEN, poll = { initial = 0.05 } }
    local job = assert(c:generate { prompt = "file @emu:bytes=200000" })
    assert(job:wait())
    local path = dir .. "/d.bin"
    local x = assert(c._engine:request { url = job.output.video, download = path })
    assert.is_nil(io.open(path .. ".part", "rb")) -- created with the first verified byte, not before
    local r = drive(c._engine, x)
    assert.equals(200, r.status)
    assert.equals(path, r.path)
    assert.equals(200000, r.bytes)
    assert.is_nil(io.open(path .. ".part", "rb"))
    assert.equals(200000, #helpers.read_file(path))
    c:close()
  end)

  it("goes on from a .part of the same file with a Range request, and can start over", function()
    local c = kling.new { base_url = emu.api, token = TOKEN, poll = { initial = 0.05 }, retries = false }
    local job = assert(c:generate { prompt = "resume @emu:bytes=300000" })
    assert(job:wait())
    local pattern = helpers.pattern_bytes(0, 300000)
    local path = dir .. "/resumed.bin"
    emu:set_faults { "download:cut:1" } -- leaves a .part of 150000 bytes and its sidecar
    assert.is_nil(job:download(path))
    emu:set_faults {}
    assert.equals(150000, #helpers.read_file(path .. ".part"))
    local before = emu:stats().files.bytes_sent
    local got, bytes = assert(job:download(path))
    assert.equals(path, got)
    assert.equals(300000, bytes)
    assert.equals(pattern, helpers.read_file(path))
    assert.equals(150000, emu:stats().files.bytes_sent - before) -- only the rest was sent
    -- a .part nobody can vouch for (no sidecar) is not gone on from
    helpers.write_file(path .. ".part", pattern:sub(1, 120000))
    before = emu:stats().files.bytes_sent
    assert(job:download(path))
    assert.equals(pattern, helpers.read_file(path))
    assert.equals(300000, emu:stats().files.bytes_sent - before)
    -- resume = false starts over
    helpers.write_file(path .. ".part", "garbage")
    assert(job:download(path, { resume = false }))
    assert.equals(pattern, helpers.read_file(path))
    c:close()
  end)

  it("refuses a download over max_bytes and leaves no file behind", function()
    local c = kling.new { base_url = emu.api, token = TOKEN, poll = { initial = 0.05 } }
    local job = assert(c:generate { prompt = "file @emu:bytes=500000" })
    local path = dir .. "/capped.bin"
    local got, err = job:download(path, { max_bytes = 100000 })
    assert.is_nil(got)
    assert.equals("protocol", err.kind)
    assert.matches("cap", err.message)
    assert.is_nil(io.open(path, "rb"))
    assert.is_nil(io.open(path .. ".part", "rb"))
    c:close()
  end)

  it("reports a file host 404 as not_found and creates no file", function()
    local c = kling.new { base_url = emu.api, token = TOKEN }
    local path = dir .. "/missing.mp4"
    local got, err = c:download_url(emu.files .. "/v/no-such-job.mp4", path)
    assert.is_nil(got)
    assert.equals("not_found", err.kind)
    assert.equals(404, err.status)
    assert.is_nil(io.open(path, "rb"))
    assert.is_nil(io.open(path .. ".part", "rb"))
    c:close()
  end)

  it("says clearly when the download path cannot be written (kind io, with the path)", function()
    local c = kling.new { base_url = emu.api, token = TOKEN }
    local got, err = c:download_url(emu.files .. "/v/x.mp4", dir .. "/no/such/dir/x.mp4")
    assert.is_nil(got)
    assert.equals("io", err.kind)
    assert.equals(dir .. "/no/such/dir", err.path)
    assert.matches("cannot write '" .. dir .. "/no/such/dir/x.mp4.part': '" .. dir .. "/no/such/dir': No such file or directory",
      err.message, 1, true)
    c:close()
  end)

  it("names the transfer state and the engine in tostring, without the token", function()
    local e = core.new { base_url = emu.api, token = TOKEN }
    local x = assert(e:request { url = emu.api .. "/requests/a/status" })
    assert.matches("running", tostring(x))
    drive(e, x)
    assert.matches("done", tostring(x))
    x:close()
    x:close() -- idempotent
    assert.matches("released", tostring(x))
    assert.is_nil(tostring(e):find(TOKEN, 1, true))
    e:close()
    e:close()
    assert.matches("closed", tostring(e))
  end)

  it("raises on bad arguments", function()
    assert.has_error(function() core.new {} end)
    assert.has_error(function() core.new { base_url = emu.api, timeout = -1 } end)
    assert.has_error(function() core.new { base_url = "not a url" } end)
    assert.has_error(function() core.new { base_url = emu.api, token = "a\r\nX-Evil: 1" } end)
    local e = core.new { base_url = emu.api }
    assert.has_error(function() e:request {} end)
    assert.has_error(function() e:request { url = emu.api, body = 42 } end)
    e:close()
    assert.has_error(function() kling.new { tiemout = 3 } end, "kling.new: unknown option 'tiemout'")
    assert.has_error(function() kling.new { timeout = "3" } end)
    assert.has_error(function() kling.new { poll = { initial = -1 } } end)
  end)

  it("sleeps in the kernel while it waits, without spinning", function()
    local e = core.new { base_url = emu.api }
    local c0, t0 = os.clock(), core.now()
    e:step(0.5)
    assert.is_true(core.now() - t0 >= 0.49)
    assert.is_true(os.clock() - c0 < 0.05)
    e:close()
  end)
end)

describe("kling.new defaults from the environment", function()
  local function run_with_env(envs, code)
    local cmd = string.format("cd %s && env %s lua5.4 -e %s 2>&1", helpers.quote(helpers.root), envs,
      helpers.quote('package.path="lua/?.lua;"..package.path package.cpath="build/?.so;"..package.cpath ' .. code))
    local p = io.popen(cmd)
    local out = p:read("*a")
    p:close()
    return out
  end

  it("takes RUNCOMFY_TOKEN, then RUNCOMFY_API_TOKEN, and RUNCOMFY_MODEL_API_BASE", function()
    local out = run_with_env("-u RUNCOMFY_TOKEN RUNCOMFY_API_TOKEN=t2 RUNCOMFY_MODEL_API_BASE=http://127.0.0.1:9/v1/",
      'print(tostring(require("kling").new()))')
    assert.equals("kling.client(http://127.0.0.1:9/v1, token set)\n", out)
    out = run_with_env("-u RUNCOMFY_TOKEN -u RUNCOMFY_API_TOKEN -u RUNCOMFY_MODEL_API_BASE",
      'print(tostring(require("kling").new()))')
    assert.equals("kling.client(https://model-api.runcomfy.net/v1, token missing)\n", out)
  end)
end)
