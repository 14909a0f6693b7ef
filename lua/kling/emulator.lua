--- kling.emulator: a local stand-in for RunComfy's Model API (doc/EMULATOR.md).
--
-- Two HTTP/1.1 listeners on one cqueues loop (one coroutine per connection): the API
-- listener (/v1/... and the control routes /__emulator/...) and the file listener (/v/...,
-- the stand-in for the CDN that serves the outputs). This file builds the server object
-- from its parts and keeps the module's API; each part owns one concern:
--
--   emulator/listener.lua  accept loops, the connection loop, connection counts, closes
--                          (gently after a refusal, with a TCP RST for the reset fault)
--   emulator/http.lua      the HTTP/1.1 reader and writer
--   emulator/routes.lua    the route table, the counters derived from it, dispatch
--   emulator/faults.lua    the fault table: parsing, drawing, shaping replies, --help's list
--   emulator/api.lua       the /v1 handlers (submit, status, result, cancel)
--   emulator/catalog.lua   the model catalog (GET /v1/models...) and its models' input checks
--   emulator/files.lua     the file host (/v/, /r/, a file's change)
--   emulator/control.lua   the /__emulator handlers (stats, reset, jobs, clock)
--   emulator/jobs.lua      the job model: directives, times, states, answers' bodies
--   emulator/clock.lua     the clock (monotonic, custom, or manual: driven by a test)
--   emulator/pattern.lua   the bytes of a job's file (test pattern, sample MP4)
--   emulator/reply.lua     JSON text and replies
--   emulator/util.lua      the seeded generator, number text, HTTP dates
--   emulator/cli.lua       the command line (lua-argparse) and main
--
-- Calls go one way: listener -> http, routes (dispatch) -> faults -> handlers (api, catalog,
-- files, control) -> jobs, pattern -> reply, util. A request: listener reads it (http), the
-- route table routes it, faults draw, a handler answers, the writer (http) sends it.
--
-- Usage:
--   local emulator = require "kling.emulator"
--   local server = emulator.new{ port = 0, queue = 0.2, run = 0.3 }
--   local api_url, files_url = assert(server:listen())
--   server:loop()                  -- until server:stop()
local cqueues = require "cqueues"
local util = require "kling.emulator.util"
local reply = require "kling.emulator.reply"
local clock = require "kling.emulator.clock"
local pattern = require "kling.emulator.pattern"
local jobs = require "kling.emulator.jobs"
local http = require "kling.emulator.http"
local routes = require "kling.emulator.routes"
local faults = require "kling.emulator.faults"
local api = require "kling.emulator.api"
local catalog = require "kling.emulator.catalog"
local files = require "kling.emulator.files"
local control = require "kling.emulator.control"
local listener = require "kling.emulator.listener"

local M = {}

local format, floor = string.format, math.floor

--- The options' defaults (emulator.new, and the flags' help).
M.DEFAULTS = {
  host = "127.0.0.1",
  port = 8787,
  files_port = 0,
  queue = 2,
  run = 5,
  queue_position = 3,
  idle_timeout = 60,          -- seconds an idle keep-alive connection is kept
  max_body = 64 * 1024 * 1024, -- largest request body accepted (RunComfy's observed limit)
  result_not_ready = "status", -- the result route of an unfinished job: "status" or "400005"
  result_lag = nil,           -- 400005 answers after a job completes: "N" (answers) or "Ss"
}
local DEFAULTS = M.DEFAULTS

-- The load preset (--load): jobs finish 1 to 5 s after their submit, no request log.
local LOAD_PRESET = { queue = "0:1", run = "1:4" }

-- A sub-second wall clock: luasocket's when it is installed, else os.time (whole seconds).
local wall_clock
do
  local ok, luasocket = pcall(require, "socket")
  wall_clock = ok and type(luasocket) == "table" and luasocket.gettime or os.time
end

-- ---------------------------------------------------------------------------------------
-- The module's API (the parts' functions under their historical names)
-- ---------------------------------------------------------------------------------------

