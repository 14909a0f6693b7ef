--- kling clients: one C engine (a libcurl multi handle) each, and the API
-- exchanges built on it. See DESIGN.md for the public API.
local core = require "kling.core"
local json = require "kling.json"
local errors = require "kling.errors"
local models = require "kling.models"
local sched = require "kling.sched"
local journal = require "kling.journal"

local M = {}

M.VERSION = "0.1.0"
M.DEFAULT_BASE_URL = "https://model-api.runcomfy.net/v1"
M.ID_PATTERN = "^[A-Za-z0-9_-]+$"

local Client = {}
Client.__index = Client
Client.__name = "kling.client"
M.Client = Client

--- True when s is a request id the contract accepts (^[A-Za-z0-9_-]{1,128}$).
function M.valid_id(s)
  return type(s) == "string" and #s >= 1 and #s <= 128 and s:match(M.ID_PATTERN) ~= nil
end

local OPTION_TYPES = {
  token = "string", base_url = "string", timeout = "number", connect_timeout = "number",
  ca_file = "string", journal = "string|boolean", allow_insecure_http = "boolean",
  max_connections = "number", max_body = "number", poll = "table", max_rps = "number",
  retries = "table|boolean",
  on_warning = "function|boolean", user_agent = "string",
}

local function check_options(opts)
  for k, v in pairs(opts) do
    local want = OPTION_TYPES[k]
    if not want then error("kling.new: unknown option '" .. tostring(k) .. "'", 3) end
    local ok = false
    for t in want:gmatch("[^|]+") do ok = ok or type(v) == t end
    if not ok then error("kling.new: option '" .. k .. "' must be a " .. want:gsub("|", " or ") .. ", got " .. type(v), 3) end
  end
  for _, k in ipairs { "timeout", "connect_timeout" } do
    if opts[k] and not (opts[k] > 0) then error("kling.new: option '" .. k .. "' must be > 0", 3) end
  end
end

local function env(name)
  local v = os.getenv(name)
  if v == "" then return nil end
  return v
end

--- Default polling schedule (seconds): the first poll `initial` after a
-- job is watched; intervals grow by `factor` (with +-`jitter`) while nothing
-- changes, up to `near` once a job may end at any moment; never below `min`
-- nor above `max`, and no polls before the shortest run time seen so far.
M.DEFAULT_POLL = { initial = 1, min = 0.5, max = 30, near = 7, factor = 1.5, jitter = 0.1 }

--- Makes a client. Every option is optional; see DESIGN.md and README.md.
-- Raises on a wrong option (a programming error); never on the network.
function M.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("kling.new: options must be a table", 2) end
  check_options(opts)
  local token = opts.token or env("RUNCOMFY_TOKEN") or env("RUNCOMFY_API_TOKEN")
  local base = (opts.base_url or env("RUNCOMFY_MODEL_API_BASE") or M.DEFAULT_BASE_URL):gsub("/+$", "")
  local poll = {}
  for k, v in pairs(M.DEFAULT_POLL) do poll[k] = v end
  for k, v in pairs(opts.poll or {}) do
    if M.DEFAULT_POLL[k] == nil or type(v) ~= "number" or v < 0 then
      error("kling.new: poll." .. tostring(k) .. " is not a known non-negative number", 2)
    end
    poll[k] = v
  end
  -- a schedule given only in part stays consistent: bounds follow what was set
  if opts.poll then
    if not opts.poll.min then poll.min = math.min(poll.min, poll.initial, poll.near) end
    if not opts.poll.near then poll.near = math.max(poll.min, math.min(poll.near, poll.max)) end
    if not opts.poll.max then poll.max = math.max(poll.max, poll.near) end
  end
  local ok, engine = pcall(core.new, {
    base_url = base,
    token = token,
    timeout = opts.timeout or 30,
    connect_timeout = opts.connect_timeout or 10,
    ca_file = opts.ca_file,
    allow_insecure_http = opts.allow_insecure_http,
    max_connections = opts.max_connections,
    max_body = opts.max_body,
    max_rps = opts.max_rps,
    retries = opts.retries,
    user_agent = opts.user_agent or ("kling-lua/" .. M.VERSION .. " libcurl/" .. core.curl_version),
  })
  if not ok then error("kling.new: " .. tostring(engine):gsub("^[^:]*:%d+: ", ""), 2) end
  local okp, perr = pcall(engine.set_poll, engine, poll)
  if not okp then error("kling.new: " .. tostring(perr):gsub("^[^:]*:%d+: ", ""), 2) end
  local on_warning = opts.on_warning
  if on_warning == nil or on_warning == true then
    on_warning = function(msg) io.stderr:write("kling: warning: ", msg, "\n") end
  end
  return setmetatable({
    base_url = base,
    has_token = token ~= nil and token ~= "",
    request_timeout = opts.timeout or 30,
    poll = poll,
    _engine = engine,
    _watched = {}, -- poller handle -> job
    _journal = type(opts.journal) == "string" and journal.open(opts.journal) or nil,
    _warn = on_warning or function() end,
  }, Client)
