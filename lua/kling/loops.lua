--- Waiting inside other event loops.
--
-- A client is a pollable (pollfd(), events(), timeout(), step()): any loop
-- can watch it. Inside a cqueues controller kling does so by itself (through
-- cqueues.poll). For other loops, kling.set_waiter(fn) tells kling how to
-- wait: fn(client, seconds) returns once the client's pollfd() is readable
-- or the time is up, yielding to the loop meanwhile. This module makes such
-- functions.
local M = {}

--- A waiter for a luv (libuv) program: the kling calls run in a coroutine of
-- the program's (started with coroutine.wrap, say); while one waits, the
-- coroutine yields and uv.run() goes on; a poll handle on the client's
-- pollfd() and a timer resume it. Outside a coroutine it blocks.
--   kling.set_waiter(require("kling.loops").luv(require "luv"))
function M.luv(uv)
  local polls = setmetatable({}, { __mode = "k" }) -- client -> uv poll handle
  return function(client, seconds)
    local co, main = coroutine.running()
    if main then
      client:step(seconds)
      return
    end
    local t = client:timeout()
    if t and t < seconds then seconds = t end
    local poll = polls[client]
    if not poll then
      poll = uv.new_poll(client:pollfd())
      polls[client] = poll
    end
    local timer = uv.new_timer()
    local woken = false
    local function wake()
      if woken then return end
      woken = true
      poll:stop()
      timer:stop()
      timer:close()
      local ok, err = coroutine.resume(co)
      if not ok then error(err, 0) end
    end
    poll:start("r", wake)
    timer:start(math.max(0, math.ceil(seconds * 1000)), 0, wake)
    coroutine.yield()
  end
end

return M