M.encode_json = reply.encode
M.http_date = util.http_date
M.pattern_bytes = pattern.bytes
M.sample_video = pattern.sample
M.parse_timing = jobs.parse_timing
M.parse_directives = jobs.parse_directives
M.parse_error_directive = jobs.parse_error_directive
M.parse_wait = jobs.parse_wait
M.parse_cancel = jobs.parse_cancel
M.NOT_READY_KINDS = jobs.NOT_READY_KINDS
M.CATALOG = catalog.MODELS
M.check_input = catalog.check_input
M.job_state = jobs.state
M.ODD_IDS = jobs.ODD_IDS
M.ODD_OUTPUTS = jobs.ODD_OUTPUTS
M.FAULTS = faults.NAMES             -- every fault's name, sorted
M.FAULT_ROUTES = faults.ROUTES      -- the routes a fault may name
M.parse_fault = faults.parse_fault
M.parse_faults = faults.parse_faults
M.RESET_METHOD = listener.RESET_METHOD -- how the reset fault closes: "rst" or "close"
M.API_ROUTES = routes.API_ROUTES
M.FILE_ROUTES = routes.FILE_ROUTES

--- Every route handler by name: handler(server, req, capture) -> reply.
M.handlers = {}
for _, part in ipairs{ api, catalog, files, control, faults } do
  for name, fn in pairs(part.handlers) do
    assert(not M.handlers[name], "two handlers named " .. name)
    M.handlers[name] = fn
  end
end
for _, list in ipairs{ routes.API_ROUTES, routes.FILE_ROUTES } do
  for _, route in ipairs(list) do
    for _, name in pairs(route.methods) do assert(M.handlers[name], "no handler " .. name) end
  end
end

--- Parse command-line arguments into server options. @return opts | nil, message
function M.parse_args(argv)
  return require("kling.emulator.cli").parse_args(argv)
end

--- Run the emulator as a program. @param argv the arguments @return exit status
function M.main(argv)
  return require("kling.emulator.cli").main(argv)
end

