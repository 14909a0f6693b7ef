--- kling.emulator.util: the small pieces every part of the emulator shares.
--
-- The seeded generator (splitmix64 on Lua 5.4 integers) behind ids, drawn times and fault
-- decisions; uniform draws from it; microsecond rounding of clock times; the text of a
-- number as the emulator writes it (fault specs, Retry-After); HTTP dates; shallow copies.
-- Nothing here knows about requests, jobs or sockets.
local M = {}

local format, floor = string.format, math.floor

--- A deterministic generator: each call returns the next 64-bit integer of the stream.
-- @param seed integer
-- @return function() -> integer
function M.new_rng(seed)
  local state = seed
  return function()
    state = state + 0x9E3779B97F4A7C15
    local z = state
    z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ~ (z >> 27)) * 0x94D049BB133111EB
    return z ~ (z >> 31)
  end
end

--- A seed that varies from run to run (time, an address, CPU time).
function M.default_seed()
  local addr = tonumber(tostring({}):match("0x(%x+)") or "0", 16) or 0
  return os.time() ~ (addr << 16) ~ floor(os.clock() * 1e6)
end

--- A clock time rounded to the microsecond (the precision the job list is written with).
function M.micro(t)
  return floor(t * 1e6 + 0.5) / 1e6
end

--- A uniform float in [0, 1) from 53 bits of a generator.
function M.unit(random)
  return (random() >> 11) * 2.0 ^ -53
end

--- n when it is a finite number of seconds >= 0, else nil.
function M.finite_seconds(n)
  return n and n >= 0 and n < math.huge and n or nil
end

--- A number as text: whole numbers without a decimal point, others with 14 digits.
function M.number_text(n)
  if n == floor(n) and math.abs(n) < 2 ^ 53 then return format("%d", n) end
  return format("%.14g", n)
end

-- "Sun, 06 Nov 1994 08:49:37 GMT" (not os.date's %a/%b, which follow the locale)
local DAYS = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" }
local MONTHS = { "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" }

--- The HTTP date (RFC 9110 IMF-fixdate) of Unix time t (seconds; the fraction is dropped).
function M.http_date(t)
  local d = os.date("!*t", floor(t))
  return format("%s, %02d %s %04d %02d:%02d:%02d GMT", DAYS[d.wday], d.day, MONTHS[d.month], d.year,
    d.hour, d.min, d.sec)
end

--- A shallow copy of a table.
function M.copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

return M
