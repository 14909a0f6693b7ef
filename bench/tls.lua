-- kling over TLS, against raw libcurl and the curl command line, in one run:
--   lua5.4 bench/tls.lua [N] [LIB_DIR]
-- nginx (Debian's) with TLS and HTTP/2 on loopback in front of the emulator,
-- with a CA made at run time; the client's ca_file is Debian's bundle (about
-- 145 certificates) with the test CA appended, as a real deployment's would
-- be as large. Measures client CPU (user + system) and wall time:
-- - kling, default settings: N sequential submits (warm connections), then N
--   sequential status GETs (job:refresh()); and the connections opened.
-- - kling with fresh_submits = true (a new TLS connection per submit): N/4.
-- - raw libcurl (bench/tls_raw.c, built here): the same POSTs and GETs on one
--   kept-alive connection; and POSTs on a new connection each, with the CA
--   directory unset and with libcurl's compiled-in directory kept (what
--   kling did before issue 13).
-- - the curl command line: N GETs and N POSTs in one process.
-- Prints per request figures and the ratios of the issue, measured here.
-- LIB_DIR (optional): run the kling side from another checkout (its lua/ and
-- build/), e.g. an old build, for a before/after in the same session.
local LIB = arg[2]
local util = dofile("bench/util.lua")
if LIB then -- after util.lua, which puts this checkout's lua/ and build/ first
  package.path = LIB .. "/lua/?.lua;" .. package.path
  package.cpath = LIB .. "/build/?.so;" .. package.cpath
end
local helpers = require "helpers"
local kling = require "kling"

local N = tonumber(arg[1]) or 200
local TOKEN = "bench-tls"
local q = helpers.quote

local sh = util.sh

local dir = util.tmpdir()
sh(table.concat({
  "cd " .. q(dir),
  "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=kling-bench-ca",
  "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost",
  "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext.cnf",
  "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext.cnf",
  "cat /etc/ssl/certs/ca-certificates.crt ca.pem > bundle.pem",
}, " && "))
local raw = util.compile(dir, "tls_raw")

