--- spec/emulator_harness.lua: the emulator in the spec's own process, driven by its clock,
-- and an HTTP/1.1 client over cqueues sockets: emulator specs start no process per request
-- and wait through no window of real time (a loaded machine cannot make them miss one).
--
--   local harness = require "emulator_harness"
--   local emu = harness.start{ token = "t", queue = 0.3, run = 0.3 }  -- emulator.new's
--       options; port 0, quiet, and clock = "manual" unless given
--   emu.api, emu.files, emu.root, emu.stats_url, emu.server (the server object)
--   emu:advance(0.5)                          -- the manual clock, 0.5 s on
--   local res = emu:call("GET", "/requests/ID/status", opts)   -- the API, with the token
--   local res = emu:http("GET", url, { headers = { "Range: bytes=0-9" }, body = "...",
--                                       token = "t", fresh = true })
--   -- res.status (nil when no answer came), res.headers (lowercase names), res.head (raw),
--   -- res.body, res.err ("eof" for an empty reply, "Connection reset by peer", ...),
--   -- res.continued (a 100 Continue came first)
--   emu:stats(), emu:job_record(id), emu:reset(), emu:faults(), emu:set_faults(list, seed)
--   emu:raw(base_url, text)       -- text on a new connection (then EOF); all until the close
--   local p = emu:start("GET", url, opts)   -- a request left running: p.done, p.res, p:wait()
--   emu:wait_for(function() return ... end, "what")  -- run the loop until it holds
--   emu:stop()
--
--   harness.remote(helpers.start_emulator{...})  -- the same client for an emulator process
--
-- Every wait is bounded by a guard of real time (GUARD seconds) that only a hang reaches.
local cqueues = require "cqueues"
local socket = require "cqueues.socket"
local errno = require "cqueues.errno"
local cjson = require "cjson"
local emulator = require "kling.emulator"

local M = {}

local GUARD = 20 -- seconds of real time any one exchange or wait may take (a hang, not a window)
M.GUARD = GUARD

local monotime = cqueues.monotime

local function why(err)
  if type(err) == "number" then return errno.strerror(err) end
  return tostring(err or "eof")
end

-- Run fn(...) as a coroutine of cq, stepping cq until it returns; its errors are raised.
local function run_on(cq, fn, ...)
  local done, res = false, nil
  cq:wrap(function(...)
    res = table.pack(pcall(fn, ...))
    done = true
  end, ...)
  local deadline = monotime() + GUARD
  while not done do
    local ok, err = cq:step(0.5)
    if not ok then error("the loop failed: " .. tostring(err), 2) end
    if monotime() > deadline then error("no end after " .. GUARD .. " s of real time", 2) end
  end
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end
M.run_on = run_on

local function host_port(url)
  local host, port = url:match("^http://([^:/]+):(%d+)")
  assert(host, "not an http://HOST:PORT URL: " .. tostring(url))
  return host, tonumber(port)
end

local function connect(host, port)
  local so = socket.connect{ host = host, port = port }
  so:onerror(function(_, _, e) return e end)
  so:setmode("b", "bn")
  local ok, err = so:connect(GUARD)
  if not ok then error("cannot connect to " .. host .. ":" .. port .. ": " .. why(err)) end
  return so
end