-- M.USAGE: the help text (generated by the command line's parser when first asked for).
setmetatable(M, { __index = function(_, key)
  if key == "USAGE" then return require("kling.emulator.cli").usage() end
end })

-- ---------------------------------------------------------------------------------------
-- The server object
-- ---------------------------------------------------------------------------------------

local Server = {}
Server.__index = Server

Server.new_id = jobs.new_id
Server.create_job = jobs.create
Server.job_urls = jobs.urls
Server.status_body = jobs.status_body
Server.iso = jobs.iso
Server.wall = jobs.wall
Server.video_url = files.video_url
Server.file_validators = files.file_validators
Server.set_faults = faults.set_faults
Server.draw_fault = faults.draw_fault
Server.faulted = faults.faulted
Server.faults_reply = faults.faults_reply
Server.check_auth = routes.check_auth
Server.count = routes.count
Server.dispatch = routes.dispatch
Server.serve = listener.serve
Server.accept_loop = listener.accept_loop
Server.reset_method = listener.RESET_METHOD

--- Read one request from a connection (see kling.emulator.http.read_request).
function Server:read_request(con)
  return http.read_request(con, self.http_limits)
end

--- Write a reply (see kling.emulator.http.write_reply). @return bytes of body sent | nil, err
function Server:write_reply(con, req, r)
  return http.write_reply(con, req, r, self.counters.files, self.sleep)
end

-- The options over the defaults (and the load preset's, under opts.load), checked: the
-- times, the clock, the faults. -> options | nil, err
local function settle_options(opts)
  local o = {}
  for k, v in pairs(DEFAULTS) do o[k] = v end
  if opts.load then
    for k, v in pairs(LOAD_PRESET) do o[k] = v end
  end
  for k, v in pairs(opts) do o[k] = v end
  if opts.load then o.quiet = true end
  o.queue_lo, o.queue_hi = jobs.parse_timing(o.queue)
  o.run_lo, o.run_hi = jobs.parse_timing(o.run)
  if not o.queue_lo then return nil, "bad queue time: " .. tostring(o.queue) end
  if not o.run_lo then return nil, "bad run time: " .. tostring(o.run) end
  if math.type(o.result_not_ready) then o.result_not_ready = tostring(o.result_not_ready) end
  if not jobs.NOT_READY_KINDS[o.result_not_ready] then
    return nil, "bad result_not_ready: " .. tostring(o.result_not_ready) .. " (status or 400005)"
  end
  if o.result_lag ~= nil then
    o.result_lag_wait = jobs.parse_wait(o.result_lag)
    if not o.result_lag_wait then return nil, "bad result_lag: " .. tostring(o.result_lag) .. " (N or Ss)" end
  end
  local loaded, lerr = catalog.load_all()
  if not loaded then return nil, lerr end
  local clk, cerr = clock.new(opts.clock)
  if not clk then return nil, cerr end
  o.clock_source = clk
  o.clock, o.sleep, o.clock_name = clk.now, clk.sleep, clk.name
  local fault_table, ferr = faults.parse_faults(opts.faults)
  if not fault_table then return nil, "bad faults: " .. ferr end
  o.fault_table = fault_table
  return o
end

--- Create a server (not yet listening).
-- @param opts table, every field optional: host, port, files_port, token, queue, run
--   (seconds, "LO:HI" or { LO, HI }), queue_position, video_bytes, seed, quiet, load (the
--   load preset), log (function(line)), clock ("monotonic" (default), "manual", or a
--   function returning seconds), idle_timeout, max_body (bytes), result_not_ready
--   ("status" or "400005": what the result route of an unfinished job answers),
--   result_lag (400005 answers after a job completes: a count "N" or seconds "Ss"),
--   faults (a list of
--   "ROUTE:FAULT:RATE[:ARG]" strings or entries, or one comma-separated string; see
--   parse_faults).
-- @return server (raises on a bad queue, run, clock or faults: a programming error)
function M.new(opts)
  local settled, err = settle_options(opts or {})
  if not settled then error("kling.emulator: " .. err, 2) end
  local self = setmetatable(settled, Server)
  local seed = self.seed and floor(tonumber(self.seed)) or util.default_seed()
  self.random = util.new_rng(seed)
  -- the job times come from their own generator, so the ids of a seed do not depend on them
  self.timing_random = util.new_rng(seed ~ 0x5BD1E9955BD1E995)
  -- and the fault decisions from a third one, so that faults change neither ids nor times
  self.fault_random = faults.new_generator(seed)
  self.handlers = M.handlers
  self.http_limits = {
    timeout = self.idle_timeout, body = self.max_body,
    line = http.LIMITS.line, head = http.LIMITS.head, headers = http.LIMITS.headers,
  }
  self.jobs = {}
  self.job_list = {}  -- the jobs in creation order
  self.counters = routes.new_counters()
  self.api = listener.new("api", routes.API_ROUTES)
  self.files = listener.new("files", routes.FILE_ROUTES)
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

--- Bind both listeners.
-- @return api_url (with /v1), files_url | nil, err
function Server:listen()
  local api_sock, api_port = listener.bind(self.host, tonumber(self.port))
  if not api_sock then return nil, api_port end
  local files_sock, files_port = listener.bind(self.host, tonumber(self.files_port))
  if not files_sock then
    api_sock:close()
    return nil, files_port
  end
  self.api.sock, self.files.sock = api_sock, files_sock
  local host = listener.url_host(self.host)
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
  for _, l in ipairs{ self.api, self.files } do
    if l.sock then l.sock:close() end
    for con in pairs(l.conns) do con:close() end
    l.conns = {}
  end
end

local NOT_MANUAL = "the clock is not manual (start the emulator with --clock manual)"

--- Move a manual clock s seconds on (what POST /__emulator/clock {"advance": s} does):
-- jobs move on, and the delays of slow and trickle that end by then run out.
-- @return the clock's time | nil, err (another clock, or s not a number >= 0)
function Server:advance(s)
  if not self.clock_source.advance then return nil, NOT_MANUAL end
  return self.clock_source.advance(s)
end

--- Move a manual clock to time t (never back). @return the clock's time | nil, err
function Server:set_clock(t)
  if not self.clock_source.set then return nil, NOT_MANUAL end
  return self.clock_source.set(t)
end

return M
