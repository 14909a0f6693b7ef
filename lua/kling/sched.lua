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

local current -- the scheduler of the kling.run in progress, if any
local waiter  -- kling.set_waiter's function

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
      coroutine.yield { client = client, clients = clients, ready = ready, at = deadline, key = key }
    elseif client == nil then
      -- nothing to drive: sleep in the kernel
      core.wait_fds({}, math.min(left, 1))
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
  local args = pack(...)
  local co = coroutine.create(function() return fn(unpack(args, 1, args.n)) end)
  local task = { co = co }
  current.tasks[co] = task
  current.ntasks = current.ntasks + 1
  current.runnable[#current.runnable + 1] = task
  return co
end

-- A min-heap of { at, task, cond } (entries whose cond is stale are skipped).
local function heap_push(h, e)
  local i = #h + 1
  h[i] = e
  while i > 1 do
    local p = math.floor(i / 2)
    if h[p][1] <= e[1] then break end
    h[i], h[p] = h[p], e
    i = p
  end
end

local function heap_pop(h)
  local top, last = h[1], h[#h]
  h[#h] = nil
  local n = #h
  if n > 0 then
    local i = 1
    h[1] = last
    while true do
      local l, r, m = 2 * i, 2 * i + 1, i
      if l <= n and h[l][1] < h[m][1] then m = l end
      if r <= n and h[r][1] < h[m][1] then m = r end
      if m == i then break end
      h[i], h[m] = h[m], h[i]
      i = m
    end
  end
  return top
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
    if wait > 0 then core.wait_fds({}, wait) end
  elseif n == 1 then
    next(s.clients):step(wait)
  else
    local fds = {}
    for c in pairs(s.clients) do
      for _, p in ipairs(c:pollfds()) do fds[#fds + 1] = p end
    end
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
      set = {}
      s.by_key[cond.key] = set
    end
    set[t] = true
  else
    s.generic[t] = true
  end
  if cond.at < math.huge then heap_push(s.timers, { cond.at, t, cond }) end
end

local function unpark(s, t)
  local cond = t.cond
  if not cond then return end
  t.cond = nil
  if cond.key ~= nil then
    local set = s.by_key[cond.key]
    if set then
      set[t] = nil
      if next(set) == nil then s.by_key[cond.key] = nil end
    end
  else
    s.generic[t] = nil
  end
end

-- The tasks that may go on now.
local function gather(s)
  local run = s.runnable
  s.runnable = {}
  local seen = {}
  for _, t in ipairs(run) do seen[t] = true end
  local function take(t)
    if not seen[t] then
      seen[t] = true
      unpark(s, t)
      run[#run + 1] = t
    end
  end
  local notified = s.notified
  s.notified = {}
  for _, key in ipairs(notified) do
    local set = s.by_key[key]
    if set then
      for t in pairs(set) do
        if t.cond.ready() then take(t) end
      end
    end
  end
  for t in pairs(s.generic) do
    if t.cond.ready() then take(t) end
  end
  local now = core.now()
  while s.timers[1] and s.timers[1][1] <= now do
    local e = heap_pop(s.timers)
    if e[2].cond == e[3] then take(e[2]) end
  end
  return run
end

--- Runs fn(...) as the first task and drives every task until all have
-- ended. Returns what fn returned. An error in any task is raised here.
function M.run(fn, ...)
  if current then error("kling.run: already inside kling.run (use kling.spawn)", 2) end
  local s = {
    tasks = {}, ntasks = 0, runnable = {}, by_key = {}, generic = {}, timers = {},
    notified = {}, clients = {},
  }
  current = s
  local main = M.spawn(fn, ...)
  local results
  local ok, err = pcall(function()
    while s.ntasks > 0 do
      local run = gather(s)
      for _, t in ipairs(run) do
        local r = pack(coroutine.resume(t.co))
        if not r[1] then error(debug.traceback(t.co, tostring(r[2])), 0) end
        if coroutine.status(t.co) == "dead" then
          if t.co == main then results = r end
          s.tasks[t.co] = nil
          s.ntasks = s.ntasks - 1
        else
          local cond = r[2]
          if type(cond) ~= "table" or type(cond.ready) ~= "function" then
            error("kling.run: a task yielded outside kling (use your own coroutine inside tasks)", 0)
          end
          cond.at = cond.at or math.huge
          park(s, t, cond)
        end
      end
      if s.ntasks > 0 and #s.runnable == 0 then
        local wait = 0
        if #run == 0 then
          local top = s.timers[1]
          wait = math.max(0, math.min(top and top[1] - core.now() or 60, 60))
        end
        drive(s, wait)
      end
    end
  end)
  current = nil
  if not ok then error(err, 0) end
  return unpack(results, 2, results.n)
end

return M