-- Read one answer (after any 1xx) from so. -> res (res.status nil and res.err when none)
local function read_answer(so, method)
  local res = { headers = {}, body = "" }
  while true do
    local line, err = so:xread("*l", "b", GUARD)
    if not line then
      res.err = why(err)
      return res
    end
    local head = { line }
    local status = tonumber(line:match("^HTTP/1%.[01] (%d%d%d)"))
    if not status then
      res.err = "not an HTTP status line: " .. line
      return res
    end
    local headers = {}
    while true do
      local h
      h, err = so:xread("*l", "b", GUARD)
      if not h then
        res.err = why(err)
        return res
      end
      head[#head + 1] = h
      if h == "\r" or h == "" then break end
      local name, value = h:match("^([^:%s]+):%s*(.-)%s*$")
      if name then
        name = name:lower()
        headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
      end
    end
    if status >= 200 then
      res.status, res.headers = status, headers
      res.head = table.concat(head, "\n") .. "\n"
      break
    end
    res.continued = true -- a 1xx; the answer follows
  end
  local length = tonumber(res.headers["content-length"])
  if method == "HEAD" or res.status == 204 or res.status == 304 then return res end
  if length then
    if length > 0 then
      local body, err = so:xread(length, "b", GUARD)
      res.body = body or ""
      if #res.body < length then res.err = "cut: " .. #res.body .. " of " .. length .. " bytes (" .. why(err) .. ")" end
    end
  else
    res.body = so:xread("*a", "b", GUARD) or ""
  end
  return res
end
M.read_answer = read_answer

-- ---------------------------------------------------------------------------------------
-- The client
-- ---------------------------------------------------------------------------------------

local Client = {}
Client.__index = Client

--- A client whose requests run as coroutines of cq (the emulator's own loop in-process).
function M.client(cq)
  return setmetatable({ cq = cq, idle = {} }, Client)
end

--- One request, from inside a coroutine of the client's loop. Keep-alive connections are
-- reused per host and port unless opts.fresh; a connection that answered with
-- Connection: close, or failed, is dropped.
-- @param opts headers (list of "Name: value" or map), body, token (adds the bearer
--   header), fresh, expect100 (send the head with Expect: 100-continue, wait for the
--   100, then the body)
function Client:exchange(method, url, opts)
  opts = opts or {}
  local host, port = host_port(url)
  local target = url:match("^http://[^/]+(/.*)$") or "/"
  local key = host .. ":" .. port
  local so = nil
  if not opts.fresh then
    so = self.idle[key]
    self.idle[key] = nil
  end
  if so and monotime() - so.used > 30 then -- the emulator closes idle connections after 60 s
    so.sock:close()
    so = nil
  end
  so = so and so.sock or connect(host, port)
  local lines = { method .. " " .. target .. " HTTP/1.1", "Host: " .. key }
  if opts.token then lines[#lines + 1] = "Authorization: Bearer " .. opts.token end
  local has_type = false
  for k, v in pairs(opts.headers or {}) do
    local h = type(k) == "number" and v or (k .. ": " .. v)
    if h:lower():match("^content%-type:") then has_type = true end
    lines[#lines + 1] = h
  end
  local body = opts.body
  local chunked = false
  for _, h in ipairs(lines) do
    if h:lower():match("^transfer%-encoding:%s*chunked") then chunked = true end
  end
  if body then
    if not has_type then lines[#lines + 1] = "Content-Type: application/json" end
    if chunked then
      body = string.format("%x\r\n%s\r\n0\r\n\r\n", #body, body)
    else
      lines[#lines + 1] = "Content-Length: " .. #body
    end
  end
  if opts.expect100 then lines[#lines + 1] = "Expect: 100-continue" end
  local head = table.concat(lines, "\r\n") .. "\r\n\r\n"
  local res
  if opts.expect100 then
    assert(so:xwrite(head, "bn", GUARD))
    local line = so:xread("*l", "b", GUARD)
    if line ~= "HTTP/1.1 100 Continue\r" then error("expected 100 Continue before the body, got " .. tostring(line)) end
    assert(so:xread("*l", "b", GUARD) == "\r")
    assert(so:xwrite(body or "", "bn", GUARD))
    res = read_answer(so, method)
    res.continued = true
  else
    local ok, err = so:xwrite(head .. (body or ""), "bn", GUARD)
    if not ok then
      so:close()
      return { headers = {}, body = "", err = why(err) }
    end
    res = read_answer(so, method)
  end
  local close = res.err or not res.status or (res.headers.connection or ""):lower():find("close", 1, true)
  if close or self.idle[key] then -- one kept-alive connection per host and port
    so:close()
  else
    self.idle[key] = { sock = so, used = monotime() }
  end
  return res
end

--- Drop the kept-alive connections.
function Client:close()
  for key, c in pairs(self.idle) do
    c.sock:close()
    self.idle[key] = nil
  end
end

-- ---------------------------------------------------------------------------------------
-- An emulator and its client
-- ---------------------------------------------------------------------------------------

local Emu = {}
Emu.__index = Emu

--- One request (see Client:exchange), run to its end. @return res
function Emu:http(method, url, opts)
  return run_on(self.cq, self.client.exchange, self.client, method, url, opts)
end

--- One request to the API (path after /v1) with the emulator's token unless opts.token
-- gives another, or false for none.
function Emu:call(method, path, opts)
  opts = opts or {}
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  if o.token == nil then o.token = self.token or "any-token" end
  if o.token == false then o.token = nil end
  return self:http(method, self.api .. path, o)
end

--- A request left running (to look at the emulator while it waits).
-- @return pending { done, res, wait = function(self) -> res }
function Emu:start(method, url, opts)
  local pending = { done = false }
  self.cq:wrap(function()
    pending.res = self.client:exchange(method, url, opts)
    pending.done = true
  end)
  local emu = self
  function pending.wait(p)
    emu:wait_for(function() return p.done end, method .. " " .. url)
    return p.res
  end
  return pending
end

--- Run the loop until pred() holds (bounded by the guard: a hang, not a window).
function Emu:wait_for(pred, what)
  local deadline = monotime() + GUARD
  while not pred() do
    local ok, err = self.cq:step(0.05)
    if not ok then error("the loop failed: " .. tostring(err), 2) end
    if monotime() > deadline then error("waited " .. GUARD .. " s of real time for " .. (what or "a condition"), 2) end
  end
end

--- Let the loop run the coroutines that are ready (n steps without waiting).
function Emu:settle(n)
  for _ = 1, n or 10 do
    local ok, err = self.cq:step(0)
    if not ok then error("the loop failed: " .. tostring(err), 2) end
  end
end

--- Send text on a new connection to base_url's host and port, then close the sending
-- side; return all that comes back until the emulator closes the connection.
function Emu:raw(base_url, text)
  return run_on(self.cq, function()
    local host, port = host_port(base_url)
    local so = connect(host, port)
    so:xwrite(text, "bn", GUARD)
    so:shutdown("w") -- nothing more comes: a request cut short ends there
    local reply, err = so:xread("*a", "b", GUARD)
    so:close()
    if not reply and err then error("reading the answer: " .. why(err)) end
    return reply or "" -- nil: closed without a byte
  end)
end

--- GET (or method) a control route and decode its JSON answer (an error unless 200).
function Emu:get_json(path, method, body)
  local res = self:http(method or "GET", self.root .. path, { body = body })
  assert(res.status == 200, "emulator " .. path .. " answered " .. tostring(res.status) .. ": " .. res.body)
  return cjson.decode(res.body)
end

function Emu:stats() return self:get_json("/__emulator/stats") end
function Emu:job_record(id) return self:get_json("/__emulator/jobs/" .. id) end
function Emu:reset() return self:get_json("/__emulator/reset", "POST") end
function Emu:faults() return self:get_json("/__emulator/faults") end

--- Replace the fault table through the control route (seed optional).
function Emu:set_faults(list, seed)
  local body = { seed = seed }
  if #list > 0 then body.faults = list end
  return self:get_json("/__emulator/faults", "POST", cjson.encode(body))
end

--- Move the clock s seconds on: in-process directly, else through POST /__emulator/clock.
function Emu:advance(s)
  if self.server then
    local t = assert(self.server:advance(s))
    self:settle(3) -- let what waited on the clock run
    return t
  end
  return self:get_json("/__emulator/clock", "POST", cjson.encode{ advance = s }).now
end

--- The emulator's clock now.
function Emu:now()
  if self.server then return self.server.clock() end
  return self:get_json("/__emulator/clock").now
end

function Emu:stop()
  if self.stopped then return end
  self.stopped = true
  self.client:close()
  if self.server then
    self.server:stop()
    self:settle(3)
  elseif self.process then
    self.process:stop()
  end
end

local function urls(self, api)
  self.api = api
  self.root = api:gsub("/v1$", "")
  self.stats_url = self.root .. "/__emulator/stats"
end

--- An emulator in this process (not running between calls: the calls run its loop).
-- @param opts emulator.new's options; port 0, quiet and clock "manual" unless given
function M.start(opts)
  local o = { port = 0, quiet = true, clock = "manual" }
  for k, v in pairs(opts or {}) do o[k] = v end
  local server = emulator.new(o)
  local api, files = assert(server:listen())
  local self = setmetatable({ server = server, cq = server.cq, files = files, token = o.token }, Emu)
  urls(self, api)
  self.client = M.client(server.cq)
  return self
end

--- The same client for an emulator process (helpers.start_emulator's object).
function M.remote(process)
  local cq = cqueues.new()
  local self = setmetatable({ process = process, cq = cq, files = process.files, token = process.token }, Emu)
  urls(self, process.api)
  self.pid, self.first_line = process.pid, process.first_line
  self.client = M.client(cq)
  return self
end

return M
