-- TLS, for real: nginx (Debian's) on loopback in front of the emulator, with
-- a CA and a certificate made at test time. The client refuses the server
-- without the CA (verification is never off) and works with ca_file.
local helpers = require "helpers"
local kling = require "kling"

local q = helpers.quote
local TOKEN = "tls-token-77"

local sh = helpers.sh

local free_port = helpers.free_port

describe("TLS through nginx", function()
  local emu, dir, port, wrong_port, goaway_port, nginx_pid
  local ua_api -- a scripted API behind /ua/ on the first server: it logs each request's header lines

  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0.1", "--run", "0.2" }
    dir = helpers.tmpdir()
    -- a CA, and a certificate for 127.0.0.1 and localhost signed by it
    local ok, out = sh(table.concat({
      "cd " .. q(dir),
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=kling-test-ca",
      "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost",
      "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext.cnf",
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext.cnf",
      -- a certificate of the same CA for another name only (wrong.example): a wrong name here
      "openssl req -newkey rsa:2048 -nodes -keyout wrong.key -out wrong.csr -subj /CN=wrong.example",
      "printf 'subjectAltName=DNS:wrong.example\\n' > wrong.cnf",
      "openssl x509 -req -in wrong.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out wrong.pem -days 2 -extfile wrong.cnf",
      -- another CA, which signed nothing the server shows
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.pem -days 2 -subj /CN=kling-other-ca",
      -- Debian's bundle with the test CA in it: a ca_file as large as the default one
      "cat /etc/ssl/certs/ca-certificates.crt ca.pem > bundle.pem",
    }, " && "))
    assert(ok, out)
    port = free_port()
    wrong_port = free_port()
    goaway_port = free_port()
    local upstream = emu.api:match("^http://([^/]+)")
    ua_api = require("scripted_api").start(dir)
    local ua_location = "location /ua/ { proxy_pass " .. ua_api.base .. "/; proxy_http_version 1.1; proxy_set_header Connection \"\"; }"
    helpers.write_file(dir .. "/nginx.conf", string.format([[
      pid %s/nginx.pid;
      error_log %s/error.log;
      worker_processes 1;
      events { worker_connections 256; }
      http {
        access_log off;
        client_body_temp_path %s; proxy_temp_path %s; fastcgi_temp_path %s; uwsgi_temp_path %s; scgi_temp_path %s;
        server {
          listen 127.0.0.1:%d ssl http2;
          ssl_certificate %s/server.pem;
          ssl_certificate_key %s/server.key;
          location /to-plain-http { return 302 http://127.0.0.1:%d/v1/anything; }
          location /v1/requests/redirected/ { return 302 %s/v/redirected.mp4; }
          location / { proxy_pass http://%s; proxy_http_version 1.1; proxy_set_header Connection ""; }
          ]] .. ua_location .. [[
        }
        server {
          listen 127.0.0.1:%d ssl http2;
          ssl_certificate %s/wrong.pem;
          ssl_certificate_key %s/wrong.key;
          location / { proxy_pass http://%s; proxy_http_version 1.1; proxy_set_header Connection ""; }
        }
        server {
          # HTTP/2 that sends GOAWAY after 3 requests: the streams above it are refused
          listen 127.0.0.1:%d ssl http2;
          keepalive_requests 3;
          ssl_certificate %s/server.pem;
          ssl_certificate_key %s/server.key;
          location / { proxy_pass http://%s; proxy_http_version 1.1; proxy_set_header Connection ""; }
        }
      }
    ]], dir, dir, dir, dir, dir, dir, dir, port, dir, dir, port, emu.files, upstream, wrong_port, dir, dir, upstream,
      goaway_port, dir, dir, upstream))
    ok, out = sh(string.format("nginx -p %s -c %s/nginx.conf", q(dir), q(dir)))
    assert(ok, out)
    for _ = 1, 100 do
      nginx_pid = tonumber(helpers.read_file(dir .. "/nginx.pid") or "")
      if nginx_pid then break end
      helpers.sleep(0.05)
    end
    assert(nginx_pid, "nginx did not start: " .. (helpers.read_file(dir .. "/error.log") or ""))
  end)

  teardown(function()
    if nginx_pid then os.execute("kill " .. nginx_pid) end
    if ua_api then ua_api.stop() end
    if emu then emu:stop() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  local function base() return string.format("https://127.0.0.1:%d/v1", port) end

  it("fails with a clear TLS error when the server's CA is not trusted", function()
    local c = kling.new { base_url = base(), token = TOKEN }
    local job, err = c:generate { prompt = "untrusted" }
    assert.is_nil(job)
    assert.equals("network", err.kind)
    assert.equals("tls", err.transport)
    assert.matches("^TLS: ", err.message)
    assert.is_nil(tostring(err):find(TOKEN, 1, true))
    c:close()
  end)

  it("works end to end with ca_file, and sends nothing to the file host but the download", function()
    local c = kling.new { base_url = base(), token = TOKEN, ca_file = dir .. "/ca.pem", poll = { initial = 0.05, near = 0.1 } }
    local job = assert(c:generate { prompt = "trusted" })
    assert.matches("^https://", job.urls.status)
    local out = assert(job:wait())
    assert(job:download(dir .. "/clip.mp4"))
    assert.equals(require "kling.emulator_video", helpers.read_file(dir .. "/clip.mp4"))
    assert.is_string(out.video)
    assert.equals(0, emu:stats().files.authorization_headers)
    c:close()
  end)

  it("follows no redirect of the API, so the token cannot go elsewhere", function()
    local c = kling.new { base_url = base(), token = TOKEN, ca_file = dir .. "/ca.pem" }
    local before = emu:stats().files
    local job = assert(c:job("redirected"))
    local st, err = job:refresh()
    assert.is_nil(st)
    assert.equals("protocol", err.kind)
    assert.equals(302, err.status)
    local after = emu:stats().files
    assert.equals(before.requests, after.requests)
    assert.equals(0, after.authorization_headers)
    c:close()
  end)

  it("speaks HTTP/2 when the server offers it, multiplexing requests over one connection", function()
    local c = kling.new { base_url = base(), token = TOKEN, ca_file = dir .. "/ca.pem", max_connections = 1 }
    local job = assert(c:generate { prompt = "h2" })
    local x = assert(c._engine:request { url = job.urls.status })
    while not x:done() do c._engine:step(0.1) end
    assert.equals("2", x:result().http_version)
    kling.run(function()
      for _ = 1, 20 do kling.spawn(function() assert(job:refresh()) end) end
    end)
    local s = c._engine:stats()
    assert.equals(1, s.sockets_peak)
    -- over HTTP/2 more API transfers than connections go into libcurl at once (streams)
    assert.equals(4, s.active_cap)
    assert.is_true(s.active_peak >= 2, "in libcurl at once: " .. s.active_peak)
    c:close()
  end)

  it("sends one User-Agent on every request over HTTP/2: a submit, polls on one connection, a download", function()
    ua_api.serve {
      { "POST", "^/v1/models/", { { 200, '{"request_id":"r1","status":"in_queue"}' } } },
      { "GET", "^/v1/requests/r1/status", { { 200, '{"request_id":"r1","status":"in_queue"}' } } },
      { "GET", "^/files/clip.mp4", { { 200, "MP4 bytes", "video/mp4" } } },
    }
    local root = string.format("https://127.0.0.1:%d/ua", port)
    local c = kling.new { base_url = root .. "/v1", token = TOKEN, ca_file = dir .. "/ca.pem", user_agent = "ua-h2/1",
      on_warning = false, retries = false }
    local job = assert(c:submit("kling/kling-3.0/pro/text-to-video", { prompt = "a cat" }, { catalog = false }))
    assert(job:refresh())
    local x = assert(c._engine:request { url = job.urls.status })
    while not x:done() do c._engine:step(0.1) end
    assert.equals("2", x:result().http_version)
    assert(job:refresh())
    assert(c:download_url(root .. "/files/clip.mp4", dir .. "/clip.mp4"))
    c:close()
    local reqs = ua_api.requests()
    assert.equals(5, #reqs)
    for i, req in ipairs(reqs) do
      assert.same({ "ua-h2/1" }, require("scripted_api").header_values(req, "User-Agent"), "request " .. i .. ": " .. req.line)
    end
  end)

  it("never sends a submit twice over HTTP/2 when the server ends connections with GOAWAY", function()
    -- libcurl retries a stream refused by a GOAWAY by itself; a submit's body cannot be
    -- rewound (src/http.c), so each ends once: made, or submit_unknown (not made here)
    local before = emu:stats().jobs_created
    local c = kling.new { base_url = string.format("https://127.0.0.1:%d/v1", goaway_port), token = TOKEN,
      ca_file = dir .. "/ca.pem", max_connections = 1, on_warning = false }
    local made, unknown, other = 0, 0, {}
    kling.run(function()
      for i = 1, 30 do
        kling.spawn(function()
          local job, err = c:generate { prompt = "goaway " .. i }
          if job then made = made + 1
          elseif err.kind == "submit_unknown" then unknown = unknown + 1
          else other[#other + 1] = tostring(err) end
        end)
      end
    end)
    local created = emu:stats().jobs_created - before
    assert.same({}, other)
    assert.equals(30, made + unknown)
    assert.is_true(created >= made and created <= made + unknown,
      string.format("made %d, submit_unknown %d, created %d", made, unknown, created))
    assert.is_true(c._engine:stats().sockets_peak >= 1)
    c:close()
  end)

  -- Verification never weakens while the CA store is parsed once (CURLOPT_CAPATH unset where a
  -- CA file is used): each refusal below holds for the default bundle and for ca_file, also on
  -- a later connection of a client whose store is already loaded.
  local function refused_tls(c, url)
    local job, err = c:generate { prompt = "must not arrive" }
    assert.is_nil(job)
    assert.equals("network", err.kind, tostring(err))
    assert.equals("tls", err.transport, tostring(err))
    assert.is_nil(tostring(err):find(TOKEN, 1, true))
    return err
  end

  it("refuses a server whose CA is not the one in ca_file, before sending anything", function()
    local before = emu:stats().jobs_created
    local c = kling.new { base_url = base(), token = TOKEN, ca_file = dir .. "/other.pem" }
    refused_tls(c)
    refused_tls(c) -- a second connection, the store already loaded
    assert.equals(before, emu:stats().jobs_created)
    c:close()
  end)

  it("refuses the test CA's server with the default bundle, on every new connection", function()
    local before = emu:stats().jobs_created
    local c = kling.new { base_url = base(), token = TOKEN }
    for _ = 1, 3 do refused_tls(c) end
    assert.equals(before, emu:stats().jobs_created)
    c:close()
  end)

  it("refuses a certificate for another name, though its CA is trusted", function()
    local before = emu:stats().jobs_created
    for _, ca in ipairs { dir .. "/ca.pem", dir .. "/bundle.pem" } do
      local c = kling.new { base_url = string.format("https://127.0.0.1:%d/v1", wrong_port), token = TOKEN, ca_file = ca }
      local err = refused_tls(c)
      assert.matches("^TLS: ", err.message)
      c:close()
    end
    assert.equals(before, emu:stats().jobs_created)
  end)

  it("refuses a wrong name on a later connection of a client whose CA store is loaded", function()
    local c = kling.new { base_url = base(), token = TOKEN, ca_file = dir .. "/bundle.pem" }
    assert(c:generate { prompt = "trusted, with the bundle" })
    local got, err = c:download_url(string.format("https://127.0.0.1:%d/v/none.mp4", wrong_port), dir .. "/wrong.bin")
    assert.is_nil(got)
    assert.equals("network", err.kind)
    assert.is_nil(io.open(dir .. "/wrong.bin", "rb"))
    c:close()
  end)

  it("works with Debian's bundle and the test CA as ca_file, submits on one warm connection", function()
    local c = kling.new { base_url = base(), token = TOKEN, ca_file = dir .. "/bundle.pem" }
    for i = 1, 10 do assert(c:generate { prompt = "bundle " .. i }) end
    assert.equals(1, c._engine:stats().sockets_opened)
    c:close()
  end)

  it("refuses a redirect from https to plain http", function()
    local c = kling.new { base_url = base(), token = TOKEN, ca_file = dir .. "/ca.pem" }
    local got, err = c:download_url(string.format("https://127.0.0.1:%d/to-plain-http", port), dir .. "/x.bin")
    assert.is_nil(got)
    assert.equals("network", err.kind)
    assert.is_nil(io.open(dir .. "/x.bin", "rb"))
    c:close()
  end)
end)