end

function Client:__tostring()
  return string.format("kling.client(%s, token %s)", self.base_url, self.has_token and "set" or "missing")
end

--- Masks the token in a string (defence in depth for anything the server echoes).
function Client:scrub(s)
  return self._engine:scrub(tostring(s))
end

--- Closes the client's connections. Jobs of a closed client cannot be used.
function Client:close()
  self._engine:close()
end
Client.__close = Client.close

--- Drives the client's engine for at most `seconds` (default 0): runs
-- transfers, polls watched jobs, and applies what changed to their job
-- objects (calling on_update). For foreign event loops, with pollfd(),
-- events() and timeout() (the cqueues pollable protocol). Returns how many
-- things happened.
function Client:step(seconds)
  local n = self._engine:step(seconds or 0)
  self:_pump()
  return n
end

--- A descriptor that becomes readable when the client has work to do.
function Client:pollfd()
  return self._engine:pollfd()
end

--- What to wait for on pollfd(): always "r".
function Client:events()
  return "r"
end

--- Seconds until the client must be stepped even if pollfd() stays quiet
-- (nil: only when it becomes readable).
function Client:timeout()
  return self._engine:timeout()
end

-- Applies the poller's news to the jobs, and wakes whoever waits on them.
function Client:_pump()
  local engine = self._engine
  for _, key in ipairs(engine:finished()) do sched.notify(key) end
  local updates = engine:updates()
  for i = 1, #updates do
    local u = updates[i]
    local job = self._watched[u.handle]
    if job then
      job:_apply(u)
      sched.notify(job)
    end
  end
end

-- Starts polling a job in the engine (once).
function Client:_watch(job)
  if job._handle then return end
  local delay
  if job.submitted_at and job.status == "in_queue" and not job.raw_status then
    delay = nil -- the schedule's first poll
  else
    delay = 0 -- attached or resumed: look now
  end
  job._handle = self._engine:watch { status_url = job.urls.status, result_url = job.urls.result,
    status = job.raw_status, delay = delay }
  self._watched[job._handle] = job
end

function Client:_unwatch(job)
  local h = job._handle
  if not h then return end
  job._handle = nil
  self._watched[h] = nil
  self._engine:unwatch(h)
end

-- Waits until transfer x has ended: yields inside kling.run, blocks
-- otherwise; on_tick() is called about every 0.25 s meanwhile.
function Client:_await(x, on_tick)
  local key = x:key()
  local function done() return x:done() end
  if not on_tick then
    sched.wait(self, done, nil, key)
    return
  end
  while not x:done() do
    sched.wait(self, done, core.now() + 0.25, key)
    on_tick()
  end
end

--- Sleeps for s seconds while the engine keeps working (yields inside
-- kling.run, where stop() can end the sleep early).
function Client:sleep(s, stop)
  sched.wait(self, function() return stop ~= nil and stop() end, core.now() + s)
end

local TRANSPORT_KIND = {
  resolve = "network", connect = "network", tls = "network", network = "network",
  redirect = "network", truncated = "network", aborted = "network",
  timeout = "timeout", too_large = "protocol", io = "network", memory = "network",
  proxy = "network", -- a proxy refused or failed: err.transport == "proxy", the message names it
}

-- One transfer, awaited; returns the raw result table, or nil, err.
function Client:_transfer(spec, on_tick)
  local x, msg, is_local = self._engine:request(spec)
  if not x then
    -- a message about the caller's own file is the caller's text: never masked
    return nil, errors.new("network", is_local and msg or self:scrub(msg), { retryable = false })
  end
  self:_await(x, on_tick)
  local res = x:result()
  x:close()
  return res
