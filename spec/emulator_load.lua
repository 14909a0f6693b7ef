#!/usr/bin/env lua5.4
--- spec/emulator_load.lua: a load generator for kling-emulator (a script, not a spec).
--
-- Opens N keep-alive connections with cqueues sockets and, on each, sends
-- GET /v1/requests/{id}/status back to back (one request in flight per connection) for a
-- few seconds, then prints the number of answers per second and, when it can read
-- /proc/PID/stat, the CPU the emulator used (so the figure per emulator CPU-second does not
-- depend on how much of the machine the generator itself takes).
--
--   lua5.4 spec/emulator_load.lua [--connections 8] [--seconds 5] [--url API_URL --token T]
--                                 [--pid PID] [--path /v1/requests/ID/status] [--state completed]
--                                 [--parse 0] [--pipeline 1]
--
-- To keep the generator cheaper than the server, it parses the first answer on each
-- connection and then reads each answer as that many bytes, compared with the first one
-- (the answers for one job in one state are identical); --parse 1 parses every answer.
-- --pipeline K sends K requests at once on each connection (HTTP/1.1 pipelining) and then
-- reads their K answers, which takes most of the generator's own cost off the machine (the
-- emulator still answers them one by one): use it to approach the emulator's ceiling.
--
-- Without --url it starts bin/kling-emulator --load itself (and stops it afterwards). The
-- id polled is that of a job submitted first; --state completed (default) submits it with
-- @emu:queue=0 @emu:run=0 so every answer is the same, --state queued keeps it in the queue.
local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. here .. "/../lua/?.lua;" .. here .. "/../lua/?/init.lua;" .. package.path

local cqueues = require "cqueues"
local socket = require "cqueues.socket"
local cjson = require "cjson"

local opts = { connections = 8, seconds = 5, state = "completed", parse = 0, pipeline = 1 }
do
  local i = 1
  while i <= #arg do
    local name = arg[i]:match("^%-%-([%w-]+)$")
    local value = arg[i + 1]
    if not name or not value then
      io.stderr:write("usage: lua5.4 spec/emulator_load.lua [--connections N] [--seconds S] "
        .. "[--url API_URL --token T] [--pid PID] [--path PATH] [--state completed|queued] "
        .. "[--parse 0|1] [--pipeline K]\n")
      os.exit(2)
    end
    opts[name] = tonumber(value) or value
    i = i + 2
  end
end

local emu
if not opts.url then
  local helpers = require "helpers"
  emu = helpers.start_emulator{ "--load" }
  opts.url, opts.pid, opts.token = emu.api, emu.pid, "load-token"
end
opts.token = opts.token or "load-token"

local host, port = opts.url:match("^http://([^:/]+):(%d+)")
port = tonumber(port)
local auth = "Authorization: Bearer " .. opts.token .. "\r\n"

-- One request and its answer on an open connection: -> status, body, the whole answer
local function exchange(so, request)
  assert(so:xwrite(request, "bn"))
  local line = assert(so:xread("*l", "b"))
  local status = tonumber(line:match("^HTTP/1%.1 (%d+)"))
  local length = 0
  local head = { line }
  while true do
    local h = assert(so:xread("*l", "b"))
    head[#head + 1] = h
    if h == "" or h == "\r" then break end
    local n = h:match("^[Cc]ontent%-[Ll]ength:%s*(%d+)")
    if n then length = tonumber(n) end
  end
  local body = length > 0 and assert(so:xread(length, "b")) or ""
  return status, body, table.concat(head, "\n") .. "\n" .. body
end

local function connect()
  local so = socket.connect{ host = host, port = port }
  so:setmode("b", "bn")
  assert(so:connect(5))
  return so
end

-- the emulator's user and system CPU seconds so far
local function cpu_seconds(pid)
  local f = pid and io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local stat = f:read("*a")
  f:close()
  local fields = {}
  for word in stat:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = word end
  -- utime and stime are fields 14 and 15 of the whole line, 12 and 13 after "(comm)"
  return tonumber(fields[12]) / 100, tonumber(fields[13]) / 100

end

local cq = cqueues.new()
local count, failures = 0, 0
local elapsed, cpu
cq:wrap(function()
  local path = opts.path
  if not path then
    local prompt = opts.state == "queued" and "load @emu:queue=100000" or "load @emu:queue=0 @emu:run=0"
    local body = cjson.encode{ prompt = prompt }
    local so = connect()
    local status, answer = exchange(so, "POST /v1/models/kling/kling-3.0/pro/text-to-video HTTP/1.1\r\nHost: "
      .. host .. "\r\n" .. auth .. "Content-Type: application/json\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body)
    assert(status == 200, answer)
    so:close()
    path = "/v1/requests/" .. cjson.decode(answer).request_id .. "/status"
  end
  local request = "GET " .. path .. " HTTP/1.1\r\nHost: " .. host .. "\r\n" .. auth .. "Accept: application/json\r\n\r\n"
  local conns = {}
  for i = 1, opts.connections do conns[i] = connect() end
  local started = cqueues.monotime()
  local user0, system0 = cpu_seconds(opts.pid)
  local deadline = started + opts.seconds
  local running = opts.connections
  local done = require("cqueues.condition").new()
  for i = 1, opts.connections do
    cq:wrap(function()
      local so = conns[i]
      local status, _, first = exchange(so, request)
      if status == 200 then count = count + 1 else failures = failures + 1 end
      local size = #first
      local k = math.max(1, math.floor(opts.pipeline))
      local batch, expected = request:rep(k), first:rep(k)
      while cqueues.monotime() < deadline do
        if k > 1 then
          assert(so:xwrite(batch, "bn"))
          local answers = assert(so:xread(size * k, "b"))
          if answers ~= expected then error("the answers changed:\n" .. answers) end
          count = count + k
        elseif opts.parse ~= 0 then
          status = exchange(so, request)
          if status == 200 then count = count + 1 else failures = failures + 1 end
        else
          assert(so:xwrite(request, "bn"))
          local answer = assert(so:xread(size, "b"))
          if answer == first then
            count = count + 1
          else
            error("the answer changed (rerun with --parse 1):\n" .. answer)
          end
        end
      end
      so:close()
      running = running - 1
      if running == 0 then done:signal() end
    end)
  end
  done:wait()
  elapsed = cqueues.monotime() - started
  local user1, system1 = cpu_seconds(opts.pid)
  if user0 and user1 then cpu = { user = user1 - user0, system = system1 - system0 } end
end)
local ok, err = cq:loop()
if emu then emu:stop() end
assert(ok, err)

print(string.format("%d connections, %.1f s: %d answers (%d not 200), %.0f requests/s",
  opts.connections, elapsed, count, failures, count / elapsed))
if cpu then
  local total = cpu.user + cpu.system
  print(string.format("emulator CPU %.2f s (user %.2f, system %.2f; %.0f%% of one core): "
    .. "%.0f requests per emulator CPU-second", total, cpu.user, cpu.system, 100 * total / elapsed,
    total > 0 and count / total or 0))
end
