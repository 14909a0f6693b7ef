-- A scripted file host on loopback, for download specs that need answers the emulator does
-- not give (a Date header, a Last-Modified of the spec's choice, a 206 of another file...).
--
-- As a module (from a spec):
--   local file_host = require "file_host"
--   local host = file_host.start(dir)          -- dir: a scratch directory of the spec
--   host.serve [[ return function(req) return { status = 200, body = "..." } end ]]
--   host.base                                  -- "http://127.0.0.1:PORT"
--   host.requests() -> { { method=, target=, range=, if_range= }, ... } (every request so far)
--   host.stop()
-- The script (a Lua chunk) is loaded again for every request, so a spec may change it
-- between requests. It returns function(req, n) (req: method, target (path and query),
-- path, query, headers (lower-case names); n: the number of this request, from 1) that
-- returns an answer (n counts from 1 again each time serve is called): { status = 200, headers = { { "ETag", '"x"' }, ... }, body = "...",
--   length = N,   -- the Content-Length announced (default #body)
--   send = N,     -- bytes of the body actually sent (default all); fewer: the connection
--                 -- is closed after them (a cut transfer)
--   hold = true,  -- after `send` bytes, keep the connection open and send nothing more
--   wait_for = PATH } -- after `send` bytes, wait until the file PATH exists, then send the rest
-- As a script: lua5.4 spec/file_host.lua PORT_FILE SCRIPT_FILE (the module starts it so).
if ... == "file_host" then
  local helpers = require "helpers"
  local q = helpers.quote
  local M = {}

  function M.start(dir)
    local n = 0
    repeat
      n = n + 1
    until not helpers.read_file(dir .. "/file_host" .. n .. ".port") and not helpers.read_file(dir .. "/file_host" .. n .. ".lua")
    local self = { script = dir .. "/file_host" .. n .. ".lua", port_file = dir .. "/file_host" .. n .. ".port" }
    local serial = 0
    function self.serve(text)
      serial = serial + 1 -- a new script: its requests are counted from 1
      helpers.write_file(self.script, "-- script " .. serial .. "\n" .. text)
    end
    self.serve "return function() return { status = 404, body = 'no script yet' } end"
    local p = io.popen("exec lua5.4 " .. q(helpers.root .. "/spec/file_host.lua") .. " " .. q(self.port_file) .. " "
      .. q(self.script) .. " >/dev/null 2>&1 & echo $!")
    self.pid = tonumber(p:read("*l"))
    p:close()
    local port
    local limit = os.time() + 10
    repeat
      port = tonumber(helpers.read_file(self.port_file) or "")
      if not port then helpers.sleep(0.02) end
    until port or os.time() > limit
    assert(port, "the file host did not start")
    self.base = "http://127.0.0.1:" .. port
    function self.requests()
      local list = {}
      for line in (helpers.read_file(self.port_file .. ".log") or ""):gmatch("[^\n]+") do
        if line:sub(1, 1) == "#" then goto continue end
        local method, target, range, if_range = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)$")
        list[#list + 1] = { method = method, target = target, range = range ~= "" and range or nil,
          if_range = if_range ~= "" and if_range or nil }
        ::continue::
      end
      return list
    end
    function self.stop() os.execute("kill " .. self.pid .. " 2>/dev/null") end
    return self
  end

  return M
end

local cqueues = require "cqueues"
local socket = require "cqueues.socket"

local port_file, script_file = arg[1], arg[2]
local srv = assert(socket.listen { host = "127.0.0.1", port = 0 })
assert(srv:listen())
local _, _, port = srv:localname()
local log = assert(io.open(port_file .. ".log", "ab"))
log:setvbuf("no")
local count, last_text = 0, nil

local function serve(con)
  con:setmode("b", "b")
  while true do
    local line = con:read("*l")
    if not line then break end
    line = line:gsub("\r$", "")
    local method, target = line:match("^(%u+) (%S+)")
    local headers, len = {}, 0
    while true do
      local h = con:read("*l")
      if not h then return con:close() end
      h = h:gsub("\r$", "")
      if h == "" then break end
      local name, value = h:match("^([^:]+):%s*(.-)%s*$")
      if name then headers[name:lower()] = value end
    end
    len = tonumber(headers["content-length"] or "") or 0
    if len > 0 then con:read(len) end
    local sf = io.open(script_file, "rb")
    local text = sf and sf:read("*a") or ""
    if sf then sf:close() end
    if text ~= last_text then count, last_text = 0, text end
    count = count + 1
    log:write(table.concat({ method or "", target or "", headers.range or "", headers["if-range"] or "" }, "\t"), "\n")
    local path, query = (target or ""):match("^([^?]*)%??(.*)$")
    local req = { method = method, target = target, path = path, query = query, headers = headers }
    local ok, a = pcall(function() return assert(load(text, "=script"))()(req, count) end)
    if not ok or type(a) ~= "table" then a = { status = 500, body = "file_host: " .. tostring(a) } end
    local body = a.body or ""
    local length = a.length or #body
    local send = a.send or #body
    local head = { string.format("HTTP/1.1 %d X", a.status or 200), "Content-Length: " .. length }
    for _, h in ipairs(a.headers or {}) do head[#head + 1] = h[1] .. ": " .. h[2] end
    con:write(table.concat(head, "\r\n") .. "\r\n\r\n")
    if method ~= "HEAD" then con:write(body:sub(1, send)) end
    con:flush()
    if a.hold then
      cqueues.sleep(3600)
      return con:close()
    end
    if a.wait_for and method ~= "HEAD" and send < #body then
      while true do
        local f = io.open(a.wait_for, "rb")
        if f then
          f:close()
          break
        end
        cqueues.sleep(0.01)
      end
      con:write(body:sub(send + 1))
      con:flush()
      send = #body
    end
    if method ~= "HEAD" and send < length then return con:close() end -- a cut transfer
  end
  con:close()
end

local f = assert(io.open(port_file, "w"))
f:write(port)
f:close()

local cq = cqueues.new()
cq:wrap(function()
  while true do
    local con = srv:accept()
    if con then
      cq:wrap(function()
        -- a client that goes away mid-answer (a refused range, an abort) ends its connection only
        local ok, err = pcall(serve, con)
        if not ok then
          log:write("#error\t", tostring(err):gsub("[\t\n]", " "), "\n")
          pcall(con.close, con)
        end
      end)
    end
  end
end)
assert(cq:loop())