end

-- One API exchange. Returns decoded body, result | nil, err.
-- opts.submit: a paid POST: never replayed, and a failure after it may have
-- reached the server is reported as submit_unknown.
function Client:_api(method, url, body, opts)
  opts = opts or {}
  if not self.has_token then
    return nil, errors.new("auth", "no API token: pass token= to kling.new or set RUNCOMFY_TOKEN")
  end
  local encoded
  if body ~= nil then
    local ok, s = pcall(json.encode, body)
    if not ok then
      return nil, errors.new("validation", "input cannot be encoded as JSON: " .. tostring(s):gsub("^.-: ", ""),
        { errors = { { path = "/", message = tostring(s) } } })
    end
    encoded = s
  end
  local res, err = self:_transfer {
    method = method, url = url, body = encoded, fresh = opts.submit, timeout = opts.timeout,
    retry = opts.submit and "submit" or "safe",
  }
  if not res then return nil, err end
  return self:_answer(res, opts)
end

-- Reads a finished API exchange (as x:result() gives it): decoded body, res
-- | nil, err. opts: submit (see _api), request_id.
function Client:_answer(res, opts)
  if res.error then
    local e = res.error
    local kind = TRANSPORT_KIND[e.kind] or "network"
    local fields = { retryable = not opts.submit or not e.sent, request_id = opts.request_id, transport = e.kind }
    if e.kind == "tls" then e.message = "TLS: " .. e.message end
    if e.kind == "proxy" then
      -- the proxy's refusal, read by the one rule: a 503 may pass, a 403 will not
      local _, again = core.answer_kind(e.proxy_status or 0)
      fields.retryable = e.proxy_status ~= nil and again == true
      fields.proxy_status = e.proxy_status
    end
    if opts.submit and e.sent then
      return nil, errors.new("submit_unknown", self:scrub(e.message)
        .. ": the submit may or may not have reached the service; it was not sent again", fields)
    end
    return nil, errors.new(kind, self:scrub(e.message), fields)
  end
  local decoded
  if res.body and res.body:find("%S") then
    local ok, v = pcall(json.decode, res.body)
    if ok then decoded = v end
  end
  local err = errors.from_answer(res.status, decoded, function(s) return self:scrub(s) end, opts.request_id)
  if err and opts.submit and (err.kind == "server" or err.kind == "timeout") then
    -- the server may have created the job before it failed (a 5xx or 408, as an HTTP status or
    -- as an error_code's family in a 200, by the one rule): never resent, kind submit_unknown
    err.kind = "submit_unknown"
    err.retryable = false
    err.message = err.message .. " (HTTP " .. res.status .. "): the job may or may not exist; it was not sent again"
  end
  if err then return nil, err end
  if type(decoded) ~= "table" then
    local what = decoded == nil and "no JSON body" or "a JSON " .. type(decoded)
    local e = errors.new("protocol", "HTTP " .. res.status .. " with " .. what .. " (expected a JSON object)",
      { status = res.status, request_id = opts.request_id })
    if opts.submit then
      e.kind = "submit_unknown"
      e.message = e.message .. ": the job may have been created; it was not sent again"
    end
    return nil, e
  end
  return decoded, res
end

--- Builds the URL of a request route from the base URL.
function Client:request_url(id, what)
  return self.base_url .. "/requests/" .. id .. "/" .. what
end

--- Submits an input to a model: validates it (when the model's schema is
-- known; nothing is sent otherwise), then POSTs it once.
-- opts.tag (a string of the caller's, at most 256 bytes) is written with the
-- journal's submitted and submit_unknown lines, so a caller that dies between
-- this call and recording its answer can find its request again.
-- Returns job | nil, err.
function Client:submit(model_id, input, opts)
  if type(model_id) ~= "string" then error("client:submit: model_id must be a string", 2) end
  local tag = opts and opts.tag
  if tag ~= nil and (type(tag) ~= "string" or #tag > 256) then
    error("client:submit: opts.tag must be a string of at most 256 bytes", 2)
  end
  if not models.valid_model_id(model_id) then
    return nil, errors.new("validation", "invalid model id " .. string.format("%q", model_id),
      { errors = { { path = "/model", message = "model id must be slash-separated names of letters, digits, '.', '_' or '-'" } } })
  end
  local ok, normalized = models.validate(input, model_id)
  if not ok then return nil, normalized end
  local body, err = self:_api("POST", self.base_url .. "/models/" .. model_id, normalized, { submit = true })
  if body and not M.valid_id(body.request_id) then
    body, err = nil, errors.new("submit_unknown",
      "the service accepted the submit but answered without a valid request_id; the job may exist",
      { answer = body })
  end
  if not body then
    if err.kind == "submit_unknown" then
      self:_journal_append { e = "submit_unknown", model = model_id, message = err.message, tag = tag }
    end
    return nil, err
  end
  local job = require("kling.job").new(self, body.request_id, model_id, body)
  -- on disk before the caller has the job: a process killed now loses nothing
  self:_journal_append { e = "submitted", id = job.id, model = model_id, urls = job.urls, tag = tag }
  return job
end

-- Appends an event to the journal, if there is one. A journal that cannot be
-- written is reported through on_warning (the request is not undone).
function Client:_journal_append(event)
  if not self._journal then return true end
  local ok, err = self._journal:append(event)
  if not ok then self._warn("journal: " .. tostring(err)) end
  return ok
end

--- Job objects for every request in the journal that has not ended (nil,
-- err when the client has no journal): a script killed mid-wait picks up
-- where it was. The second value lists the submits whose fate is unknown.
function Client:resume()
  if not self._journal then
    return nil, errors.new("validation", "this client has no journal (option journal = path)")
  end
  local jobs, unknown = self._journal:state()
  local list = {}
  for id, j in pairs(jobs) do
    if not j.status and M.valid_id(id) then
      local urls = type(j.urls) == "table" and j.urls or {}
      list[#list + 1] = require("kling.job").new(self, id, j.model,
        { status_url = urls.status, result_url = urls.result, cancel_url = urls.cancel }, j.t)
    end
  end
  table.sort(list, function(a, b) return (a.submitted_at or 0) < (b.submitted_at or 0) end)
  return list, unknown
end

--- Drops the jobs that have ended from the journal. Returns lines dropped | nil, err.
function Client:compact_journal()
  if not self._journal then return nil, errors.new("validation", "this client has no journal") end
  local n, err = self._journal:compact()
  if not n then return nil, errors.new("network", tostring(err)) end
  return n
end

--- submit(kling.DEFAULT_MODEL, input)
function Client:generate(input)
  return self:submit(models.DEFAULT_MODEL, input)
end

--- Attaches to an existing request. Returns job | nil, err (invalid id).
function Client:job(request_id, model_id)
  if not M.valid_id(request_id) then
    return nil, errors.new("validation", "invalid request id: must match ^[A-Za-z0-9_-]{1,128}$",
      { errors = { { path = "/request_id", message = "must match ^[A-Za-z0-9_-]{1,128}$" } } })
  end
  return require("kling.job").new(self, request_id, model_id, nil)
end

--- Streams url to path in C (no token is sent). Returns path, bytes | nil, err.
function Client:download_url(url, path, opts)
  opts = opts or {}
  local x, msg, is_local = self._engine:request {
    url = url, download = path, timeout = opts.stall_timeout, max_bytes = opts.max_bytes, retry = "safe",
    resume = opts.resume ~= false,
  }
  -- a message about the caller's own path is the caller's text: never masked
  if not x then return nil, errors.new("network", is_local and msg or self:scrub(msg)) end
  local on_progress = opts.on_progress
  local last
  self:_await(x, on_progress and function()
    local got, total = x:progress()
    if got ~= last then
      last = got
      on_progress(got, total)
    end
  end)
  local res = x:result()
  x:close()
  if res.error then
    local kind = TRANSPORT_KIND[res.error.kind] or "network"
    local text = res.error.kind == "io" and res.error.message or self:scrub(res.error.message) -- io: our path
    return nil, errors.new(kind, "download failed: " .. text,
      { retryable = kind ~= "protocol", transport = res.error.kind })
  end
  if res.status < 200 or res.status > 299 then
    local e = errors.from_answer(res.status, nil, function(s) return s end)
    e.message = "download failed: the file host answered HTTP " .. res.status
    return nil, e
  end
  if on_progress and last ~= res.bytes then on_progress(res.bytes, res.bytes) end
  return path, res.bytes
end

return M
