--- kling.emulator: a local stand-in for RunComfy's Model API.
--
-- Two HTTP/1.1 listeners on one cqueues loop (one coroutine per connection):
--   the API listener   /v1/... (submit, status, result, cancel) and /__emulator/... (stats,
--                      reset, job records), imitating api/RUNCOMFY_MODEL_API.md;
--   the file listener  /v/{id}.mp4, the stand-in for the CDN that serves the outputs.
-- A job is a record with timestamps; its state is computed from the clock when asked, so
-- nothing ticks and no request costs O(number of jobs) (only the stats and job-list routes
-- go through them).
-- Requests go: connection loop -> read_request -> dispatch (routing table) -> one handler per
-- route -> write_reply, the single place where answers are written.
-- Faults (--faults, /__emulator/faults): dispatch draws one number per request of the
-- submit, status, result, cancel and download routes from a generator of its own (seeded
-- from --seed) and, when an entry of the fault table is drawn, Server:faulted shapes the
-- reply (an error, a broken body, a delay, a cut body, or a close without an answer).
--
-- Usage:
--   local emulator = require "kling.emulator"
--   local server = emulator.new{ port = 0, queue = 0.2, run = 0.3 }
--   local api_url, files_url = assert(server:listen())
--   server:loop()                  -- until server:stop()
local cqueues = require "cqueues"
local socket = require "cqueues.socket"
local cjson = require "cjson"

local json = cjson.new()
local null = cjson.null

local M = {}

local format, concat = string.format, table.concat
local floor, max, min = math.floor, math.max, math.min

local DEFAULTS = {
  host = "127.0.0.1",
  port = 8787,
  files_port = 0,
  queue = 2,
  run = 5,
  queue_position = 3,
  idle_timeout = 60,          -- seconds an idle keep-alive connection is kept
  max_body = 16 * 1024 * 1024, -- largest request body accepted
}

local DEFAULT_FAIL_MESSAGE = "Generation failed: content policy violation"
local PRICE_PER_SECOND = 0.112  -- 0.56 for the default 5 s clip
local CHUNK = 64 * 1024
local ID_PATTERN = "^[A-Za-z0-9_-]+$"
local MAX_RECORDED_PATHS = 1000
local SETTLE_STEPS = 2         -- loop steps an accept that would raise the peak waits (see accept_loop)

local REASONS = {
  [100] = "Continue", [200] = "OK", [206] = "Partial Content", [400] = "Bad Request",
  [401] = "Unauthorized", [402] = "Payment Required", [403] = "Forbidden",
  [404] = "Not Found", [405] = "Method Not Allowed", [408] = "Request Timeout",
  [301] = "Moved Permanently", [302] = "Found", [303] = "See Other",
  [307] = "Temporary Redirect", [308] = "Permanent Redirect", [411] = "Length Required", [413] = "Content Too Large", [416] = "Range Not Satisfiable",
  [422] = "Unprocessable Entity", [429] = "Too Many Requests",
  [431] = "Request Header Fields Too Large", [500] = "Internal Server Error",
  [501] = "Not Implemented", [502] = "Bad Gateway", [503] = "Service Unavailable",
  [504] = "Gateway Timeout",
}

-- ---------------------------------------------------------------------------------------
-- JSON helpers
-- ---------------------------------------------------------------------------------------

-- Debian's lua-cjson 2.1.0 has neither empty_array nor a way to leave "/" unescaped: an
-- empty array is written as a marker string and replaced after encoding, and "\/" (which
-- cjson writes for every "/", and only for "/") goes back to "/".
local EMPTY_ARRAY = "\0[]"
local EMPTY_ARRAY_ENCODED = json.encode(EMPTY_ARRAY)

local function encode(value)
  local text = json.encode(value)
  if text:find(EMPTY_ARRAY_ENCODED, 1, true) then
    text = text:gsub(EMPTY_ARRAY_ENCODED:gsub("%p", "%%%0"), "[]")
  end
  return (text:gsub("\\/", "/"))
end
M.encode_json = encode

local function array(t)
  if #t == 0 then return EMPTY_ARRAY end
  return t
end

-- ---------------------------------------------------------------------------------------
-- The byte pattern served for N-byte videos: byte i = (i * 31 + 7) % 251
-- ---------------------------------------------------------------------------------------

