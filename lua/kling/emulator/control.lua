--- kling.emulator.control: the handlers of the control routes (/__emulator/*, API port,
-- no token, never faulted): the stats, their reset, a job's record, the job list and the
-- clock. (/__emulator/faults is kling.emulator.faults', /__emulator/jobs/{id}/change
-- kling.emulator.files'.) Each takes (server, req, capture) and returns a reply.
local jobs = require "kling.emulator.jobs"
local pattern = require "kling.emulator.pattern"
local reply = require "kling.emulator.reply"
local routes = require "kling.emulator.routes"

local M = {}

local format, concat = string.format, table.concat
local null, encode, json_reply, error_reply, not_found, array =
  reply.null, reply.encode, reply.json_reply, reply.error_reply, reply.not_found, reply.array
local job_state, finished_clock, wire_status = jobs.state, jobs.finished_clock, jobs.wire_status

M.handlers = {}
local handlers = M.handlers

-- min, max and mean of a running summary { n, min, max, sum }
local function summary(s)
  if s.n == 0 then return { min = 0, max = 0, mean = 0 } end
  return { min = s.min, max = s.max, mean = s.sum / s.n }
end

local function add(s, v)
  s.n, s.sum = s.n + 1, s.sum + v
  if s.n == 1 or v < s.min then s.min = v end
  if s.n == 1 or v > s.max then s.max = v end
end

--- GET /__emulator/stats: the counters, the connections, the jobs by state.
function handlers.stats(self)
  local c = self.counters
  local by_state = { in_queue = 0, in_progress = 0, completed = 0, failed = 0, cancelled = 0, custom = 0,
    cancelling = 0 }
  local now = self.clock()
  local status_polls = { n = 0, sum = 0 }
  local result_fetches = { n = 0, sum = 0 }
  for _, job in ipairs(self.job_list) do
    local state = job_state(job, now)
    by_state[state] = by_state[state] + 1
    add(status_polls, job.polls.status)
    add(result_fetches, job.polls.result)
  end
  local api, files = self.api, self.files
  return json_reply(200, {
    requests = c.requests,
    requests_total = c.requests_total,
    jobs_created = c.jobs_created,
    submits_answered = c.submits_answered,
    auth_failures = c.auth_failures,
    connections = { current = api.current, peak = api.peak, total = api.total },
    files = {
      requests = c.files.requests,
      bytes_sent = c.files.bytes_sent,
      connections_total = files.total,
      connections = { current = files.current, peak = files.peak, total = files.total },
      authorization_headers = c.files.authorization_headers,
      authorization_paths = array(c.files.authorization_paths),
    },
    jobs = by_state,
    requests_by_job = {
      jobs = #self.job_list,
      status_polls = summary(status_polls),
      result_fetches = summary(result_fetches),
    },
    faults = c.faults,
  })
end

--- POST /__emulator/reset: zero the counters (the jobs, their own counts and the fault
-- table stay).
function handlers.reset(self)
  self.counters = routes.new_counters()
  for _, listener in ipairs{ self.api, self.files } do
    listener.total = 0
    listener.peak = listener.current
  end
  return json_reply(200, { reset = true })
end

--- GET /__emulator/jobs/{id}: the job's record, with the input exactly as received.
function handlers.job_record(self, _, id)
  local job = self.jobs[id]
  if not job then return not_found("Request not found") end
  local now = self.clock()
  local state = job_state(job, now)
  local etag, lastmod = self:file_validators(job)
  local record = encode({
    request_id = job.id,
    model_id = job.model,
    state = state,
    status = wire_status(job, state),
    created_at = self:iso(job.created),
    queue_seconds = job.queue,
    run_seconds = job.run,
    queue_position = job.position,
    fail_message = job.fail,
    status_override = job.status_word,
    spell = job.alt and "alt" or "standard",
    nourls = job.nourls,
    video_bytes = pattern.size(job),
    file_version = job.version,
    file_etag = etag,
    file_last_modified = lastmod,
    file_requests = array(job.file_requests),
    duration = job.duration,
    cancelled = job.cancelled_at ~= nil,
    created_at_clock = job.created,
    ends_at = job.ends,
    finished_at_clock = finished_clock(job, state) or null,
    cancelled_at_clock = job.cancelled_at or null,
    cancel_requested_at_clock = job.cancel_requested_at or null,
    noticed_at_clock = job.noticed_at or null,
    result_at_clock = job.result_at or null,
    status_polls = job.polls.status,
    result_fetches = job.polls.result,
    cancel_requests = job.polls.cancel,
    created_by_dropped_submit = job.created_by_dropped_submit or false,
    submit_fault = job.submit_fault or null,
    directives = job.directives,
    headers = job.headers,
    polls = job.polls,
    error_answers = job.error_answers,
    not_ready_answers = job.not_ready_answers,
    no_result_answers = job.no_result_answers,
    submit_delay = job.submit_delay or null,
    price_per_second = job.price or jobs.PRICE_PER_SECOND,
    data_uris = array(job.data_uris or {}),
    body_bytes = #job.body,
    body = job.body,
  })
  -- the input exactly as received (it parsed as a JSON object at submit)
  record = record:sub(1, -2) .. ',"input":' .. job.body .. "}"
  return { status = 200, body = record, type = "application/json" }
end

local function clock_json(t)
  if t then return format("%.6f", t) end
  return "null"
end

--- GET /__emulator/jobs: every job's timing and request counts, in creation order, built
-- with one format per job (10,000 jobs take a few tens of milliseconds).
function handlers.jobs(self)
  local now = self.clock()
  local parts = {}
  local models = {}
  for i, job in ipairs(self.job_list) do
    local state = job_state(job, now)
    local model = models[job.model]
    if not model then
      model = encode(job.model)
      models[job.model] = model
    end
    local polls = job.polls
    parts[i] = format('{"request_id":"%s","model_id":%s,"state":"%s","created_at_clock":%.6f,'
      .. '"queue_seconds":%.6f,"run_seconds":%.6f,"ends_at":%.6f,"finished_at_clock":%s,'
      .. '"cancelled":%s,"cancelled_at_clock":%s,"noticed_at_clock":%s,"result_at_clock":%s,'
      .. '"status_polls":%d,"result_fetches":%d,"cancel_requests":%d,'
      .. '"created_by_dropped_submit":%s,"submit_fault":%s}',
      job.id, model, state, job.created, job.queue, job.run, job.ends,
      clock_json(finished_clock(job, state)), job.cancelled_at and "true" or "false",
      clock_json(job.cancelled_at), clock_json(job.noticed_at), clock_json(job.result_at),
      polls.status, polls.result, polls.cancel,
      job.created_by_dropped_submit and "true" or "false",
      job.submit_fault and '"' .. job.submit_fault .. '"' or "null")
  end
  return { status = 200, body = "[" .. concat(parts, ",") .. "]", type = "application/json" }
end

--- GET /__emulator/clock: the clock of every *_clock field and ends_at, its kind, and the
-- wall clock.
function handlers.clock(self)
  local now = self.clock()
  return {
    status = 200, type = "application/json",
    body = format('{"now":%.6f,"clock":"%s","wall":%.6f}', now, self.clock_name, self:wall(now)),
  }
end

--- POST /__emulator/clock: drive a manual clock, {"advance": S} (seconds on) or
-- {"now": T} (to T, never back); answers as GET does. 400 for another clock or a bad body.
function handlers.clock_set(self, req)
  local ok, value = pcall(reply.json.decode, req.body or "")
  if not ok or type(value) ~= "table" then
    return error_reply(400, 400001, 'Expected a JSON object {"advance": S} or {"now": T}')
  end
  for key in pairs(value) do
    if key ~= "advance" and key ~= "now" then
      return error_reply(400, 400001, "Bad clock: unknown field " .. tostring(key))
    end
  end
  if (value.advance == nil) == (value.now == nil) then
    return error_reply(400, 400001, 'Bad clock: give one of "advance" and "now"')
  end
  local _, err
  if value.advance ~= nil then
    _, err = self:advance(value.advance)
  else
    _, err = self:set_clock(value.now)
  end
  if err then return error_reply(400, 400001, "Bad clock: " .. err) end
  return handlers.clock(self)
end

return M
