--- kling.cli.signals: Ctrl-C, SIGTERM and SIGHUP in a command that talks to the service.
--
-- The signals are blocked and read through a signalfd (lua-cqueues), between steps of
-- the scheduler: the first one cancels the queued jobs this command submitted (a submit
-- in flight is waited for first), says what keeps running and how to collect it, stops
-- the downloads in flight (their bytes kept in FILE.part), and exits 128 + the signal's
-- number (130, 143, 129). A second one of the same kind quits at once (its default
-- action is back). Without lua-cqueues the signals just end the tool.
local kling = require "kling"
local exit = require "kling.cli.exit"
local output = require "kling.cli.output"

local io = output.io -- luacheck: ignore (shadows the global on purpose: escaped streams)

local M = {}

-- The signals handled as Ctrl-C: name, how it is said, the exit code (128 + the signal's
-- number, as shells report it), how a second one is asked for.
M.SIGNALS = {
  { name = "SIGINT", said = "interrupted", by = "Ctrl-C", code = exit.EXIT.interrupted,
    again = "Ctrl-C again quits at once" },
  { name = "SIGTERM", said = "terminated", by = "SIGTERM", code = exit.EXIT.terminated,
    again = "a second SIGTERM quits at once" },
  { name = "SIGHUP", said = "hung up", by = "SIGHUP", code = exit.EXIT.hangup,
    again = "a second SIGHUP quits at once" },
}

local function say(text)
  io.stderr:write(text, "\n")
  io.stderr:flush()
end

-- Cancels the jobs of ctx that are still queued, all at once: returns the list of jobs
-- asked, and job -> true | the error of its cancel.
local function cancel_queued(ctx)
  if ctx.submitting > 0 then
    say("kling: waiting for the answer to the submit in flight (its job is cancelled if still queued)")
    while ctx.submitting > 0 do ctx.client:sleep(0.05) end
  end
  local pending, left = {}, 0
  for _, job in ipairs(ctx.submitted) do
    if not job:done() and not ctx.downloading[job] then
      pending[#pending + 1] = job
      left = left + 1
    end
  end
  local outcome = {}
  for _, job in ipairs(pending) do
    kling.spawn(function()
      local ok, err = job:cancel()
      outcome[job] = ok and true or err
      left = left - 1
    end)
  end
  while left > 0 do ctx.client:sleep(0.05, function() return left <= 0 end) end
  return pending, outcome
end

--- The first Ctrl-C (or SIGTERM, SIGHUP) of ctx: cancel the queued jobs it submitted,
-- say what keeps running and how to collect it, exit 128 + the signal's number.
function M.interrupt(ctx, signal, which)
  which = which or M.SIGNALS[1]
  ctx.interrupted = true
  signal.unblock(signal[which.name]) -- the default action from now on: a second one quits at once
  ctx.display:stop()
  say("kling: " .. which.said .. " (" .. which.again .. ")")
  local function report(job, status, message)
    ctx:emit(job, { status = status, error = { kind = "interrupted", message = message } })
  end
  local pending, outcome = cancel_queued(ctx)
  for _, job in ipairs(pending) do
    local r = outcome[job]
    if r == true then
      say("kling: cancelled " .. job.id .. " (it was still queued)")
      if ctx.on_cancelled then ctx.on_cancelled(job) end
      report(job, "cancelled", "cancelled after " .. which.by .. " while queued")
    elseif r.kind == "not_cancellable" then
      say("kling: " .. job.id .. " keeps running (a running job cannot be cancelled); collect it with: "
        .. ctx:collect_hint(job))
      report(job, job.status, which.said .. "; the job keeps running")
    else
      say("kling: could not cancel " .. job.id .. " (" .. output.escape(r.message) .. "); it may still run; "
        .. "collect it with: " .. ctx:collect_hint(job))
      report(job, job.status, which.said .. "; cancel failed: " .. tostring(r.message))
    end
  end
  for job, path in pairs(ctx.downloading) do
    say("kling: the download of " .. job.id .. " to " .. path .. " was interrupted; collect it with: "
      .. ctx:collect_hint(job))
    report(job, job.status, which.said .. " during the download")
  end
  for _, job in ipairs(ctx.attached) do
    if not job:done() and not ctx.downloading[job] and not ctx.emitted[job] then
      say("kling: " .. job.id .. " was not cancelled (this command did not submit it); collect it with: "
        .. ctx:collect_hint(job))
      report(job, job.status, which.said .. "; the job goes on")
    end
  end
  if ctx.journal_path then say("kling: every request id is in the journal " .. ctx.journal_path .. " (kling jobs)") end
  -- the client's close ends the downloads in flight: the bytes they hold in memory go to
  -- their .part (kept, with its sidecar, for the next run), and their locks are given back
  ctx.client:close()
  os.exit(which.code)
end

--- Runs fn inside kling.run with ctx's live display ticking and the signals handled.
-- Returns fn's exit code (ctx.code when fn returns nil).
function M.run(ctx, fn)
  -- SIGINT gets the default disposition (a shell starts background jobs with SIGINT
  -- ignored, which would drop it before the listener); SIGTERM and SIGHUP keep theirs, so
  -- that under nohup a hangup stays ignored.
  local has_signal, signal = pcall(require, "cqueues.signal")
  local listener
  local numbers, by_number = {}, {}
  if has_signal then
    for _, which in ipairs(M.SIGNALS) do
      local n = signal[which.name]
      numbers[#numbers + 1] = n
      by_number[n] = which
    end
    signal.block(table.unpack(numbers))
    signal.default(signal.SIGINT)
    listener = signal.listen(table.unpack(numbers))
  end
  local finished, result = false, nil
  kling.run(function()
    kling.spawn(function()
      local stop = function() return finished end
      while not finished do
        ctx.client:sleep(0.2, stop)
        if finished then break end
        local got = listener and listener:wait(0)
        if got then M.interrupt(ctx, signal, by_number[got]) end
        ctx.display:render()
      end
    end)
    result = fn()
    finished = true
  end)
  ctx.display:close()
  if has_signal then signal.unblock(table.unpack(numbers)) end
  return result or ctx.code
end

return M
