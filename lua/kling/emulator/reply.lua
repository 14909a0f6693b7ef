--- kling.emulator.reply: JSON text and the shape of a reply.
--
-- A reply is a table the HTTP writer (kling.emulator.http) sends: status, type, headers
-- ({ {name, value}, ... }) and a body string, or a byte source for files. Route handlers
-- and faults build replies with these helpers; nothing here writes to a socket.
--
-- Debian's lua-cjson 2.1.0 has neither empty_array nor a way to leave "/" unescaped: an
-- empty array is written as a marker string and replaced after encoding, and "\/" (which
-- cjson writes for every "/", and only for "/") goes back to "/".
local cjson = require "cjson"

local M = {}

local json = cjson.new()
M.json = json          -- the emulator's own cjson instance (decode with pcall: it raises)
M.null = cjson.null

local EMPTY_ARRAY = "\0[]"
local EMPTY_ARRAY_ENCODED = json.encode(EMPTY_ARRAY)
local EMPTY_ARRAY_PATTERN = EMPTY_ARRAY_ENCODED:gsub("%p", "%%%0")

--- JSON text of a value (empty arrays marked with array() written as [], "/" unescaped).
function M.encode(value)
  local text = json.encode(value)
  if text:find(EMPTY_ARRAY_ENCODED, 1, true) then
    text = text:gsub(EMPTY_ARRAY_PATTERN, "[]")
  end
  return (text:gsub("\\/", "/"))
end
local encode = M.encode

--- t, or the empty-array marker when t is empty (so that it is written [] and not {}).
function M.array(t)
  if #t == 0 then return EMPTY_ARRAY end
  return t
end

--- A JSON reply. @param headers optional { {name, value}, ... }
function M.json_reply(status, value, headers)
  return { status = status, body = encode(value), type = "application/json", headers = headers }
end
local json_reply = M.json_reply

--- {"error_code":code,"error_message":message} (plus the fields of extra) with status.
function M.error_reply(status, code, message, extra)
  local body = { error_code = code, error_message = message }
  for k, v in pairs(extra or {}) do body[k] = v end
  return json_reply(status, body)
end
local error_reply = M.error_reply

--- 404 with error_code 404001.
function M.not_found(message)
  return error_reply(404, 404001, message or "Not found")
end

return M
