--- spec/helpers.lua: what every spec shares.
--
--   local helpers = require "helpers"
--   local emu = helpers.start_emulator{ "--queue", "0.2", "--run", "0.3", "--token", "sekret" }
--   -- emu.api (".../v1"), emu.files, emu.stats_url, emu.pid, emu.first_line
--   emu:stats(), emu:job_record(id), emu:reset(), emu:stop()
--   emu:faults(), emu:set_faults{ "status:503:0.2", "all:429:0.1:2" } (seed optional)
--   helpers.http("GET", url, { headers = {...}, body = "...", token = "..." })
--   emu:advance(s) (an emulator started with --clock manual: its clock s seconds on)
--   helpers.sleep(0.1), helpers.tmpdir(), helpers.read_file(path), helpers.root
--   helpers.eventually(f, seconds, what): wait on an event, never on a fixed sleep
--   helpers.write_file(path, data), helpers.append_file(path, data), helpers.size_of(path)
--   helpers.files(dir) (sorted names), helpers.mkdir(path), helpers.rm_rf(path),
--   helpers.scratch(dir) (a fresh directory under dir)
--   helpers.capture(cmd) (stdout), helpers.sh(cmd) (ok, stdout and stderr),
--   helpers.free_port(), helpers.quote(s)
local cjson = require "cjson"

local helpers = {}

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
helpers.quote = quote

