--- kling.emulator.clock: the emulator's clock, which a test can drive.
--
-- Every time the emulator reasons about (a job's queue and run times, the *_clock fields,
-- the wall time of its dates, the delays of the slow and trickle faults) comes from one
-- clock object:
--   monotonic  cqueues.monotime (CLOCK_MONOTONIC, the same clock in every process of the
--              machine); delays are real sleeps. The default.
--   custom     a function given in-process (emulator.new{ clock = fn }); delays are real.
--   manual     starts at the monotonic time of its creation and moves only when driven
--              (clock:advance(s), clock:set(t), POST /__emulator/clock, --clock manual);
--              a delay waits until the clock has been driven past its end. So a test
--              states "10 s later" without waiting 10 s, and no window can be missed.
-- Connection timeouts (idle keep-alive connections) stay on real time in every mode.
local cqueues = require "cqueues"
local condition = require "cqueues.condition"

local M = {}

M.KINDS = { "monotonic", "manual" } -- what --clock takes

--- Make a clock.
-- @param spec nil or "monotonic", "manual", or a function returning seconds (custom)
-- @return clock { name, now (function() -> seconds), sleep (function(seconds), in a
--   coroutine of the loop), advance (manual only), set (manual only) } | nil, err
function M.new(spec)
  if spec == nil or spec == "monotonic" then
    return { name = "monotonic", now = cqueues.monotime, sleep = cqueues.sleep }
  end
  if type(spec) == "function" then
    return { name = "custom", now = spec, sleep = cqueues.sleep }
  end
  if spec ~= "manual" then
    return nil, "unknown clock " .. tostring(spec) .. " (monotonic or manual)"
  end
  local t = cqueues.monotime()
  local moved = condition.new()
  local clock = { name = "manual" }
  function clock.now() return t end
  --- Wait (in a coroutine of the loop) until the clock has moved s seconds on.
  function clock.sleep(s)
    local wake = t + (tonumber(s) or 0)
    while t < wake do moved:wait() end
  end
  --- Move the clock to t2 (never back). @return the clock's time | nil, err
  function clock.set(t2)
    if type(t2) ~= "number" or t2 ~= t2 or t2 == math.huge then return nil, "expected a number of seconds" end
    if t2 < t then return nil, string.format("the clock does not go back (now %.6f)", t) end
    t = t2
    moved:signal()
    return t
  end
  --- Move the clock s seconds on (s >= 0). @return the clock's time | nil, err
  function clock.advance(s)
    if type(s) ~= "number" or s ~= s or s < 0 or s == math.huge then return nil, "expected seconds >= 0" end
    return clock.set(t + s)
  end
  return clock
end

return M
