--- fuzz/answer_harness.lua: the Lua half of fuzz/answer_fuzz.c: what kling
-- does with the service's answers while it waits on a job.
--
-- Returns a table of functions the C half calls:
--   engine()          -> the engine userdata of the one client (kling.new on a
--                        loopback address; nothing is ever sent)
--   watch(initial)    -> handle: a job (client:job "fuzz-1") starts being waited
--                        on, its status word so far `initial` (nil: none)
--   pump()            the client takes in the answers the C half queued on the
--                        poller (Client:_pump: decoded and masked where they
--                        enter, read by the protocol, observed by the poller,
--                        applied to the job), then the invariants below are
--                        checked; returns true once the wait has an outcome
--   finish()          stops waiting; checks that nothing is watched any more
--
-- Invariants (a broken one raises an error starting with "ORACLE"; the C half
-- then aborts so that libFuzzer keeps the input): the job's status is the
-- protocol's reading of its status word (a known word normalised, any other
-- kept as given), its queue position a non-negative integer and only while
-- in_queue; an outcome is an output table of a completed job or a kling error
-- of a known kind, and comes with the job no longer watched; the token never
-- appears in the job's status word, output or error; no error escapes
-- Client:_pump.
local kling = require "kling"
local errors = require "kling.errors"
local protocol = require "kling.protocol"

local API = "http://127.0.0.1:9/v1"
local TOKEN = "fuzz-token-never-sent"

local client = kling.new { base_url = API, token = TOKEN, on_warning = false }
local job

local M = {}

local function oracle(cond, fmt, ...)
  if not cond then error("ORACLE: " .. string.format(fmt, ...), 2) end
end

-- No string anywhere in v holds the token (depth- and cycle-safe).
local function clean(v, seen, depth)
  if type(v) == "string" then return not v:find(TOKEN, 1, true) end
  if type(v) ~= "table" then return true end
  seen = seen or {}
  if seen[v] or (depth or 0) > 64 then return true end
  seen[v] = true
  for k, x in next, v do
    if not clean(k, seen, (depth or 0) + 1) or not clean(x, seen, (depth or 0) + 1) then return false end
  end
  return true
end

function M.engine()
  return client._engine
end

function M.watch(initial)
  job = assert(client:job("fuzz-1"))
  if initial then
    job.raw_status = initial
    job.status = protocol.STATUS[initial] or initial
  end
  job:_hold()
  oracle(job._handle ~= nil, "the job is not watched")
  return job._handle
end

local function check_job()
  local raw, st = job.raw_status, job.status
  if raw ~= nil then
    oracle(type(raw) == "string", "raw_status is a %s", type(raw))
    oracle(st == (protocol.STATUS[raw] or raw), "status %q for the word %q", tostring(st), raw)
    oracle(clean(raw), "the token in the status word")
  end
  local qp = job.queue_position
  oracle(qp == nil or (math.type(qp) == "integer" and qp >= 0), "queue_position %s", tostring(qp))
  oracle(qp == nil or st == "in_queue", "a queue position while %s", tostring(st))
  local final = job._final
  if final then
    local out, err = final[1], final[2]
    oracle(job._handle == nil, "an outcome while still watched")
    if out ~= nil then
      oracle(type(out) == "table" and err == nil, "an output that is no table")
      oracle(job.status == "completed" and job.output == out, "an output of a job that is %s", tostring(job.status))
      oracle(clean(out), "the token in the output")
    else
      oracle(errors.is(err) and errors.KINDS[err.kind], "an outcome that is no kling error: %s", tostring(err))
      oracle(type(err.message) == "string" and clean(err.message), "the token in an error message")
      oracle(clean(err), "the token in the error")
    end
  end
end

function M.pump()
  local ok, e = pcall(client._pump, client)
  oracle(ok, "Client:_pump raised: %s", tostring(e))
  check_job()
  return job._final ~= nil
end

function M.finish()
  job:_release()
  job._final = nil
  client:_unwatch(job)
  oracle(client._engine:poll_stats().watched == 0, "a job is still watched")
  job = nil
end

return M
