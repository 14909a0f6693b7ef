--- kling.emulator.jobs: the job model.
--
-- A job is a record with timestamps on the emulator's clock (kling.emulator.clock); its
-- state is computed from the clock when asked, so nothing ticks and no request costs
-- O(number of jobs). States: in_queue, in_progress, completed, failed, cancelled, custom
-- (an @emu:status word), cancelling (a cancel answered cancellation_requested, until its
-- wait is over). The directives (@emu:NAME[=VALUE] words of the prompt) shape a
-- job when it is created; they are read here and nowhere else, except the error answers
-- they ask for (kling.emulator.api) and the file host's (kling.emulator.files).
-- The functions taking `server` first are installed as methods of the server object.
local util = require "kling.emulator.util"
local pattern = require "kling.emulator.pattern"
local reply = require "kling.emulator.reply"

local M = {}

local format = string.format
local floor, max = math.floor, math.max
local micro, unit = util.micro, util.unit

M.DEFAULT_FAIL_MESSAGE = "Generation failed: content policy violation"
M.PRICE_PER_SECOND = 0.112 -- 0.56 for the default 5 s clip

--- The directives a prompt may carry (doc/EMULATOR.md's table lists each, checked by a spec).
M.DIRECTIVES = {
  "queue", "run", "fail", "status", "spell", "nourls", "error200", "bytes", "pattern", "validators",
  "ifrange", "redirect", "redirect_to", "redirect_code", "signed", "output", "request_id",
  "error_status", "error_result", "error_cancel", "extra_code", "result_not_ready", "result_lag",
  "cancel", "fail_error", "no_result", "submit_delay",
}

-- ---------------------------------------------------------------------------------------
-- Times: a number of seconds or a range LO:HI
-- ---------------------------------------------------------------------------------------

--- Read a time: seconds (a number or numeric string, fractions allowed) or a range "LO:HI"
-- (or { LO, HI }) with 0 <= LO <= HI, from which each job draws uniformly.
-- @return lo, hi | nil when the value is not a time
function M.parse_timing(value)
  local lo, hi
  if type(value) == "number" then
    lo = value
    hi = value
  elseif type(value) == "string" then
    local a, b = value:match("^%s*([^:]-)%s*:%s*([^:]-)%s*$")
    if a then
      lo, hi = tonumber(a), tonumber(b)
    else
      lo = tonumber(value)
      hi = lo
    end
  elseif type(value) == "table" then
    lo, hi = tonumber(value[1]), tonumber(value[2])
  end
  lo, hi = util.finite_seconds(lo), util.finite_seconds(hi)
  if not lo or not hi or lo > hi then return nil end
  return lo, hi
end

--- Read a wait counted in answers or in seconds: "N" (a whole number of answers) or "Ss"
-- (seconds of the emulator's clock, fractions allowed), as @emu:result_lag, --result-lag
-- and @emu:cancel=pending:... take it.
-- @return { answers = N } | { seconds = S } | nil when the value is neither
function M.parse_wait(value)
  if type(value) == "number" then value = tostring(value) end
  if type(value) ~= "string" then return nil end
  local n = value:match("^%s*(%d+)%s*$")
  if n then return { answers = tonumber(n) } end
  local s = util.finite_seconds(tonumber(value:match("^%s*([%d.]+)s%s*$")))
  if s then return { seconds = s } end
  return nil
end

--- What the result route of an unfinished job answers: "status" (its status body, as
-- RunComfy documents) or "400005" (HTTP 400 with error_code 400005, as it is observed).
M.NOT_READY_KINDS = { status = true, ["400005"] = true }

--- The shapes of an accepted cancel's answer (@emu:cancel=KIND).
M.CANCEL_KINDS = { cancelled = true, requested = true, bare = true, pending = true }

--- Read @emu:cancel=KIND (cancelled, requested, bare, pending, pending:N, pending:Ss).
-- @return { kind, wait ({ answers } | { seconds }, for pending; default 1 answer) } | nil
function M.parse_cancel(value)
  if type(value) ~= "string" then return nil end
  local kind, wait = value:match("^(%a+):(.+)$")
  if kind ~= "pending" then kind, wait = value, nil end
  if not M.CANCEL_KINDS[kind] then return nil end
  if kind ~= "pending" then return { kind = kind } end
  local w = wait and M.parse_wait(wait)
  if wait and not w then return nil end
  return { kind = kind, wait = w or { answers = 1 } }
end

-- This job's time: from its directive (seconds or LO:HI) if valid, else the server's;
-- u is drawn for every job, so the nth job's times depend only on the seed and n.
local function job_time(directive, lo, hi, u)
  local dlo, dhi = M.parse_timing(type(directive) == "string" and directive or nil)
  if dlo then lo, hi = dlo, dhi end
  if lo == hi then return lo end
  return micro(lo + (hi - lo) * u)
end

-- ---------------------------------------------------------------------------------------
-- Directives
-- ---------------------------------------------------------------------------------------

--- Read the @emu: directives of a prompt.
-- @return table name -> value (true for a bare @emu:NAME)
function M.parse_directives(prompt)
  local d = {}
  for word in prompt:gmatch("%S+") do
    local name, value = word:match("^@emu:([%w_%-]+)=(.*)$")
    if not name then
      name, value = word:match("^@emu:([%w_%-]+)$"), true
    end
    if name then d[name:lower()] = value end
  end
  return d
end

--- Read @emu:error_status=CODE[@HTTP][*N] (and error_result, error_cancel, extra_code):
-- CODE is written as a JSON number when it reads as one (500001, 1.5), null for "null",
-- else as a JSON string ("12abc").
-- @return { code, json (CODE as JSON text), http (default 200), n (default 1) } | nil
function M.parse_error_directive(value)
  if type(value) ~= "string" or value == "" then return nil end
  local code, rest = value:match("^([^@*]+)(.*)$")
  if not code then return nil end
  local http = tonumber(rest:match("^@(%d%d%d)")) or 200
  local n = tonumber(rest:match("%*(%d+)$")) or 1
  local code_json
  if code == "null" then
    code_json = "null"
  elseif code:match("^%-?%d+%.?%d*$") or code:match("^%-?%d+%.?%d*[eE][%+%-]?%d+$") then
    code_json = code
  else
    code_json = reply.encode(code)
  end
  return { code = code, json = code_json, http = http, n = n }
end

--- The request ids @emu:request_id=KIND puts in a submit's answer (the job is
-- created under its own id): ids no client may put in a URL.
M.ODD_IDS = {
  long = string.rep("a", 300),
  dotdot = "../../etc/passwd",
  utf8 = "r\u{e9}sum\u{e9}-\u{133}",
  ctrl = "id\27]0;pwned\7\r\27[2J",
  number = 12345,
}

--- The raw JSON text @emu:output=KIND adds to a completed job's output (as
-- "extra"): values a client cannot write back as JSON.
M.ODD_OUTPUTS = {
  huge = "1e400",
  deep = string.rep("[", 100) .. "1" .. string.rep("]", 100),
}

