-- A small HTTP proxy on loopback for the specs (run as a script with lua5.4):
--   lua5.4 spec/fake_proxy.lua PORT_FILE LOG_FILE MODE [ARG]
-- It writes its port to PORT_FILE, then appends every byte it receives from clients to
-- LOG_FILE (so a spec can look for the token in it). MODE:
--   refuse  answer every request (a CONNECT or a plain proxied GET) with HTTP 403, or
--           with the HTTP status ARG (e.g. 503)
--   tunnel  answer CONNECT with 200 and relay the bytes to 127.0.0.1:ARG (a port)
--           (whatever host the CONNECT names); anything else gets 403
local cqueues = require "cqueues"
local socket = require "cqueues.socket"

local port_file, log_file, mode = arg[1], arg[2], arg[3]
local tunnel_port = mode == "tunnel" and tonumber(arg[4]) or nil
local refuse_status = mode == "refuse" and tonumber(arg[4]) or 403
local srv = assert(socket.listen { host = "127.0.0.1", port = 0 })
assert(srv:listen())
local _, _, port = srv:localname()
local log = assert(io.open(log_file, "ab"))
log:setvbuf("no")
local f = assert(io.open(port_file, "w"))
f:write(port)
f:close()

local cq = cqueues.new()

local function refuse(con)
  local body = "proxy says no\n"
  con:write(string.format("HTTP/1.1 %d No\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
    .. "Connection: close\r\n\r\n%s", refuse_status, #body, body))
  con:flush()
  con:close()
end

local function relay(from, to)
  while true do
    local data = from:read(-65536)
    if not data or data == "" then break end
    log:write(data)
    to:write(data)
    to:flush()
  end
  pcall(to.shutdown, to, "w")
end

local function serve(con)
  con:setmode("b", "b")
  local head = {}
  while true do
    local line = con:read("*l")
    if not line then return con:close() end
    log:write(line, "\n")
    line = line:gsub("\r$", "")
    if line == "" then break end
    head[#head + 1] = line
  end
  local method = (head[1] or ""):match("^(%u+) ")
  if mode == "tunnel" and method == "CONNECT" then
    local up = socket.connect { host = "127.0.0.1", port = tunnel_port }
    up:setmode("b", "b")
    up:connect()
    con:write("HTTP/1.1 200 Connection established\r\n\r\n")
    con:flush()
    cq:wrap(relay, up, con)
    relay(con, up)
    return
  end
  refuse(con)
end

cq:wrap(function()
  while true do
    local con = srv:accept()
    if con then cq:wrap(serve, con) end
  end
end)
assert(cq:loop())