local emu = util.start_emulator { "--token", TOKEN, "--queue", "0", "--run", "0" }
local s = assert(require("cqueues.socket").listen { host = "127.0.0.1", port = 0 })
assert(s:listen())
local _, _, port = s:localname()
s:close()
local upstream = emu.api:match("^http://([^/]+)")
helpers.write_file(dir .. "/nginx.conf", string.format([[
  pid %s/nginx.pid;
  error_log %s/error.log;
  worker_processes 1;
  events { worker_connections 1024; }
  http {
    access_log off;
    keepalive_requests 100000;
    client_body_temp_path %s; proxy_temp_path %s; fastcgi_temp_path %s; uwsgi_temp_path %s; scgi_temp_path %s;
    upstream emu { server %s; keepalive 8; }
    server {
      listen 127.0.0.1:%d ssl http2;
      http2_max_requests 100000;
      ssl_certificate %s/server.pem;
      ssl_certificate_key %s/server.key;
      location / { proxy_pass http://emu; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
  }
]], dir, dir, dir, dir, dir, dir, dir, upstream, port, dir, dir))
sh(string.format("nginx -p %s -c %s/nginx.conf", q(dir), q(dir)))
local nginx_pid
for _ = 1, 100 do
  nginx_pid = tonumber(helpers.read_file(dir .. "/nginx.pid") or "")
  if nginx_pid then break end
  helpers.sleep(0.05)
end
assert(nginx_pid, "nginx did not start")
local base = string.format("https://127.0.0.1:%d/v1", port)
local bundle = dir .. "/bundle.pem"
local MODEL_URL = base .. "/models/kling/kling-3.0/pro/text-to-video"

local function now() return require("kling.core").now() end

-- kling: N submits then N status GETs, default settings
local function kling_run(n, opts)
  opts = opts or {}
  local o = { base_url = base, token = TOKEN, ca_file = bundle, on_warning = false, fresh_submits = opts.fresh_submits }
  local ok, c = pcall(kling.new, o)
  if not ok and LIB then -- a build before fresh_submits: every submit went on a new connection
    o.fresh_submits = nil
    c = kling.new(o)
  elseif not ok then
    error(c)
  end
  local job = assert(c:generate { prompt = "warm-up" }) -- the first connection and the CA store
  local open0 = c._engine:stats().sockets_opened
  local c0, w0 = util.cpu(), now()
  for i = 1, n do assert(c:generate { prompt = "bench " .. i }) end
  local post_cpu, post_wall = util.cpu() - c0, now() - w0
  local conns = c._engine:stats().sockets_opened - open0
  local get_cpu, get_wall = 0, 0
  if not opts.no_get then
    c0, w0 = util.cpu(), now()
    for _ = 1, n do assert(job:refresh()) end
    get_cpu, get_wall = util.cpu() - c0, now() - w0
  end
  c:close()
  return { post_cpu = post_cpu / n, post_wall = post_wall / n, get_cpu = get_cpu / n, get_wall = get_wall / n,
    conns = conns, status_url = job.urls.status }
end

local function raw_run(url, n, mode, ...)
  local out = sh(table.concat({ q(raw), q(url), TOKEN, q(bundle), n, mode, ... }, " "))
  local cpu, wall, conns = out:match("^(%S+) (%S+) (%S+)")
  return tonumber(cpu) / n, tonumber(wall) / n, tonumber(conns)
end

local function cli_run(n, url, post)
  local urls = {}
  for i = 1, n do urls[i] = q(url) end
  local cmd = string.format("TIMEFORMAT='%%U %%S %%R'; time curl -s -H 'Authorization: Bearer %s' "
    .. "--cacert %s %s %s", TOKEN, q(bundle), post and "-H 'Content-Type: application/json' -d '{\"prompt\":\"cli\"}'" or "",
    table.concat(urls, " ") .. " >/dev/null")
  local out = sh("bash -c " .. q(cmd))
  local u, sy, r = out:match("(%S+) (%S+) (%S+)%s*$")
  if not r then error("curl: " .. out) end
  return (tonumber(u) + tonumber(sy)) / n, tonumber(r) / n
end

local k = kling_run(N)
local kf = kling_run(math.max(10, N // 4), { fresh_submits = true, no_get = true })
local rp_cpu, rp_wall, rp_conns = raw_run(MODEL_URL, N, "post")
local rg_cpu, rg_wall = raw_run(k.status_url, N, "get")
local rf_cpu = raw_run(MODEL_URL, math.max(10, N // 4), "post", "fresh")
local rfc_cpu = raw_run(MODEL_URL, math.max(10, N // 4), "post", "fresh", "capath")
local cg_cpu, cg_wall = cli_run(N, k.status_url, false)
local cp_cpu, cp_wall = cli_run(N, MODEL_URL, true)

os.execute("kill " .. nginx_pid)
emu:stop()
os.execute("rm -rf " .. q(dir))

local ms = function(v) return string.format("%.3f ms", v * 1000) end
print(string.format("kling: %s", package.searchpath("kling", package.path)))
print(string.format("TLS on loopback (nginx, HTTP/2), ca_file = Debian's bundle + the test CA; %d requests each%s", N,
  LIB and (", kling from " .. LIB) or ""))
print("| per request | client CPU | wall |")
print("|---|---|---|")
print(string.format("| kling submit (default: warm connections) | %s | %s |", ms(k.post_cpu), ms(k.post_wall)))
print(string.format("| kling status GET (job:refresh) | %s | %s |", ms(k.get_cpu), ms(k.get_wall)))
print(string.format("| kling submit, fresh_submits = true (new TLS connection each) | %s | %s |", ms(kf.post_cpu), ms(kf.post_wall)))
print(string.format("| raw libcurl POST, one warm connection | %s | %s |", ms(rp_cpu), ms(rp_wall)))
print(string.format("| raw libcurl GET, one warm connection | %s | %s |", ms(rg_cpu), ms(rg_wall)))
print(string.format("| raw libcurl POST, new connection each, CA directory unset | %s | - |", ms(rf_cpu)))
print(string.format("| raw libcurl POST, new connection each, libcurl's CA directory kept | %s | - |", ms(rfc_cpu)))
print(string.format("| curl command line GET (one process, %d URLs) | %s | %s |", N, ms(cg_cpu), ms(cg_wall)))
print(string.format("| curl command line POST (one process, %d URLs) | %s | %s |", N, ms(cp_cpu), ms(cp_wall)))
local kratio, rratio = k.post_cpu / k.get_cpu, rp_cpu / rg_cpu
print(string.format("kling submit/GET CPU ratio %.2f; raw libcurl POST/GET %.2f; kling's over raw's: %.2fx (goal <= 1.5x)",
  kratio, rratio, kratio / rratio))
print(string.format("kling over raw libcurl for the same sequence (N submits + N GETs): %.2fx (goal <= 1.2x)",
  (k.post_cpu + k.get_cpu) / (rp_cpu + rg_cpu)))
print(string.format("connections opened by kling for %d sequential submits: %d (goal <= 20); raw libcurl: %d", N, k.conns,
  rp_conns))
print(string.format("new TLS connection, CA directory kept / unset (raw libcurl): %.1fx", rfc_cpu / rf_cpu))
