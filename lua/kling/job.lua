--- kling jobs: one generation request, its last known state, and the calls
-- that move it on (refresh, result, wait, cancel, download). Every answer
-- about a job, whether a wait's poll or a direct call, is taken in by the
-- same functions (Job:_absorb, Job:_take_result), by the protocol's words
-- (kling.protocol).
local core = require "kling.core"
local errors = require "kling.errors"
local protocol = require "kling.protocol"
local sched = require "kling.sched"

local M = {}

local Job = {}
Job.__index = Job
Job.__name = "kling.job"
M.Job = Job

--- Statuses as RunComfy spells them, mapped to the ones jobs report, and
-- the statuses of a job that has ended (kling.protocol: src/protocol.c).
M.STATUS = protocol.STATUS
M.TERMINAL = protocol.TERMINAL
local STATUS_METHOD = protocol.ROUTES.status.method

-- Uses the service's URL only when it lies under our base URL (so the token
-- can never be sent elsewhere) and holds no control character or space (C
-- would read it cut short at a NUL byte): kling.protocol.url_under;
-- otherwise builds it from the id.
local url_under = protocol.url_under
local function route(client, given, id, what)
  if url_under(given, client.base_url) then return given end
  return client:request_url(id, what)
end

--- A job of client with request id `id` (already checked). `answer` is the
-- submit answer, when there is one.
function M.new(client, id, model_id, answer, submitted_at)
  answer = answer or {}
  local job = setmetatable({
    id = id,
    model = model_id,
    status = answer.request_id and "in_queue" or nil,
    queue_position = nil,
    output = nil,
    error = nil,
    urls = {
      status = route(client, answer.status_url, id, "status"),
      result = route(client, answer.result_url, id, "result"),
      cancel = route(client, answer.cancel_url, id, "cancel"),
    },
    client = client,
    submitted_at = submitted_at or (answer.request_id and os.time()) or nil,
    -- submitted by this process now (kling.core's monotonic clock): how long it ran goes to the
    -- journal (its "ended" line's run), for the learned polling of later processes
    _sent_mono = answer.request_id and not submitted_at and core.engine.now() or nil,
  }, Job)
  return job
end

function Job:__tostring()
  local s = "kling.job(" .. self.id
  if self.model then s = s .. ", " .. self.model end
  s = s .. ", " .. tostring(self.status or "unknown")
  if self.queue_position then s = s .. ", queue " .. self.queue_position end
  return s .. ")"
end

--- True once the job has ended (completed, failed or cancelled).
function Job:done()
  return M.TERMINAL[self.status] == true
end

-- Takes in a status answer (masked where it entered: Client:_take); returns
-- true when something a watcher cares about changed. An answer without a
-- usable status (a string of at least one byte) is kind protocol: the client
-- and the poller have asked again by then (protocol.UNUSABLE_TRIES).
function Job:_absorb(body)
  local raw = body.status
  if not protocol.usable_status(raw) then
    return nil, errors.new("protocol", "answer without a status string", { request_id = self.id })
  end
  local status = M.STATUS[raw]
  if not status then
    status = raw -- unknown: kept as given, treated as not finished
    if self._warned ~= raw then
      self._warned = raw
      self.client._warn("job " .. self.id .. " reports unknown status '" .. raw .. "'; still polling")
    end
  end
  local qp = protocol.queue_position(body)
  if status == "failed" then
    -- observed: a failed status answer may carry the reason; it stands when the result
    -- route then fails (Job:_end_by_status)
    self._status_message = errors.server_message(body, self.client._scrub_text) or self._status_message
  end
  local changed = status ~= self.status or qp ~= self.queue_position
  self.status, self.raw_status, self.queue_position = status, raw, qp
  if type(body.instance_id) == "string" then self.instance_id = body.instance_id end
  return changed
end

--- GETs the status now (an answer without a usable status is asked again,
-- a few times, with the client's retries). Returns status | nil, err.
function Job:refresh()
  local opts = self._status_opts
  if not opts then
    opts = { request_id = self.id, status_answer = true }
    self._status_opts = opts
  end
  local body, err = self.client:_api(STATUS_METHOD, self.urls.status, nil, opts)
  if not body then return nil, err end
  local changed, perr = self:_absorb(body)
  if changed == nil then return nil, perr end
  return self.status, changed
end

--- The video URL of an output: output.video when it is a usable URL, else the
-- first usable URL of output.videos (kling.protocol.video_of); nil otherwise.
local video_of = protocol.video_of
M.video_of = video_of

-- Notes in the client's journal (once) that the job has ended. Never raises:
-- an output that cannot be written as JSON goes in as text (see
-- kling.journal); a line that cannot be written leaves job.journal_error set
-- and a warning through on_warning, and the outcome stands. extra: more
-- fields of the line (a result that could not be read: error, output_text,
-- output_note).
function Job:_journal_end(extra)
  if self._journaled_end then return end
  self._journaled_end = true
  if not self.client._journal then return end -- (no line to build)
  local line = { e = "ended", id = self.id, model = self.model, status = self.status,
    output = self.output, error = self.error and self.error.message or nil }
  if type(self.cost) == "number" then line.cost = self.cost end
  if self._sent_mono then -- seconds from the submit to the end seen (ms), when this process submitted it
    line.run = math.floor((core.engine.now() - self._sent_mono) * 1000 + 0.5) / 1000
  end
  for k, v in pairs(extra or {}) do line[k] = v end
  local ok, err = self.client:_journal_append(line)
  if not ok then
    self.journal_error = err
    self.client._warn("the end of job " .. self.id .. " (" .. tostring(self.status) .. ") could not be written to the "
      .. "journal: " .. tostring(err.message) .. "; the journal still lists it as unfinished")
  end
end

-- The end of a job whose result answer could not be taken in (err, kind
-- protocol; text: the answer as it came, masked), once its status said it
-- ended: recorded in the journal with the answer's own text, so that resume
-- does not fetch it again and again; `kling result ID` asks again.
function Job:_journal_unreadable(err, text)
  if not M.TERMINAL[self.status] then return end
  self:_journal_end { error = err.message, output_text = text,
    output_note = "the result answer could not be taken in (" .. err.message .. "); output_text holds it as it came; "
      .. "kling result " .. self.id .. " (job:result()) asks again" }
end

-- Takes in a result answer (masked where it entered): returns output | nil, err.
function Job:_take_result(body)
  local changed, perr = self:_absorb(body)
  if changed == nil then return nil, perr end
  if self.status == "completed" then
    if not protocol.usable_output(body.output) then
      -- observed: "output": {"video": ""}, {}, {"videos": []}, or none at all
      local err = errors.new("protocol", "the job completed without a usable output (no video or image URL in "
        .. (type(body.output) == "table" and "its output" or "its answer") .. ")", { request_id = self.id })
      local ok, text = pcall(require("kling.json").encode_display, body)
      self:_journal_unreadable(err, ok and text or nil)
      return nil, err
    end
    self.output = body.output
    self.video_url = video_of(body.output)
    local cost = body.cost
    if type(cost) == "number" and cost == cost and cost > -math.huge and cost < math.huge then
      self.cost = cost
    elseif cost ~= nil and cost ~= require("kling.json").null then
      -- inf, nan (which no journal line can hold) or not a number: no price is made up
      self.client._warn("job " .. self.id .. ": the service's cost is not a finite number ("
        .. type(cost) .. "); job.cost is left unset")
    end
    self:_journal_end()
    return self.output
  elseif self.status == "failed" then
    local msg = errors.server_message(body, self.client._scrub_text) or self._status_message or "the job failed (the service gave no reason)"
    local code = type(body.error) == "table" and errors.numeric_code(body.error.error_code) or nil
    self.error = errors.new("failed", msg, { request_id = self.id, code = code })
    self:_journal_end()
    return nil, self.error
  elseif self.status == "cancelled" then
    self.error = errors.new("cancelled", "the job was cancelled", { request_id = self.id })
    self:_journal_end()
    return nil, self.error
  end
  return nil, errors.new("not_ready", "the job has not finished (status " .. self.status .. ")",
    { request_id = self.id, job_status = self.status })
end

-- True once a status said the job failed or was cancelled (its outcome then
-- stands whatever the result route answers).
function Job:_ended_without_output()
  return self.status == "failed" or self.status == "cancelled"
end

-- The end of a job whose status said failed or cancelled while its result
-- route failed (result_err: that failure, a 404 or 400 among them): the
-- status stands (kind failed, with the status answer's message, or
-- cancelled), and the result's failure is reported in err.result_error.
function Job:_end_by_status(result_err)
  if self.status == "failed" then
    self.error = errors.new("failed", self._status_message or "the job failed (the service gave no reason)",
      { request_id = self.id, result_error = result_err })
  else
    self.error = errors.new("cancelled", "the job was cancelled", { request_id = self.id, result_error = result_err })
  end
  self:_journal_end()
  return self.error
end

-- The result URL to ask: with ?include_cost=true when the job's cost is
-- wanted (include, else job.include_cost, else the client's include_cost).
function Job:_result_url(include)
  if include == nil then include = self.include_cost end
  if include == nil then include = self.client.include_cost end
  local url = self.urls.result
  if not include then return url end
  return url .. (url:find("?", 1, true) and "&" or "?") .. "include_cost=true"
end

--- GETs the result now, without waiting. opts (optional): include_cost
-- (boolean: ask the service for the job's cost, kept in job.cost; default
-- the job's include_cost, else the client's). Returns output | nil, err: kind
-- "not_ready" while the job runs (the result route's 400005 included, with
-- err.job_status: the status the status route gives then), "failed" or
-- "cancelled" when it ended so (also when its result route then answers an
-- error, 404, 400 or 400005: err.result_error holds that answer's error), "protocol"
-- for a completed job without a usable output.
function Job:result(opts)
  local include = opts and opts.include_cost
  if include ~= nil and type(include) ~= "boolean" then error("job:result: opts.include_cost must be a boolean", 2) end
  local body, err, res = self.client:_api(protocol.ROUTES.result.method, self:_result_url(include), nil,
    { request_id = self.id, status_answer = true, route = "result" })
  if not body then
    if err.kind == "not_ready" then
      self:refresh() -- the status, for err.job_status (an error here leaves the last known one)
      -- a status that says failed or cancelled stands over the result's 400005, as over a 404
      if self:_ended_without_output() then return nil, self:_end_by_status(err) end
      err.job_status = self.status
      return nil, err
    end
    if res and not self:_ended_without_output() and (err.kind == "not_found" or err.kind == "bad_request") then
      self:refresh() -- a job that failed or was cancelled may have no result: its status says so
    end
    if self:_ended_without_output() then return nil, self:_end_by_status(err) end
    if res and err.kind == "protocol" then self:_journal_unreadable(err, res.body) end
    return nil, err
  end
  return self:_take_result(body)
end

-- Calls each function of list (a copy: a callback may remove itself, as
-- job:on_done's does) with job; returns the first error raised, or `raised`.
local function call_each(job, list, raised)
  local snapshot = {}
  for i, fn in ipairs(list) do snapshot[i] = fn end
  for _, fn in ipairs(snapshot) do
    local ok, e = pcall(fn, job)
    if not ok and raised == nil then raised = e end
  end
  return raised
end

-- Takes in a finished poll of the client's poller (Client:_poll_answer):
-- a, the answer (taken in: decoded and masked where it entered, a.value),
-- what the protocol says of it (kling.protocol.judge: "status", "retry",
-- "unusable", "end"; "ended" when the request could not start), and done,
-- true when the wait has ended with this answer. Whatever the answer holds,
-- the job gets its outcome: an answer that cannot be taken in is kind
-- protocol for this job alone (and when it was the result of a job that has
-- ended, that end is journaled with the answer's text). An error raised by an
-- on_update of the caller's is raised again once the answer is applied.
function Job:_take_poll(a, what, done)
  local raised
  if what == "status" then
    local ok, changed = pcall(self._absorb, self, a.value)
    if not ok then raised = changed
    elseif changed and self._on_update then raised = call_each(self, self._on_update, raised) end
  end
  if done then
    self.client:_unwatch(self)
    local ok, out, err = pcall(function()
      if what == "status" then -- the result answer of a job that has ended
        return self:_take_result(a.value)
      end
      local body, err = self.client:_answer(a, { request_id = self.id, route = a.route })
      if body then
        err = errors.new("protocol", a.route .. " answer without a status string (the service "
          .. "answered so " .. protocol.UNUSABLE_TRIES .. " times in a row)", { request_id = self.id })
      end
      if a.route == "result" and self:_ended_without_output() then return nil, self:_end_by_status(err) end
      if a.route == "result" and err.kind == "protocol" then self:_journal_unreadable(err, a.body) end
      return nil, err
    end)
    if not ok then
      out, err = nil, errors.new("protocol", "the service's answer could not be taken in: "
        .. self.client:scrub(tostring(out)), { request_id = self.id })
    end
    self._final = { out, err }
    if self._on_end then raised = call_each(self, self._on_end, raised) end
  end
  if raised ~= nil then error(raised, 0) end
end

-- Starts being waited on: the client polls the job until it ends or nobody
-- waits any more. on_update (may be nil) is called on changes; on_end (may
-- be nil) once when the wait has an outcome.
function Job:_hold(on_update, on_end)
  if on_update then
    self._on_update = self._on_update or {}
    table.insert(self._on_update, on_update)
  end
  if on_end then
    self._on_end = self._on_end or {}
    table.insert(self._on_end, on_end)
  end
  self._waiters = (self._waiters or 0) + 1
  local no_token = not self._final and self.client:_token_error()
  if no_token then
    -- no token: nothing is polled (a poll would go out without it and be refused, or
    -- be tried again until the deadline); the wait ends at once with kind auth
    self._final = { nil, no_token }
    if on_end then on_end(self) end
    return
  end
  if not self._final then self.client:_watch(self) end
end

local function remove(list, fn)
  if not (list and fn) then return end
  for i, f in ipairs(list) do
    if f == fn then
      table.remove(list, i)
      return
    end
  end
end

-- Stops being waited on (after _hold), and returns the outcome if there is
-- one: true, output, err | false.
function Job:_release(on_update, on_end)
  self._waiters = self._waiters - 1
  remove(self._on_update, on_update)
  remove(self._on_end, on_end)
  local final = self._final
  if final then
    -- an outcome that is not the job's own (a network error, a result that could not be
    -- read, a job that has not ended): a later wait polls again
    if not (self.output or self.error) and self._waiters == 0 then self._final = nil end
    return true, final[1], final[2]
  end
  if self._waiters == 0 then self.client:_unwatch(self) end
  return false
end

function Job:_timeout_error(timeout)
  return errors.new("timeout", string.format("job %s did not end within %g s (status %s); wait again to go on",
    self.id, timeout, tostring(self.status)), { request_id = self.id, job_status = self.status })
end

--- Waits until the job ends. The client's engine polls it on an adaptive
-- schedule (see the `poll` option of kling.new), with every other job.
-- opts: timeout (seconds, default 1800: kling.core.DEFAULTS.wait_timeout), on_update(job) on a status or
-- queue-position change, include_cost (boolean: the result is asked with the job's cost, kept in
-- job.cost; before the job's first wait, as the client's include_cost otherwise).
-- Returns output | nil, err. After a "timeout" the job can be waited on again.
function Job:wait(opts)
  opts = opts or {}
  if opts.include_cost ~= nil then
    if type(opts.include_cost) ~= "boolean" then error("job:wait: opts.include_cost must be a boolean", 2) end
    self.include_cost = opts.include_cost -- (read when the job is watched: before its first wait)
  end
  if self.output then return self.output end
  if self.error then return nil, self.error end
  local timeout = opts.timeout or core.DEFAULTS.wait_timeout
  self:_hold(opts.on_update)
  sched.wait(self.client, function() return self._final ~= nil end, core.engine.now() + timeout, self)
  local ended, out, err = self:_release(opts.on_update)
  if ended then return out, err end
  return nil, self:_timeout_error(timeout)
end

-- The callbacks of job:on_update and job:on_done: one hold on the job (the
-- client polls it from then on) until it has an outcome.
local function callbacks(self)
  local cb = self._callbacks
  if cb then return cb end
  cb = { updates = {}, dones = {} }
  self._callbacks = cb
  function cb.update(job)
    for _, fn in ipairs(cb.updates) do fn(job) end
  end
  function cb.done(job)
    self._callbacks = nil
    local _, out, err = job:_release(cb.update, cb.done)
    local raised
    for _, fn in ipairs(cb.dones) do
      local ok, e = pcall(fn, job, out, err)
      if not ok and raised == nil then raised = e end
    end
    if raised ~= nil then error(raised, 0) end
  end
  self:_hold(cb.update, cb.done)
  return cb
end

local function check_callback(fn, who)
  if type(fn) ~= "function" then error(who .. ": expected a function, got " .. type(fn), 3) end
end

--- Calls fn(job) from client:step() each time the job's status or queue
-- position changes. From this call on, the client polls the job (no wait
-- call is needed: a host's loop only steps the client, see
-- client:pollfds() and client:timeout()) until it ends. An error raised by
-- fn is raised by the client:step() that called it. Returns the job.
function Job:on_update(fn)
  check_callback(fn, "job:on_update")
  if self.output or self.error then return self end -- it has ended: nothing will change
  local cb = callbacks(self)
  cb.updates[#cb.updates + 1] = fn
  return self
end

--- Calls fn(job, output, err) once, from client:step(), when the job has
-- an outcome: output (a table) when it completed, else nil and err (kind
-- "failed", "cancelled", or the error that ended its polling, e.g.
-- "protocol"). From this call on, the client polls the job. A job that has
-- already ended calls fn at once (from this call). Returns the job.
function Job:on_done(fn)
  check_callback(fn, "job:on_done")
  if self.output or self.error then
    fn(self, self.output, self.error)
    return self
  end
  local cb = callbacks(self)
  cb.dones[#cb.dones + 1] = fn
  return self
end

--- Cancels a queued job. What the answer means is the protocol's
-- (kling.protocol.cancel_means): a status that says cancelled, whatever the
-- outcome word, or the outcome "cancelled", is cancelled; a status
-- "cancellation_requested" without an outcome was accepted but is not final:
-- the job is then followed (as job:wait does) until its status says cancelled,
-- for at most opts.timeout seconds (default 60: kling.core.DEFAULTS.cancel_wait;
-- 0: not followed).
-- Returns true | nil, err. true: job.status is "cancelled"; or the service
-- accepted the cancel but its status did not say cancelled in time: then
-- job.cancel_requested is true, job.status is not "cancelled" yet, and a later
-- wait sees the end (kind cancelled). err:
-- kind "not_cancellable" once it runs, or when it completed or failed before
-- the cancel took effect (err.job_status); "protocol" for an outcome word kling
-- does not know; the kinds of a failed request.
function Job:cancel(opts)
  opts = opts or {}
  local body, err = self.client:_api(protocol.ROUTES.cancel.method, self.urls.cancel, nil, { request_id = self.id })
  if not body then return nil, err end
  if protocol.usable_status(body.status) then self:_absorb(body) end
  local outcome = body.outcome
  local means = protocol.cancel_means(body.status, outcome)
  if means == "cancelled" then
    self.status = "cancelled"
    self.queue_position = nil
    self.error = errors.new("cancelled", "the job was cancelled", { request_id = self.id })
    self:_journal_end()
    return true
  elseif means == "requested" then
    self.cancel_requested = true
    local timeout = opts.timeout or core.DEFAULTS.cancel_wait
    if not (timeout > 0) then return true end
    local out, werr = self:wait { timeout = timeout }
    if werr and werr.kind == "cancelled" then return true end
    if out or (werr and werr.kind == "failed") then
      return nil, errors.new("not_cancellable", "the service accepted the cancel, but the job "
        .. (out and "completed" or "failed") .. " before it took effect", { request_id = self.id, job_status = self.status })
    end
    return true -- accepted, not final yet (job.cancel_requested)
  elseif means == "not_cancellable" then
    return nil, errors.new("not_cancellable",
      "the job can no longer be cancelled (status " .. tostring(self.status) .. ")",
      { request_id = self.id, job_status = self.status })
  end
  if outcome == nil then
    return nil, errors.new("protocol", "a cancel answer without an outcome and with "
      .. (protocol.usable_status(body.status) and ("the unknown status '" .. body.status .. "'") or "no status")
      .. ": whether the job was cancelled is unknown", { request_id = self.id })
  end
  return nil, errors.new("protocol", "unexpected cancel outcome '" .. tostring(outcome) .. "' in the cancel answer",
    { request_id = self.id })
end

--- Downloads the job's video to path (waiting for the job first when needed),
-- as client:download_url does: streams to path..".part" in C and renames it
-- when complete; sends no token. A .part left by an earlier download is gone
-- on from (HTTP Range with If-Range) only when a validator guards it and its
-- sidecar path..".part.meta" shows it is the same file (with a strong ETag:
-- the URL without its query string; with only a Last-Modified: the whole
-- URL; the length), and a range answer is appended only when its
-- Content-Range and validators match; otherwise the download starts over
-- (resume = false always does). A second download of the same path while
-- one runs fails at once (kind io). See client:download_url.
-- opts: on_progress(bytes, total), max_bytes, resume, stall_timeout and
-- min_rate (a try ends when it stays under min_rate bytes/s, default 1024,
-- for stall_timeout seconds, default the client's timeout, 30 s), deadline
-- (seconds for the whole download, retries included; default none), and the
-- wait options (timeout, on_update) for a job that has not ended.
-- Returns path, bytes | nil, err (kind "io" for a local file or disk error,
-- with err.path; see client:download_url for the others).
function Job:download(path, opts)
  if type(path) ~= "string" or path == "" then error("job:download: path must be a non-empty string", 2) end
  opts = opts or {}
  require("kling.client").check_download_opts(opts, "job:download")
  if not self.output then
    local out, err = self:wait(opts)
    if not out then return nil, err end
  end
  local url = video_of(self.output)
  if not url then
    return nil, errors.new("protocol", "the job's output has no video URL", { request_id = self.id })
  end
  return self.client:download_url(url, path,
    { on_progress = opts.on_progress, max_bytes = opts.max_bytes, stall_timeout = opts.stall_timeout,
      min_rate = opts.min_rate, deadline = opts.deadline, resume = opts.resume })
end

return M
