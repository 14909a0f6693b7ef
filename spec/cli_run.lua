--- spec/cli_run.lua: runs the real bin/kling as a process, for the specs of the command
-- line (as spec/cli_spec.lua does, with the environment given per run).
--
--   local cli = require("cli_run").new { api = emu.api, token = TOKEN, dir = dir }
--   local res = cli.run({ "status", id }, { env = { SSL_CERT_FILE = path } })  -- { code, out, err }
--   local p = cli.spawn({ "generate", "x" })   -- p.pid, p.signal("TERM"), p.wait(s), p.err()
--   cli.eventually(function() return ... end, seconds, what)
--   cli.journal(state_dir) -> list of decoded journal lines
local helpers = require "helpers"
local cjson = require "cjson"

local q = helpers.quote
local M = {}

local POLL = "initial=0.05,min=0.05,near=0.2,max=0.3"

--- opts: api (base URL), token, dir (scratch directory; runs and the default state go there)
function M.new(opts)
  local self = { n = 0, api = opts.api, token = opts.token, dir = opts.dir, state = opts.dir .. "/state" }

  local function env_prefix(o)
    o = o or {}
    local vars = {
      "RUNCOMFY_MODEL_API_BASE=" .. q(o.base or self.api),
      "XDG_STATE_HOME=" .. q(o.state or self.state),
      "KLING_POLL=" .. POLL,
    }
    if o.token ~= false then vars[#vars + 1] = "RUNCOMFY_TOKEN=" .. q(o.token or self.token) end
    for k, v in pairs(o.env or {}) do vars[#vars + 1] = k .. "=" .. q(v) end
    local unset = "-u RUNCOMFY_TOKEN -u RUNCOMFY_API_TOKEN -u LUA_PATH -u LUA_CPATH -u http_proxy -u https_proxy "
      .. "-u HTTPS_PROXY -u all_proxy -u ALL_PROXY -u no_proxy -u NO_PROXY -u SSL_CERT_FILE -u CURL_CA_BUNDLE"
    return "env " .. unset .. " " .. table.concat(vars, " ")
  end

  local function command_line(args)
    local words = {}
    for _, a in ipairs(args) do words[#words + 1] = q(a) end
    return "lua5.4 " .. q(helpers.root .. "/bin/kling") .. " " .. table.concat(words, " ")
  end

  --- Runs bin/kling to its end: { code, out, err }.
  function self.run(args, o)
    o = o or {}
    self.n = self.n + 1
    local base = self.dir .. "/run" .. self.n
    local cmd = string.format("cd %s && %s %s >%s 2>%s </dev/null", q(o.cwd or self.dir), env_prefix(o),
      command_line(args), q(base .. ".out"), q(base .. ".err"))
    local ok, how, code = os.execute(cmd)
    local res = { out = helpers.read_file(base .. ".out") or "", err = helpers.read_file(base .. ".err") or "" }
    res.code = ok and 0 or (how == "exit" and code or 128 + code)
    return res
  end

  --- Starts bin/kling in the background: { pid, done(), wait(seconds) -> res, signal(name), err() }.
  function self.spawn(args, o)
    o = o or {}
    self.n = self.n + 1
    local base = self.dir .. "/run" .. self.n
    local cmd = string.format("cd %s && ( %s %s >%s 2>%s </dev/null & echo $! >%s; wait $!; echo $? >%s ) 2>/dev/null &",
      q(o.cwd or self.dir), env_prefix(o), command_line(args), q(base .. ".out"), q(base .. ".err"),
      q(base .. ".pid"), q(base .. ".rc"))
    assert(os.execute(cmd))
    local p = { base = base }
    local deadline = os.time() + 10
    repeat
      p.pid = tonumber((helpers.read_file(base .. ".pid") or ""):match("%d+"))
      if not p.pid then helpers.sleep(0.02) end
    until p.pid or os.time() > deadline
    assert(p.pid, "no pid")
    -- the shell creates the .rc file before it writes the status in it: done once it holds one
    function p.done() return (helpers.read_file(base .. ".rc") or ""):match("%d+") ~= nil end
    function p.wait(seconds)
      local limit = os.time() + (seconds or 20)
      while not p.done() and os.time() <= limit do helpers.sleep(0.05) end
      local rc = tonumber((helpers.read_file(base .. ".rc") or ""):match("%d+"))
      return { code = rc, out = helpers.read_file(base .. ".out") or "", err = helpers.read_file(base .. ".err") or "" }
    end
    function p.signal(name) os.execute("kill -" .. name .. " " .. p.pid .. " 2>/dev/null") end
    function p.err() return helpers.read_file(base .. ".err") or "" end
    return p
  end

  --- The journal's lines (decoded) under a state directory (default: this runner's).
  function self.journal(state)
    local text = helpers.read_file((state or self.state) .. "/kling/jobs.jsonl") or ""
    local events = {}
    for line in text:gmatch("[^\n]+") do events[#events + 1] = cjson.decode(line) end
    return events
  end

  return self
end

--- Polls until fn() is true (or fails after `seconds`); returns fn's value.
function M.eventually(fn, seconds, what)
  local limit = os.time() + (seconds or 10)
  while os.time() <= limit do
    local v = fn()
    if v then return v end
    helpers.sleep(0.05)
  end
  error("timed out waiting for " .. (what or "a condition"), 2)
end

return M
