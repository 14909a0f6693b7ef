--- kling.emulator.api: the handlers of the API routes (/v1, bearer token required).
--
-- POST /v1/models/{model_id} (submit), GET /v1/requests/{id}/status, GET .../result,
-- POST .../cancel (the GET routes of /v1/models are kling.emulator.catalog's, which also
-- checks a submit's input beyond its prompt). Each takes (server, req, capture) and returns
-- a reply (kling.emulator.reply); the job model is kling.emulator.jobs. The route table
-- (kling.emulator.routes) has already checked the token, the method and the id's shape,
-- and the faults (kling.emulator.faults) decide whether a handler runs at all.
local jobs = require "kling.emulator.jobs"
local catalog = require "kling.emulator.catalog"
local reply = require "kling.emulator.reply"
local util = require "kling.emulator.util"

local M = {}

local format = string.format
local floor = math.floor
local json = reply.json
local encode, json_reply, error_reply, not_found = reply.encode, reply.json_reply, reply.error_reply, reply.not_found
local job_state, wire_status, FINAL = jobs.state, jobs.wire_status, jobs.FINAL
local micro = util.micro

M.handlers = {}
local handlers = M.handlers

local function validation_error(loc, msg, kind)
  local name = loc[2] and tostring(loc[2]) or loc[1] -- the field, and its index in an array
  if loc[3] then name = name .. "[" .. tostring(loc[3]) .. "]" end
  return json_reply(422, {
    error_message = "Input validation failed: " .. name .. ": " .. msg,
    detail = { { loc = loc, msg = msg, type = kind } },
  })
end

local ERROR200_MESSAGES = { [400002] = "Insufficient balance", [400004] = "User account error" }

--- POST /v1/models/{model_id}: validate the body, create the job, answer its id and URLs.
function handlers.submit(self, req, model_id)
  if not model_id:match("^[%w%._%-]+[%w%._%-/]*$") or model_id:find("//", 1, true) then
    return error_reply(404, 404001, "Model not found")
  end
  local body = req.body or ""
  local ok, input = pcall(json.decode, body)
  if not ok then
    return json_reply(400, { error_message = "Request body is not valid JSON" })
  end
  if type(input) ~= "table" or body:match("^%s*(.)") ~= "{" then
    return validation_error({ "body" }, "value is not a valid dict", "type_error.dict")
  end
  local prompt = input.prompt
  if prompt == nil then
    return validation_error({ "body", "prompt" }, "field required", "value_error.missing")
  end
  if type(prompt) ~= "string" or not prompt:find("%S") then
    return validation_error({ "body", "prompt" }, "prompt must be a non-empty string", "value_error")
  end
  local data_uris, loc, msg, kind = catalog.check_input(model_id, input)
  if not data_uris then return validation_error(loc, msg, kind) end
  local directives = jobs.parse_directives(prompt)
  local code = tonumber(directives.error200)
  if code then
    return json_reply(200, { error_code = floor(code), error_message = ERROR200_MESSAGES[code] or "Error" })
  end
  local headers = {}
  for name, value in pairs(req.headers) do
    if name ~= "authorization" then headers[name] = value end
  end
  local job = self:create_job(model_id, body, input, directives, headers)
  job.price, job.data_uris = catalog.price(model_id), data_uris
  req.job = job
  local fault_counts = self.counters.faults
  fault_counts.jobs_created_by_attempt = fault_counts.jobs_created_by_attempt + 1
  local answer_id = jobs.ODD_IDS[directives.request_id] or job.id -- @emu:request_id=KIND: an id a client must refuse
  local r
  if job.nourls then
    r = json_reply(200, { request_id = answer_id })
  else
    local status_url, result_url, cancel_url = self:job_urls(job)
    r = json_reply(200, {
      request_id = answer_id, status_url = status_url, result_url = result_url, cancel_url = cancel_url,
    })
  end
  r.delay = job.submit_delay -- @emu:submit_delay=S: the answer waits S seconds of the clock
  return r
end

-- @emu:error_ROUTE=CODE[@HTTP][*N]: the job's first N requests on that route answer
-- {"error_code":CODE,"error_message":"Injected error CODE"} with HTTP HTTP, without acting.
local function directed_error(job, route)
  local spec = jobs.parse_error_directive(job.directives["error_" .. route])
  if not spec or job.error_answers[route] >= spec.n then return nil end
  job.error_answers[route] = job.error_answers[route] + 1
  local body = format('{"error_code":%s,"error_message":%s}', spec.json, encode("Injected error " .. spec.code))
  return { status = spec.http, body = body, type = "application/json" }
end

-- @emu:extra_code=VALUE: the job's status and result answers (successes) also carry
-- "error_code": VALUE, written as for @emu:error_status (1.5, 12abc, null...).
local function with_extra_code(job, r)
  local spec = jobs.parse_error_directive(job.directives.extra_code)
  if not spec or r.body:sub(1, 1) ~= "{" then return r end
  return { status = r.status, type = r.type, headers = r.headers,
    body = '{"error_code":' .. spec.json .. (r.body == "{}" and "}" or ("," .. r.body:sub(2))) }
end

--- GET /v1/requests/{id}/status: the job's status (counted as a poll).
function handlers.status(self, _, id)
  local job = self.jobs[id]
  if not job then return not_found("Request not found") end
  local directed = directed_error(job, "status")
  if directed then return directed end
  job.polls.status = job.polls.status + 1
  local now = self.clock()
  local state, position = job_state(job, now)
  if not job.noticed_at and FINAL[state] then job.noticed_at = micro(now) end
  -- the answer depends only on the state (and the position while queued): encode it once
  -- per change, not once per poll
  local key = state == "in_queue" and position or state
  if job.status_key ~= key then
    job.status_key = key
    job.status_reply = with_extra_code(job, json_reply(200, self:status_body(job, state, position)))
  end
  if state == "cancelling" then jobs.cancelling_answered(job, now) end
  return job.status_reply
end

local OUTPUTS
local ODD_MARK = "\0emu-odd-output\0"
local ODD_MARK_JSON = json.encode(ODD_MARK)

--- The outputs of @emu:output=KIND that a client cannot download (and videos, a usable
-- one): kind -> function(server, job) -> the output value (nil: no "output" field).
M.OUTPUTS = {
  empty = function() return { video = "" } end,
  missing = function() return {} end,
  null = function() return { video = reply.null } end,
  videos_empty = function() return { videos = reply.array({}) } end,
  none = function() return nil end,
  videos = function(self, job) return { videos = { self:video_url(job) } } end,
}
OUTPUTS = M.OUTPUTS

-- The body of a result answer: the final one once the job is over, else its status.
local function result_body(self, job, state, position)
  if state == "completed" or state == "failed" then
    local body = {
      request_id = job.id,
      status = wire_status(job, state),
      created_at = self:iso(job.created),
      finished_at = self:iso(job.ends),
    }
    if state == "completed" then
      local shape = OUTPUTS[job.directives.output]
      if shape then
        body.output = shape(self, job)
      else
        body.output = { video = self:video_url(job) }
        if jobs.ODD_OUTPUTS[job.directives.output] then body.output.extra = ODD_MARK end
      end
    else
      body.error = jobs.fail_error(job)
    end
    return body
  elseif state == "cancelled" then
    return { request_id = job.id, status = wire_status(job, state), created_at = self:iso(job.created) }
  end
  return self:status_body(job, state, position)
end

--- The answer of the result route when the job's result is not to be had, or nil:
-- 400005 before the end (@emu:result_not_ready, --result-not-ready 400005) and for a while
-- after completed (@emu:result_lag, --result-lag); 404 or 400 after any end (@emu:no_result).
local function result_refusal(job, state, now)
  if FINAL[state] then
    if job.no_result then
      job.no_result_answers = job.no_result_answers + 1
      if job.no_result == 400 then return error_reply(400, 400001, "Request result not available") end
      return not_found("Request result not found")
    end
    local lag = state == "completed" and job.lag
    if not lag then return nil end
    if lag.answers then
      if job.lag_answers >= lag.answers then return nil end
      job.lag_answers = job.lag_answers + 1
    elseif now >= job.ends + lag.seconds then
      return nil
    end
  elseif job.not_ready ~= "400005" then
    return nil
  end
  job.not_ready_answers = job.not_ready_answers + 1
  return error_reply(400, 400005, M.NOT_READY_MESSAGE)
end

M.NOT_READY_MESSAGE = "Request is not completed yet"

--- GET /v1/requests/{id}/result: the final body once the job is over, else its status.
function handlers.result(self, req, id)
  local job = self.jobs[id]
  if not job then return not_found("Request not found") end
  local directed = directed_error(job, "result")
  if directed then return directed end
  job.polls.result = job.polls.result + 1
  local now = self.clock()
  local state, position = job_state(job, now)
  local refusal = result_refusal(job, state, now)
  if refusal then return refusal end
  if state == "cancelling" then jobs.cancelling_answered(job, now) end
  if FINAL[state] then
    job.noticed_at = job.noticed_at or micro(now)
    job.result_at = job.result_at or micro(now)
  end
  local body = result_body(self, job, state, position)
  if req.query.include_cost == "true" or req.query.include_cost == "1" then
    if state == "completed" then
      body.cost = jobs.cost(job)
    elseif state == "failed" or state == "cancelled" then
      body.cost = 0
    end
  end
  local r = with_extra_code(job, json_reply(200, body))
  if body.output and body.output.extra == ODD_MARK then
    local at = r.body:find(ODD_MARK_JSON, 1, true)
    r.body = r.body:sub(1, at - 1) .. jobs.ODD_OUTPUTS[job.directives.output] .. r.body:sub(at + #ODD_MARK_JSON)
  end
  return r
end

--- POST /v1/requests/{id}/cancel: cancels a queued job; otherwise not_cancellable. The
-- answer of a cancel that was accepted (or of a job already cancelled) takes the shape of
-- the job's @emu:cancel=KIND, or the one a cancel fault put in req.cancel_mode:
--   cancelled (default)  {"request_id","status":"cancelled","outcome":"cancelled"}
--   requested            {"request_id","status":"cancelled","outcome":"cancellation_requested"}
--   bare                 {"request_id","status":"cancelled"}
--   pending              {"request_id","status":"cancellation_requested"}: the job is
--                        cancelling until its wait is over (jobs.cancel)
-- A job that is cancelling answers as pending. The reply's accepted is true when the job
-- is (being) cancelled, for the cancel faults.
function handlers.cancel(self, req, id)
  local job = self.jobs[id]
  if not job then return not_found("Request not found") end
  local directed = directed_error(job, "cancel")
  if directed then return directed end
  job.polls.cancel = job.polls.cancel + 1
  local mode = req.cancel_mode or job.cancel_mode
  local state = jobs.cancel(job, self.clock(), mode)
  local body = { request_id = job.id, status = wire_status(job, state) }
  if state == "cancelled" then
    local kind = mode and mode.kind
    if kind == "requested" then
      body.outcome = "cancellation_requested"
    elseif kind ~= "bare" then
      body.outcome = "cancelled"
    end
  elseif state ~= "cancelling" then
    body.outcome = "not_cancellable"
  end
  local r = json_reply(200, body)
  r.accepted = state == "cancelled" or state == "cancelling"
  return r
end

return M
