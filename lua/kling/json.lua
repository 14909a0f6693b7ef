--- JSON for the wire: lua-cjson, plus arrays that stay arrays when empty.
-- lua-cjson (2.1, as Debian ships it) writes an empty Lua table as `{}`. A
-- table marked with kling.array (the metatable the C validator puts on every
-- array it builds) goes out as `[]` even when empty.
local cjson = require "cjson"
local core = require "kling.core"

local M = {}

local codec = cjson.new()
codec.encode_invalid_numbers(false)
codec.encode_max_depth(64)

local ARRAY_MT = core.array_mt
-- An improbable string standing for an empty array while cjson encodes.
local MARK = string.format("\0kling-empty-array-%08x\0", math.random(0, 0x7fffffff))
local MARK_JSON = codec.encode(MARK)
local MARK_PATTERN = MARK_JSON:gsub("%p", "%%%0")

--- Marks t (or a new table) as a JSON array: it is encoded as `[]` when empty.
function M.array(t)
  return setmetatable(t or {}, ARRAY_MT)
end

-- Returns v, or a copy of it with empty arrays replaced by MARK (only the
-- tables on the way to one are copied). The second value says whether any was.
local function mark_empty(v, depth)
  if type(v) ~= "table" or depth > 64 then return v, false end
  if getmetatable(v) == ARRAY_MT and next(v) == nil then return MARK, true end
  local copy
  for k, x in pairs(v) do
    local y, changed = mark_empty(x, depth + 1)
    if changed then
      if not copy then
        copy = {}
        for k2, x2 in pairs(v) do copy[k2] = x2 end
      end
      copy[k] = y
    end
  end
  return copy or v, copy ~= nil
end

--- Encodes v. Returns the JSON text, or raises like cjson.encode.
function M.encode(v)
  local marked, changed = mark_empty(v, 0)
  local s = codec.encode(marked)
  if changed then s = s:gsub(MARK_PATTERN, "[]") end
  return s
end

--- Decodes JSON text. Returns the value, or raises like cjson.decode.
M.decode = codec.decode

return M
