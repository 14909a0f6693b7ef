-- Proxies and CAs, for real: the environment's proxy variables as libcurl reads them, a
-- small loopback proxy that records what it receives (spec/fake_proxy.lua), and Debian's
-- nginx with TLS and a CA made at test time (as spec/tls_spec.lua does).
-- * loopback never goes through a proxy (API and downloads);
-- * a bearer token never crosses a proxy in clear text: plain-http API requests use no
--   proxy, https ones tunnel (CONNECT, with none of our headers);
-- * a proxy's refusal says it was the proxy (kind network, err.transport "proxy");
-- * the CLI verifies TLS with --ca-file, else $CURL_CA_BUNDLE, else $SSL_CERT_FILE.
local helpers = require "helpers"
local cjson = require "cjson"
local kling = require "kling"
local cli_run = require "cli_run"

local q = helpers.quote
local TOKEN = "proxy-token-Qw7e9"
local HOST = "api.kling.test" -- not loopback, never resolved: only a proxy's CONNECT names it
local eventually = cli_run.eventually

local sh = helpers.sh

local free_port = helpers.free_port

describe("proxies and CAs", function()
  local emu, dir, nginx_pid, tls_port, cli, pids = nil, nil, nil, nil, nil, {}

  -- Starts spec/fake_proxy.lua: { url, log() (all it received) }.
  local function proxy(name, mode, arg)
    local port_file, log_file = dir .. "/" .. name .. ".port", dir .. "/" .. name .. ".log"
    helpers.write_file(log_file, "")
    local p = io.popen("exec lua5.4 " .. q(helpers.root .. "/spec/fake_proxy.lua") .. " " .. q(port_file) .. " "
      .. q(log_file) .. " " .. mode .. " " .. tostring(arg or "") .. " >/dev/null 2>&1 & echo $!")
    pids[#pids + 1] = tonumber(p:read("*l"))
    p:close()
    local port = eventually(function() return tonumber(helpers.read_file(port_file) or "") end, 10, "the proxy")
    return { url = "http://127.0.0.1:" .. port, log = function() return helpers.read_file(log_file) or "" end }
  end

  -- Runs a Lua chunk in a child lua5.4 with env (a map); the chunk prints one JSON line.
  local function child(code, env)
    local file = dir .. "/child" .. #pids .. math.random(1e6) .. ".lua"
    helpers.write_file(file, "local cjson = require 'cjson'\nlocal kling = require 'kling'\n" .. code)
    local vars = {}
    for k, v in pairs(env or {}) do vars[#vars + 1] = k .. "=" .. q(v) end
    local ok, out = sh(string.format("env -u http_proxy -u https_proxy -u HTTPS_PROXY -u all_proxy -u ALL_PROXY "
      .. "-u no_proxy -u NO_PROXY LUA_PATH=%s LUA_CPATH=%s %s lua5.4 %s", q(helpers.root .. "/lua/?.lua;;"),
      q(helpers.root .. "/build/?.so;;"), table.concat(vars, " "), q(file)))
    assert(ok, out)
    return cjson.decode(out:match("([^\n]+)\n?$"))
  end

  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0.1", "--run", "0.1" }
    dir = helpers.tmpdir()
    cli = cli_run.new { api = emu.api, token = TOKEN, dir = dir }
    local ok, out = sh(table.concat({
      "cd " .. q(dir),
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=kling-proxy-test-ca",
      "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost",
      "printf 'subjectAltName=DNS:localhost,DNS:" .. HOST .. ",IP:127.0.0.1\\n' > ext.cnf",
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext.cnf",
      -- another CA, which did not sign the server's certificate
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.pem -days 2 -subj /CN=other-ca",
    }, " && "))
    assert(ok, out)
    tls_port = free_port()
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
          listen 127.0.0.1:%d ssl;
          ssl_certificate %s/server.pem;
          ssl_certificate_key %s/server.key;
          location / { proxy_pass http://%s; proxy_http_version 1.1; proxy_set_header Connection ""; }
        }
      }
    ]], dir, dir, dir, dir, dir, dir, dir, tls_port, dir, dir, upstream))
    ok, out = sh(string.format("nginx -p %s -c %s/nginx.conf", q(dir), q(dir)))
    assert(ok, out)
    nginx_pid = eventually(function() return tonumber(helpers.read_file(dir .. "/nginx.pid") or "") end, 10, "nginx")
  end)

  teardown(function()
    for _, pid in ipairs(pids) do os.execute("kill " .. pid .. " 2>/dev/null") end
    if nginx_pid then os.execute("kill " .. nginx_pid) end
    if emu then emu:stop() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  local function tls_base() return string.format("https://127.0.0.1:%d/v1", tls_port) end

  describe("proxies", function()
    it("never sends a loopback API request, nor a download, through http_proxy (kling generate)", function()
      local px = proxy("loop", "refuse")
      local res = cli.run({ "generate", "through no proxy", "-o", dir .. "/loop.mp4" },
        { env = { http_proxy = px.url, HTTPS_PROXY = px.url, all_proxy = px.url } })
      assert.equals(0, res.code, res.err)
      assert.equals(require "kling.emulator_video", helpers.read_file(dir .. "/loop.mp4"))
      assert.equals("", px.log())
    end)

    it("never sends a loopback https API request through https_proxy", function()
      local px = proxy("loop-tls", "refuse")
      local res = cli.run({ "submit", "tls, no proxy", "--base-url", tls_base(), "--ca-file", dir .. "/ca.pem" },
        { env = { https_proxy = px.url, HTTPS_PROXY = px.url } })
      assert.equals(0, res.code, res.err)
      assert.equals("", px.log())
    end)

    it("sends a plain-http API request with the token through no proxy at all", function()
      local px = proxy("plain", "refuse")
      local r = child(string.format([[
        local c = kling.new { base_url = "http://%s:9/v1", token = %q, allow_insecure_http = true }
        local job, err = c:generate { prompt = "x" }
        print(cjson.encode { kind = err.kind, message = err.message, transport = err.transport })
      ]], HOST, TOKEN), { http_proxy = px.url, all_proxy = px.url })
      assert.equals("network", r.kind)
      assert.equals("resolve", r.transport) -- it went straight to the (unknown) host
      assert.equals("", px.log())
    end)

    it("tunnels an https API request through the proxy: the token never reaches it in clear, the User-Agent does", function()
      local px = proxy("tunnel", "tunnel", tls_port)
      local r = child(string.format([[
        local c = kling.new { base_url = "https://%s/v1", token = %q, ca_file = %q,
          poll = { initial = 0.05, near = 0.1 } }
        local job = assert(c:generate { prompt = "through the tunnel" })
        local out = assert(job:wait { timeout = 20 })
        local path, bytes = assert(job:download(%q))
        print(cjson.encode { id = job.id, video = out.video, bytes = bytes })
      ]], HOST, TOKEN, dir .. "/ca.pem", dir .. "/tunnel.mp4"), { https_proxy = px.url, http_proxy = px.url })
      assert.is_string(r.id)
      assert.is_true(r.bytes > 0)
      local log = px.log()
      assert.matches("CONNECT " .. HOST .. ":443 HTTP/1.1", log, 1, true)
      -- each CONNECT names kling once (an API request's User-Agent goes to a proxy as a
      -- proxy header: src/net.c), and nothing else of ours
      local _, connects = log:gsub("CONNECT ", "")
      local _, agents = log:gsub("\r\nUser%-Agent: kling%-lua/", "")
      assert.equals(connects, agents)
      assert.is_nil(log:find(TOKEN, 1, true))
      assert.is_nil(log:lower():find("authorization", 1, true))
      assert.is_nil(log:find("/v1/", 1, true)) -- no request line in clear: only TLS records
      -- the download (loopback file host) went straight there
      assert.equals(0, emu:stats().files.authorization_headers)
    end)

    it("keeps the user's no_proxy (a list, or \"*\") beside loopback", function()
      local px = proxy("np", "refuse")
      local code = string.format([[
        local c = kling.new { base_url = "https://%s/v1", token = %q }
        local _, err = assert(c:job("abc")):refresh()
        print(cjson.encode { transport = err.transport })
      ]], HOST, TOKEN)
      for _, np in ipairs { "example.com," .. HOST, "*", " * " } do
        local r = child(code, { https_proxy = px.url, no_proxy = np })
        assert.equals("resolve", r.transport, np) -- straight to the host, which does not resolve
      end
      assert.equals("", px.log())
      local r = child(code, { https_proxy = px.url, NO_PROXY = "example.com" })
      assert.equals("proxy", r.transport)
      -- and loopback still goes straight with a list of the user's
      local res = cli.run({ "submit", "np loop" }, { env = { http_proxy = px.url, no_proxy = "example.com" } })
      assert.equals(0, res.code, res.err)
    end)

    it("says the proxy refused, with kind network: not auth, not a submit of unknown outcome", function()
      local px = proxy("no", "refuse")
      local r = child(string.format([[
        local c = kling.new { base_url = "https://%s/v1", token = %q, journal = %q }
        local job, err = c:generate { prompt = "x" }
        local j = assert(c:job("abc"))
        local _, serr = j:refresh()
        local _, unknown = c:resume()
        print(cjson.encode { kind = err.kind, message = err.message, transport = err.transport,
          proxy_status = err.proxy_status, retryable = err.retryable, text = tostring(err),
          status_kind = serr.kind, unknown = #unknown })
      ]], HOST, TOKEN, dir .. "/refused.jsonl"), { https_proxy = px.url })
      assert.equals("network", r.kind)
      assert.equals("proxy", r.transport)
      assert.equals(403, r.proxy_status)
      assert.is_false(r.retryable)
      assert.matches("the proxy 127.0.0.1:%d+ refused to open a tunnel %(it answered the CONNECT with HTTP 403%)", r.message)
      assert.equals("network", r.status_kind)
      assert.equals(0, r.unknown) -- the submit never went past the proxy
      local log = px.log()
      local _, connects = log:gsub("CONNECT " .. HOST:gsub("%p", "%%%0") .. ":443", "")
      assert.equals(2, connects) -- a 403 is not tried again
      assert.is_nil(log:find(TOKEN, 1, true))
      assert.is_nil(log:lower():find("authorization", 1, true))
    end)

    it("tries a proxy's 503 again, as it would the service's (the one rule)", function()
      local px = proxy("busy", "refuse", 503)
      local r = child(string.format([[
        local c = kling.new { base_url = "https://%s/v1", token = %q, retries = { max = 2, base = 0.01, cap = 0.02 } }
        local _, err = assert(c:job("abc")):refresh()
        print(cjson.encode { kind = err.kind, transport = err.transport, retryable = err.retryable,
          proxy_status = err.proxy_status })
      ]], HOST, TOKEN), { https_proxy = px.url })
      assert.equals("proxy", r.transport)
      assert.equals(503, r.proxy_status)
      assert.is_true(r.retryable)
      local _, connects = px.log():gsub("CONNECT ", "")
      assert.equals(3, connects)
    end)

    it("kling generate through a refusing proxy exits 7 and names the proxy", function()
      local px = proxy("cli-no", "refuse")
      local st = dir .. "/state-proxy"
      local res = cli.run({ "generate", "refused", "--base-url", "https://" .. HOST .. "/v1" },
        { env = { https_proxy = px.url }, state = st })
      assert.equals(7, res.code, res.err)
      assert.matches("the proxy 127.0.0.1:", res.err, 1, true)
      assert.matches("refused to open a tunnel", res.err, 1, true)
      assert.is_nil(res.err:find("auth:", 1, true))
      assert.is_nil(px.log():find(TOKEN, 1, true))
      assert.is_nil((helpers.read_file(st .. "/kling/jobs.jsonl") or ""):find("submit_unknown", 1, true))
    end)
  end)

  describe("CA bundles from the command line", function()
    local id

    setup(function()
      local c = kling.new { base_url = tls_base(), token = TOKEN, ca_file = dir .. "/ca.pem" }
      id = assert(c:generate { prompt = "ca" }).id
      c:close()
    end)

    local function status(args, env)
      local argv = { "status", id, "--base-url", tls_base() }
      for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
      return cli.run(argv, { env = env })
    end

    it("refuses the server without its CA (verification is never off)", function()
      local res = status()
      assert.equals(7, res.code, res.err)
      assert.matches("TLS", res.err, 1, true)
    end)

    it("verifies with --ca-file, $CURL_CA_BUNDLE or $SSL_CERT_FILE", function()
      local ca = dir .. "/ca.pem"
      for _, run in ipairs {
        { { "--ca-file", ca } }, { nil, { CURL_CA_BUNDLE = ca } }, { nil, { SSL_CERT_FILE = ca } },
        { { "--ca-file=" .. ca } }, { nil, { CURL_CA_BUNDLE = "", SSL_CERT_FILE = ca } },
      } do
        local res = status(run[1], run[2])
        assert.equals(0, res.code, res.err)
        assert.matches(id, res.out, 1, true)
      end
      -- before the command, too
      local res = cli.run { "--ca-file", ca, "--base-url", tls_base(), "status", id }
      assert.equals(0, res.code, res.err)
    end)

    it("takes --ca-file over $CURL_CA_BUNDLE over $SSL_CERT_FILE, as curl does", function()
      local ca, other = dir .. "/ca.pem", dir .. "/other.pem"
      assert.equals(7, status({ "--ca-file", other }, { CURL_CA_BUNDLE = ca, SSL_CERT_FILE = ca }).code)
      assert.equals(0, status({ "--ca-file", ca }, { CURL_CA_BUNDLE = other, SSL_CERT_FILE = other }).code)
      assert.equals(7, status(nil, { CURL_CA_BUNDLE = other, SSL_CERT_FILE = ca }).code)
      assert.equals(0, status(nil, { CURL_CA_BUNDLE = ca, SSL_CERT_FILE = other }).code)
    end)

    it("says which setting names a CA bundle it cannot read, before sending anything", function()
      local before = emu:stats().requests_total
      local res = status { "--ca-file", dir .. "/missing.pem" }
      assert.equals(2, res.code)
      assert.matches("--ca-file: cannot read the CA bundle " .. dir .. "/missing.pem", res.err, 1, true)
      res = status(nil, { SSL_CERT_FILE = dir })
      assert.equals(2, res.code)
      assert.matches("SSL_CERT_FILE: cannot read the CA bundle", res.err, 1, true)
      res = status(nil, { CURL_CA_BUNDLE = dir .. "/missing.pem", SSL_CERT_FILE = dir .. "/ca.pem" })
      assert.equals(2, res.code)
      assert.matches("CURL_CA_BUNDLE:", res.err, 1, true)
      assert.equals(before, emu:stats().requests_total)
    end)
  end)
end)
