--- How kling waits: one primitive, `sched.wait(client, ready, deadline)`,
-- used by every call that would block (a transfer, a job's wait, a sleep).
--
-- * inside a task of kling.run it yields to kling's scheduler, which drives
--   every client its tasks wait on and sleeps in the kernel meanwhile;
-- * with a waiter (the client's, kling.new{ waiter = fn }, or else the one of
--   kling.set_waiter(fn)) it calls fn(client, seconds, clients) (for foreign
--   event loops: fn may yield to its loop until one of the clients has work,
--   client:pollfds(), or the time is up); from a main thread, a waiter that
--   yields gets a clear error instead of Lua's "attempt to yield";
-- * inside a cqueues controller it waits through cqueues.poll(client);
-- * otherwise it blocks in the client's engine (epoll) until something
--   happens or the deadline.
local core = require "kling.core".engine -- now, wait_fds

local M = {}

local compat = require "kling.compat"
local unpack, pack = compat.unpack, compat.pack
M.in_coroutine = compat.in_coroutine

local LUA51 = _VERSION == "Lua 5.1" -- (and LuaJIT): a coroutine's body must be a Lua function there
local current -- the scheduler of the kling.run in progress, if any
local waiter  -- kling.set_waiter's function
local NO_FDS = {} -- (never written)

--- True when the running coroutine is a task of the running scheduler.
function M.yieldable()
  if not current then return false end
  local co = coroutine.running()
  return M.in_coroutine() and current.tasks[co] ~= nil
end

--- True inside kling.run (in any of its tasks or the code they call).
function M.running()
  return current ~= nil
end

--- Sets (or clears, with nil) the function that waits on a client outside
-- kling.run, for clients made without a waiter of their own:
-- fn(client, seconds, clients) returns when the client (or one of the list
-- `clients`, when a wait spans several) may have work, or after seconds.
function M.set_waiter(fn)
  if fn ~= nil and type(fn) ~= "function" then error("kling.set_waiter: expected a function or nil", 2) end
  waiter = fn
end

--- The message of a wait from a main thread through a waiter that yields.
M.MAIN_THREAD = "kling: this wait cannot yield to the host's event loop from the main thread "
  .. "(the client's waiter yields): call this from a coroutine, or use on_done (job:on_done(fn))"

--- The waiter that applies to client: its own, or kling.set_waiter's.
function M.waiter_of(client)
  return client and client._waiter or waiter
end

-- Calls a waiter; from a main thread, a waiter that tries to yield gets
-- M.MAIN_THREAD (a programming error: raised).
local function call_waiter(w, client, seconds, list)
  if M.in_coroutine() then return w(client, seconds, list) end
  local ok, err = pcall(w, client, seconds, list)
  if ok then return end
  if type(err) == "string" and err:find("attempt to yield", 1, true) then error(M.MAIN_THREAD, 0) end
  error(err, 0)
end

--- Before a call sends a request it will then wait on: raises M.MAIN_THREAD
-- (as the wait would) while nothing is sent yet, when that wait could not
-- happen: from a main thread, outside kling.run, a client whose waiter
-- yields (a paid submit must never go out behind an error that says it
-- could not be made). The waiter is asked once, for 0 seconds.
function M.check_wait(client)
  if M.in_coroutine() then return end
  local w = M.waiter_of(client)
  if w then call_waiter(w, client, 0, { client }) end
end

local function cqueues_controller()
  local cq = package.loaded.cqueues
  if cq and cq.running then
    local ok, running = pcall(cq.running)
    if ok and running then return cq end
  end
  return nil
end

--- Waits until ready() is true or the deadline (core.now() time) passes,
-- while client (may be nil; or the set `clients` inside kling.run) makes
-- progress. `key` (optional) names what is
-- awaited (a job, a transfer's key): the scheduler then checks ready() only
-- when sched.notify(key) says it may have changed. Returns ready().
function M.wait(client, ready, deadline, key, clients)
  deadline = deadline or math.huge
  while not ready() do
    local left = deadline - core.now()
    if left <= 0 then return false end
    if M.yieldable() then
      -- the task's own condition table, filled again for each wait (no table per wait)
      local task = current.tasks[coroutine.running()]
      local cond = task.wait_cond
      cond.client, cond.clients, cond.ready, cond.at, cond.key = client, clients, ready, deadline, key
      coroutine.yield(cond)
    elseif client == nil then
      -- nothing to drive: sleep in the kernel
      core.wait_fds(NO_FDS, math.min(left, 1))
    elseif M.waiter_of(client) then
      local list, wait = { client }, left
      for c in pairs(clients or {}) do
        if c ~= client then list[#list + 1] = c end
      end
      for _, c in ipairs(list) do
        local t = c:timeout()
        if t and t < wait then wait = t end
      end
      -- a waiter that watches only its first client still lets the others on
      if #list > 1 and wait > 0.1 then wait = 0.1 end
      call_waiter(M.waiter_of(client), client, wait, list)
      for _, c in ipairs(list) do c:step(0) end
    else
      local cq = cqueues_controller()
      if cq then
        -- every coroutine waiting on this client also waits on its condition,
        -- signalled after each step: news one of them reads reaches all
        local cond = client._cq_cond
        if not cond then
          cond = require("cqueues.condition").new()
          client._cq_cond = cond
        end
        local t = client:timeout()
        if client:pollfd() >= 0 then
          cq.poll(client, cond, math.min(left, t or left))
        else -- the poll backend: its sockets one by one
          local list = {}
          for _, p in ipairs(client:pollfds()) do
            list[#list + 1] = { pollfd = function() return p.fd end, events = function() return p.events end }
          end
          list[#list + 1] = cond
          list[#list + 1] = math.min(left, t or left)
          cq.poll((compat.unpack)(list))
        end
        client:step(0)
        cond:signal()
      else
        client:step(left)
      end
    end
  end
  return true
end

--- Says that what `key` names may have changed: tasks waiting on it are
-- looked at again.
function M.notify(key)
  local s = current
  if s and s.by_key[key] then s.notified[#s.notified + 1] = key end
end

--- Starts fn(...) as a task of the running scheduler.
function M.spawn(fn, ...)
  if not current then error("kling.spawn: not inside kling.run", 2) end
  local co
  if select("#", ...) == 0 and not LUA51 and type(fn) == "function" then
    co = coroutine.create(fn) -- (no table and closure for arguments there are none of; a
    -- callable table goes through the closure: coroutine.create takes functions only)
  else
    local args = pack(...)
    co = coroutine.create(function() return fn(unpack(args, 1, args.n)) end)
  end
  local task = { co = co, wait_cond = {}, taken = 0 }
  current.tasks[co] = task
  current.ntasks = current.ntasks + 1
  current.runnable[#current.runnable + 1] = task
  return co
end

-- A min-heap of timers in two arrays (no table per timer): when (at) and
-- which task; a task has at most one timer, and knows where it is (t.hi),
-- so that a task woken before its time takes its timer out at once.
local function heap_set(h, i, when, t)
  h.at[i], h.task[i] = when, t
  t.hi = i
end

local function heap_up(h, i)
  local at, task = h.at, h.task
  local when, t = at[i], task[i]
  while i > 1 do
    local p = math.floor(i / 2)
    if at[p] <= when then break end
    heap_set(h, i, at[p], task[p])
    i = p
  end
  heap_set(h, i, when, t)
end

local function heap_down(h, i)
  local at, task, n = h.at, h.task, h.n
  local when, t = at[i], task[i]
  while true do
    local l, r, m, mat = 2 * i, 2 * i + 1, nil, when
    if l <= n and at[l] < mat then m, mat = l, at[l] end
    if r <= n and at[r] < mat then m = r end
    if not m then break end
    heap_set(h, i, at[m], task[m])
    i = m
  end
  heap_set(h, i, when, t)
end

local function heap_push(h, when, t)
  local n = h.n + 1
  h.n = n
  heap_set(h, n, when, t)
  heap_up(h, n)
end

-- Takes the timer at i out.
local function heap_remove(h, i)
  local n = h.n
  local t = h.task[i]
  t.hi = nil
  if i ~= n then
    heap_set(h, i, h.at[n], h.task[n])
  end
  h.at[n], h.task[n] = nil, nil
  h.n = n - 1
  if i < n then -- the last timer, moved to i, goes up or down to its place
    local moved = h.task[i]
    heap_up(h, i)
    heap_down(h, moved.hi)
  end
end

-- Drives the clients tasks wait on, for at most `wait` seconds.
local function drive(s, wait)
  local n = 0
  for c in pairs(s.clients) do
    n = n + 1
    local t = c:timeout()
    if t and t < wait then wait = t end
  end
  if n == 0 then
    if wait > 0 then core.wait_fds(NO_FDS, wait) end
  elseif n == 1 then
    next(s.clients):step(wait)
  else
    local fds, k = s.fds, 0
    for c in pairs(s.clients) do
      local fd = c:pollfd()
      if fd >= 0 then
        k = k + 1
        fds[k] = fd
      else -- the poll backend: each socket of the client, with its events
        for _, p in ipairs(c:pollfds()) do
          k = k + 1
          fds[k] = p
        end
      end
    end
    for i = #fds, k + 1, -1 do fds[i] = nil end
    core.wait_fds(fds, wait)
    for c in pairs(s.clients) do c:step(0) end
  end
end

-- Files a task under what it waits on.
local function park(s, t, cond)
  t.cond = cond
  if cond.client then s.clients[cond.client] = true end
  if cond.clients then
    for c in pairs(cond.clients) do s.clients[c] = true end
  end
  if cond.key ~= nil then
    local set = s.by_key[cond.key]
    if not set then
      local free = s.free_sets
      set = free[#free] or {} -- an emptied set is used again
      free[#free] = nil
      s.by_key[cond.key] = set
    end
    set[t] = true
  else
    s.generic[t] = true
  end
  if cond.at < math.huge then heap_push(s.timers, cond.at, t) end
end

local function unpark(s, t)
  local cond = t.cond
  if not cond then return end
  t.cond = nil
  if t.hi then heap_remove(s.timers, t.hi) end
  if cond.key ~= nil then
    local set = s.by_key[cond.key]
    if set then
      set[t] = nil
      if next(set) == nil then
        s.by_key[cond.key] = nil
        local free = s.free_sets
        if #free < 64 then free[#free + 1] = set end
      end
    end
  else
    s.generic[t] = nil
  end
end

-- Puts t on the list run (of n), once per gather (t.taken: the cycle it
-- was last taken in). Returns the new n.
local function take(s, run, n, t)
  if t.taken == s.cycle then return n end
  t.taken = s.cycle
  unpark(s, t)
  n = n + 1
  run[n] = t
  return n
end

-- The tasks that may go on now, in s.run[1..n]; returns n. The lists are
-- kept and swapped, not made anew: a cycle in the steady state allocates
-- nothing.
local function gather(s)
  s.cycle = s.cycle + 1
  local run, n = s.run, 0
  local runnable = s.runnable
  s.runnable, s.spare_runnable = s.spare_runnable, runnable
  for i = 1, #runnable do
    n = take(s, run, n, runnable[i])
    runnable[i] = nil
  end
  local notified = s.notified
  s.notified, s.spare_notified = s.spare_notified, notified
  for i = 1, #notified do
    local set = s.by_key[notified[i]]
    notified[i] = nil
    if set then
      for t in pairs(set) do
        if t.cond.ready() then n = take(s, run, n, t) end
      end
    end
  end
  for t in pairs(s.generic) do
    if t.cond.ready() then n = take(s, run, n, t) end
  end
  local now, h = core.now(), s.timers
  while h.n > 0 and h.at[1] <= now do
    local t = h.task[1]
    if t.taken == s.cycle then heap_remove(h, 1) end -- (taken already: its timer goes)
    n = take(s, run, n, t) -- (takes its timer out too)
  end
  for i = #run, n + 1, -1 do run[i] = nil end
  return n
end

-- After a resume of task t: its results (main's are kept when it ends).
local function resumed(s, t, main, ok, first, ...)
  if not ok then error(debug.traceback(t.co, tostring(first)), 0) end
  if coroutine.status(t.co) == "dead" then
    if t.co == main then s.results = pack(first, ...) end
    s.tasks[t.co] = nil
    s.ntasks = s.ntasks - 1
  else
    local cond = first
    if type(cond) ~= "table" or type(cond.ready) ~= "function" then
      error("kling.run: a task yielded outside kling (use your own coroutine inside tasks)", 0)
    end
    cond.at = cond.at or math.huge
    park(s, t, cond)
  end
end

--- Runs fn(...) as the first task and drives every task until all have
-- ended. Returns what fn returned. An error in any task is raised here.
function M.run(fn, ...)
  if current then error("kling.run: already inside kling.run (use kling.spawn)", 2) end
  local s = {
    tasks = {}, ntasks = 0, runnable = {}, spare_runnable = {}, run = {}, cycle = 0, by_key = {}, generic = {},
    timers = { n = 0, at = {}, task = {} }, notified = {}, spare_notified = {}, clients = {}, fds = {},
    free_sets = {},
  }
  current = s
  local main = M.spawn(fn, ...)
  local ok, err = pcall(function()
    while s.ntasks > 0 do
      local n = gather(s)
      local run = s.run
      for i = 1, n do
        local t = run[i]
        resumed(s, t, main, coroutine.resume(t.co))
      end
      if s.ntasks > 0 and #s.runnable == 0 then
        local wait = 0
        if n == 0 then
          local h = s.timers
          wait = math.max(0, math.min(h.n > 0 and h.at[1] - core.now() or 60, 60))
        end
        drive(s, wait)
      end
    end
  end)
  current = nil
  if not ok then error(err, 0) end
  local results = s.results
  return unpack(results, 1, results.n)
end

return M
