-- TLS, for real: nginx (Debian's) on loopback in front of the emulator, with
-- a CA and a certificate made at test time. The client refuses the server
-- without the CA (verification is never off) and works with ca_file.
local helpers = require "helpers"
local kling = require "kling"

local q = helpers.quote
local TOKEN = "tls-token-77"

local function sh(cmd)
  local p = assert(io.popen("(" .. cmd .. ") 2>&1"))
  local out = p:read("*a")
  local ok = p:close()
  return ok, out
end

local function free_port()
  local s = assert(require("cqueues.socket").listen { host = "127.0.0.1", port = 0 })
  assert(s:listen())
  local _, _, port = s:localname()
  s:close()
  return port
end

describe("TLS through nginx", function()
  local emu, dir, port, nginx_pid

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
    }, " && "))
    assert(ok, out)
    port = free_port()
    local upstream = emu.api:match("^http://([^/]+)")
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
        }
      }
    ]], dir, dir, dir, dir, dir, dir, dir, port, dir, dir, port, emu.files, upstream))
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
    assert.equals(1, c._engine:stats().sockets_peak)
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
