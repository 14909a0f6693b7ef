-- A stand-in for the API that answers whatever a spec scripts (run as a script):
--   lua5.4 spec/hostile_api.lua PORT_FILE ANSWERS_FILE
-- It writes its port to PORT_FILE. For every request it loads ANSWERS_FILE again (so a
-- spec may change it between requests): a Lua chunk returning
--   function(method, path, base) -> status, body [, content_type]
-- where base is "http://127.0.0.1:PORT" (for URLs in answers). Each request line is
-- appended to PORT_FILE .. ".log", and the request line with its header lines (tab-separated)
-- to PORT_FILE .. ".headers".
local cqueues = require "cqueues"
local socket = require "cqueues.socket"

local port_file, answers_file = arg[1], arg[2]
local srv = assert(socket.listen { host = "127.0.0.1", port = 0 })
assert(srv:listen())
local _, _, port = srv:localname()
local base = "http://127.0.0.1:" .. port
local log = assert(io.open(port_file .. ".log", "ab"))
log:setvbuf("no")
local hlog = assert(io.open(port_file .. ".headers", "ab"))
hlog:setvbuf("no")
local f = assert(io.open(port_file, "w"))
f:write(port)
f:close()

local function answer(con, status, body, ctype)
  con:write(string.format("HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", status,
    ctype or "application/json", #body), body)
  con:flush()
end

local function serve(con)
  con:setmode("b", "b")
  while true do
    local line = con:read("*l")
    if not line then break end
    local method, path = line:match("^(%u+) (%S+)")
    log:write(line:gsub("\r$", ""), "\n")
    local len = 0
    local seen = { (line:gsub("\r$", "")) }
    while true do
      local h = con:read("*l")
      if not h then return con:close() end
      h = h:gsub("\r$", "")
      if h == "" then break end
      seen[#seen + 1] = h
      len = tonumber(h:lower():match("^content%-length:%s*(%d+)")) or len
    end
    hlog:write(table.concat(seen, "\t"), "\n")
    if len > 0 then con:read(len) end
    local ok, status, body, ctype = pcall(function() return dofile(answers_file)(method, path, base) end)
    if not ok then
      answer(con, 500, '{"error_message":"hostile_api: ' .. tostring(status):gsub('"', "'") .. '"}')
    else
      answer(con, status or 404, body or "", ctype)
    end
  end
  con:close()
end

local cq = cqueues.new()
cq:wrap(function()
  while true do
    local con = srv:accept()
    if con then cq:wrap(serve, con) end
  end
end)
assert(cq:loop())
