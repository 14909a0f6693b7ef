--- spec/cli_run.lua: runs the real bin/kling as a process, for the specs of the command
-- line. The one helper every CLI spec starts bin/kling with (to its end, or in the
-- background), with the environment given per runner and per run.
--
--   local cli = require("cli_run").new { api = emu.api, token = TOKEN, dir = dir }
--   local res = cli.run({ "status", id }, { env = { SSL_CERT_FILE = path } })  -- { code, out, err }
--   local p = cli.spawn({ "generate", "x" })   -- p.pid, p.signal("TERM"), p.wait(s), p.out(), p.err()
--   cli.cleanup()                              -- (teardown) kills what spawn started and still runs
--   cli_run.eventually(function() return ... end, seconds, what)
--   cli.journal(state_dir) -> list of decoded journal lines
--
-- Options of new: api (base URL), token, dir (scratch directory; runs and the default
-- state go there), state (default dir/state), unset (extra variables to unset).
-- Options of a run: base, state, token (false: none), env (map), cwd, stdin (text fed to
-- the process), prefix (shell commands run first, in the same `sh -c`: a ulimit, a trap).
local helpers = require "helpers"
local cjson = require "cjson"

local q = helpers.quote
local M = {}

M.POLL = "initial=0.05,min=0.05,near=0.2,max=0.3"

-- What a run never inherits from the spec's own environment: a token, module paths, and
-- what changes where requests go or how TLS is verified.
local UNSET = { "RUNCOMFY_TOKEN", "RUNCOMFY_API_TOKEN", "RUNCOMFY_API_KEY", "LUA_PATH", "LUA_CPATH", "http_proxy", "https_proxy",
  "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY", "SSL_CERT_FILE", "CURL_CA_BUNDLE" }

--- Polls until fn() is true (or fails after `seconds`); returns fn's value (helpers.eventually).
M.eventually = helpers.eventually

function M.new(opts)
  local self = { n = 0, api = opts.api, token = opts.token, dir = opts.dir, state = opts.state or (opts.dir .. "/state") }
  local spawned = {}

  local function env_words(o)
    local vars = {
      "RUNCOMFY_MODEL_API_BASE=" .. q(o.base or self.api),
      "XDG_STATE_HOME=" .. q(o.state or self.state),
      "XDG_CACHE_HOME=" .. q(self.dir .. "/cache"), -- the model catalog's schema cache
      "KLING_POLL=" .. M.POLL,
    }
    if o.token ~= false then vars[#vars + 1] = "RUNCOMFY_TOKEN=" .. q(o.token or self.token) end
    local keys = {}
    for k in pairs(o.env or {}) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do vars[#vars + 1] = k .. "=" .. q(o.env[k]) end
    local unset = {}
    for _, name in ipairs(UNSET) do unset[#unset + 1] = "-u " .. name end
    for _, name in ipairs(opts.unset or {}) do unset[#unset + 1] = "-u " .. name end
    return "env " .. table.concat(unset, " ") .. " " .. table.concat(vars, " ")
  end

  -- The shell command that runs bin/kling with its output in base.out and base.err.
  local function command(args, o, base)
    local words = {}
    for _, a in ipairs(args) do words[#words + 1] = q(a) end
    local inner = env_words(o) .. " lua5.4 " .. q(helpers.root .. "/bin/kling") .. " " .. table.concat(words, " ")
    if o.prefix then inner = "sh -c " .. q(o.prefix .. "; exec " .. inner) end
    local stdin = "/dev/null"
    if o.stdin then
      stdin = base .. ".in"
      helpers.write_file(stdin, o.stdin)
    end
    -- the files exist before the process does: reading them early gives "", never nil
    helpers.write_file(base .. ".out", "")
    helpers.write_file(base .. ".err", "")
    return string.format("%s >%s 2>%s <%s", inner, q(base .. ".out"), q(base .. ".err"), q(stdin))
  end

  local function next_base()
    self.n = self.n + 1
    return self.dir .. "/run" .. self.n
  end

  --- Runs bin/kling to its end: { code, out, err }.
  function self.run(args, o)
    o = o or {}
    local base = next_base()
    local ok, how, code = helpers.execute("cd " .. q(o.cwd or self.dir) .. " && " .. command(args, o, base))
    local res = { out = helpers.read_file(base .. ".out") or "", err = helpers.read_file(base .. ".err") or "" }
    res.code = ok and 0 or (how == "exit" and code or 128 + code)
    return res
  end

  --- Starts bin/kling in the background: { pid, done(), wait(seconds) -> res, signal(name), out(), err() }.
  -- The pid is the process's own (the shell execs it), known once spawn returns.
  function self.spawn(args, o)
    o = o or {}
    local base = next_base()
    -- the inner shell writes its pid, then execs kling (the same pid); the outer one waits
    -- for it and writes its exit status
    local inner = "echo $$ >" .. q(base .. ".pid") .. "; exec " .. command(args, o, base)
    local cmd = string.format("cd %s && ( sh -c %s & wait $!; echo $? >%s ) </dev/null >/dev/null 2>&1 &",
      q(o.cwd or self.dir), q(inner), q(base .. ".rc"))
    assert(os.execute(cmd))
    local p = { base = base }
    p.pid = M.eventually(function() return tonumber((helpers.read_file(base .. ".pid") or ""):match("%d+")) end, 10,
      "the pid of kling " .. (args[1] or ""))
    spawned[#spawned + 1] = p
    -- the shell creates the .rc file before it writes the status in it: done once it holds one
    function p.done() return (helpers.read_file(base .. ".rc") or ""):match("%d+") ~= nil end
    function p.wait(seconds)
      local limit = os.time() + (seconds or 20)
      while not p.done() and os.time() <= limit do helpers.sleep(0.05) end
      local rc = tonumber((helpers.read_file(base .. ".rc") or ""):match("%d+"))
      return { code = rc, out = p.out(), err = p.err() }
    end
    function p.signal(name) os.execute("kill -" .. name .. " " .. p.pid .. " 2>/dev/null") end
    p.kill = p.signal
    function p.out() return helpers.read_file(base .. ".out") or "" end
    function p.err() return helpers.read_file(base .. ".err") or "" end
    return p
  end

  --- Kills (SIGKILL, by pid) every process spawn started that has not ended: for teardown,
  -- so a spec that failed half-way leaves nothing running.
  function self.cleanup()
    for _, p in ipairs(spawned) do
      if not p.done() then p.signal("KILL") end
    end
    spawned = {}
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

return M