-- @emu:validators=...: which validators the file host sends with the job's file
local VALIDATOR_SETS = { both = true, etag = true, lastmod = true, weak = true, none = true }
local REDIRECT_CODES = { [301] = true, [302] = true, [303] = true, [307] = true, [308] = true }

local function job_duration(input)
  local d = tonumber(input.duration)
  if d and d > 0 and d < 1e6 then return d end
  return 5
end

-- ---------------------------------------------------------------------------------------
-- Creation (server methods)
-- ---------------------------------------------------------------------------------------

--- A uuid-shaped lowercase id (36 chars) from the seeded generator.
function M.new_id(server)
  local a, b = server.random(), server.random()
  a = (a & ~0xF000) | 0x4000                       -- version 4
  b = (b & 0x3FFFFFFFFFFFFFFF) | math.mininteger    -- variant 10xx
  local h = format("%016x%016x", a, b)
  return format("%s-%s-%s-%s-%s", h:sub(1, 8), h:sub(9, 12), h:sub(13, 16), h:sub(17, 20), h:sub(21, 32))
end

-- What the directives say of the job's file, into job: its size (@emu:bytes, else
-- --video-bytes; nil: the sample MP4), pattern offset, validators, redirects, signing.
local function file_directives(job, directives, video_bytes)
  local bytes = tonumber(directives.bytes) or tonumber(video_bytes)
  if bytes then bytes = max(0, floor(bytes)) end
  local shift = tonumber(directives.pattern)
  shift = shift and shift >= 0 and shift < 2 ^ 31 and floor(shift) or 0
  if directives.pattern and not bytes then bytes = #pattern.sample() end
  local redirect = tonumber(directives.redirect)
  redirect = redirect and redirect >= 0 and redirect <= 50 and floor(redirect) or nil
  local redirect_to = type(directives.redirect_to) == "string" and directives.redirect_to ~= "" and directives.redirect_to or nil
  if redirect_to and not redirect then redirect = 1 end
  local redirect_code = tonumber(directives.redirect_code)
  if not (redirect_code and REDIRECT_CODES[redirect_code]) then redirect_code = 302 end
  job.bytes, job.shift, job.version = bytes, shift, 0
  job.validators = type(directives.validators) == "string" and VALIDATOR_SETS[directives.validators]
    and directives.validators or "both"
  job.ifrange_ignore = directives.ifrange == "ignore"
  job.redirect, job.redirect_to, job.redirect_code = redirect ~= 0 and redirect or nil, redirect_to, redirect_code
  job.signed, job.signatures, job.file_requests = directives.signed and true or false, 0, {}
