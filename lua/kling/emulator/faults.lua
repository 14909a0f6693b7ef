--- kling.emulator.faults: the fault table, and how a request gets a fault.
--
-- M.LIST is the one statement of every fault: its name, the routes it fits (route kinds,
-- or the classes "json" and "file" of kling.emulator.routes), its argument, whether the
-- request is acted on before the fault, a one-line summary (--help is generated from it,
-- and a spec checks doc/EMULATOR.md against it), and the function that shapes the reply.
-- A new fault is one entry here, one row in doc/EMULATOR.md's tables, and a spec.
--
-- Every request of a faultable route (authenticated, method allowed, id well formed) draws
-- one uniform number u from the faults' own generator; the entries of the fault table
-- (--faults, /__emulator/faults) that apply to the route take consecutive slices of [0, 1)
-- as wide as their rates, in table order (server:draw_fault). server:faulted runs the
-- handler (unless the fault forbids it) and shapes the reply.
local util = require "kling.emulator.util"
local reply = require "kling.emulator.reply"
local routes = require "kling.emulator.routes"

local M = {}

local format = string.format
local floor, max = math.floor, math.max
local number_text, copy = util.number_text, util.copy
local error_reply, json_reply = reply.error_reply, reply.json_reply

-- ---------------------------------------------------------------------------------------
-- The table
-- ---------------------------------------------------------------------------------------

local MESSAGES = {
  [429] = "Too many requests (injected fault)",
  [500] = "Internal server error (injected fault)",
  [502] = "Bad gateway (injected fault)",
  [503] = "Service unavailable (injected fault)",
  [504] = "Gateway timeout (injected fault)",
}
local ERROR200_BODY = '{"error_code":500001,"error_message":"Injected error"}'
local MALFORMED_BODY = "<html><body><h1>Injected fault</h1>This answer is not JSON.</body></html>"

-- What ARG is: whole seconds, seconds (fractions allowed), whole bytes per second >= 1.
local ARGS = {
  integer = { whole = true, min = 0, rule = "whole seconds >= 0" },
  seconds = { min = 0, rule = "seconds >= 0" },
  rate = { whole = true, min = 1, rule = "whole bytes per second >= 1" },
  count = { whole = true, min = 0, rule = "a whole number of answers >= 0" },
}

local ANY = { json = true, file = true }
local JSON = { json = true }
local FILE = { file = true }

-- An error status with its error body; Retry-After only when ARG is given.
local function status_fault(status)
  return function(_, entry)
    local r = error_reply(status, status * 1000 + 1, MESSAGES[status])
    if entry.arg then r.headers = { { "Retry-After", number_text(entry.arg) } } end
    return r
  end
end