local PERIOD = 251
local pattern_block
do
  local cycle = {}
  for i = 0, PERIOD - 1 do cycle[i + 1] = string.char((i * 31 + 7) % PERIOD) end
  cycle = concat(cycle)
  -- long enough that any CHUNK-sized window starting inside the first period fits
  pattern_block = cycle:rep((CHUNK + PERIOD) // PERIOD + 1)
end

local function pattern_chunk(offset, n)
  local start = offset % PERIOD
  return pattern_block:sub(start + 1, start + n)
end

--- The pattern bytes [offset, offset + n) as a string.
-- @param offset integer >= 0
-- @param n integer >= 0
-- @return string of n bytes
function M.pattern_bytes(offset, n)
  local parts = {}
  while n > 0 do
    local take = min(n, CHUNK)
    parts[#parts + 1] = pattern_chunk(offset, take)
    offset, n = offset + take, n - take
  end
  return concat(parts)
end

local sample_video -- loaded on first use
local function video()
  sample_video = sample_video or require "kling.emulator_video"
  return sample_video
end

--- The bytes of the sample MP4 every job serves by default.
function M.sample_video()
  return video()
end

-- ---------------------------------------------------------------------------------------
-- Deterministic random numbers (splitmix64 on Lua 5.4 integers)
-- ---------------------------------------------------------------------------------------

local function new_rng(seed)
  local state = seed
  return function()
    state = state + 0x9E3779B97F4A7C15
    local z = state
    z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ~ (z >> 27)) * 0x94D049BB133111EB
    return z ~ (z >> 31)
  end
end

local function default_seed()
  local addr = tonumber(tostring({}):match("0x(%x+)") or "0", 16) or 0
  return os.time() ~ (addr << 16) ~ floor(os.clock() * 1e6)
end

-- A clock time rounded to the microsecond (the precision the job list is written with).
local function micro(t)
  return floor(t * 1e6 + 0.5) / 1e6
end

-- A uniform float in [0, 1) from 53 bits of the generator.
local function unit(random)
  return (random() >> 11) * 2.0 ^ -53
end

-- ---------------------------------------------------------------------------------------
-- Times: a number of seconds or a range LO:HI
-- ---------------------------------------------------------------------------------------

local function finite_seconds(n)
  return n and n >= 0 and n < math.huge and n or nil
end

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
  lo, hi = finite_seconds(lo), finite_seconds(hi)
  if not lo or not hi or lo > hi then return nil end
  return lo, hi
end

-- ---------------------------------------------------------------------------------------
-- Faults: ROUTE:FAULT:RATE[:ARG], drawn per request from a generator of their own
-- ---------------------------------------------------------------------------------------

local API_KINDS = { submit = true, status = true, result = true, cancel = true }
local ALL_KINDS = { submit = true, status = true, result = true, cancel = true, download = true }
M.FAULT_ROUTES = { "submit", "status", "result", "cancel", "download", "all" }

-- name -> routes it applies to, what ARG is ("integer" or "seconds" >= 0, nil: none
-- allowed), its default, and whether the request is acted on before the fault
local FAULTS = {
  ["429"] = { routes = ALL_KINDS, arg = "integer", default = 1 },
  ["429date"] = { routes = ALL_KINDS, arg = "integer", default = 1 },
  ["500"] = { routes = ALL_KINDS, arg = "integer" },
  ["502"] = { routes = ALL_KINDS, arg = "integer" },
  ["503"] = { routes = ALL_KINDS, arg = "integer" },
  ["504"] = { routes = ALL_KINDS, arg = "integer" },
  reset = { routes = ALL_KINDS },
  drop_after_create = { routes = { submit = true }, acts = true },
  slow = { routes = ALL_KINDS, arg = "seconds", default = 5, acts = true },
  truncated_json = { routes = API_KINDS, acts = true },
  malformed_json = { routes = API_KINDS, acts = true },
  error200 = { routes = API_KINDS },
  cut = { routes = { download = true }, acts = true },
  -- the file host's range answers gone wrong (only a GET with a satisfiable Range)
  range_start = { routes = { download = true }, acts = true },
  range_total = { routes = { download = true }, acts = true },
  range_none = { routes = { download = true }, acts = true },
  range_ignore = { routes = { download = true }, acts = true },
  -- a body sent at ARG bytes a second; a 200 with no body
  trickle = { routes = { download = true }, arg = "rate", default = 2, acts = true },
  empty = { routes = { download = true }, acts = true },
}
M.FAULTS = {}
for name in pairs(FAULTS) do M.FAULTS[#M.FAULTS + 1] = name end
table.sort(M.FAULTS)

local function number_text(n)
  if n == floor(n) and math.abs(n) < 2 ^ 53 then return format("%d", n) end
  return format("%.14g", n)
end

local function fault_entry(route, fault, rate, arg)
  local function text(v) return math.type(v) and number_text(v) or tostring(v) end
  local where = format("%s:%s:%s", text(route), text(fault), text(rate))
  if arg ~= nil then where = where .. ":" .. text(arg) end
  -- a JSON entry may give the fault as a number (503, or 503.0 from cjson)
  if math.type(fault) and fault == floor(fault) then fault = number_text(fault) end
  if type(route) ~= "string" or not ALL_KINDS[route] and route ~= "all" then
    return nil, where .. ": unknown route (submit, status, result, cancel, download or all)"
  end
  local kind = type(fault) == "string" and FAULTS[fault]
  if not kind then return nil, where .. ": unknown fault" end
  if route ~= "all" and not kind.routes[route] then
    return nil, where .. ": " .. fault .. " does not apply to " .. route
  end
  rate = tonumber(rate)
  if not rate or rate ~= rate or rate < 0 or rate > 1 then return nil, where .. ": the rate must be a number from 0 to 1" end
  if arg ~= nil then
    local n = tonumber(arg)
    if not kind.arg then return nil, where .. ": " .. fault .. " takes no argument" end
    local whole = kind.arg == "integer" or kind.arg == "rate"
    if not finite_seconds(n) or (whole and n ~= floor(n)) or (kind.arg == "rate" and n < 1) then
      return nil, format("%s: bad argument %s (%s)", where, tostring(arg),
        kind.arg == "integer" and "whole seconds >= 0" or kind.arg == "rate" and "whole bytes per second >= 1"
        or "seconds >= 0")
    end
    arg = whole and floor(n) or n
  end
  local spec = format("%s:%s:%s", route, fault, number_text(rate))
  if arg then spec = spec .. ":" .. number_text(arg) end
  return { route = route, fault = fault, rate = rate, arg = arg, spec = spec }
end

--- Read one fault: "ROUTE:FAULT:RATE[:ARG]" (e.g. "status:503:0.2", "all:429:0.2:2") or
-- { route =, fault =, rate =, arg = }.
-- @return { route, fault, rate, arg (nil when not given), spec (the canonical text) } | nil, err
function M.parse_fault(value)
  if type(value) == "table" then
    return fault_entry(value.route, value.fault, value.rate, value.arg)
  end
  if type(value) ~= "string" then return nil, "a fault is a string ROUTE:FAULT:RATE[:ARG] or an object" end
  local parts = {}
  for part in (value .. ":"):gmatch("([^:]*):") do parts[#parts + 1] = part end
  if #parts < 3 or #parts > 4 then return nil, value .. ": expected ROUTE:FAULT:RATE[:ARG]" end
  local rate = tonumber(parts[3])
  if not rate then return nil, value .. ": the rate must be a number from 0 to 1" end
  local arg = parts[4]
  if arg and not tonumber(arg) then return nil, value .. ": bad argument " .. arg end
  return fault_entry(parts[1], parts[2], rate, arg and tonumber(arg))
end

--- Read a fault table: nil, a string of comma-separated faults, or a list of strings or
-- entries. @return list of entries (see parse_fault) | nil, err
function M.parse_faults(value)
  local items = {}
  if type(value) == "string" then
    for item in value:gmatch("[^,%s]+") do items[#items + 1] = item end
  elseif type(value) == "table" then
    for _, item in ipairs(value) do
      if type(item) == "string" then
        for piece in item:gmatch("[^,%s]+") do items[#items + 1] = piece end
      else
        items[#items + 1] = item
      end
    end
  elseif value ~= nil then
    return nil, "faults: expected a string or a list"
  end
  local list = {}
  for i, item in ipairs(items) do
    local entry, err = M.parse_fault(item)
    if not entry then return nil, err end
    list[i] = entry
  end
  return list
end

-- SO_LINGER 0 on a cqueues socket before it is closed, so that the close sends a TCP RST.
-- cqueues has no such option; luasocket's setoption does it on any descriptor lent to a
-- (closed) luasocket object with setfd. Without luasocket the socket is simply closed.
local linger_holder
do
  local ok, luasocket = pcall(require, "socket")
  if ok and type(luasocket) == "table" and luasocket.tcp then
    local ok2, holder = pcall(luasocket.tcp)
    if ok2 and holder and holder.setfd and holder.setoption then
      holder:close()            -- its own descriptor goes; it now holds none (-1)
      linger_holder = holder
    end
  end
end
M.RESET_METHOD = linger_holder and "rst" or "close"

local function set_linger_zero(con)
  if not linger_holder then return false end
  local fd = con:pollfd()
  if type(fd) ~= "number" or fd < 0 then return false end
  linger_holder:setfd(fd)
  local ok = linger_holder:setoption("linger", { on = true, timeout = 0 })
  linger_holder:setfd(-1)       -- never let luasocket close the descriptor
  return ok == 1 or ok == true
end

-- "Sun, 06 Nov 1994 08:49:37 GMT" (not os.date's %a/%b, which follow the locale)
local DAYS = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" }
local MONTHS = { "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" }
local function http_date(t)
  local d = os.date("!*t", floor(t))
  return format("%s, %02d %s %04d %02d:%02d:%02d GMT", DAYS[d.wday], d.day, MONTHS[d.month], d.year,
    d.hour, d.min, d.sec)
end
M.http_date = http_date

-- ---------------------------------------------------------------------------------------
-- The server object
-- ---------------------------------------------------------------------------------------

local Server = {}
Server.__index = Server

local function new_counters()
  return {
    requests = { submit = 0, status = 0, result = 0, cancel = 0, download = 0, stats = 0, other = 0 },
    requests_total = 0,
    jobs_created = 0,
    submits_answered = 0,
    auth_failures = 0,
    files = { requests = 0, bytes_sent = 0, authorization_headers = 0, authorization_paths = {} },
    -- injected = { [route] = { [fault] = n } }; submit_attempts: submits that reached the
    -- fault draw (authenticated POSTs on the submit route); jobs_created_by_attempt: jobs
    -- those submits created (drop_after_create's included)
    faults = { injected = {}, submit_attempts = 0, jobs_created_by_attempt = 0 },
  }
end

local function new_listener(name, routes)
  return { name = name, routes = routes, current = 0, peak = 0, total = 0, conns = {} }
end

-- The faults' generator is seeded with seed ~ FAULT_SEED_MIX (a stream of its own).
local FAULT_SEED_MIX = 0x2545F4914F6CDD1D

-- The load preset (--load): jobs finish 1 to 5 s after their submit, no request log.
local LOAD_PRESET = { queue = "0:1", run = "1:4" }

-- A sub-second wall clock: luasocket's when it is installed, else os.time (whole seconds).
local wall_clock
do
  local ok, luasocket = pcall(require, "socket")
  wall_clock = ok and type(luasocket) == "table" and luasocket.gettime or os.time
end

--- Create a server (not yet listening).
-- @param opts table, every field optional: host, port, files_port, token, queue, run
--   (seconds, "LO:HI" or { LO, HI }), queue_position, video_bytes, seed, quiet, load (the
--   load preset), log (function(line)), clock (function returning seconds, default
--   cqueues.monotime), idle_timeout, max_body, faults (a list of "ROUTE:FAULT:RATE[:ARG]"
--   strings or entries, or one comma-separated string; see parse_faults).
-- @return server
function M.new(opts)
  opts = opts or {}
  local self = setmetatable({}, Server)
  for k, v in pairs(DEFAULTS) do self[k] = v end
  if opts.load then
    for k, v in pairs(LOAD_PRESET) do self[k] = v end
    self.quiet = true
  end
  for k, v in pairs(opts) do self[k] = v end
  if opts.load then self.quiet = true end
  self.queue_lo, self.queue_hi = M.parse_timing(self.queue)
  self.run_lo, self.run_hi = M.parse_timing(self.run)
  if not self.queue_lo then error("kling.emulator: bad queue time: " .. tostring(self.queue), 2) end
  if not self.run_lo then error("kling.emulator: bad run time: " .. tostring(self.run), 2) end
  self.clock = opts.clock or cqueues.monotime
  self.clock_name = opts.clock and "custom" or "monotonic"
  local seed = opts.seed and floor(tonumber(opts.seed)) or default_seed()
  self.random = new_rng(seed)
  -- the job times come from their own generator, so the ids of a seed do not depend on them
  self.timing_random = new_rng(seed ~ 0x5BD1E9955BD1E995)
  -- and the fault decisions from a third one, so that faults change neither ids nor times
  self.fault_random = new_rng(seed ~ FAULT_SEED_MIX)
  local fault_table, ferr = M.parse_faults(opts.faults)
  if not fault_table then error("kling.emulator: bad faults: " .. ferr, 2) end
  self.fault_table = fault_table
  self.jobs = {}
  self.job_list = {}  -- the jobs in creation order
  self.counters = new_counters()
  self.api = new_listener("api", M.API_ROUTES)
  self.files = new_listener("files", M.FILE_ROUTES)
  self.cq = cqueues.new()
  -- wall-clock anchor: wall(t) = wall0 + (t - clock0) (whole seconds for the ISO timestamps)
  self.clock0, self.wall0 = self.clock(), wall_clock()
  if not self.log then
    if self.quiet then
      self.log = function() end
    else
      self.log = function(line) io.stderr:write(line, "\n") end
    end
  end
  return self
end

--- A uuid-shaped lowercase id (36 chars) from the seeded generator.
function Server:new_id()
  local a, b = self.random(), self.random()
  a = (a & ~0xF000) | 0x4000                       -- version 4
  b = (b & 0x3FFFFFFFFFFFFFFF) | math.mininteger    -- variant 10xx
  local h = format("%016x%016x", a, b)
  return format("%s-%s-%s-%s-%s", h:sub(1, 8), h:sub(9, 12), h:sub(13, 16), h:sub(17, 20), h:sub(21, 32))
end

function Server:iso(t)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", floor(self.wall0 + (t - self.clock0)))
end

--- The wall-clock time (Unix seconds, float) of clock time t (default now).
function Server:wall(t)
  return self.wall0 + ((t or self.clock()) - self.clock0)
end

local function url_host(host)
  if host == "0.0.0.0" or host == "*" then return "127.0.0.1" end
  if host == "::" then return "[::1]" end
  if host:find(":", 1, true) then return "[" .. host .. "]" end
  return host
end

local function bind(host, port)
  local sock = socket.listen{ host = host, port = port, reuseaddr = true }
  sock:onerror(function(_, _, why) return why end)
  local ok, err = sock:listen()
  if not ok then
    sock:close()
    return nil, format("cannot listen on %s port %s: %s", host, tostring(port), require("cqueues.errno").strerror(err))
  end
  local _, _, bound = sock:localname()
  return sock, bound
end

--- Bind both listeners.
-- @return api_url (with /v1), files_url | nil, err
function Server:listen()
  local api_sock, api_port = bind(self.host, tonumber(self.port))
  if not api_sock then return nil, api_port end
  local files_sock, files_port = bind(self.host, tonumber(self.files_port))
  if not files_sock then
    api_sock:close()
    return nil, files_port
  end
  self.api.sock, self.files.sock = api_sock, files_sock
  local host = url_host(self.host)
  self.api_root = format("http://%s:%d", host, api_port)
  self.api_url = self.api_root .. "/v1"
  self.files_url = format("http://%s:%d", host, files_port)
  self.stats_url = self.api_root .. "/__emulator/stats"
  self.cq:wrap(self.accept_loop, self, self.api)
  self.cq:wrap(self.accept_loop, self, self.files)
  return self.api_url, self.files_url
end

--- Run until stop() is called (from a coroutine of the loop, e.g. a signal listener).
-- @return true
function Server:loop()
  while not self.stopped do
    local ok, err = self.cq:step()
    if not ok then self.log("emulator: " .. tostring(err)) end
  end
  return true
end

--- Run the loop once, waiting at most timeout seconds (for embedding in another loop).
function Server:step(timeout)
  return self.cq:step(timeout)
end

--- Stop: close the listeners and every open connection; loop() returns.
function Server:stop()
  if self.stopped then return end
  self.stopped = true
  for _, listener in ipairs{ self.api, self.files } do
    if listener.sock then listener.sock:close() end
    for con in pairs(listener.conns) do con:close() end
    listener.conns = {}
  end
end

-- ---------------------------------------------------------------------------------------
-- Jobs: directives, lifecycle, bodies
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

-- This job's time: from its directive (seconds or LO:HI) if valid, else the server's;
-- u is drawn for every job, so the nth job's times depend only on the seed and n.
local function job_time(directive, lo, hi, u)
  local dlo, dhi = M.parse_timing(type(directive) == "string" and directive or nil)
  if dlo then lo, hi = dlo, dhi end
  if lo == hi then return lo end
  return micro(lo + (hi - lo) * u)
end

-- @emu:validators=...: which validators the file host sends with the job's file
local VALIDATOR_SETS = { both = true, etag = true, lastmod = true, weak = true, none = true }
local REDIRECT_CODES = { [301] = true, [302] = true, [303] = true, [307] = true, [308] = true }
local MAX_FILE_REQUESTS = 100   -- requests of a job's file kept in its record

local function job_duration(input)
  local d = tonumber(input.duration)
  if d and d > 0 and d < 1e6 then return d end
  return 5
end

function Server:create_job(model_id, body, input, directives, headers)
  local id = self:new_id()
  while self.jobs[id] do id = self:new_id() end
  local fail = directives.fail
  if fail == true then
    fail = DEFAULT_FAIL_MESSAGE
  elseif fail then
    fail = fail:gsub("_", " ")
  end
  local bytes = tonumber(directives.bytes) or tonumber(self.video_bytes)
  if bytes then bytes = max(0, floor(bytes)) end
  local shift = tonumber(directives.pattern)
  shift = shift and shift >= 0 and shift < 2 ^ 31 and floor(shift) or 0
  if directives.pattern and not bytes then bytes = #video() end
  local redirect = tonumber(directives.redirect)
  redirect = redirect and redirect >= 0 and redirect <= 50 and floor(redirect) or nil
  local redirect_to = type(directives.redirect_to) == "string" and directives.redirect_to ~= "" and directives.redirect_to or nil
  if redirect_to and not redirect then redirect = 1 end
  local redirect_code = tonumber(directives.redirect_code)
  if not (redirect_code and REDIRECT_CODES[redirect_code]) then redirect_code = 302 end
  local validators = type(directives.validators) == "string" and VALIDATOR_SETS[directives.validators] and directives.validators or "both"
  local rand = self.timing_random
  local uq, ur = unit(rand), unit(rand)
  local created = micro(self.clock())
  local queue = job_time(directives.queue, self.queue_lo, self.queue_hi, uq)
  local run = job_time(directives.run, self.run_lo, self.run_hi, ur)
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
    position = max(0, floor(tonumber(self.queue_position) or 0)),
    fail = fail,
    status_word = type(directives.status) == "string" and directives.status ~= "" and directives.status or nil,
    alt = directives.spell == "alt",
    nourls = directives.nourls and true or false,
    bytes = bytes,
    shift = shift,
    version = 0,
    validators = validators,
    ifrange_ignore = directives.ifrange == "ignore",
    redirect = redirect ~= 0 and redirect or nil,
    redirect_to = redirect_to,
    redirect_code = redirect_code,
    signed = directives.signed and true or false,
    signatures = 0,
    file_requests = {},
    duration = job_duration(input),
    instance_id = format("emu-%08x", self.random() & 0xFFFFFFFF),
    polls = { status = 0, result = 0, cancel = 0 },
    error_answers = { status = 0, result = 0, cancel = 0 }, -- answers of @emu:error_ROUTE
  }
  self.jobs[id] = job
  self.job_list[#self.job_list + 1] = job
  self.counters.jobs_created = self.counters.jobs_created + 1
  return job
end

--- The internal state of a job at time now, and its queue position while queued.
-- States: in_queue, in_progress, completed, failed, cancelled, custom (an @emu:status word).
local function job_state(job, now)
  if job.cancelled_at then return "cancelled" end
  local t = now - job.created
  if t < job.queue then
    local left = job.queue > 0 and (job.queue - t) / job.queue or 0
    return "in_queue", floor(job.position * left + 0.5)
  end
  if job.status_word then return "custom" end
  if now < job.ends then return "in_progress" end
  return job.fail and "failed" or "completed"
end
M.job_state = job_state

local FINAL = { completed = true, failed = true, cancelled = true }

-- The clock time the job reached its final state, or nil while it has not.
local function finished_clock(job, state)
  if state == "cancelled" then return job.cancelled_at end
  if state == "completed" or state == "failed" then return job.ends end
  return nil
end

local function wire_status(job, state)
  if state == "custom" then return job.status_word end
  if job.alt then
    if state == "completed" then return "succeeded" end
    if state == "cancelled" then return "canceled" end
  end
  return state
end

function Server:job_urls(job)
  local base = self.api_url .. "/requests/" .. job.id
  return base .. "/status", base .. "/result", base .. "/cancel"
end

-- The video URL a result answer gives: through N redirect hops with @emu:redirect=N, and
-- pre-signed (a query string that changes on every answer) with @emu:signed.
function Server:video_url(job)
  local url = self.files_url .. "/v/" .. job.id .. ".mp4"
  if job.redirect then url = format("%s/r/%d/%s.mp4", self.files_url, job.redirect, job.id) end
  if job.signed then
    job.signatures = job.signatures + 1
    url = format("%s?X-Expires=3600&X-Signature=%08x", url, (job.signatures * 2654435761) & 0xFFFFFFFF)
  end
  return url
end

function Server:status_body(job, state, position)
  local status_url, result_url = self:job_urls(job)
  local body = {
    request_id = job.id,
    status = wire_status(job, state),
    status_url = status_url,
    result_url = result_url,
  }
  if state == "in_queue" then body.queue_position = position end
  if state == "in_progress" then body.instance_id = job.instance_id end
  return body
end

local function cost_of(job)
  return floor(PRICE_PER_SECOND * job.duration * 100 + 0.5) / 100
end

-- ---------------------------------------------------------------------------------------
-- Replies
-- ---------------------------------------------------------------------------------------

local function json_reply(status, value, headers)
  return { status = status, body = encode(value), type = "application/json", headers = headers }
end

local function error_reply(status, code, message, extra)
  local body = { error_code = code, error_message = message }
  for k, v in pairs(extra or {}) do body[k] = v end
  return json_reply(status, body)
end

local function not_found(message)
  return error_reply(404, 404001, message or "Not found")
end

-- ---------------------------------------------------------------------------------------
-- Route handlers: handler(self, req, capture) -> reply
-- ---------------------------------------------------------------------------------------

local handlers = {}
M.handlers = handlers

local function validation_error(loc, msg, kind)
  return json_reply(422, {
    error_message = "Input validation failed: " .. loc[#loc] .. ": " .. msg,
    detail = { { loc = loc, msg = msg, type = kind } },
  })
end

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
  local directives = M.parse_directives(prompt)
  local code = tonumber(directives.error200)
  if code then
    local messages = { [400002] = "Insufficient balance", [400004] = "User account error" }
    return json_reply(200, { error_code = floor(code), error_message = messages[code] or "Error" })
  end
  local headers = {}
  for name, value in pairs(req.headers) do
    if name ~= "authorization" then headers[name] = value end
  end
  local job = self:create_job(model_id, body, input, directives, headers)
  req.job = job
  local fault_counts = self.counters.faults
  fault_counts.jobs_created_by_attempt = fault_counts.jobs_created_by_attempt + 1
  local answer_id = M.ODD_IDS[directives.request_id] or job.id -- @emu:request_id=KIND: an id a client must refuse
  if job.nourls then
    return json_reply(200, { request_id = answer_id })
  end
  local status_url, result_url, cancel_url = self:job_urls(job)
  return json_reply(200, {
    request_id = answer_id, status_url = status_url, result_url = result_url, cancel_url = cancel_url,
  })
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
local ODD_MARK = "\0emu-odd-output\0"
local ODD_MARK_JSON = json.encode(ODD_MARK)

-- @emu:error_status=CODE[@HTTP][*N] (and error_result, error_cancel): the job's first N
-- requests (default 1) on that route answer HTTP HTTP (default 200) with
-- {"error_code":CODE,"error_message":"Injected error CODE"}, without acting. CODE is
-- written as a JSON number when it reads as one (500001, 1.5), null for "null", else as
-- a JSON string ("12abc").
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
    code_json = encode(code)
  end
  return { code = code, json = code_json, http = http, n = n }
end

local function directed_error(job, route)
  local spec = M.parse_error_directive(job.directives["error_" .. route])
  if not spec or job.error_answers[route] >= spec.n then return nil end
  job.error_answers[route] = job.error_answers[route] + 1
  local body = format('{"error_code":%s,"error_message":%s}', spec.json, encode("Injected error " .. spec.code))
  return { status = spec.http, body = body, type = "application/json" }
end

-- @emu:extra_code=VALUE: the job's status and result answers (successes) also carry
-- "error_code": VALUE, written as for @emu:error_status (1.5, 12abc, null...).
local function with_extra_code(job, reply)
  local spec = M.parse_error_directive(job.directives.extra_code)
  if not spec or reply.body:sub(1, 1) ~= "{" then return reply end
  return { status = reply.status, type = reply.type, headers = reply.headers,
    body = '{"error_code":' .. spec.json .. (reply.body == "{}" and "}" or ("," .. reply.body:sub(2))) }
end

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
  return job.status_reply
end

function handlers.result(self, req, id)
  local job = self.jobs[id]
  if not job then return not_found("Request not found") end
  local directed = directed_error(job, "result")
  if directed then return directed end
  job.polls.result = job.polls.result + 1
  local now = self.clock()
  local state, position = job_state(job, now)
  if FINAL[state] then
    job.noticed_at = job.noticed_at or micro(now)
    job.result_at = job.result_at or micro(now)
  end
  local body
  if state == "completed" or state == "failed" then
    body = {
      request_id = job.id,
      status = wire_status(job, state),
      created_at = self:iso(job.created),
      finished_at = self:iso(job.ends),
    }
    if state == "completed" then
      body.output = { video = self:video_url(job) }
      if M.ODD_OUTPUTS[job.directives.output] then body.output.extra = ODD_MARK end
    else
      body.error = { error_code = 500001, error_message = job.fail }
    end
  elseif state == "cancelled" then
    body = { request_id = job.id, status = wire_status(job, state), created_at = self:iso(job.created) }
  else
    body = self:status_body(job, state, position)
  end
  if req.query.include_cost == "true" or req.query.include_cost == "1" then
    if state == "completed" then
      body.cost = cost_of(job)
    elseif state == "failed" or state == "cancelled" then
      body.cost = 0
    end
  end
  local reply = with_extra_code(job, json_reply(200, body))
  if body.output and body.output.extra == ODD_MARK then
    local at = reply.body:find(ODD_MARK_JSON, 1, true)
    reply.body = reply.body:sub(1, at - 1) .. M.ODD_OUTPUTS[job.directives.output] .. reply.body:sub(at + #ODD_MARK_JSON)
  end
  return reply
end

function handlers.cancel(self, _, id)
  local job = self.jobs[id]
  if not job then return not_found("Request not found") end
  local directed = directed_error(job, "cancel")
  if directed then return directed end
  job.polls.cancel = job.polls.cancel + 1
  local now = self.clock()
  local state = job_state(job, now)
  if state == "in_queue" then
    job.cancelled_at = micro(now)
    state = "cancelled"
  end
  return json_reply(200, {
    request_id = job.id,
    status = wire_status(job, state),
    outcome = state == "cancelled" and "cancelled" or "not_cancellable",
  })
end

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

function handlers.stats(self)
  local c = self.counters
  local jobs = { in_queue = 0, in_progress = 0, completed = 0, failed = 0, cancelled = 0, custom = 0 }
  local now = self.clock()
  local status_polls = { n = 0, sum = 0 }
  local result_fetches = { n = 0, sum = 0 }
  for _, job in ipairs(self.job_list) do
    local state = job_state(job, now)
    jobs[state] = jobs[state] + 1
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
    jobs = jobs,
    requests_by_job = {
      jobs = #self.job_list,
      status_polls = summary(status_polls),
      result_fetches = summary(result_fetches),
    },
    faults = c.faults,
  })
end

function handlers.reset(self)
  self.counters = new_counters()
  for _, listener in ipairs{ self.api, self.files } do
    listener.total = 0
    listener.peak = listener.current
  end
  return json_reply(200, { reset = true })
end

function handlers.job_record(self, _, id)
  local job = self.jobs[id]
  if not job then return not_found("Request not found") end
  local now = self.clock()
  local state = job_state(job, now)
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
    video_bytes = job.bytes or #video(),
    file_version = job.version,
    file_etag = self:file_validators(job),
    file_last_modified = select(2, self:file_validators(job)),
    file_requests = array(job.file_requests),
    duration = job.duration,
    cancelled = job.cancelled_at ~= nil,
    created_at_clock = job.created,
    ends_at = job.ends,
    finished_at_clock = finished_clock(job, state) or null,
    cancelled_at_clock = job.cancelled_at or null,
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

-- GET /__emulator/jobs: every job's timing and request counts, in creation order, built
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

-- GET /__emulator/clock: the clock of every *_clock field and ends_at (cqueues.monotime,
-- i.e. CLOCK_MONOTONIC, shared by every process of the machine) and the wall clock.
function handlers.clock(self)
  local now = self.clock()
  return {
    status = 200, type = "application/json",
    body = format('{"now":%.6f,"clock":"%s","wall":%.6f}', now, self.clock_name, self:wall(now)),
  }
end

-- The byte source of a job's video: { size = n, read = function(offset, n) -> string }.
-- Pattern bytes start at the job's shift (@emu:pattern=K), moved on by 7 for each change of
-- the file (POST /__emulator/jobs/{id}/change), so that every version differs at every byte.
local function video_source(job)
  if job.bytes then
    local shift = job.shift + 7 * job.version
    if shift == 0 then return { size = job.bytes, read = pattern_chunk } end
    return { size = job.bytes, read = function(offset, n) return pattern_chunk(offset + shift, n) end }
  end
  local data = video()
  return { size = #data, read = function(offset, n) return data:sub(offset + 1, offset + n) end }
end

--- The ETag and Last-Modified the file host gives for a job's file now (nil when
-- @emu:validators leaves one out; a weak ETag with validators=weak). Both change when the
-- file changes.
function Server:file_validators(job)
  local size = job.bytes or #video()
  local which = job.validators
  local etag, lastmod
  if which == "both" or which == "etag" or which == "weak" then
    etag = format('"%s-%d-%d"', job.id:sub(1, 8), job.version, size)
    if which == "weak" then etag = "W/" .. etag end
  end
  if which == "both" or which == "lastmod" then
    lastmod = http_date(floor(self:wall(job.ends)) + job.version)
  end
  return etag, lastmod
end

-- Parse a single-range Range header against size.
-- @return first, last (inclusive) | false (unsatisfiable) | nil (absent or ignored)
local function parse_range(header, size)
  if not header then return nil end
  local spec = header:match("^%s*bytes%s*=%s*(.-)%s*$")
  if not spec or spec:find(",", 1, true) then return nil end
  local a, b = spec:match("^(%d*)%-(%d*)$")
  if not a or (a == "" and b == "") then return nil end
  if a == "" then
    local n = tonumber(b)
    if n == 0 or size == 0 then return false end
    return max(0, size - n), size - 1
  end
  local first = tonumber(a)
  local last = b ~= "" and tonumber(b) or nil
  if last and last < first then return nil end
  if first >= size then return false end
  return first, min(last or size - 1, size - 1)
end

-- Does an If-Range value still name the file? A strong ETag compared whole, or the exact
-- Last-Modified date (RFC 9110 13.1.5: a weak ETag never matches).
local function if_range_holds(value, etag, lastmod)
  if not value then return true end
  value = value:match("^%s*(.-)%s*$")
  if value:sub(1, 1) == '"' then return etag ~= nil and etag:sub(1, 1) == '"' and value == etag end
  if value:sub(1, 2) == "W/" then return false end
  return lastmod ~= nil and value == lastmod
end

-- Notes a request of a job's file in its record (the last MAX_FILE_REQUESTS).
local function note_file_request(job, req)
  local list = job.file_requests
  if #list >= MAX_FILE_REQUESTS then table.remove(list, 1) end
  local entry = { method = req.method, path = req.path, range = req.headers.range or null,
    if_range = req.headers["if-range"] or null, status = null, fault = null }
  list[#list + 1] = entry
  return entry
end

function handlers.download(self, req, id)
  local job = id:match(ID_PATTERN) and self.jobs[id]
  if not job or job_state(job, self.clock()) ~= "completed" then
    return not_found("File not found")
  end
  local record = note_file_request(job, req)
  local source = video_source(job)
  local size = source.size
  local etag, lastmod = self:file_validators(job)
  local headers = { { "Accept-Ranges", "bytes" } }
  if etag then headers[#headers + 1] = { "ETag", etag } end
  if lastmod then headers[#headers + 1] = { "Last-Modified", lastmod } end
  local first, last = parse_range(req.headers.range, size)
  -- If-Range that no longer holds: the Range is ignored and the whole file comes (200)
  if first ~= nil and not job.ifrange_ignore and not if_range_holds(req.headers["if-range"], etag, lastmod) then
    first, last = nil, nil
  end
  if first == false then
    headers[#headers + 1] = { "Content-Range", format("bytes */%d", size) }
    record.status = 416
    return { status = 416, body = "", type = "video/mp4", headers = headers, record = record }
  end
  local status, range = 200, nil
  if first then
    status = 206
    range = { first = first, last = last, size = size }
    headers[#headers + 1] = { "Content-Range", format("bytes %d-%d/%d", first, last, size) }
  else
    first, last = 0, size - 1
  end
  record.status = status
  return {
    status = status, type = "video/mp4", headers = headers, range = range, record = record,
    source = source, offset = first, length = last - first + 1,
  }
end

-- /r/N/{id}.mp4 (@emu:redirect=N): a redirect to /r/N-1/..., then to /v/{id}.mp4 (or to
-- @emu:redirect_to's URL), alternating between 127.0.0.1 and localhost when bound to
-- 127.0.0.1, so every hop goes to another loopback URL.
function handlers.redirect(self, req, capture)
  local n, id = capture:match("^(%d+)/([^/]*)$")
  local job = id and id:match(ID_PATTERN) and self.jobs[id]
  if not job or job_state(job, self.clock()) ~= "completed" then
    return not_found("File not found")
  end
  local record = note_file_request(job, req)
  n = tonumber(n)
  local base = self.files_url
  if self.host == "127.0.0.1" and n % 2 == 1 then base = base:gsub("^http://127%.0%.0%.1:", "http://localhost:") end
  local target
  if n <= 1 then
    target = job.redirect_to or (base .. "/v/" .. id .. ".mp4")
  else
    target = format("%s/r/%d/%s.mp4", base, n - 1, id)
  end
  local query = req.target:match("%?(.*)$")
  if query and not job.redirect_to then target = target .. "?" .. query end
  record.status = job.redirect_code
  return { status = job.redirect_code, body = "", type = "text/plain", headers = { { "Location", target } }, record = record }
end

-- POST /__emulator/jobs/{id}/change: the job's file becomes another (a new version: other
-- bytes, another ETag and Last-Modified), of {"bytes": N} bytes when given.
function handlers.change_file(self, req, id)
  local job = self.jobs[id]
  if not job then return not_found("Request not found") end
  local ok, body = pcall(json.decode, req.body ~= "" and req.body or "{}")
  if not ok or type(body) ~= "table" then return error_reply(400, 400001, "Expected a JSON object") end
  local bytes = body.bytes
  if bytes ~= nil and (type(bytes) ~= "number" or bytes < 0 or bytes ~= floor(bytes)) then
    return error_reply(400, 400001, "bytes: expected a whole number >= 0")
  end
  job.version = job.version + 1
  job.bytes = bytes and floor(bytes) or job.bytes or #video()
  local etag, lastmod = self:file_validators(job)
  return json_reply(200, { request_id = job.id, file_version = job.version, video_bytes = job.bytes,
    etag = etag or null, last_modified = lastmod or null })
end

-- ---------------------------------------------------------------------------------------
-- Injected faults (see the Faults section above for the table)
-- ---------------------------------------------------------------------------------------

local FAULT_MESSAGES = {
  [429] = "Too many requests (injected fault)",
  [500] = "Internal server error (injected fault)",
  [502] = "Bad gateway (injected fault)",
  [503] = "Service unavailable (injected fault)",
  [504] = "Gateway timeout (injected fault)",
}
local ERROR200_BODY = '{"error_code":500001,"error_message":"Injected error"}'
local MALFORMED_BODY = "<html><body><h1>Injected fault</h1>This answer is not JSON.</body></html>"

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- fault name -> function(self, entry, reply (the handler's, for faults that act), req)
-- -> the reply to send | nil when the fault does not apply to this answer
local fault_replies = {}

local function status_fault(status)
  return function(_, entry)
    local reply = error_reply(status, status * 1000 + 1, FAULT_MESSAGES[status])
    if entry.arg then reply.headers = { { "Retry-After", number_text(entry.arg) } } end
    return reply
  end
end
for _, status in ipairs{ 500, 502, 503, 504 } do fault_replies[tostring(status)] = status_fault(status) end

fault_replies["429"] = function(_, entry)
  local reply = error_reply(429, 429001, FAULT_MESSAGES[429])
  reply.headers = { { "Retry-After", number_text(entry.arg or FAULTS["429"].default) } }
  return reply
end

fault_replies["429date"] = function(self, entry)
  local reply = error_reply(429, 429001, FAULT_MESSAGES[429])
  local now = self:wall()
  -- rounded up to the next whole second, so that no client waits less than ARG seconds
  local at = math.ceil(now + (entry.arg or FAULTS["429date"].default))
  reply.headers = { { "Retry-After", http_date(at) }, { "Date", http_date(now) } }
  return reply
end

fault_replies.reset = function()
  return { status = 0, close = "reset" }
end

fault_replies.drop_after_create = function()
  return { status = 0, close = "drop" }
end

fault_replies.slow = function(_, entry, reply)
  reply = copy(reply) -- a status reply may be the job's cached one
  reply.delay = entry.arg or FAULTS.slow.default
  return reply
end

fault_replies.truncated_json = function(_, _, reply)
  local body = reply.body or ""
  return { status = 200, type = "application/json", body = body:sub(1, max(1, #body // 2)) }
end

fault_replies.malformed_json = function()
  return { status = 200, type = "application/json", body = MALFORMED_BODY }
end

fault_replies.error200 = function()
  return { status = 200, type = "application/json", body = ERROR200_BODY }
end

fault_replies.cut = function(_, _, reply, req)
  if not reply.source or reply.length < 1 or req.method == "HEAD" then return nil end
  reply = copy(reply)
  reply.cut = true
  return reply
end

-- The headers of a reply, without Content-Range, plus the one given (if any).
local function with_content_range(reply, value)
  local headers = {}
  for _, h in ipairs(reply.headers or {}) do
    if h[1] ~= "Content-Range" then headers[#headers + 1] = h end
  end
  if value then headers[#headers + 1] = { "Content-Range", value } end
  return headers
end

-- Range faults act only on a 206 (a GET whose Range the file host honoured).
local function range_fault(shape)
  return function(_, _, reply, req)
    if reply.status ~= 206 or not reply.range or req.method == "HEAD" then return nil end
    reply = copy(reply)
    shape(reply, reply.range)
    return reply
  end
end

-- the body and its Content-Range start one byte off the offset asked for
fault_replies.range_start = range_fault(function(reply, r)
  local first = r.first > 0 and r.first - 1 or r.first + 1
  reply.offset, reply.length = first, r.last - first + 1
  reply.headers = with_content_range(reply, format("bytes %d-%d/%d", first, r.last, r.size))
end)

-- the asked-for bytes, labelled with a total that is not the file's
fault_replies.range_total = range_fault(function(reply, r)
  reply.headers = with_content_range(reply, format("bytes %d-%d/%d", r.first, r.last, r.size + 1000))
end)

-- a 206 without any Content-Range
fault_replies.range_none = range_fault(function(reply)
  reply.headers = with_content_range(reply, nil)
end)

-- the Range ignored: 200 with the whole file
fault_replies.range_ignore = range_fault(function(reply, r)
  reply.status, reply.offset, reply.length = 200, 0, r.size
  reply.headers = with_content_range(reply, nil)
end)

fault_replies.trickle = function(_, entry, reply, req)
  if not reply.source or reply.length < 1 or req.method == "HEAD" then return nil end
  reply = copy(reply)
  reply.trickle = entry.arg or FAULTS.trickle.default
  return reply
end

fault_replies.empty = function(_, _, reply, req)
  if not reply.source or req.method == "HEAD" then return nil end
  reply = copy(reply)
  reply.status, reply.source, reply.body, reply.length = 200, nil, "", nil
  reply.headers = with_content_range(reply, nil)
  return reply
end

--- Replace the fault table (and, with seed, restart the faults' generator as --seed does).
-- @param faults as for parse_faults; @return the table | nil, err (the table is unchanged)
function Server:set_faults(faults, seed)
  local list, err = M.parse_faults(faults)
  if not list then return nil, err end
  if seed ~= nil then
    local n = tonumber(seed)
    if not n or n ~= floor(n) or math.abs(n) >= 2 ^ 63 then return nil, "seed: expected an integer" end
    self.fault_random = new_rng(floor(n) ~ FAULT_SEED_MIX)
  end
  self.fault_table = list
  return list
end

-- The entry drawn for one request on route kind, or nil. Every request on a faultable
-- route draws one number u, whatever the table holds, so that the nth request's decision
-- depends only on the seed and n; the entries that apply to the route take consecutive
-- slices of [0, 1) of their rates' widths, in table order.
function Server:draw_fault(kind)
  local u = unit(self.fault_random)
  local edge = 0
  for _, entry in ipairs(self.fault_table) do
    if entry.route == kind or (entry.route == "all" and FAULTS[entry.fault].routes[kind]) then
      edge = edge + entry.rate
      if u < edge then return entry end
    end
  end
  return nil
end

-- Answer one request of a faultable route (authenticated, method allowed, id well formed):
-- draw, act on it unless the fault forbids, and shape the reply. -> reply, fault name | nil
function Server:faulted(kind, name, req, capture)
  local counts = self.counters.faults
  if kind == "submit" then counts.submit_attempts = counts.submit_attempts + 1 end
  local entry = self:draw_fault(kind)
  if not entry then return handlers[name](self, req, capture) end
  local fault = entry.fault
  local reply
  if FAULTS[fault].acts then
    reply = handlers[name](self, req, capture)
    local job = req.job
    if job then
      job.submit_fault = fault
      if fault == "drop_after_create" then job.created_by_dropped_submit = true end
    end
  end
  local faulted = fault_replies[fault](self, entry, reply, req)
  if not faulted then return reply end
  if faulted.record then
    faulted.record.status = faulted.status
    faulted.record.fault = fault
  end
  local injected = counts.injected
  local by_fault = injected[kind]
  if not by_fault then
    by_fault = {}
    injected[kind] = by_fault
  end
  by_fault[fault] = (by_fault[fault] or 0) + 1
  return faulted, fault
end

function Server:faults_reply()
  local list = {}
  for i, entry in ipairs(self.fault_table) do
    list[i] = { route = entry.route, fault = entry.fault, rate = entry.rate, arg = entry.arg, spec = entry.spec }
  end
  return json_reply(200, { faults = array(list), reset = M.RESET_METHOD })
end

function handlers.faults_get(self)
  return self:faults_reply()
end

-- POST /__emulator/faults: { "faults": [SPEC or {route, fault, rate, arg}, ...], "seed": N }
-- (or just the list) replaces the table.
function handlers.faults_set(self, req)
  local ok, value = pcall(json.decode, req.body or "")
  if not ok or type(value) ~= "table" then
    return error_reply(400, 400001, "Expected a JSON object {\"faults\": [...]} or a list")
  end
  local faults, seed = value, nil
  if next(value) ~= nil and value[1] == nil then -- an object, not a list
    for key in pairs(value) do
      if key ~= "faults" and key ~= "seed" then
        return error_reply(400, 400001, "Bad faults: unknown field " .. tostring(key))
      end
    end
    faults, seed = value.faults, value.seed
    if faults == nil or faults == null then faults = {} end
    if seed == null then seed = nil end
  end
  local list, err = self:set_faults(faults, seed)
  if not list then return error_reply(400, 400001, "Bad faults: " .. err) end
  return self:faults_reply()
end

-- ---------------------------------------------------------------------------------------
-- Routing tables
-- ---------------------------------------------------------------------------------------

-- kind: the counter the request goes to; auth: needs the bearer token; id: capture is a
-- request id to check; methods: method -> handler name.
M.API_ROUTES = {
  { pattern = "^/v1/models/(.+)$", kind = "submit", auth = true, methods = { POST = "submit" } },
  { pattern = "^/v1/requests/([^/]*)/status$", kind = "status", auth = true, id = true, methods = { GET = "status" } },
  { pattern = "^/v1/requests/([^/]*)/result$", kind = "result", auth = true, id = true, methods = { GET = "result" } },
  { pattern = "^/v1/requests/([^/]*)/cancel$", kind = "cancel", auth = true, id = true, methods = { POST = "cancel" } },
  { pattern = "^/__emulator/stats$", kind = "stats", methods = { GET = "stats" } },
  { pattern = "^/__emulator/reset$", kind = "stats", methods = { POST = "reset" } },
  { pattern = "^/__emulator/jobs/([^/]*)$", kind = "stats", methods = { GET = "job_record" } },
  { pattern = "^/__emulator/jobs/([^/]*)/change$", kind = "stats", methods = { POST = "change_file" } },
  { pattern = "^/__emulator/jobs$", kind = "stats", methods = { GET = "jobs" } },
  { pattern = "^/__emulator/clock$", kind = "stats", methods = { GET = "clock" } },
  { pattern = "^/__emulator/faults$", kind = "stats", methods = { GET = "faults_get", POST = "faults_set" } },
}

M.FILE_ROUTES = {
  { pattern = "^/v/([^/]*)%.mp4$", kind = "download", methods = { GET = "download", HEAD = "download" } },
  { pattern = "^/r/(%d+/[^/]*)%.mp4$", kind = "download", methods = { GET = "redirect", HEAD = "redirect" } },
}

function Server:check_auth(req)
  local value = req.headers.authorization
  local token = value and value:match("^%s*[Bb]earer%s+(%S+)%s*$")
  if not token then
    if value and value:find("%S") then
      return error_reply(403, 403001, "Invalid token")
    end
    return error_reply(401, 403001, "Missing bearer token")
  end
  if self.token and self.token ~= "" and token ~= self.token then
    return error_reply(403, 403001, "Invalid token")
  end
  return nil
end

function Server:count(kind)
  local c = self.counters
  c.requests[kind] = c.requests[kind] + 1
  if kind ~= "stats" then c.requests_total = c.requests_total + 1 end
end

-- Route one request: -> reply, kind, injected fault (name) | nil
function Server:dispatch(listener, req)
  local path = req.path
  if listener == self.files then
    local files = self.counters.files
    files.requests = files.requests + 1
    if req.headers.authorization then
      files.authorization_headers = files.authorization_headers + 1
      local paths = files.authorization_paths
      if #paths < MAX_RECORDED_PATHS then paths[#paths + 1] = path end
    end
  end
  for _, route in ipairs(listener.routes) do
    local capture = path:match(route.pattern)
    if capture then
      self:count(route.kind)
      if route.auth then
        local refusal = self:check_auth(req)
        if refusal then
          self.counters.auth_failures = self.counters.auth_failures + 1
          return refusal, route.kind
        end
      end
      local name = route.methods[req.method]
      if not name then
        local allow = {}
        for method in pairs(route.methods) do allow[#allow + 1] = method end
        table.sort(allow)
        local reply = error_reply(405, 405001, "Method not allowed")
        reply.headers = { { "Allow", concat(allow, ", ") } }
        return reply, route.kind
      end
      if route.id and (#capture > 128 or not capture:match(ID_PATTERN)) then
        return error_reply(400, 400001, "Invalid resource identifier"), route.kind
      end
      if ALL_KINDS[route.kind] then
        local reply, fault = self:faulted(route.kind, name, req, capture)
        return reply, route.kind, fault
      end
      return handlers[name](self, req, capture), route.kind
    end
  end
  local kind = listener == self.files and "download" or "other"
  self:count(kind)
  if listener == self.api and path:match("^/v1/") then
    local refusal = self:check_auth(req)
    if refusal then
      self.counters.auth_failures = self.counters.auth_failures + 1
      return refusal, kind
    end
  end
  return not_found("Not found"), kind
end

-- ---------------------------------------------------------------------------------------
-- HTTP/1.1 connections
-- ---------------------------------------------------------------------------------------

local function read_line(con, timeout)
  local line, err = con:xread("*l", "b", timeout)
  if not line then return nil, err end
  if line:sub(-1) == "\r" then line = line:sub(1, -2) end
  return line
end

local NO_QUERY = setmetatable({}, { __newindex = function() error("read-only") end })

local function parse_query(query)
  local t = {}
  for k, v in query:gmatch("([^&=]+)=?([^&]*)") do t[k] = v end
  return t
end

-- Read one request head and body.
-- @return req | nil, err, status (status set when the peer should get an error reply)
function Server:read_request(con)
  local timeout = self.idle_timeout
  local line, err
  repeat
    line, err = read_line(con, timeout)
    if not line then return nil, err or "eof" end
  until line ~= ""
  local method, target, version = line:match("^(%u+) (%S+) HTTP/(%d%.%d)$")
  if not method then return nil, "bad request line", 400 end
  local headers, n = {}, 0
  while true do
    local h = read_line(con, timeout)
    if not h then return nil, "eof in headers" end
    if h == "" then break end
    local name, value = h:match("^([^:%s]+):%s*(.-)%s*$")
    if not name then return nil, "bad header line", 400 end
    n = n + 1
    if n > 200 then return nil, "too many headers", 431 end
    name = name:lower()
    local old = headers[name]
    headers[name] = old and (old .. ", " .. value) or value
  end
  if target:byte(1) ~= 47 then target = target:gsub("^https?://[^/]*", "") end -- 47: "/"
  local path, query = target:match("^([^?#]*)%??([^#]*)")
  local req = {
    method = method, target = target, path = path, query = query ~= "" and parse_query(query) or NO_QUERY,
    version = version, headers = headers,
  }
  local connection = (headers.connection or ""):lower()
  if version == "1.1" then
    req.keep_alive = not connection:find("close", 1, true)
  else
    req.keep_alive = connection:find("keep-alive", 1, true) ~= nil
  end
  local encoding = headers["transfer-encoding"]
  local chunked = encoding and encoding:lower():find("chunked", 1, true)
  local length = headers["content-length"]
  if length and not length:match("^%d+$") then return nil, "bad content-length", 400 end
  length = tonumber(length)
  if length and length > self.max_body then return nil, "body too large", 413 end
  if (chunked or (length and length > 0)) and version == "1.1"
      and (headers.expect or ""):lower() == "100-continue" then
    local ok, werr = con:xwrite("HTTP/1.1 100 Continue\r\n\r\n", "bn")
    if not ok then return nil, werr end
  end
  if chunked then
    local parts, total = {}, 0
    while true do
      local size_line = read_line(con, timeout)
      local size = size_line and tonumber(size_line:match("^(%x+)"), 16)
      if not size then return nil, "bad chunk", 400 end
      if size == 0 then break end
      total = total + size
      if total > self.max_body then return nil, "body too large", 413 end
      local data = con:xread(size, "b", timeout)
      if not data or #data < size then return nil, "eof in body" end
      parts[#parts + 1] = data
      read_line(con, timeout)
    end
    repeat -- trailers
      local trailer = read_line(con, timeout)
    until not trailer or trailer == ""
    req.body = concat(parts)
  elseif length and length > 0 then
    local data, rerr = con:xread(length, "b", timeout)
    if not data or #data < length then return nil, rerr or "eof in body" end
    req.body = data
  else
    req.body = ""
  end
  return req
end

local STATUS_LINES = {}
for code, reason in pairs(REASONS) do STATUS_LINES[code] = code .. " " .. reason end
local SIMPLE_HEAD = "HTTP/1.1 %s\r\nServer: kling-emulator\r\nContent-Length: %d\r\nContent-Type: %s\r\n\r\n%s"

--- Write a reply: the one place answers go out.
-- reply: status, type, headers ({ {name, value}, ... }), and body (string) or
-- source/offset/length (streamed in CHUNK pieces). Returns bytes of body sent | nil, err.
function Server:write_reply(con, req, reply)
  local status = reply.status
  local body = reply.body
  if body and reply.type and not reply.headers and req and req.keep_alive and req.version == "1.1"
      and req.method ~= "HEAD" then
    -- the common case (a JSON answer on a kept-alive HTTP/1.1 connection): one format
    local ok, err = con:xwrite(format(SIMPLE_HEAD, STATUS_LINES[status] or status .. " Unknown",
      #body, reply.type, body), "bn")
    if not ok then return nil, err end
    return #body
  end
  local length = reply.source and reply.length or #(body or "")
  local head = {
    format("HTTP/1.1 %d %s", status, REASONS[status] or "Unknown"),
    "Server: kling-emulator",
    "Content-Length: " .. length,
  }
  if reply.type then head[#head + 1] = "Content-Type: " .. reply.type end
  for _, h in ipairs(reply.headers or {}) do head[#head + 1] = h[1] .. ": " .. h[2] end
  if not (req and req.keep_alive) then
    head[#head + 1] = "Connection: close"
  elseif req.version == "1.0" then
    head[#head + 1] = "Connection: keep-alive"
  end
  head[#head + 1] = "\r\n"
  head = concat(head, "\r\n")
  local send_body = not (req and req.method == "HEAD")
  if not reply.source then
    local ok, err = con:xwrite(send_body and head .. (reply.body or "") or head, "bn")
    if not ok then return nil, err end
    return send_body and length or 0
  end
  local ok, err = con:xwrite(head, "bn")
  if not ok then return nil, err end
  if not send_body then return 0 end
  -- a cut download announces the whole length and sends about half of it (the caller closes)
  local source, offset, left, sent = reply.source, reply.offset, reply.cut and length // 2 or length, 0
  local files = self.counters.files
  local trickle = reply.trickle
  while left > 0 do
    local n = min(left, CHUNK)
    if trickle then -- ARG bytes, then a second's pause, until the client gives up
      if sent > 0 then cqueues.sleep(1) end
      n = min(left, trickle)
    end
    ok, err = con:xwrite(source.read(offset, n), "bn")
    if not ok then return nil, err end
    offset, left, sent = offset + n, left - n, sent + n
    files.bytes_sent = files.bytes_sent + n
  end
  return sent
end

function Server:serve(listener, con)
  while not self.stopped do
    local req, err, status = self:read_request(con)
    if not req then
      if status then
        self:write_reply(con, nil, error_reply(status, status * 1000 + 1, "Bad request: " .. err))
      end
      return
    end
    local reply, kind, fault = self:dispatch(listener, req)
    if reply.delay then cqueues.sleep(reply.delay) end
    if reply.close then
      -- reset / drop_after_create: no answer; a reset closes with a TCP RST when it can
      if reply.close == "reset" then set_linger_zero(con) end
      if not self.quiet then
        self.log(format("%s %s %s - (fault %s: closed)", listener.name, req.method, req.path, fault))
      end
      return
    end
    local sent, werr = self:write_reply(con, req, reply)
    if sent and kind == "submit" then
      self.counters.submits_answered = self.counters.submits_answered + 1
    end
    if not self.quiet then
      self.log(format("%s %s %s %d%s%s", listener.name, req.method, req.path, reply.status,
        fault and " (fault " .. fault .. ")" or "",
        sent and "" or " (write failed: " .. tostring(werr) .. ")"))
    end
    if not sent or not req.keep_alive or reply.cut then return end
  end
end

local function on_error(_, _, why) return why end

local ACCEPT_OPTIONS = { nodelay = true }

function Server:accept_loop(listener)
  local sock = listener.sock
  while not self.stopped do
    -- TCP_NODELAY: an answer written in pieces (a file's head, then its body; pipelined
    -- answers) must not wait for the peer's delayed acknowledgement of the previous piece
    local con, err = sock:accept(ACCEPT_OPTIONS)
    if con then
      if listener.current >= listener.peak and listener.current > 0 then
        -- This connection would raise the peak. A client that closed a connection just
        -- before opening this one is not over its limit, but the coroutine serving the
        -- closed one may not have read the end of file yet: let the loop run the
        -- coroutines that are ready first, so their closes are counted before this open.
        for _ = 1, SETTLE_STEPS do cqueues.sleep(0) end
      end
      listener.current = listener.current + 1
      listener.total = listener.total + 1
      if listener.current > listener.peak then listener.peak = listener.current end
      listener.conns[con] = true
      self.cq:wrap(function()
        con:setmode("b", "bn")
        con:onerror(on_error)
        local ok, perr = pcall(self.serve, self, listener, con)
        if not ok then self.log("emulator: connection error: " .. tostring(perr)) end
        listener.current = listener.current - 1
        listener.conns[con] = nil
        con:close()
      end)
    elseif self.stopped then
      return
    else
      -- out of descriptors or a transient error: back off briefly
      self.log("emulator: accept: " .. tostring(err))
      cqueues.sleep(0.05)
    end
  end
end

-- ---------------------------------------------------------------------------------------
-- Command line
-- ---------------------------------------------------------------------------------------

M.USAGE = [[
Usage: kling-emulator [options]
A local stand-in for RunComfy's Model API (for tests and offline development).

  --host H               address to bind (default 127.0.0.1)
  --port N               API port (default 8787; 0 = pick a free port)
  --files-port N         file host port (default 0 = pick a free port)
  --token T              the only bearer token accepted (default: any non-empty token)
  --queue S|LO:HI        seconds a job waits in the queue (default 2); with LO:HI each
                         job draws its time uniformly from [LO, HI] (seeded)
  --run S|LO:HI          seconds a job runs (default 5), or a range as for --queue
  --load                 benchmark preset: --queue 0:1 --run 1:4 unless given, --quiet
  --queue-position N     queue position reported at submit (default 3)
  --video-bytes N        serve N bytes of the test pattern instead of the sample MP4
  --seed N               seed for ids, drawn times and fault decisions (default: varies)
  --faults SPEC          inject faults, SPEC = ROUTE:FAULT:RATE[:ARG] (repeatable, or
                         comma-separated); ROUTE: submit status result cancel download all;
                         FAULT: 429 429date 500 502 503 504 reset drop_after_create slow
                         truncated_json malformed_json error200 cut range_start range_total
                         range_none range_ignore trickle empty; RATE: 0 to 1; ARG:
                         Retry-After seconds (429, 429date, 5xx), delay (slow, default 5)
                         or bytes per second (trickle, default 2)
                         e.g. --faults status:503:0.2 --faults all:429:0.1:2
  --exit-on-stdin-eof    exit when standard input reaches end of file
  --quiet                no per-request log lines on stderr
  --help                 show this help

First line on stdout once listening:
  kling-emulator api=http://HOST:PORT/v1 files=http://HOST:PORT2 stats=http://HOST:PORT/__emulator/stats
]]

local FLAGS = {
  ["host"] = { "host", "string" },
  ["port"] = { "port", "port" },
  ["files-port"] = { "files_port", "port" },
  ["token"] = { "token", "string" },
  ["queue"] = { "queue", "timing" },
  ["run"] = { "run", "timing" },
  ["queue-position"] = { "queue_position", "count" },
  ["video-bytes"] = { "video_bytes", "count" },
  ["seed"] = { "seed", "integer" },
  ["faults"] = { "faults", "faults" },
  ["quiet"] = { "quiet", "flag" },
  ["load"] = { "load", "flag" },
  ["exit-on-stdin-eof"] = { "exit_on_stdin_eof", "flag" },
  ["help"] = { "help", "flag" },
}

local function convert(kind, text)
  if kind == "string" then return text ~= "" and text or nil end
  if kind == "timing" then return M.parse_timing(text) and text or nil end
  if kind == "faults" then
    local list, err = M.parse_faults(text)
    if not list or #list == 0 then return nil, err end
    return text
  end
  local n = tonumber(text)
  if not n then return nil end
  if n ~= floor(n) then return nil end
  n = floor(n)
  if kind == "port" then return n >= 0 and n <= 65535 and n or nil end
  if kind == "count" then return n >= 0 and n or nil end
  return n
end

--- Parse command-line arguments into server options.
-- @return opts | nil, message
function M.parse_args(argv)
  local opts = {}
  local i = 1
  while i <= #argv do
    local a = argv[i]
    local name, inline = a:match("^%-%-([%w%-]+)=(.*)$")
    if not name then name = a:match("^%-%-([%w%-]+)$") end
    local flag = name and FLAGS[name]
    if not flag then return nil, "unknown argument: " .. a end
    local key, kind = flag[1], flag[2]
    if kind == "flag" then
      if inline then return nil, "--" .. name .. " takes no value" end
      opts[key] = true
    else
      local text = inline
      if not text then
        i = i + 1
        text = argv[i]
        if not text then return nil, "--" .. name .. " needs a value" end
      end
      local value, why = convert(kind, text)
      if value == nil then
        return nil, format("bad value for --%s: %s", name, why or text)
      end
      if kind == "faults" then
        -- repeatable: every --faults adds to the list
        opts[key] = opts[key] or {}
        table.insert(opts[key], value)
      else
        opts[key] = value
      end
    end
    i = i + 1
  end
  return opts
end

--- Run the emulator as a program.
-- @param argv list of arguments (the script's arg table)
-- @return exit status
function M.main(argv)
  local opts, err = M.parse_args(argv or {})
  if not opts then
    io.stderr:write("kling-emulator: ", err, "\n", M.USAGE)
    return 2
  end
  if opts.help then
    io.stdout:write(M.USAGE)
    return 0
  end
  local signal = require "cqueues.signal"
  local server = M.new(opts)
  local api_url, files_url = server:listen()
  if not api_url then
    io.stderr:write("kling-emulator: ", files_url, "\n")
    return 1
  end
  signal.ignore(signal.SIGPIPE)
  -- block, then restore the default disposition (a shell starts background jobs with
  -- SIGINT ignored, which would discard it before the signal listener sees it)
  signal.block(signal.SIGTERM, signal.SIGINT)
  signal.default(signal.SIGTERM, signal.SIGINT)
  local listener = signal.listen(signal.SIGTERM, signal.SIGINT)
  server.cq:wrap(function()
    listener:wait()
    server:stop()
  end)
  if opts.exit_on_stdin_eof then
    server.cq:wrap(function()
      local stdin = socket.fdopen(0)
      stdin:onerror(on_error)
      while stdin:xread(-4096, "b") do end
      server:stop()
    end)
  end
  io.stdout:write(format("kling-emulator api=%s files=%s stats=%s\n", api_url, files_url, server.stats_url))
  io.stdout:flush()
  server:loop()
  return 0
end

return M