end

-- @emu:fail's message (underscores as spaces), or nil.
local function fail_message(directives)
  local fail = directives.fail
  if fail == true then return M.DEFAULT_FAIL_MESSAGE end
  if fail then return (fail:gsub("_", " ")) end
  return nil
end

--- Create a job (server:create_job): its id, times (drawn from the server's timing
-- generator), and everything its directives ask for; it is counted in jobs_created.
-- @param model_id string; body the raw request body; input the decoded body;
--   directives (parse_directives); headers the request headers without Authorization
-- @return job
function M.create(server, model_id, body, input, directives, headers)
  local id = server:new_id()
  while server.jobs[id] do id = server:new_id() end
  local rand = server.timing_random
  local uq, ur = unit(rand), unit(rand)
  local created = micro(server.clock())
  local queue = job_time(directives.queue, server.queue_lo, server.queue_hi, uq)
  local run = job_time(directives.run, server.run_lo, server.run_hi, ur)
  local job = {
    id = id,
    model = model_id,
    body = body,
    input = input,
    directives = directives,
    headers = headers,
    created = created,
    queue = queue,
    run = run,
    ends = created + queue + run,
    position = max(0, floor(tonumber(server.queue_position) or 0)),
    fail = fail_message(directives),
    status_word = type(directives.status) == "string" and directives.status ~= "" and directives.status or nil,
    alt = directives.spell == "alt",
    nourls = directives.nourls and true or false,
    duration = job_duration(input),
    instance_id = format("emu-%08x", server.random() & 0xFFFFFFFF),
    polls = { status = 0, result = 0, cancel = 0 },
    error_answers = { status = 0, result = 0, cancel = 0 }, -- answers of @emu:error_ROUTE
  }
  -- the result route: before the end, after it, and for a job that ended without a result
  local not_ready = directives.result_not_ready
  if not_ready == true then not_ready = "400005" end
  job.not_ready = M.NOT_READY_KINDS[not_ready] and not_ready or server.result_not_ready or "status"
  job.lag = M.parse_wait(directives.result_lag) or server.result_lag_wait
  job.lag_answers, job.not_ready_answers, job.no_result_answers = 0, 0, 0
  local no_result = directives.no_result
  job.no_result = (no_result == true or no_result == "404") and 404 or no_result == "400" and 400 or nil
  job.fail_error = (directives.fail_error == "string" or directives.fail_error == "object") and directives.fail_error or nil
  job.cancel_mode = M.parse_cancel(directives.cancel)
  job.submit_delay = util.finite_seconds(tonumber(directives.submit_delay))
  file_directives(job, directives, server.video_bytes)
  server.jobs[id] = job
  server.job_list[#server.job_list + 1] = job
  server.counters.jobs_created = server.counters.jobs_created + 1
  return job
end

-- ---------------------------------------------------------------------------------------
-- State
-- ---------------------------------------------------------------------------------------

--- The internal state of a job at time now, and its queue position while queued.
-- States: in_queue, in_progress, completed, failed, cancelled, custom (an @emu:status word).
function M.state(job, now)
  if job.cancelled_at then return "cancelled" end
  local pending = job.cancel_pending
  if pending then
    -- a cancel answered cancellation_requested: cancelled once its wait is over (seconds
    -- here; answers as they are sent, see cancelling_answered)
    if pending.until_clock and now >= pending.until_clock then
      job.cancelled_at, job.cancel_pending = pending.until_clock, nil
      return "cancelled"
    end
    return "cancelling"
  end
  local t = now - job.created
  if t < job.queue then
    local left = job.queue > 0 and (job.queue - t) / job.queue or 0
    return "in_queue", floor(job.position * left + 0.5)
  end
  if job.status_word then return "custom" end
  if now < job.ends then return "in_progress" end
  return job.fail and "failed" or "completed"
end

--- The states a job does not leave.
M.FINAL = { completed = true, failed = true, cancelled = true }

--- The clock time the job reached its final state, or nil while it has not.
function M.finished_clock(job, state)
  if state == "cancelled" then return job.cancelled_at end
  if state == "completed" or state == "failed" then return job.ends end
  return nil
end

--- The status word a client sees for a state (@emu:status, @emu:spell=alt).
function M.wire_status(job, state)
  if state == "custom" then return job.status_word end
  if state == "cancelling" then return "cancellation_requested" end
  if job.alt then
    if state == "completed" then return "succeeded" end
    if state == "cancelled" then return "canceled" end
  end
  return state
end

--- Cancel a job at clock time now if it is still queued.
-- @param mode nil or { kind, wait } (parse_cancel): with kind "pending" the job is
--   cancelling (status cancellation_requested) until wait is over: its next wait.answers
--   status or result answers, or wait.seconds of the clock (0 of either: at once)
-- @return its state after ("cancelling" for a pending cancel accepted now, even with a
--   wait of 0), accepted (true when this request cancelled it)
function M.cancel(job, now, mode)
  local state = M.state(job, now)
  if state ~= "in_queue" then return state, false end
  job.cancel_requested_at = micro(now)
  local wait = mode and mode.kind == "pending" and mode.wait
  if not wait or (wait.answers or wait.seconds) == 0 then
    job.cancelled_at = micro(now)
  elseif wait.seconds then
    job.cancel_pending = { until_clock = micro(now + wait.seconds) }
  else
    job.cancel_pending = { answers_left = wait.answers }
  end
  return wait and "cancelling" or "cancelled", true
end

--- Note a status or result answer that said cancellation_requested: the job is cancelled
-- once it has had the answers its pending cancel waits for.
function M.cancelling_answered(job, now)
  local pending = job.cancel_pending
  if not (pending and pending.answers_left) then return end
  pending.answers_left = pending.answers_left - 1
  if pending.answers_left <= 0 then job.cancelled_at, job.cancel_pending = micro(now), nil end
end

--- The cost of a completed job (USD), as ?include_cost=true reports it: its model's
-- price per second (the catalog's, else PRICE_PER_SECOND) times its duration, in cents.
function M.cost(job)
  return floor((job.price or M.PRICE_PER_SECOND) * job.duration * 100 + 0.5) / 100
end

-- ---------------------------------------------------------------------------------------
-- Answers (server methods)
-- ---------------------------------------------------------------------------------------

--- The status, result and cancel URLs of a job on the API host.
function M.urls(server, job)
  local base = server.api_url .. "/requests/" .. job.id
  return base .. "/status", base .. "/result", base .. "/cancel"
end

--- The body of a status answer (also the result route's before the end).
function M.status_body(server, job, state, position)
  local status_url, result_url = server:job_urls(job)
  local body = {
    request_id = job.id,
    status = M.wire_status(job, state),
    status_url = status_url,
    result_url = result_url,
  }
  if state == "in_queue" then body.queue_position = position end
  if state == "in_progress" then body.instance_id = job.instance_id end
  if state == "failed" and job.fail_error then body.error = M.fail_error(job) end
  return body
end

--- The error a failed job's answers carry: {"error_code":500001,"error_message":M} on the
-- result route by default; with @emu:fail_error=string the message itself, with =object
-- {"message":M}, on both the status and the result routes.
function M.fail_error(job)
  if job.fail_error == "string" then return job.fail end
  if job.fail_error == "object" then return { message = job.fail } end
  return { error_code = 500001, error_message = job.fail }
end

--- An ISO 8601 UTC time (whole seconds) of clock time t.
function M.iso(server, t)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", floor(server.wall0 + (t - server.clock0)))
end

--- The wall-clock time (Unix seconds, float) of clock time t (default now).
function M.wall(server, t)
  return server.wall0 + ((t or server.clock()) - server.clock0)
end

return M