-- The headers of a reply, without Content-Range, plus the one given (if any).
local function with_content_range(r, value)
  local headers = {}
  for _, h in ipairs(r.headers or {}) do
    if h[1] ~= "Content-Range" then headers[#headers + 1] = h end
  end
  if value then headers[#headers + 1] = { "Content-Range", value } end
  return headers
end

-- Range faults act only on a 206 (a GET whose Range the file host honoured).
local function range_fault(shape)
  return function(_, _, r, req)
    if r.status ~= 206 or not r.range or req.method == "HEAD" then return nil end
    r = copy(r)
    shape(r, r.range)
    return r
  end
end

-- A cancel fault: the handler answers an accepted cancel in this shape (req.cancel_mode,
-- see kling.emulator.api's cancel); a cancel that is refused goes out as usual, not counted.
local function cancel_fault(kind)
  return {
    before = function(req, arg)
      req.cancel_mode = { kind = kind, wait = kind == "pending" and { answers = arg } or nil }
    end,
    reply = function(_, _, r)
      if not r.accepted then return nil end
      return r
    end,
  }
end
local CANCEL_REQUESTED, CANCEL_BARE, CANCEL_PENDING =
  cancel_fault("requested"), cancel_fault("bare"), cancel_fault("pending")

-- Each reply function: (server, entry, reply (the handler's, for faults that act), req,
-- arg (the entry's ARG, or the fault's default)) -> the reply to send | nil when the fault does not apply to this answer (not counted).
-- A fault that acts may also have before(req, arg), run before the handler.
-- A reply with close = "reset" | "drop" closes the connection without an answer; delay
-- waits that many seconds of the emulator's clock first; cut sends half of a file's body;
-- trickle sends it that many bytes per second.
M.LIST = {
  { name = "429", fits = ANY, arg = "integer", default = 1,
    summary = "429 with Retry-After ARG seconds (default 1)",
    reply = function(_, _, _, _, arg)
      local r = error_reply(429, 429001, MESSAGES[429])
      r.headers = { { "Retry-After", number_text(arg) } }
      return r
    end },
  { name = "429date", fits = ANY, arg = "integer", default = 1,
    summary = "429 with Retry-After as an HTTP date ARG seconds ahead (default 1)",
    reply = function(server, _, _, _, arg)
      local r = error_reply(429, 429001, MESSAGES[429])
      local now = server:wall()
      -- rounded up to the next whole second, so that no client waits less than ARG seconds
      local at = math.ceil(now + arg)
      r.headers = { { "Retry-After", util.http_date(at) }, { "Date", util.http_date(now) } }
      return r
    end },
  { name = "500", fits = ANY, arg = "integer", summary = "500 and an error body; Retry-After ARG when given",
    reply = status_fault(500) },
  { name = "502", fits = ANY, arg = "integer", summary = "502 and an error body; Retry-After ARG when given",
    reply = status_fault(502) },
  { name = "503", fits = ANY, arg = "integer", summary = "503 and an error body; Retry-After ARG when given",
    reply = status_fault(503) },
  { name = "504", fits = ANY, arg = "integer", summary = "504 and an error body; Retry-After ARG when given",
    reply = status_fault(504) },
  { name = "reset", fits = ANY, summary = "closes the connection without an answer, with a TCP RST",
    reply = function() return { status = 0, close = "reset" } end },
  { name = "reset_reused", fits = ANY,
    summary = "as reset, but only a request that arrives on a connection that already served one",
    reply = function(_, _, _, req)
      if (req.nth or 1) > 1 then return { status = 0, close = "reset" } end
      return nil -- the first request of a connection: answered as usual
    end },
  { name = "drop_after_create", fits = { submit = true }, acts = true,
    summary = "creates the job, then closes without an answer",
    reply = function() return { status = 0, close = "drop" } end },
  { name = "slow", fits = ANY, arg = "seconds", default = 5, acts = true,
    summary = "answers ARG seconds late (default 5)",
    reply = function(_, _, r, _, arg)
      r = copy(r) -- a status reply may be the job's cached one
      r.delay = arg
      return r
    end },
  { name = "truncated_json", fits = JSON, acts = true, summary = "200 with the JSON body cut in half",
    reply = function(_, _, r)
      local body = r.body or ""
      return { status = 200, type = "application/json", body = body:sub(1, max(1, #body // 2)) }
    end },
  { name = "malformed_json", fits = JSON, acts = true, summary = "200 with a body that is not JSON",
    reply = function() return { status = 200, type = "application/json", body = MALFORMED_BODY } end },
  { name = "error200", fits = JSON, summary = "200 with an error body",
    reply = function() return { status = 200, type = "application/json", body = ERROR200_BODY } end },
  { name = "not_ready", fits = { result = true }, summary = "400 with error_code 400005 (not completed yet)",
    reply = function()
      return error_reply(400, 400005, "Request is not completed yet (injected fault)")
    end },
  { name = "cancel_requested", fits = { cancel = true }, acts = true,
    summary = "an accepted cancel answers outcome cancellation_requested",
    before = CANCEL_REQUESTED.before, reply = CANCEL_REQUESTED.reply },
  { name = "cancel_bare", fits = { cancel = true }, acts = true,
    summary = "an accepted cancel answers no outcome",
    before = CANCEL_BARE.before, reply = CANCEL_BARE.reply },
  { name = "cancel_pending", fits = { cancel = true }, arg = "count", default = 1, acts = true,
    summary = "an accepted cancel answers cancellation_requested, cancelled after ARG answers (default 1)",
    before = CANCEL_PENDING.before, reply = CANCEL_PENDING.reply },
  { name = "cut", fits = FILE, acts = true, summary = "sends half the body announced, then closes",
    reply = function(_, _, r, req)
      if not r.source or r.length < 1 or req.method == "HEAD" then return nil end
      r = copy(r)
      r.cut = true
      return r
    end },
  -- the file host's range answers gone wrong (only a GET with a satisfiable Range)
  { name = "range_start", fits = FILE, acts = true, summary = "a 206 starting one byte off the offset asked for",
    reply = range_fault(function(r, range)
      local first = range.first > 0 and range.first - 1 or range.first + 1
      r.offset, r.length = first, range.last - first + 1
      r.headers = with_content_range(r, format("bytes %d-%d/%d", first, range.last, range.size))
    end) },
  { name = "range_total", fits = FILE, acts = true, summary = "a 206 labelled with a total 1000 bytes too long",
    reply = range_fault(function(r, range)
      r.headers = with_content_range(r, format("bytes %d-%d/%d", range.first, range.last, range.size + 1000))
    end) },
  { name = "range_none", fits = FILE, acts = true, summary = "a 206 without Content-Range",
    reply = range_fault(function(r)
      r.headers = with_content_range(r, nil)
    end) },
  { name = "range_ignore", fits = FILE, acts = true, summary = "the Range ignored: 200 with the whole file",
    reply = range_fault(function(r, range)
      r.status, r.offset, r.length = 200, 0, range.size
      r.headers = with_content_range(r, nil)
    end) },
  { name = "trickle", fits = FILE, arg = "rate", default = 2, acts = true,
    summary = "sends the body ARG bytes a second (default 2)",
    reply = function(_, _, r, req, arg)
      if not r.source or r.length < 1 or req.method == "HEAD" then return nil end
      r = copy(r)
      r.trickle = arg
      return r
    end },
  { name = "empty", fits = FILE, acts = true, summary = "200 with Content-Length: 0 and no body",
    reply = function(_, _, r, req)
      if not r.source or req.method == "HEAD" then return nil end
      r = copy(r)
      r.status, r.source, r.body, r.length = 200, nil, "", nil
      r.headers = with_content_range(r, nil)
      return r
    end },
}

-- name -> entry, each with routes: the set of route kinds it applies to
local FAULTS = {}
M.BY_NAME = FAULTS
for _, fault in ipairs(M.LIST) do
  fault.routes = {}
  for _, kind in ipairs(routes.FAULT_KINDS) do
    if fault.fits[kind] or fault.fits[routes.FAULT_CLASS[kind]] then fault.routes[kind] = true end
  end
  FAULTS[fault.name] = fault
end

--- The names of every fault, sorted; and the routes a fault may name (the faultable kinds
-- of the route table, then "all").
M.NAMES = {}
for name in pairs(FAULTS) do M.NAMES[#M.NAMES + 1] = name end
table.sort(M.NAMES)
M.ROUTES = {}
for i, kind in ipairs(routes.FAULT_KINDS) do M.ROUTES[i] = kind end
M.ROUTES[#M.ROUTES + 1] = "all"
local ROUTE_LIST = table.concat(routes.FAULT_KINDS, ", ") .. " or all"

--- The routes a fault applies to, in table order.
function M.kinds_of(fault)
  local list = {}
  for _, kind in ipairs(routes.FAULT_KINDS) do
    if FAULTS[fault].routes[kind] then list[#list + 1] = kind end
  end
  return list
end

-- ---------------------------------------------------------------------------------------
-- Reading faults
-- ---------------------------------------------------------------------------------------

local function entry_of(route, fault, rate, arg)
  local function text(v) return math.type(v) and number_text(v) or tostring(v) end
  local where = format("%s:%s:%s", text(route), text(fault), text(rate))
  if arg ~= nil then where = where .. ":" .. text(arg) end
  -- a JSON entry may give the fault as a number (503, or 503.0 from cjson)
  if math.type(fault) and fault == floor(fault) then fault = number_text(fault) end
  if type(route) ~= "string" or not routes.FAULT_CLASS[route] and route ~= "all" then
    return nil, where .. ": unknown route (" .. ROUTE_LIST .. ")"
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
    local rule = ARGS[kind.arg]
    if not util.finite_seconds(n) or (rule.whole and n ~= floor(n)) or n < rule.min then
      return nil, format("%s: bad argument %s (%s)", where, tostring(arg), rule.rule)
    end
    arg = rule.whole and floor(n) or n
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
    return entry_of(value.route, value.fault, value.rate, value.arg)
  end
  if type(value) ~= "string" then return nil, "a fault is a string ROUTE:FAULT:RATE[:ARG] or an object" end
  local parts = {}
  for part in (value .. ":"):gmatch("([^:]*):") do parts[#parts + 1] = part end
  if #parts < 3 or #parts > 4 then return nil, value .. ": expected ROUTE:FAULT:RATE[:ARG]" end
  local rate = tonumber(parts[3])
  if not rate then return nil, value .. ": the rate must be a number from 0 to 1" end
  local arg = parts[4]
  if arg and not tonumber(arg) then return nil, value .. ": bad argument " .. arg end
  return entry_of(parts[1], parts[2], rate, arg and tonumber(arg))
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

-- ---------------------------------------------------------------------------------------
-- Drawing and applying (server methods)
-- ---------------------------------------------------------------------------------------

-- The faults' generator is seeded with seed ~ SEED_MIX (a stream of its own).
local SEED_MIX = 0x2545F4914F6CDD1D

--- The faults' generator for a seed (as --seed N starts it).
function M.new_generator(seed)
  return util.new_rng(seed ~ SEED_MIX)
end

--- Replace the fault table (server:set_faults; with seed, restart the faults' generator
-- as --seed does). @param faults as for parse_faults
-- @return the table | nil, err (the table is unchanged)
function M.set_faults(server, faults, seed)
  local list, err = M.parse_faults(faults)
  if not list then return nil, err end
  if seed ~= nil then
    local n = tonumber(seed)
    if not n or n ~= floor(n) or math.abs(n) >= 2 ^ 63 then return nil, "seed: expected an integer" end
    server.fault_random = M.new_generator(floor(n))
  end
  server.fault_table = list
  return list
end

local unit = util.unit

--- The entry drawn for one request on route kind, or nil (server:draw_fault). Every
-- request on a faultable route draws one number u, whatever the table holds, so that the
-- nth request's decision depends only on the seed and n.
function M.draw_fault(server, kind)
  local u = unit(server.fault_random)
  local edge = 0
  for _, entry in ipairs(server.fault_table) do
    if entry.route == kind or (entry.route == "all" and FAULTS[entry.fault].routes[kind]) then
      edge = edge + entry.rate
      if u < edge then return entry end
    end
  end
  return nil
end

--- Answer one request of a faultable route (server:faulted): draw, run the handler unless
-- the fault forbids it, and shape the reply. @return reply, fault name | nil
function M.faulted(server, kind, name, req, capture)
  local counts = server.counters.faults
  if kind == "submit" then counts.submit_attempts = counts.submit_attempts + 1 end
  local entry = server:draw_fault(kind)
  if not entry then return server.handlers[name](server, req, capture) end
  local fault = entry.fault
  local spec = FAULTS[fault]
  local r
  if spec.acts then
    if spec.before then spec.before(req, entry.arg or spec.default) end
    r = server.handlers[name](server, req, capture)
    local job = req.job
    if job then
      job.submit_fault = fault
      if fault == "drop_after_create" then job.created_by_dropped_submit = true end
    end
  end
  local faulted = spec.reply(server, entry, r, req, entry.arg or spec.default)
  if not faulted then -- the fault does not apply to this request: answered as usual
    if spec.acts then return r end
    return server.handlers[name](server, req, capture)
  end
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

-- ---------------------------------------------------------------------------------------
-- The control route /__emulator/faults (API port, no token, never faulted)
-- ---------------------------------------------------------------------------------------

M.handlers = {}

--- The fault table as GET /__emulator/faults answers it (server:faults_reply), with how
-- the reset fault closes (server.reset_method: "rst" or "close", see kling.emulator.listener).
function M.faults_reply(server)
  local list = {}
  for i, entry in ipairs(server.fault_table) do
    list[i] = { route = entry.route, fault = entry.fault, rate = entry.rate, arg = entry.arg, spec = entry.spec }
  end
  return json_reply(200, { faults = reply.array(list), reset = server.reset_method })
end

--- GET /__emulator/faults
function M.handlers.faults_get(server)
  return server:faults_reply()
end

--- POST /__emulator/faults: { "faults": [SPEC or {route, fault, rate, arg}, ...], "seed": N }
-- (or just the list) replaces the table.
function M.handlers.faults_set(server, req)
  local null = reply.null
  local ok, value = pcall(reply.json.decode, req.body or "")
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
  local list, err = server:set_faults(faults, seed)
  if not list then return error_reply(400, 400001, "Bad faults: " .. err) end
  return server:faults_reply()
end

-- ---------------------------------------------------------------------------------------
-- Help
-- ---------------------------------------------------------------------------------------

--- The fault table as --help shows it: one line per fault: its name (with a "*" when the
-- request is acted on first), what it sends, and the routes it fits unless it fits all.
-- @param indent put before each line @return text (lines ending in "\n")
function M.help(indent)
  indent = indent or ""
  local lines = {}
  for _, fault in ipairs(M.LIST) do
    local kinds = M.kinds_of(fault.name)
    local where = #kinds == #routes.FAULT_KINDS and "" or " [" .. table.concat(kinds, " ") .. "]"
    lines[#lines + 1] = format("%s%-19s%s%s\n", indent, fault.name .. (fault.acts and "*" or ""), fault.summary, where)
  end
  return table.concat(lines)
end

return M