--- What a shell command writes on stdout.
local function capture(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("*a")
  p:close()
  return out
end
helpers.capture = capture

--- Run a shell command: true when it exits 0, what it wrote (stdout and stderr), and its
-- exit code (or the signal that ended it).
function helpers.sh(cmd)
  local p = assert(io.popen("(" .. cmd .. ") 2>&1"))
  local out = p:read("*a")
  local ok, _, code = p:close()
  return ok, out, ok and 0 or code
end

-- The repository root: the parent of the directory holding this file.
do
  local source = debug.getinfo(1, "S").source:gsub("^@", "")
  local dir = source:match("^(.*)/[^/]*$") or "."
  if dir:sub(1, 1) ~= "/" then
    dir = capture("pwd"):gsub("%s+$", "") .. "/" .. dir
  end
  helpers.root = capture("cd " .. quote(dir .. "/..") .. " && pwd"):gsub("%s+$", "")
end

--- The emulator's video bytes (kling.emulator.pattern_bytes): computed in this
-- process on Lua 5.3+, by a lua5.4 process on older Luas (the emulator needs 5.3+).
function helpers.pattern_bytes(shift, n)
  if math.type then return require("kling.emulator").pattern_bytes(shift, n) end
  local p = assert(io.popen("cd " .. quote(helpers.root) .. " && lua5.4 -e " .. quote(
    "package.path = 'lua/?.lua;' .. package.path; io.write(require('kling.emulator').pattern_bytes("
    .. tonumber(shift) .. ", " .. tonumber(n) .. "))"), "r"))
  local data = p:read("*a")
  p:close()
  return data
end

--- math.type on every Lua (5.1, 5.2, LuaJIT: "integer" for an integral number below 2^53).
function helpers.math_type(v)
  if math.type then return math.type(v) end
  if type(v) ~= "number" then return nil end
  return (v == math.floor(v) and math.abs(v) < 2 ^ 53) and "integer" or "float"
end

--- utf8.len(s) on every Lua: the count of characters, or nil when s is not UTF-8.
function helpers.utf8_len(s)
  if utf8 then return utf8.len(s) end
  local n, i = 0, 1
  while i <= #s do
    local c = s:byte(i)
    local len = c < 0x80 and 1 or (c >= 0xC2 and c < 0xE0) and 2 or (c >= 0xE0 and c < 0xF0) and 3
      or (c >= 0xF0 and c < 0xF5) and 4 or nil
    if not len then return nil end
    for j = i + 1, i + len - 1 do
      local d = s:byte(j)
      if not d or d < 0x80 or d > 0xBF then return nil end
    end
    i, n = i + len, n + 1
  end
  return n
end

--- os.execute with the results of Lua 5.2+ on every Lua: true|nil, "exit"|"signal", code
-- (Lua 5.1 and LuaJIT without 5.2 compatibility return the wait status alone).
function helpers.execute(cmd)
  local ok, how, code = os.execute(cmd)
  if type(ok) == "number" then
    if ok % 256 == 0 then return ok == 0 or nil, "exit", ok / 256 end
    return nil, "signal", ok % 128
  end
  return ok, how, code
end

--- Sleep s seconds (fractional).
function helpers.sleep(s)
  os.execute(string.format("sleep %.3f", s))
end

--- A fresh temporary directory.
function helpers.tmpdir()
  local dir = capture("mktemp -d"):gsub("%s+$", "")
  assert(dir ~= "", "mktemp -d failed")
  return dir
end

--- The whole content of a file, or nil, err.
function helpers.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local data = f:read("*a")
  f:close()
  return data
end

--- Write data to path (replacing it).
local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end
helpers.write_file = write_file

--- Append data to path.
function helpers.append_file(path, data)
  local f = assert(io.open(path, "ab"))
  f:write(data)
  f:close()
end

--- The size of a file in bytes, or nil when it cannot be opened.
function helpers.size_of(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

--- The names in a directory (without . and ..), sorted.
function helpers.files(dir)
  local names = {}
  for name in require("lfs").dir(dir) do
    if name ~= "." and name ~= ".." then names[#names + 1] = name end
  end
  table.sort(names)
  return names
end

--- Make a directory and its parents (mkdir -p).
function helpers.mkdir(path)
  assert(os.execute("mkdir -p " .. quote(path)))
end

--- Remove a file or a directory tree (rm -rf); nil does nothing.
function helpers.rm_rf(path)
  if path then os.execute("rm -rf " .. quote(path)) end
end

local scratch_n = 0
--- A fresh, empty directory under dir: dir/s1, dir/s2, ... (one per call in the process).
function helpers.scratch(dir)
  scratch_n = scratch_n + 1
  local d = dir .. "/s" .. scratch_n
  helpers.mkdir(d)
  return d
end

--- An API on loopback that accepts connections and never answers (a lua5.4 process):
-- a request sent to it stays in flight. It says when a request's head has arrived, so that
-- a spec waits on that event, not on a time window.
-- @param dir a scratch directory for its files
-- @return { base = "http://127.0.0.1:PORT/v1", arrived() -> true once a request came,
--   stop() } (stop kills it by pid; call it from a finally or a teardown)
function helpers.silent_api(dir)
  local port_file, script = dir .. "/silent.port", dir .. "/silent.lua"
  write_file(script, [[
    local socket = require "cqueues.socket"
    local srv = socket.listen { host = "127.0.0.1", port = 0 }
    local _, _, port = srv:localname()
    local f = io.open(arg[1], "w") f:write(port) f:close()
    local held = {}
    while true do
      local con = srv:accept()
      held[#held + 1] = con
      con:setmode("b", "b")
      repeat local line = con:read("*l") until not line or line == "\r" or line == ""
      local g = io.open(arg[1] .. ".got", "w") g:write("request") g:close() -- the request is in flight
    end
  ]])
  local p = io.popen("exec lua5.4 " .. quote(script) .. " " .. quote(port_file) .. " & echo $!")
  local pid = tonumber(p:read("*l"))
  p:close()
  local api = {}
  function api.stop() os.execute("kill " .. pid .. " 2>/dev/null") end
  function api.arrived() return helpers.read_file(port_file .. ".got") ~= nil end
  local ok, port = pcall(helpers.eventually, function() return tonumber(helpers.read_file(port_file) or "") end,
    5, "the silent API's port")
  if not ok then api.stop(); error(port, 2) end
  api.base = "http://127.0.0.1:" .. port .. "/v1"
  return api
end

--- A TCP port on 127.0.0.1 that was free a moment ago.
function helpers.free_port()
  local s = assert(require("cqueues.socket").listen { host = "127.0.0.1", port = 0 })
  assert(s:listen())
  local _, _, port = s:localname()
  s:close()
  return port
end

--- Is the process alive (a zombie waiting to be reaped counts as gone)?
function helpers.alive(pid)
  local stat = helpers.read_file("/proc/" .. pid .. "/stat")
  if not stat then return false end
  local state = stat:match("^%d+ %b() (%a)")
  return state ~= nil and state ~= "Z" and state ~= "X"
end

--- One HTTP exchange through the curl command-line tool.
-- @param method "GET", "POST", "HEAD", ...
-- @param url string
-- @param opts optional: headers (list of "Name: value" or map name -> value), body (string),
--   token (adds Authorization: Bearer), args (list of extra curl arguments)
-- @return { status = n, headers = { lowercase name -> value }, head = raw text, body = string
--   ("" for HEAD), stderr = curl's messages }
function helpers.http(method, url, opts)
  opts = opts or {}
  local dir = helpers.tmpdir()
  local args = { "curl", "-s", "-S", "--max-time", "20", "-D", quote(dir .. "/head"),
    "-o", quote(dir .. "/body"), "-w", quote("%{http_code}") }
  if method == "HEAD" then
    args[#args + 1] = "-I"
  else
    args[#args + 1] = "-X " .. quote(method)
  end
  local headers = {}
  if opts.token then headers[#headers + 1] = "Authorization: Bearer " .. opts.token end
  for k, v in pairs(opts.headers or {}) do
    headers[#headers + 1] = type(k) == "number" and v or (k .. ": " .. v)
  end
  if opts.body then
    write_file(dir .. "/req", opts.body)
    args[#args + 1] = "--data-binary @" .. quote(dir .. "/req")
    if not (opts.headers and (opts.headers["Content-Type"])) then
      headers[#headers + 1] = "Content-Type: application/json"
    end
  end
  for _, h in ipairs(headers) do args[#args + 1] = "-H " .. quote(h) end
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = quote(a) end
  args[#args + 1] = quote(url)
  local code = capture(table.concat(args, " ") .. " 2>" .. quote(dir .. "/err"))
  local res = {
    status = tonumber(code),
    head = helpers.read_file(dir .. "/head") or "",
    -- with -I curl reads no body and copies the head to the output instead
    body = method ~= "HEAD" and helpers.read_file(dir .. "/body") or "",
    stderr = helpers.read_file(dir .. "/err") or "",
    headers = {},
  }
  for line in res.head:gmatch("[^\r\n]+") do
    local name, value = line:match("^([^:%s]+):%s*(.-)%s*$")
    if name then res.headers[name:lower()] = value end
  end
  os.execute("rm -rf " .. quote(dir))
  return res
end

--- Decode a JSON text (error with the text when it is not JSON).
function helpers.json(text)
  local ok, value = pcall(cjson.decode, text)
  if not ok then error("not JSON: " .. tostring(text), 2) end
  return value
end

local Emulator = {}
Emulator.__index = Emulator

--- GET a control URL of the emulator and decode the JSON answer.
function Emulator:get_json(path, method)
  local res = helpers.http(method or "GET", self.root .. path)
  assert(res.status == 200, "emulator " .. path .. " answered " .. tostring(res.status) .. ": " .. res.body)
  return helpers.json(res.body)
end

--- The counters of /__emulator/stats.
function Emulator:stats()
  return self:get_json("/__emulator/stats")
end

--- The record of a job (incl. the input it received, as `input` and raw as `body`).
function Emulator:job_record(id)
  return self:get_json("/__emulator/jobs/" .. id)
end

--- Zero the counters (the jobs stay).
function Emulator:reset()
  return self:get_json("/__emulator/reset", "POST")
end

--- The emulator's fault table: { faults = { { route, fault, rate, arg, spec }, ... },
-- reset = "rst" | "close" }.
function Emulator:faults()
  return self:get_json("/__emulator/faults")
end

--- Replace the emulator's fault table (a list of "ROUTE:FAULT:RATE[:ARG]" strings; {} for
-- none); with seed, also restart the faults' generator as --seed N would have started it.
-- @return the new table (as faults() answers it)
function Emulator:set_faults(faults, seed)
  local body = { faults = faults }
  if #faults == 0 then body.faults = nil end
  body.seed = seed
  local res = helpers.http("POST", self.root .. "/__emulator/faults", { body = cjson.encode(body) })
  assert(res.status == 200, "emulator /__emulator/faults answered " .. tostring(res.status) .. ": " .. res.body)
  return helpers.json(res.body)
end

--- Move the emulator's clock s seconds on (an emulator started with --clock manual; see
-- doc/EMULATOR.md, "The clock"): a spec says "s seconds later" without waiting for them.
-- @return the clock's new value (seconds)
function Emulator:advance(s)
  local res = helpers.http("POST", self.root .. "/__emulator/clock", { body = cjson.encode { advance = s } })
  assert(res.status == 200, "emulator /__emulator/clock answered " .. tostring(res.status) .. ": " .. res.body)
  return helpers.json(res.body).now
end

--- Wait until f() returns a true value (asked every 20 ms) and return it; error with what
-- after `seconds` (default 10) of asking. A spec waits on an event this way, never on a
-- fixed sleep: the bound is only there so that a broken spec ends.
function helpers.eventually(f, seconds, what)
  local deadline = os.time() + (seconds or 10)
  repeat
    local v = f()
    if v then return v end
    helpers.sleep(0.02)
  until os.time() > deadline
  error("timed out waiting for " .. (what or "a condition"), 2)
end

--- One request to the emulator's API with the curl CLI (see helpers.http); the
-- bearer token is the one the emulator was started with (--token), unless
-- opts.token gives another, or false for none.
function Emulator:call(method, path, opts)
  opts = opts or {}
  if opts.token == nil then opts.token = self.token end
  if opts.token == false then opts.token = nil end
  return helpers.http(method, self.api .. path, opts)
end

--- What the emulator wrote on stderr so far.
function Emulator:stderr()
  return helpers.read_file(self.err_path) or ""
end

--- Stop the emulator: SIGTERM, wait (bounded) until it is gone, SIGKILL if it lingers.
function Emulator:stop()
  if self.stopped then return end
  self.stopped = true
  os.execute("kill -TERM " .. self.pid .. " 2>/dev/null")
  local deadline = os.time() + 5
  while helpers.alive(self.pid) and os.time() <= deadline do helpers.sleep(0.02) end
  if helpers.alive(self.pid) then os.execute("kill -KILL " .. self.pid .. " 2>/dev/null") end
  if self.stdin then self.stdin:close() end
  os.execute("rm -rf " .. quote(self.dir))
end

--- Start bin/kling-emulator --port 0 --quiet with extra flags, wait for its first line.
-- The emulator's stdin is a pipe held by this process (with --exit-on-stdin-eof), so it
-- also exits if the spec process dies without stopping it.
-- @param args list of extra flags, e.g. { "--queue", "0.2", "--token", "sekret" }
-- @param opts optional: quiet = false leaves out --quiet (the log goes to emu:stderr())
-- @return emulator object (error with the emulator's stderr if it does not come up)
function helpers.start_emulator(args, opts)
  local dir = helpers.tmpdir()
  local self = setmetatable({ dir = dir, out_path = dir .. "/stdout", err_path = dir .. "/stderr" }, Emulator)
  local flags = {}
  for i, a in ipairs(args or {}) do
    flags[#flags + 1] = quote(a)
    if a == "--token" then self.token = args[i + 1] end
  end
  local cmd = string.format(
    "cd %s && exec 3<&0 && { lua5.4 bin/kling-emulator --port 0%s --exit-on-stdin-eof %s >%s 2>%s <&3 3<&- & echo $! >%s; }",
    quote(helpers.root), (opts and opts.quiet == false) and "" or " --quiet", table.concat(flags, " "), quote(self.out_path), quote(self.err_path),
    quote(dir .. "/pid"))
  self.stdin = assert(io.popen(cmd, "w"))
  local pid
  local deadline = os.time() + 10
  repeat
    pid = pid or tonumber((helpers.read_file(dir .. "/pid") or ""):match("%d+"))
    local out = helpers.read_file(self.out_path) or ""
    local line = out:match("^([^\n]*)\n")
    if line then
      self.first_line = line
      self.api, self.files, self.stats_url = line:match("^kling%-emulator api=(%S+) files=(%S+) stats=(%S+)$")
      if not self.api then
        self.pid = pid
        self:stop()
        error("unexpected first line from kling-emulator: " .. line, 2)
      end
      self.root = self.api:gsub("/v1$", "")
      self.pid = pid
      return self
    end
    if pid and not helpers.alive(pid) then
      local err = helpers.read_file(self.err_path) or ""
      self.stdin:close()
      os.execute("rm -rf " .. quote(dir))
      error("kling-emulator exited before listening: " .. err, 2)
    end
    helpers.sleep(0.02)
  until os.time() > deadline
  self.pid = pid
  local err = helpers.read_file(self.err_path) or ""
  self:stop()
  error("kling-emulator did not print its first line within 10 s: " .. err, 2)
end

return helpers
