--- Waiting inside other event loops.
--
-- A client is a pollable (pollfd(), events(), timeout(), step()): any loop
-- can watch it; client:pollfds() lists every descriptor to watch and for
-- what (one with the epoll and kqueue backends, each of the engine's
-- sockets with the poll backend). Inside a cqueues controller kling does so
-- by itself (through cqueues.poll). For other loops, a waiter tells kling
-- how to wait: kling.new{ waiter = fn } for one client, kling.set_waiter(fn)
-- for the others; fn(client, seconds, clients) returns once one of the
-- clients has work or the time is up, yielding to the loop meanwhile. This
-- module makes such functions. From a main thread (no coroutine to yield)
-- they raise "call this from a coroutine, or use on_done".
local sched = require "kling.sched"

local M = {}

-- The descriptors of the clients and what to watch them for (uv's "r", "w", "rw").
local function watch_list(client, clients)
  local list = {}
  for _, c in ipairs(clients or { client }) do
    for _, p in ipairs(c:pollfds()) do list[#list + 1] = p end
  end
  return list
end

-- The shortest timeout of the clients, at most seconds.
local function bound(client, clients, seconds)
  for _, c in ipairs(clients or { client }) do
    local t = c:timeout()
    if t and t < seconds then seconds = t end
  end
  return math.max(0, seconds)
end

--- A waiter for a luv (libuv) program: the kling calls run in a coroutine of
-- the program's (started with coroutine.wrap, say); while one waits, the
-- coroutine yields and uv.run() goes on; poll handles on the clients'
-- descriptors and a timer resume it.
--   kling.set_waiter(require("kling.loops").luv(require "luv"))
--   local c = kling.new{ waiter = require("kling.loops").luv(uv) }
-- resume(co) (optional) resumes the waiting coroutine; by default
-- coroutine.resume, raising its error.
function M.luv(uv, resume)
  resume = resume or function(co)
    local ok, err = coroutine.resume(co)
    if not ok then error(err, 0) end
  end
  return function(client, seconds, clients)
    if not sched.in_coroutine() then error(sched.MAIN_THREAD, 0) end
    local co = coroutine.running()
    seconds = bound(client, clients, seconds)
    local handles, woken = {}, false
    local timer = uv.new_timer()
    local function wake()
      if woken then return end
      woken = true
      for _, h in ipairs(handles) do
        h:stop()
        h:close()
      end
      timer:stop()
      timer:close()
      resume(co)
    end
    for _, p in ipairs(watch_list(client, clients)) do
      local h = uv.new_poll(p.fd)
      h:start(p.events, wake)
      handles[#handles + 1] = h
    end
    timer:start(math.max(0, math.ceil(seconds * 1000)), 0, wake)
    coroutine.yield()
  end
end

--- A waiter for Neovim (0.7+, LuaJIT): like luv's on vim.loop, but the
-- coroutine is resumed through vim.schedule, so that the code after a wait
-- (and job callbacks run from there) may call vim.api (never from a fast
-- luv callback: E5560).
--   local kling = require "kling"
--   kling.set_waiter(require("kling.loops").nvim())
function M.nvim(vim_)
  local v = vim_ or vim
  return M.luv(v.loop, function(co)
    v.schedule(function()
      local ok, err = coroutine.resume(co)
      if not ok then error(err, 0) end
    end)
  end)
end

return M
