--- kling clients: one C engine (a libcurl multi handle) each, and the API
-- exchanges built on it: where answers enter kling (decoded and masked:
-- Client:_take), are read by the protocol (kling.protocol), and reach the
-- jobs (the poller's answers: Client:_pump). README.md documents the API.
--
-- Calls go one way: kling.client -> kling.job, kling.protocol, kling.errors,
-- kling.journal, kling.models, kling.sched -> kling.core (the C core, which
-- never calls back).
local core = require "kling.core"
local json = require "kling.json"
local errors = require "kling.errors"
local models = require "kling.models"
local protocol = require "kling.protocol"
local sched = require "kling.sched"
local journal = require "kling.journal"
local math = require("kling.compat").math -- math.type, math.tointeger on 5.1 and LuaJIT

local engine_lib = core.engine
local DEFAULTS = core.DEFAULTS

local M = {}

M.VERSION = "0.2.0"
M.DEFAULT_BASE_URL = "https://model-api.runcomfy.net/v1"
--- The request id rule (kling.protocol): the characters; 1 to 128 of them.
M.ID_PATTERN = protocol.ID_PATTERN

local Client = {}
Client.__index = Client
Client.__name = "kling.client"
M.Client = Client

--- True when s is a request id the contract accepts (^[A-Za-z0-9_-]{1,128}$:
-- kling.protocol.valid_id).
M.valid_id = protocol.valid_id

local OPTION_TYPES = {
  token = "string", base_url = "string", timeout = "number", connect_timeout = "number", submit_timeout = "number",
  ca_file = "string", journal = "string|boolean", allow_insecure_http = "boolean",
  max_connections = "number", max_body = "number", poll = "table", max_rps = "number",
  retries = "table|boolean",
  on_warning = "function|boolean", user_agent = "string", cache_dir = "string|boolean", catalog = "boolean", waiter = "function",
  fresh_submits = "boolean", include_cost = "boolean",
}

local function check_options(opts)
  for k, v in pairs(opts) do
    local want = OPTION_TYPES[k]
    if not want then error("kling.new: unknown option '" .. tostring(k) .. "'", 3) end
    local ok = false
    for t in want:gmatch("[^|]+") do ok = ok or type(v) == t end
    if not ok then error("kling.new: option '" .. k .. "' must be a " .. want:gsub("|", " or ") .. ", got " .. type(v), 3) end
  end
  for _, k in ipairs { "timeout", "connect_timeout", "submit_timeout" } do
    if opts[k] and not (opts[k] > 0) then error("kling.new: option '" .. k .. "' must be > 0", 3) end
  end
  -- (the engine checks timeout and connect_timeout when it is made; submit_timeout goes to it
  -- only with a submit, after the journal's intent line: checked here, before anything)
  if opts.submit_timeout and not (opts.submit_timeout <= core.LIMITS.seconds_max) then
    error(string.format("kling.new: option 'submit_timeout' must be > 0 and at most %d seconds (about 115 days)",
      math.tointeger(core.LIMITS.seconds_max) or core.LIMITS.seconds_max), 3)
  end
end

local function env(name)
  local v = os.getenv(name)
  if v == "" then return nil end
  return v
end

--- The environment variables a token is read from, the first one set wins:
-- RunComfy's CLI reads RUNCOMFY_TOKEN, its ComfyUI nodes RUNCOMFY_API_TOKEN,
-- its MCP server and third-party code RUNCOMFY_API_KEY.
M.TOKEN_VARIABLES = { "RUNCOMFY_TOKEN", "RUNCOMFY_API_TOKEN", "RUNCOMFY_API_KEY" }

--- Why a token cannot be sent (nil when it can): RunComfy's tokens are
-- printable ASCII without whitespace, and RunComfy's own clients refuse
-- anything else, and a token given with its "Bearer " prefix. The reason
-- never quotes the token.
function M.token_problem(token)
  if token:find("^[Bb][Ee][Aa][Rr][Ee][Rr]%s") then
    return "starts with \"Bearer \" (give the token alone: kling adds the prefix)"
  elseif token:find("%s") then
    return "holds whitespace (a space, tab or line break)"
  elseif token:find("[%z\1-\31\127]") then
    return "holds a control character"
  elseif token:find("[\128-\255]") then
    return "holds a byte that is not ASCII"
  end
  return nil
end

-- The token and where it came from: opts.token, else the first of
-- TOKEN_VARIABLES that is set (an empty one counts as unset). Raises on a
-- token that cannot be sent (token_problem), naming its source, never it.
local function pick_token(opts)
  local token, source = opts.token, "option token"
  if token == nil then
    for _, name in ipairs(M.TOKEN_VARIABLES) do
      token = env(name)
      if token then
        source = "environment variable " .. name
        break
      end
    end
  end
  if token ~= nil and token ~= "" then
    local why = M.token_problem(token)
    if why then error("kling.new: the token of " .. source .. " " .. why .. "; it was not used", 3) end
  end
  return token
end

--- Default polling schedule (seconds): the first poll `initial` after a
-- job is watched; intervals grow by `factor` (with +-`jitter`) while nothing
-- changes, up to `near` once a job may end at any moment; never below `min`
-- nor above `max`, and no polls before the shortest run time seen so far.
-- (kling.core.DEFAULTS.poll: src/defaults.h)
M.DEFAULT_POLL = {}
for k, v in pairs(DEFAULTS.poll) do M.DEFAULT_POLL[k] = v end

--- Makes a client. Every option is optional; see README.md ("Options").
-- Raises on a wrong option (a programming error); never on the network.
function M.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("kling.new: options must be a table", 2) end
  check_options(opts)
  local token = pick_token(opts)
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
  local ok, engine = pcall(engine_lib.new, {
    base_url = base,
    token = token,
    timeout = opts.timeout, -- nil: kling.core.DEFAULTS
    connect_timeout = opts.connect_timeout,
    ca_file = opts.ca_file,
    allow_insecure_http = opts.allow_insecure_http,
    max_connections = opts.max_connections,
    max_body = opts.max_body,
    max_rps = opts.max_rps,
    retries = opts.retries,
    user_agent = opts.user_agent or ("kling-lua/" .. M.VERSION .. " libcurl/" .. engine_lib.curl_version),
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
    request_timeout = opts.timeout or DEFAULTS.timeout,
    -- a submit waits at least as long as any request, and 90 s by default (DEFAULTS.submit_timeout)
    submit_timeout = opts.submit_timeout or math.max(DEFAULTS.submit_timeout, opts.timeout or 0),
    poll = poll,
    _engine = engine,
    _watched = {}, -- poller handle -> job
    _spec = {}, -- the fields of the next API request (Client:_api)
    _scrub_text = function(s) return engine:scrub(s) end, -- eng:scrub as a function (kling.errors)
    _journal = type(opts.journal) == "string" and journal.open(opts.journal) or nil,
    _warn = on_warning or function() end,
    -- the model catalog's schema cache (kling.catalog): a directory, or nil for none
    cache_dir = opts.cache_dir ~= false and (type(opts.cache_dir) == "string" and opts.cache_dir
      or require("kling.catalog").default_dir()) or nil,
    catalog = opts.catalog ~= false,
    _waiter = opts.waiter, -- how this client's waits wait (kling.sched); nil: kling.set_waiter's
    _fresh_submits = opts.fresh_submits == true,
    include_cost = opts.include_cost == true, -- result requests ask for the job's cost (Job:_result_url)
  }, Client)
end

function Client:__tostring()
  return string.format("kling.client(%s, token %s)", self.base_url, self.has_token and "set" or "missing")
end

--- Masks the token in a string: every occurrence in the whole byte string
-- (past NUL bytes too) becomes "***". For text a server sent; the library
-- applies it where such text enters (see Client:_mask), never to text built
-- from the caller's own paths and options.
function Client:scrub(s)
  return self._engine:scrub(tostring(s))
end

-- kling's own words in an answer (field names, status and outcome words: the
-- protocol's, never masked; kling.protocol.OWN_WORDS).
local OWN_WORDS = protocol.OWN_WORDS
M.OWN_WORDS = OWN_WORDS

-- Masks a string from a server, unless it is one of kling's own words.
function Client:_mask_word(s)
  if OWN_WORDS[s] then return s end
  return self:scrub(s)
end

-- Masks the token in a decoded answer, where server text enters kling: every
-- string and every field name, at any depth (messages, details, outputs and
-- their URLs, status words, ids), except kling's own words. Tables are
-- changed in place (they are the decoder's, fresh); returns v.
function Client:_mask(v)
  if type(v) == "string" then return self:_mask_word(v) end
  if type(v) ~= "table" then return v end
  local renamed
  for k, x in pairs(v) do
    if type(x) == "string" or type(x) == "table" then v[k] = self:_mask(x) end
    if type(k) == "string" and not OWN_WORDS[k] then
      local mk = self:scrub(k)
      if mk ~= k then
        renamed = renamed or {}
        renamed[#renamed + 1] = k
      end
    end
  end
  for _, k in ipairs(renamed or {}) do
    local x = v[k]
    v[k] = nil
    local mk = self:scrub(k)
    while v[mk] ~= nil do mk = mk .. "*" end -- two names that mask alike: both kept
    v[mk] = x
  end
  return v
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

--- Every descriptor a host's loop watches for this client, and for what:
-- { { fd = n, events = "r" | "w" | "rw" }, ... }. With the epoll (Linux)
-- and kqueue (macOS, the BSDs) backends, one entry: pollfd(), "r". With
-- the poll backend (`make EVENT=poll`, other systems), where pollfd() is
-- -1, one entry per socket of the engine (none while it is idle: then
-- timeout() alone says when to step). The list changes as transfers come
-- and go: ask again before each wait.
function Client:pollfds()
  return self._engine:pollfds()
end

--- What to wait for on pollfd(): always "r".
function Client:events()
  return "r"
end

--- Seconds until the client must be stepped even if its descriptors stay
-- quiet (a poll, a retry or a timer of libcurl is due; 0: step now), or
-- nil when nothing is due (step only when a descriptor is ready). Never
-- math.huge. client:step(0) never blocks: a host's loop waits at most
-- timeout() on pollfds(), then calls step(0).
function Client:timeout()
  return self._engine:timeout()
end

-- Wakes whoever waits on the caller's transfers that ended, and takes in
-- the poller's answers (Client:_poll_answer), waking whoever waits on their
-- jobs.
function Client:_pump()
  local engine = self._engine
  local ended = engine:finished() -- (nil when none: no table per step)
  if ended then
    for i = 1, #ended do sched.notify(ended[i]) end
  end
  local answers = engine:answers()
  if not answers then return end
  -- every answer is taken in, whatever one of them raises (an on_update of
  -- the caller's): no job loses its outcome to another's error
  local raised
  for i = 1, #answers do
    local a = answers[i]
    local job = self._watched[a.handle]
    local ok, e = pcall(self._poll_answer, self, job, a)
    if not ok and raised == nil then raised = e end
    if job then sched.notify(job) end
  end
  if raised ~= nil then error(raised, 0) end
end

-- Reads a finished poll (decoded and masked where it enters) by the
-- protocol: "status", "not_ready", "retry", "unusable" or "end"
-- (kling.protocol.judge).
local function read_poll(self, a)
  return protocol.judge(self:_take(a), a.value, a.route)
end

-- One finished poll of a watched job (an answer of eng:answers()): read here
-- by the protocol, handed to the C poller as an observation (eng:observe:
-- the status word and queue position, or what to do), which schedules the
-- next poll or says the wait has ended; then applied to the job.
function Client:_poll_answer(job, a)
  local what, done = "ended", true
  if not a.ended then -- (ended: the request could not start; the wait is over)
    local ok, w = pcall(read_poll, self, a)
    what = ok and w or "end"
    if what ~= "status" and a.route == "result" and job and job:_ended_without_output() then
      -- after a failed or cancelled status the result route may fail (404, 400...): the
      -- status stands, and the wait ends with it (Job:_end_by_status)
      what = "end"
    end
    if what == "status" then
      done = self._engine:observe(a.handle, "status", a.value.status, protocol.queue_position(a.value))
    elseif what == "not_ready" then
      -- 400005 from the result route (also for a while after completed): asked again
      -- with the poller's backoff, until the wait's deadline; never the job's end
      done = self._engine:observe(a.handle, "retry", a.retry_after)
    else
      done = self._engine:observe(a.handle, what, a.retry_after)
    end
  end
  if job then job:_take_poll(a, what, done) end
end

-- The shortest time (s) from submit to end of a completed job of model_id in
-- the journal (jobs of earlier processes: their "ended" line's run, else its
-- time less the submit's), or nil: none, or no journal. Read once per client.
function Client:_learned_run(model_id)
  if self._learned == nil then
    self._learned = false
    local jobs = self._journal and self._journal:state()
    if jobs then
      local best = {}
      for _, j in pairs(jobs) do
        local run = j.run
        if run == nil and math.type(j.t) and math.type(j.ended_t) then run = j.ended_t - j.t end
        if j.status == "completed" and type(j.model) == "string" and run and run > 0
          and (best[j.model] == nil or run < best[j.model]) then
          best[j.model] = run
        end
      end
      self._learned = best
    end
  end
  return self._learned and self._learned[model_id] or nil
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
  -- learned polling: a job this process submitted is not polled again before jobs of its
  -- model ended in earlier processes (the journal), less 10 %
  local expect
  local learned = job._sent_mono and job.model and not job.raw_status and self:_learned_run(job.model)
  if learned then expect = 0.9 * learned - (engine_lib.now() - job._sent_mono) end
  job._handle = self._engine:watch { status_url = job.urls.status, result_url = job:_result_url(),
    status = job.raw_status, delay = delay, expect = expect and expect > 0 and expect or nil }
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
    sched.wait(self, done, engine_lib.now() + 0.25, key)
    on_tick()
  end
end

--- Sleeps for s seconds while the engine keeps working (yields inside
-- kling.run, where stop() can end the sleep early).
function Client:sleep(s, stop)
  sched.wait(self, function() return stop ~= nil and stop() end, engine_lib.now() + s)
end

--- The error kind of each kind of transport failure (err.transport).
local TRANSPORT_KIND = {
  resolve = "network", connect = "network", tls = "network", network = "network",
  redirect = "network", truncated = "network", aborted = "network",
  timeout = "timeout", too_large = "protocol", io = "io", memory = "network",
  slow = "timeout", deadline = "timeout", range = "protocol", empty = "protocol",
  proxy = "network", -- a proxy refused or failed: err.transport == "proxy", the message names it
}

M.TRANSPORT_KIND = TRANSPORT_KIND

-- The JSON text of a request body, written exactly (json.encode_wire):
-- text | nil, err (kind validation, naming the path of the value that has no
-- exact JSON form; nothing is sent).
function Client:_encode(body)
  local s, why, path = json.encode_wire(body)
  if not s then
    return nil, errors.new("validation", "input cannot be sent as JSON: " .. path .. ": " .. why,
      { errors = { { path = path, message = why } } })
  end
  return s
end

local function no_token()
  return errors.new("auth", "no API token: pass token= to kling.new or set RUNCOMFY_TOKEN (or RUNCOMFY_API_TOKEN, "
    .. "RUNCOMFY_API_KEY)")
end

-- The error of a call that needs the token when the client has none (kind
-- auth; nothing is sent), or nil.
function Client:_token_error()
  if not self.has_token then return no_token() end
end

-- Should this answer to a direct call be sent again (x:again(): the
-- engine's backoff, within the client's retries)? By the protocol: a
-- retryable error (kling.protocol.judge), or, on a route whose answer must
-- hold a status (opts.status_answer), one without a usable status, up to
-- UNUSABLE_TRIES answers. A paid submit only after an HTTP 429 that names no
-- job (an answer with a request id is never "not sent").
local function ask_again(res, opts)
  local v = res.value
  if opts.submit then
    local id = type(v) == "table" and v.request_id
    return res.status == 429 and not (type(id) == "string" or math.type(id) ~= nil)
  end
  local what = protocol.judge(res, v)
  return what == "retry" or (what == "unusable" and opts.status_answer == true
    and res.attempts < protocol.UNUSABLE_TRIES)
end

-- One API exchange. Returns decoded body, result | nil, err.
-- opts.body_text: the body, already encoded (then body is ignored).
-- opts.submit: a paid POST: never replayed (libcurl may not rewind its body:
-- src/http.c), and a failure after it may have reached the server is
-- reported as submit_unknown; on a new connection only with fresh_submits. opts.status_answer: a
-- status or result request, whose 2xx answer without a usable status is asked
-- again (a few times, with the client's retries). The engine tries a failure
-- on the way again by itself; an answer is read here (ask_again).
-- Returns decoded body, res | nil, err, res (res when an answer came).
function Client:_api(method, url, body, opts)
  opts = opts or {}
  if not self.has_token then return nil, no_token() end
  local encoded = opts.body_text
  if body ~= nil and encoded == nil then
    local err
    encoded, err = self:_encode(body)
    if not encoded then return nil, err end
  end
  sched.check_wait(self) -- a wait that cannot happen is refused before anything is sent
  -- the request's fields, in the client's one table (the engine copies what it keeps)
  local spec = self._spec
  spec.method, spec.url, spec.body, spec.fresh = method, url, encoded, opts.submit and self._fresh_submits
  spec.timeout = opts.timeout or (opts.submit and self.submit_timeout or nil)
  spec.retry = opts.submit and "submit" or "safe"
  local x, msg = self._engine:request(spec)
  spec.body = nil -- (a submit's body is not kept alive by the client)
  if not x then
    -- kling's own text about the caller's URL (a server's URL was masked where it entered)
    return nil, errors.new("network", msg, { retryable = false })
  end
  local res
  repeat
    self:_await(x)
    res = x:result()
  until res.error or not ask_again(self:_take(res), opts) or not x:again()
  x:close()
  return self:_answer(res, opts)
end

-- The error of a submit whose answer carries a request id (id: a string or a
-- number, already masked) but says something else too (an error_code of any
-- family, a 4xx or 5xx status): never "not sent", since the service named the
-- job. Kind submit_unknown, err.request_id (a valid id) or err.request_id_raw
-- (escaped), err.answer_kind the kind the answer alone would have had.
function Client:_unknown_with_id(err, id)
  local fields = { status = err.status, code = err.code, detail = err.detail, answer_kind = err.kind, retryable = false }
  local shown
  if M.valid_id(id) then
    fields.request_id, shown = id, id
  else
    -- (a number was no string to mask where it entered: its digits are masked now)
    fields.request_id_raw = self:_escape(type(id) == "string" and id or self:scrub(tostring(math.tointeger(id) or id)))
    shown = fields.request_id_raw
  end
  return errors.new("submit_unknown", "the service answered the submit with request id \"" .. shown .. "\" and an error ("
    .. err.kind .. (err.code and (", code " .. err.code) or "") .. ", HTTP " .. tostring(err.status) .. ": " .. err.message
    .. "): the job may or may not exist and be billed; it was not sent again; look it up by its id", fields)
end

-- Takes in the answer of a finished exchange (as x:result() gives it) where
-- it enters kling: decodes its body (kling.json.decode: lua-cjson, as deep
-- as the writer writes) and masks what the server sent (Client:_mask): the
-- decoded value (res.value; nil when there is no body or it is not JSON, and
-- res.why then says why) and res.body (the headers kept came masked from
-- x:result(): src/lua_engine.c). Transport messages
-- (libcurl's and kling's own, about the caller's URL and files) are not
-- masked: the parts of them that quote a server were masked where they were
-- built (src/http.c). Once per res; returns res.
function Client:_take(res)
  if res.taken then return res end
  res.taken = true
  local raw = res.body
  if type(raw) == "string" then
    local scrubbed = self._engine:scrub(raw)
    res.body = scrubbed
    if not res.error and raw:find("%S") then
      local ok, v = pcall(json.decode, raw)
      if not ok then
        res.why = tostring(v):gsub("^.-:%d+: ", "")
      elseif scrubbed ~= raw or raw:find("\\", 1, true) then
        res.value = self:_mask(v)
      else
        -- the body holds no token and no escape: every decoded string (names
        -- too) is a piece of it as sent, so none holds the token either
        res.value = v
      end
    end
  end
  return res
end

-- Reads a finished API exchange (taken in: Client:_take): decoded body, res
-- | nil, err, res (res: nil for a transport error).
-- opts: submit (see _api), request_id.
function Client:_answer(res, opts)
  self:_take(res)
  if res.error then
    local e = res.error
    local kind = TRANSPORT_KIND[e.kind] or "network"
    local fields = { retryable = not opts.submit or not e.sent, request_id = opts.request_id, transport = e.kind }
    if e.kind == "tls" then e.message = "TLS: " .. e.message end
    if e.kind == "proxy" then
      -- the proxy's refusal, read by the one rule: a 503 may pass, a 403 will not
      local _, again = protocol.answer_kind(e.proxy_status or 0)
      fields.retryable = e.proxy_status ~= nil and again == true
      fields.proxy_status = e.proxy_status
    end
    if opts.submit and e.sent then
      return nil, errors.new("submit_unknown", e.message
        .. ": the submit may or may not have reached the service; it was not sent again", fields)
    end
    return nil, errors.new(kind, e.message, fields)
  end
  local decoded, why = res.value, res.why
  -- (decoded was masked where it entered; the client's scrubber masks again what
  -- errors joins from its parts: a detail's loc)
  local err = errors.from_answer(res.status, decoded, self._scrub_text, opts.request_id, opts.route)
  local id = opts.submit and type(decoded) == "table" and decoded.request_id
  if err and (type(id) == "string" or math.type(id)) then
    return nil, self:_unknown_with_id(err, id), res
  end
  if err and opts.submit and (err.kind == "server" or err.kind == "timeout") then
    -- the server may have created the job before it failed (a 5xx or 408, as an HTTP status or
    -- as an error_code's family in a 200, by the one rule): never resent, kind submit_unknown
    err.kind = "submit_unknown"
    err.retryable = false
    err.message = err.message .. " (HTTP " .. res.status .. "): the job may or may not exist; it was not sent again"
  end
  if err then return nil, err, res end
  if type(decoded) ~= "table" then
    local what = why and ("a body that cannot be read as JSON (" .. why .. ")")
      or decoded == nil and "no JSON body" or "a JSON " .. type(decoded)
    local e = errors.new("protocol", "HTTP " .. res.status .. " with " .. what .. " (expected a JSON object)",
      { status = res.status, request_id = opts.request_id })
    if opts.submit then
      e.kind = "submit_unknown"
      e.message = e.message .. ": the job may have been created; it was not sent again"
    end
    return nil, e, res
  end
  return decoded, res
end

--- Builds the URL of a request route ("status", "result", "cancel") from the
-- base URL (kling.protocol.url; id must be a valid request id).
function Client:request_url(id, what)
  return assert(protocol.url(self.base_url, what, id))
end

-- A string from a server (masked where it entered) made safe to print and to
-- store: printable ASCII kept (a backslash doubled), every other byte as
-- \xHH; at most 1024 bytes of it (then "...").
function Client:_escape(s)
  local max = core.LIMITS.escape_max
  local cut = #s > max
  s = s:sub(1, max):gsub("\\", "\\\\"):gsub("[^ -~]", function(c) return string.format("\\x%02x", c:byte()) end)
  return cut and (s .. "...") or s
end

--- Submits an input to a model: validates it (when the model's schema is
-- known; nothing is sent otherwise), then POSTs it once. The schema of a
-- model that is neither shipped nor registered is asked of the catalog first
-- (once per client; cached on disk: Client:model); a model the catalog does
-- not list is sent as given, and a catalog that cannot be asked is a warning
-- (the input then goes unvalidated). Option catalog = false never asks.
-- With a journal, an intent line (model, tag, time, the SHA-256 of the body,
-- a key of its own) is on disk (fsynced) before the request leaves; when it
-- cannot be written nothing is sent and the error has kind io (err.path).
-- The answer then completes the intent: a submitted line with the request id
-- (before the job is returned), a submit_unknown line, or a not_sent line.
-- When that line cannot be written, the outcome is still returned: the job
-- (with job.journal_error, and a warning through on_warning) or the error
-- (with err.journal_error); the intent stays open in the journal, so
-- resume() reports it as a submit of unknown outcome.
-- opts.tag (a string of the caller's, at most 256 bytes) is written in those
-- lines, so a caller that dies between this call and recording its answer can
-- find its request again. opts.include_cost (boolean): the job's result is
-- asked with its cost (job.cost), as kling.new{ include_cost = true } does
-- for every job.
-- A submit_unknown whose answer held a request_id the library refuses (not
-- ^[A-Za-z0-9_-]{1,128}$, or holding the token) keeps it, escaped, in
-- err.request_id_raw and in the journal's line. An answer that carries a
-- request id is never "not sent", whatever else it says (an error_code of any
-- family, a 4xx or 5xx status): it is a submit_unknown with err.request_id
-- (err.answer_kind says what the rest of the answer meant), journaled with
-- its request_id so that the job can be looked up by it.
-- Returns job | nil, err.
function Client:submit(model_id, input, opts)
  if type(model_id) ~= "string" then error("client:submit: model_id must be a string", 2) end
  local tag = opts and opts.tag
  if tag ~= nil and (type(tag) ~= "string" or #tag > core.LIMITS.tag_max) then
    error("client:submit: opts.tag must be a string of at most 256 bytes", 2)
  end
  if opts and opts.include_cost ~= nil and type(opts.include_cost) ~= "boolean" then
    error("client:submit: opts.include_cost must be a boolean", 2)
  end
  if not models.valid_model_id(model_id) then
    return nil, errors.new("validation", "invalid model id " .. string.format("%q", model_id),
      { errors = { { path = "/model", message = "model id must be slash-separated names of letters, digits, '.', '_' or '-'" } } })
  end
  require("kling.catalog").ensure(self, model_id) -- a catalog model's schema, once (never fails the submit)
  local ok, normalized, text = models.validate(input, model_id)
  if not ok then return nil, normalized end
  if not self.has_token then return nil, no_token() end
  local encoded, eerr = text, nil -- (written once: a large body is not built twice)
  if not encoded then encoded, eerr = self:_encode(normalized) end
  if not encoded then return nil, eerr end
  if #encoded > core.LIMITS.body_max then
    -- observed: the service takes request bodies up to 64 MiB (data: URIs make them large)
    return nil, errors.new("validation", string.format("the request body is %d bytes, above the %d MiB the service "
      .. "takes (data: URIs of local files count whole); nothing was sent", #encoded, math.floor(core.LIMITS.body_max / 1048576)),
      { errors = { { path = "/", message = "request body above 64 MiB" } } })
  end
  sched.check_wait(self) -- before the intent: a submit that cannot be waited on is not begun
  local intent
  if self._journal then
    intent = { e = "intent", key = core.journal.random_key(), model = model_id, tag = tag,
      digest = "sha256:" .. core.journal.sha256(encoded), t = os.time() }
    local jok, jerr = self._journal:append(intent)
    if not jok then
      jerr.message = jerr.message .. "; the submit was not sent (its intent could not be recorded first)"
      return nil, jerr
    end
  end
  local body, err = self:_api(protocol.ROUTES.submit.method, assert(protocol.url(self.base_url, "submit", model_id)), nil,
    { submit = true, body_text = encoded })
  if body and not M.valid_id(body.request_id) then
    local raw = body.request_id
    local fields = { answer = body, retryable = false }
    local message
    if type(raw) == "string" or math.type(raw) then
      fields.request_id_raw = self:_escape(type(raw) == "string" and raw or self:scrub(tostring(math.tointeger(raw) or raw)))
      message = "the service accepted the submit but answered with a request_id the library will not put in a URL "
        .. "(it must match " .. protocol.ID_RULE .. "): \"" .. fields.request_id_raw .. "\"; the job may exist and be billed; "
        .. "it was not sent again"
    else
      message = "the service accepted the submit but answered without a valid request_id; the job may exist"
    end
    body, err = nil, errors.new("submit_unknown", message, fields)
  end
  if not body then
    if intent then
      local line = { intent = intent.key, model = model_id, tag = tag, digest = intent.digest, message = err.message }
      -- an answer that named a job (a request id, usable or not) is never "not sent"
      if err.kind == "submit_unknown" or err.request_id or err.request_id_raw then
        line.e, line.request_id, line.request_id_raw = "submit_unknown", err.request_id, err.request_id_raw
      else
        line.e, line.kind = "not_sent", err.kind -- refused for sure: no job exists
      end
      local jok, jerr = self:_journal_append(line)
      if not jok then
        err.journal_error = jerr
        self._warn("the outcome of a submit (" .. err.kind .. ") could not be written to the journal: "
          .. jerr.message .. "; its intent " .. intent.key .. " stays open (reported as a submit of unknown outcome)")
      end
    end
    return nil, err
  end
  local job = require("kling.job").new(self, body.request_id, model_id, body)
  if opts and opts.include_cost ~= nil then job.include_cost = opts.include_cost == true end
  job.intent = intent and intent.key or nil
  -- on disk before the caller has the job: a process killed now loses nothing
  local jok, jerr = self:_journal_append { e = "submitted", id = job.id, intent = job.intent, model = model_id,
    urls = job.urls, tag = tag, digest = intent and intent.digest or nil }
  if not jok then
    job.journal_error = jerr
    self._warn("request " .. job.id .. " was accepted (the job exists and may be billed) but the journal could not "
      .. "record its id: " .. jerr.message .. "; keep the id (its intent " .. tostring(job.intent)
      .. " stays open in the journal, reported as a submit of unknown outcome)")
  end
  return job
end

-- Appends an event to the journal, if there is one: true | nil, err (kind io).
function Client:_journal_append(event)
  if not self._journal then return true end
  return self._journal:append(event)
end

--- Job objects for every request in the journal that has not ended, and,
-- second, the submits of unknown outcome (the journal's submit_unknown lines
-- and the intents that never got an answer, oldest first: each with t, model,
-- tag, intent, digest, message; see kling.journal's state()), so a script
-- killed mid-wait picks up where it was and a submit killed in flight is
-- reported. Returns list, unknown | nil, err (kind validation without a
-- journal; kind io when the journal cannot be read: a file that does not exist
-- yet is an empty journal).
function Client:resume()
  if not self._journal then
    return nil, errors.new("validation", "this client has no journal (option journal = path)")
  end
  local jobs, unknown = self._journal:state()
  if not jobs then return nil, unknown end
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

--- Drops the jobs that have ended (and the answered intents) from the
-- journal; unreadable lines are kept as they were. Returns lines dropped,
-- unreadable lines kept | nil, err (kind io).
function Client:compact_journal()
  if not self._journal then return nil, errors.new("validation", "this client has no journal") end
  return self._journal:compact()
end

--- The model catalog (observed: RunComfy's own CLI reads it): one page of
-- its models. opts: search (a substring of the id, name or description),
-- category (e.g. "text-to-video"), limit (1 to 500; the service's default
-- 100), offset (>= 0). Raises on an option of the wrong type or range.
-- Returns list, total | nil, err: each model { model_id, display_name,
-- description, categories, price (base_price_usd, in dollars per
-- price_unit; nil when the catalog gives none), price_unit, pricing_note };
-- total, how many models match in all.
function Client:models(opts)
  return require("kling.catalog").list(self, opts)
end

--- One model of the catalog: { model_id, display_name, description,
-- categories, price, price_unit, pricing_note, input_schema, cached_at (the
-- time the schema was fetched, when it came from the disk cache) } | nil, err
-- (kind not_found for a model the catalog does not have; validation for a
-- model id that is not one; protocol for an answer without a usable schema).
-- Its input schema is compiled and used from then on to validate submits to
-- that model (as kling.register_model does), and cached on disk (option
-- cache_dir; default $XDG_CACHE_HOME/kling) for 24 h:
-- opts.refresh = true asks the catalog even when the cache is fresh. A
-- catalog that cannot be asked gives the cached schema, however old, with a
-- warning.
function Client:model(model_id, opts)
  return require("kling.catalog").model(self, model_id, opts)
end

--- submit(kling.DEFAULT_MODEL, input)
function Client:generate(input)
  return self:submit(models.DEFAULT_MODEL, input)
end

--- Attaches to an existing request. Returns job | nil, err (invalid id).
function Client:job(request_id, model_id)
  if not M.valid_id(request_id) then
    return nil, errors.new("validation", "invalid request id: must match " .. protocol.ID_RULE,
      { errors = { { path = "/request_id", message = "must match " .. protocol.ID_RULE } } })
  end
  return require("kling.job").new(self, request_id, model_id, nil)
end

--- Default low-speed rule of downloads: a try that stays under MIN_RATE
-- bytes/s for stall_timeout seconds (default: the client's timeout, 30 s)
-- ends, and the next try goes on from the .part. 1 KiB/s is far below any
-- working file host (a 5 s clip is megabytes; at 1 KiB/s it would take
-- hours) and far above a host that trickles bytes to keep a connection up;
-- 30 s rides out a congested link or a brief outage without giving up.
M.DOWNLOAD_MIN_RATE = DEFAULTS.download_min_rate

--- The bounds of the download options, in one place: client:download_url and
-- job:download raise on a value outside them (a programming error), and the
-- command line checks its flags against them before anything is sent
-- (check_download_option). A value of the right type, at the bounds included:
--   stall_timeout  seconds, > 0 and at most 10000000 (about 115 days)
--   deadline       seconds, > 0 and at most 10000000 (about 115 days)
--   min_rate       a whole number of bytes per second, from 1 to 1000000000000
--   max_bytes      bytes, from 0 (no cap) to 9000000000000000000
-- (libcurl counts the low-speed time in whole seconds: a stall_timeout under
-- 1 s is 1 s.)
local LIMITS = core.LIMITS
M.DOWNLOAD_BOUNDS = {
  stall_timeout = { what = "a number of seconds", above = 0, max = LIMITS.seconds_max, note = "about 115 days" },
  deadline = { what = "a number of seconds", above = 0, max = LIMITS.seconds_max, note = "about 115 days" },
  min_rate = { what = "a whole number of bytes per second", min = 1, max = LIMITS.rate_max, whole = true },
  max_bytes = { what = "a number of bytes", min = 0, max = LIMITS.bytes_max, note = "0: no cap" },
}

--- The rule of a download option in words, e.g. "a number of seconds > 0 and
-- at most 10000000 (about 115 days)". name: a key of DOWNLOAD_BOUNDS.
function M.download_option_rule(name)
  local b = assert(M.DOWNLOAD_BOUNDS[name], "no such download option")
  local low = b.above and ("> " .. string.format("%.0f", b.above)) or (">= " .. string.format("%.0f", b.min))
  return b.what .. " " .. low .. " and at most " .. string.format("%.0f", b.max) .. (b.note and (" (" .. b.note .. ")") or "")
end

--- Checks one download option's value against DOWNLOAD_BOUNDS: true | nil,
-- message ("must be <rule>, got <value>"). nil (not given) is fine.
function M.check_download_option(name, v)
  local b = M.DOWNLOAD_BOUNDS[name]
  if v == nil or not b then return true end
  local ok = type(v) == "number" and v == v and v <= b.max
    and (b.above == nil or v > b.above) and (b.min == nil or v >= b.min)
    and (not b.whole or v == math.floor(v))
  if ok then return true end
  local shown = type(v) == "number" and string.format("%.17g", v) or type(v)
  return nil, "must be " .. M.download_option_rule(name) .. ", got " .. shown
end

local function check_download_opts(opts, who)
  for _, k in ipairs { "stall_timeout", "deadline", "min_rate", "max_bytes" } do
    local ok, why = M.check_download_option(k, opts[k])
    if not ok then error(who .. ": opts." .. k .. " " .. why, 3) end
  end
end
M.check_download_opts = check_download_opts

--- Checks, sending nothing, that a download to path could start now: its
-- directory exists and can be written, path is not a directory, none of the
-- download's own files (path..".part", ".part.meta", ".part.meta.tmp",
-- ".part.lock") is a directory or another non-file, and no other download
-- (in this process or another) is writing path. The command line calls it
-- before it submits a paid job whose video goes to path.
-- Returns true | nil, err (kind io, err.path: the file at fault).
function M.check_download_target(path)
  if type(path) ~= "string" or path == "" then error("check_download_target: path must be a non-empty string", 2) end
  local ok, msg, bad = engine_lib.check_download_target(path)
  if ok then return true end
  return nil, errors.new("io", msg, { retryable = false, path = bad or path })
end

--- Streams url to path in C (no token is sent): to path..".part", renamed
-- to path when the whole file has arrived (and is on disk).
--
-- Resuming: a validator must guard every resume, within this call and
-- across calls: a strong ETag, or (when the file host gave no ETag at all) a
-- Last-Modified at least one second older than the answer that carried it
-- (RFC 9110 8.8.2.2: one in the future is none). Without one, each try
-- starts over from 0, and a failed download leaves no .part. With one, a
-- transfer that breaks off is tried again from where it stopped, and a .part
-- left by a failed download is gone on from by a later one (in this process
-- or another) only when its sidecar path..".part.meta" shows it is the same
-- file: the same URL (with a strong ETag the query string may differ: file
-- hosts pre-sign their URLs anew on each fetch; with only a Last-Modified the
-- whole URL must be the same), the file's length and validators; the request
-- then carries `Range` and `If-Range`, and a range answer is appended only
-- when its Content-Range starts where the .part ends, its total is the
-- file's and its ETag and Last-Modified are the recorded ones. Anything else
-- starts over from 0. A 416 whose `bytes */N` is the .part's length
-- completes the download. resume = false always starts over.
--
-- One download at a time writes a path: a second one (in this process or
-- another) fails at once with kind io, naming the path, and touches none of
-- the first's files (a lock, path..".part.lock", held while it runs and
-- removed when it ends). The bytes received are written to the .part however
-- the transfer ends (its end, an error, the client's close).
--
-- Time: a try ends when it stays under min_rate bytes/s for stall_timeout
-- seconds (then the next goes on from the .part, up to the client's
-- retries); deadline bounds the whole download, retries included.
--
-- Redirects are followed (at most 5), each target judged as the URL itself
-- would be: https never goes to plain http, and plain http only to loopback
-- (or with allow_insecure_http).
--
-- opts: on_progress(bytes, total) (total nil when unknown), max_bytes
-- (refuse a bigger file), stall_timeout (seconds, default the client's
-- timeout), min_rate (bytes/s, default 1024), deadline (seconds for the
-- whole download, default none), resume (default true).
-- Returns path, bytes | nil, err. Errors: kind "io" (err.path: the file, and
-- the system's reason; not retryable; a .part holding verified bytes is
-- kept), "timeout" (too slow after the retries, or past the deadline),
-- "protocol" (an empty body, range answers that keep not matching, over
-- max_bytes), "network", "not_found" and the other kinds of an HTTP status.
-- Nothing is left behind by a download that received nothing.
function Client:download_url(url, path, opts)
  if type(url) ~= "string" then error("client:download_url: url must be a string", 2) end
  if type(path) ~= "string" or path == "" then error("client:download_url: path must be a non-empty string", 2) end
  opts = opts or {}
  check_download_opts(opts, "client:download_url")
  local x, msg, bad_path = self._engine:request {
    url = url, download = path, max_bytes = opts.max_bytes, retry = "safe",
    resume = opts.resume ~= false,
    low_speed_time = opts.stall_timeout or math.min(self.request_timeout, M.DOWNLOAD_BOUNDS.stall_timeout.max),
    low_speed_limit = opts.min_rate or M.DOWNLOAD_MIN_RATE,
    deadline = opts.deadline,
  }
  if not x then
    if bad_path then
      return nil, errors.new("io", "download failed: " .. msg, { retryable = false, path = bad_path })
    end
    -- kling's own text about the caller's path or URL: never masked (a URL a
    -- server gave was masked where it entered)
    return nil, errors.new("network", msg, { retryable = false })
  end
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
    -- libcurl's and kling's own text about the caller's path and URL: never masked (the
    -- parts that quote the file host, a Location or a Content-Range, were masked in C)
    local message = res.error.message
    return nil, errors.new(kind, "download failed: " .. message,
      { retryable = kind ~= "protocol" and kind ~= "io", transport = res.error.kind, path = res.error.path })
  end
  if not res.path then
    local e = errors.from_answer(res.status, nil, self._scrub_text)
      or errors.new("protocol", "", { status = res.status, retryable = false })
    e.message = "download failed: the file host answered HTTP " .. res.status
    return nil, e
  end
  if on_progress and last ~= res.bytes then on_progress(res.bytes, res.bytes) end
  return path, res.bytes
end

return M
