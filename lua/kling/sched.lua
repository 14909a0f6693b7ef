--- kling's coroutine scheduler: kling.run, kling.spawn, and the waiting
-- points the clients use. Inside a task run by kling.run, every call that
-- would block (a transfer, a sleep) yields to the scheduler instead, so other
-- tasks and their jobs go on; outside one, the same calls block.
local core = require "kling.core"

local M = {}

local current -- the scheduler of the kling.run in progress, if any

--- True when the running coroutine is a task of the running scheduler.
function M.yieldable()
  if not current then return false end
  local co, main = coroutine.running()
  return not main and current.tasks[co] ~= nil
end

--- True inside kling.run (in any of its tasks or the code they call).
function M.running()
  return current ~= nil
end

local function wait_for(cond)
  local ok = coroutine.yield(cond)
  return ok
end

--- Yields until transfer x of client ends.
function M.wait_transfer(client, x)
  current.engines[client._engine] = true
  wait_for { ready = function() return x:done() end }
end

--- Yields for s seconds (or until stop() says true).
function M.sleep(client, s, stop)
  current.engines[client._engine] = true
  local at = core.now() + s
  wait_for { at = at, ready = function() return core.now() >= at or (stop ~= nil and stop()) end }
end

--- Yields until ready() says true (checked whenever the scheduler wakes).
function M.wait_until(ready)
  wait_for { ready = ready }
end

--- Starts fn(...) as a task of the running scheduler.
function M.spawn(fn, ...)
  if not current then error("kling.spawn: not inside kling.run", 2) end
  local args = table.pack(...)
  local co = coroutine.create(function() return fn(table.unpack(args, 1, args.n)) end)
  local task = { co = co, cond = nil }
  current.tasks[co] = task
  current.order[#current.order + 1] = task
  return co
end

local function step_engines(s, timeout)
  local n = 0
  for _ in pairs(s.engines) do n = n + 1 end
  if n == 0 then
    if timeout > 0 then
      -- nothing to drive: sleep on a private engine's poll (a kernel wait)
      s.idle = s.idle or core.new { base_url = "http://127.0.0.1/" }
      s.idle:step(timeout)
    end
    return
  end
  local share = n == 1 and timeout or math.min(timeout, 0.005)
  for engine in pairs(s.engines) do
    engine:step(share)
    share = 0
  end
end

--- Runs fn(...) as the first task and drives every task until all have
-- ended. Returns what fn returned. An error in any task is raised here.
function M.run(fn, ...)
  if current then error("kling.run: already inside kling.run (use kling.spawn)", 2) end
  local s = { tasks = {}, order = {}, engines = setmetatable({}, { __mode = "k" }) }
  current = s
  local main = M.spawn(fn, ...)
  local results
  local ok, err = pcall(function()
    while #s.order > 0 do
      local progressed = false
      local next_at = math.huge
      local i = 1
      while i <= #s.order do
        local t = s.order[i]
        if t.cond == nil or t.cond.ready() then
          progressed = true
          local r = table.pack(coroutine.resume(t.co))
          if not r[1] then
            error(debug.traceback(t.co, tostring(r[2])), 0)
          end
          if coroutine.status(t.co) == "dead" then
            if t.co == main then results = r end
            s.tasks[t.co] = nil
            table.remove(s.order, i)
            i = i - 1
          else
            t.cond = r[2]
            if type(t.cond) ~= "table" or type(t.cond.ready) ~= "function" then
              error("kling.run: a task yielded outside kling (use your own coroutine inside tasks)", 0)
            end
          end
        end
        if t.cond and t.cond.at and t.cond.at < next_at then next_at = t.cond.at end
        i = i + 1
      end
      if not progressed and #s.order > 0 then
        local wait = math.max(0, math.min(next_at - core.now(), 0.5))
        step_engines(s, wait)
      else
        step_engines(s, 0)
      end
    end
  end)
  current = nil
  if s.idle then s.idle:close() end
  if not ok then error(err, 0) end
  return table.unpack(results, 2, results.n)
end

return M
