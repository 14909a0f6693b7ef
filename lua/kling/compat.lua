--- kling.compat: what the library needs of Lua 5.3+ on 5.1, 5.2 and
-- LuaJIT, as locals of its own (no global is changed: kling is loaded into
-- other people's Lua states).
--
--   local compat = require "kling.compat"
--   local math = compat.math   -- math with type and tointeger on every Lua
--   compat.unpack(t, i, j), compat.pack(...), compat.in_coroutine()
--
-- On 5.1, 5.2 and LuaJIT a number is a double: math.type says "integer"
-- for an integral number that a double holds exactly (|n| < 2^53).
local M = {}

local function math_type(v)
  if type(v) ~= "number" then return nil end
  if v == math.floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then return "integer" end
  return "float"
end

if math.type then
  M.math = math
else
  M.math = setmetatable({
    type = math_type,
    tointeger = function(v)
      if math_type(v) == "integer" then return v end
      return nil
    end,
  }, { __index = math })
end

--- table.unpack (5.2+) or unpack (5.1, LuaJIT).
M.unpack = table.unpack or unpack

--- table.pack: the arguments in a table, with n their count.
M.pack = table.pack or function(...) return { n = select("#", ...), ... } end

--- True when the running code is a coroutine, not a main thread (5.1 and
-- LuaJIT give no second value of coroutine.running()).
function M.in_coroutine()
  local co, main = coroutine.running()
  return co ~= nil and not main
end

return M
