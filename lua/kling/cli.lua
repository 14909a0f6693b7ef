--- kling.cli: the command-line tool (bin/kling). See doc/CLI.md.
--
--   os.exit(require("kling.cli").main(arg))
--
-- Every command is built on the public library (kling, kling.journal,
-- kling.models). Results go to stdout; progress and messages to stderr,
-- except the live display on a terminal, which is drawn on stdout.
local kling = require "kling"
local json = require "kling.json"
local models = require "kling.models"
local journal = require "kling.journal"
local core = require "kling.core"
local client_lib = require "kling.client"

local M = {}

-- ---------------------------------------------------------------------------------------
-- Output: the one place where text reaches stdout and stderr
-- ---------------------------------------------------------------------------------------

local ESCAPE_NAMES = { [9] = "\\t", [10] = "\\n", [13] = "\\r", [27] = "\\x1b" }

-- The bidi controls, which reorder what a terminal shows (U+200E, U+200F, U+202A-U+202E,
-- U+2066-U+2069): escaped like control characters.
local BIDI = { [0x200E] = true, [0x200F] = true, [0x202A] = true, [0x202B] = true, [0x202C] = true, [0x202D] = true,
  [0x202E] = true, [0x2066] = true, [0x2067] = true, [0x2068] = true, [0x2069] = true }

--- Text from outside (a server, a journal, a file) as it may reach a terminal: every
-- control character is written as an escape (C0 bytes, DEL, the C1 characters U+0080 to
-- U+009F; so the ESC of CSI and OSC sequences, CR, BEL, NUL), and so are the bidi
-- controls (\u202e...) and every byte that is not valid UTF-8 (\xHH). keep_lines keeps
-- newlines and tabs (the CLI's own line structure); without it they are escaped too (\n, \t).
function M.escape(s, keep_lines)
  s = tostring(s)
  if not s:find("[%z\1-\31\127-\255]") then return s end
  local out, i, n = {}, 1, #s
  while i <= n do
    local j = s:find("[%z\1-\31\127-\255]", i)
    if not j then
      out[#out + 1] = s:sub(i)
      break
    end
    if j > i then out[#out + 1] = s:sub(i, j - 1) end
    local b = s:byte(j)
    if b < 0x80 then
      if keep_lines and (b == 10 or b == 9) then
        out[#out + 1] = string.char(b)
      else
        out[#out + 1] = ESCAPE_NAMES[b] or string.format("\\x%02x", b)
      end
      i = j + 1
    else
      local len = (b >= 0xC2 and b <= 0xDF) and 2 or (b >= 0xE0 and b <= 0xEF) and 3
        or (b >= 0xF0 and b <= 0xF4) and 4 or nil
      local seq = len and s:sub(j, j + len - 1)
      local cp = seq and #seq == len and utf8.len(seq) == 1 and utf8.codepoint(seq)
      if not cp then
        out[#out + 1] = string.format("\\x%02x", b)
        i = j + 1
      else
        out[#out + 1] = (cp <= 0x9F or BIDI[cp]) and string.format("\\u%04x", cp) or seq
        i = j + len
      end
    end
  end
  return table.concat(out)
end

-- A stream that escapes everything written to it (M.escape, keeping newlines and tabs);
-- :raw() writes the CLI's own control sequences (the live display) as they are. With
-- --json, stdout is the JSON writer's: nothing is changed on it.
local function safe_stream(real, is_stdout)
  local stream = {}
  function stream.write(self, ...)
    if is_stdout and M.json_output then
      real:write(...)
      return self
    end
    local args = table.pack(...)
    for k = 1, args.n do args[k] = M.escape(args[k], true) end
    real:write(table.unpack(args, 1, args.n))
    return self
  end
  function stream.raw(self, ...)
    real:write(...)
    return self
  end
  function stream.flush() return real:flush() end
  function stream.setvbuf(_, ...) return real:setvbuf(...) end
  return stream
end

--- tostring(err) with what came from outside on one line: the message and the
-- validation problems have their newlines and tabs escaped too (M.escape); the streams
-- escape the rest.
function M.error_text(err)
  if type(err) ~= "table" then return M.escape(err) end
  local copy = setmetatable({}, getmetatable(err))
  for k, v in pairs(err) do copy[k] = v end
  copy.message = M.escape(err.message)
  if err.request_id ~= nil then copy.request_id = M.escape(err.request_id) end
  if type(err.errors) == "table" then
    copy.errors = {}
    for i, item in ipairs(err.errors) do
      copy.errors[i] = { path = M.escape(item.path), message = M.escape(item.message) }
    end
  end
  return tostring(copy)
end

--- The streams every command writes to (and nothing else writes): io.stdout and
-- io.stderr behind M.escape. Inside this file and kling.cli.batch, `io` is this table.
M.io = setmetatable({ stdout = safe_stream(io.stdout, true), stderr = safe_stream(io.stderr, false) },
  { __index = io })
local io = M.io -- luacheck: ignore (shadows the global on purpose)

-- ---------------------------------------------------------------------------------------
-- Exit codes
-- ---------------------------------------------------------------------------------------

M.EXIT = {
  ok = 0, internal = 1, usage = 2, validation = 3, auth = 4, failed = 5, timeout = 6,
  network = 7, io = 8, interrupted = 130, hangup = 129, terminated = 143,
}

--- The exit code for an error kind of the library.
M.KIND_EXIT = {
  validation = 3, bad_request = 3,
  auth = 4, payment = 4,
  failed = 5, cancelled = 5, not_cancellable = 5,
  timeout = 6, not_ready = 6,
  network = 7, server = 7, rate_limited = 7, submit_unknown = 7, protocol = 7, not_found = 7,
  io = 8,
}

-- When several jobs end differently, the code of the most serious outcome wins.
local SEVERITY = { [143] = 9, [129] = 9, [130] = 9, [1] = 8, [8] = 7, [4] = 6, [7] = 5, [6] = 4, [5] = 3, [3] = 2,
  [2] = 1, [0] = 0 }

local function worst(a, b)
  if (SEVERITY[b] or 7) > (SEVERITY[a] or 7) then return b end
  return a
end

local function code_for(err)
  return M.KIND_EXIT[err and err.kind] or 7
end

local EXIT_HELP = [[
Exit codes:
  0    success
  1    internal error (a bug: please report it)
  2    usage error (unknown option, missing argument, output file exists...)
  3    validation error: the input breaks the model's schema (nothing was sent),
       or the service refused it (HTTP 400/422)
  4    authentication or payment problem (no or wrong token, no balance)
  5    a job failed or was cancelled (or could not be cancelled: it runs)
  6    timeout: a job is still running; it can be collected later (kling wait ID)
  7    network or server error (also: submit of unknown outcome, rate limited,
       unknown request id, an answer the contract does not allow)
  8    local file or disk error (journal, batch state, download target): the
       message names the path; for a submit, nothing was sent unless its
       request id was printed (then only the journal lacks it)
  129  hangup (SIGHUP), handled as Ctrl-C is
  130  interrupted (Ctrl-C, SIGINT)
  143  terminated (SIGTERM), handled as Ctrl-C is
]]

-- ---------------------------------------------------------------------------------------
-- Small helpers
-- ---------------------------------------------------------------------------------------

local function now() return core.now() end

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- A path as a shell word (quoted only when it needs to be).
local function shell_word(s)
  if s:match("^[%w%._/+,:@%-]+$") then return s end
  return quote(s)
end

local function trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

local function file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local function is_dir(path)
  return os.execute("test -d " .. quote(path)) == true
end

local function mkdir_p(path)
  return os.execute("mkdir -p " .. quote(path) .. " 2>/dev/null") == true
end

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

local function join(dir, name)
  if dir == "" or dir == "." then return name end
  if dir:sub(-1) == "/" then return dir .. name end
  return dir .. "/" .. name
end

-- A number that can be printed as one: not nil, NaN or infinite.
local function finite(n)
  return type(n) == "number" and n == n and n > -math.huge and n < math.huge
end

--- "1.2 MiB", "45 B" (sizes and rates: an integer or a float, "?" for what is not a
-- finite number >= 0).
function M.human_bytes(n)
  if not finite(n) or n < 0 then return "?" end
  local units = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" }
  local i, v = 1, n
  while v >= 1024 and i < #units do v, i = v / 1024, i + 1 end
  if i == 1 then return string.format("%d B", math.floor(v)) end
  return string.format(v >= 100 and "%.0f %s" or "%.1f %s", v, units[i])
end

--- "0:07", "12:03", "1:02:03" (elapsed times and ETAs: seconds as an integer or a
-- float, rounded; "?" for what is not a finite number, 0:00 below zero).
function M.human_time(s)
  if s == nil then s = 0 end
  if not finite(s) then return "?" end
  if s > 1e12 then return "?" end -- past any clock: not worth a number
  s = math.max(0, math.floor(s + 0.5))
  local h, m = s // 3600, (s % 3600) // 60
  if h > 0 then return string.format("%d:%02d:%02d", h, m, s % 60) end
  return string.format("%d:%02d", m, s % 60)
end

--- The rate of `bytes` over `seconds` as text ("1.2 MiB/s"), or nil when it means nothing
-- (no time elapsed, or not finite).
function M.human_rate(bytes, seconds)
  if not finite(bytes) or not finite(seconds) or seconds <= 0 then return nil end
  local rate = bytes / seconds
  if not finite(rate) or rate < 0 then return nil end
  return M.human_bytes(rate) .. "/s"
end

-- Cuts a line to at most n characters (UTF-8 aware when the text is valid UTF-8).
local function fit(text, n)
  if n <= 0 then return "" end
  local len = utf8.len(text)
  if not len then return text:sub(1, n) end
  if len <= n then return text end
  return text:sub(1, utf8.offset(text, n + 1) - 1)
end

local video_of = require("kling.job").video_of

-- A file name from a URL's last path segment: letters, digits, '.', '_', '-'.
function M.name_from_url(url, fallback)
  local path = type(url) == "string" and url:gsub("[?#].*$", ""):match("^%a[%w+.-]*://[^/]*(/.*)$") or nil
  local last = path and path:match("([^/]+)$") or nil
  if last then
    last = last:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
    last = last:gsub("[^%w._-]", "_")
    if last:match("^%.") or last == "" then last = nil end
  end
  last = last or fallback
  if not last:match("%.[%w]+$") then last = last .. ".mp4" end
  return last
end

-- A file-name-safe key: letters, digits, '.', '_', '-' (others become '_').
local function safe_key(s)
  if type(s) == "number" then s = math.tointeger(s) and tostring(math.tointeger(s)) or tostring(s) end
  if type(s) ~= "string" then return nil end
  s = s:gsub("[^%w._-]", "_"):sub(1, 100)
  if s == "" or s:match("^%.") then return nil end
  return s
end

-- ---------------------------------------------------------------------------------------
-- Usage errors
-- ---------------------------------------------------------------------------------------

local UsageError = {}
UsageError.__index = UsageError
UsageError.__tostring = function(e) return e.message end

local function usage(cmd, message)
  error(setmetatable({ cmd = cmd, message = message }, UsageError), 0)
end

-- A local file problem found before anything is sent: exit 8 (io), no usage hint.
local function disk_error(cmd, message)
  error(setmetatable({ cmd = cmd, message = message, code = 8 }, UsageError), 0)
end

local TOKEN_FLAG = "the token is never taken from a flag value (it would show in the process list and "
  .. "in your shell history): set RUNCOMFY_TOKEN (or RUNCOMFY_API_TOKEN), or pass --token-file PATH"

-- ---------------------------------------------------------------------------------------
-- Argument parsing
-- ---------------------------------------------------------------------------------------

-- Flag kinds: flag, string, number, positive (number > 0), count (integer >= 1),
-- list (repeatable string), "dl:OPTION" (a download option, checked against the
-- library's own bounds: kling.client.check_download_option). A kind "=NAME" is an alias.
local GROUPS = {
  api = {
    ["token-file"] = "string", ["base-url"] = "string", ["journal"] = "string", ["no-journal"] = "flag",
    ["ca-file"] = "string",
  },
  out = { ["json"] = "flag", ["quiet"] = "flag", ["q"] = "=quiet" },
  input = {
    ["duration"] = "number", ["aspect-ratio"] = "string", ["negative-prompt"] = "string",
    ["cfg-scale"] = "number", ["no-sound"] = "flag", ["sound"] = "flag", ["shot"] = "list",
    ["input"] = "string", ["model"] = "string", ["dry-run"] = "flag",
  },
  target = {
    ["output"] = "string", ["o"] = "=output", ["out-dir"] = "string", ["force"] = "flag",
  },
  wait = { ["timeout"] = "positive" },
  -- how long a download may take: job:download's stall_timeout, min_rate and deadline, with
  -- the library's bounds (kling.client.DOWNLOAD_BOUNDS), checked before anything is sent
  dl = { ["stall-timeout"] = "dl:stall_timeout", ["min-rate"] = "dl:min_rate", ["download-deadline"] = "dl:deadline" },
  model = { ["model"] = "string" },
}

local function flagset(...)
  local set = { ["help"] = "flag", ["h"] = "=help" }
  for _, g in ipairs { ... } do
    for k, v in pairs(type(g) == "table" and g or GROUPS[g]) do set[k] = v end
  end
  return set
end

local function convert(cmd, name, kind, text)
  if kind == "string" or kind == "list" then return text end
  local n = tonumber(text)
  local option = kind:match("^dl:(.+)$")
  if option then
    local ok, why = client_lib.check_download_option(option, n)
    if not n or not ok then
      usage(cmd, "--" .. name .. " " .. (n and why:gsub(", got .*$", "") or ("must be " .. client_lib.download_option_rule(option)))
        .. ", got '" .. text .. "'")
    end
    return math.tointeger(n) or n
  end
  if kind == "number" then
    if not n then usage(cmd, "--" .. name .. " wants a number, got '" .. text .. "'") end
    return math.tointeger(n) or n
  elseif kind == "positive" then
    if not n or not (n > 0) or n == math.huge then usage(cmd, "--" .. name .. " wants a number of seconds > 0, got '" .. text .. "'") end
    return n
  elseif kind == "count" then
    n = n and math.tointeger(n)
    if not n or n < 1 then usage(cmd, "--" .. name .. " wants a whole number >= 1, got '" .. text .. "'") end
    return n
  end
  error("unknown flag kind " .. tostring(kind))
end

--- Parses argv for a command: options (key = flag name with '-' as '_') and positionals.
function M.parse_args(cmd, argv, flags)
  local o, pos = {}, {}
  local i, only_pos = 1, false
  while i <= #argv do
    local a = argv[i]
    if only_pos or a == "-" or a:sub(1, 1) ~= "-" then
      pos[#pos + 1] = a
    elseif a == "--" then
      only_pos = true
    else
      local name, inline = a:match("^%-%-([^=]+)=(.*)$")
      if not name then name = a:match("^%-%-(.+)$") or a:match("^%-(%w)$") end
      if name == "token" or (name and name:match("^token=")) then usage(cmd, TOKEN_FLAG) end
      local kind = name and flags[name]
      while kind and kind:sub(1, 1) == "=" do
        name = kind:sub(2)
        kind = flags[name]
      end
      if not kind then
        if a:match("^%-%d") or a:match("^%-%.%d") then
          usage(cmd, "unknown option '" .. a .. "' (a value starting with '-' goes after '--')")
        end
        usage(cmd, "unknown option '" .. a .. "'")
      end
      local key = name:gsub("-", "_")
      if kind == "flag" then
        if inline then usage(cmd, "--" .. name .. " takes no value") end
        o[key] = true
      else
        local text = inline
        if not text then
          i = i + 1
          text = argv[i]
          if text == nil then usage(cmd, "--" .. name .. " needs a value") end
        end
        local v = convert(cmd, name, kind, text)
        if kind == "list" then
          o[key] = o[key] or {}
          table.insert(o[key], v)
        else
          o[key] = v
        end
      end
    end
    i = i + 1
  end
  return o, pos
end

-- ---------------------------------------------------------------------------------------
-- The display: a live area on a terminal, plain log lines elsewhere, nothing with --json
-- ---------------------------------------------------------------------------------------

local Display = {}
Display.__index = Display

local function terminal_size()
  local tmp = os.tmpname()
  local rows, cols
  if os.execute("stty size <&1 >" .. quote(tmp) .. " 2>/dev/null") then
    local f = io.open(tmp, "rb")
    if f then
      rows, cols = (f:read("a") or ""):match("(%d+)%s+(%d+)")
      f:close()
    end
  end
  os.remove(tmp)
  rows, cols = tonumber(rows), tonumber(cols)
  if not cols or cols < 20 then cols = tonumber(os.getenv("COLUMNS")) or 80 end
  if not rows or rows < 3 then rows = tonumber(os.getenv("LINES")) or 24 end
  return rows, cols
end

--- mode: "tty" (live area on stdout), "plain" (log lines on stderr), "json" (silent).
function M.display(mode)
  local d = setmetatable({ mode = mode, rows = {}, drawn = 0, last = nil, out = io.stdout, err = io.stderr }, Display)
  if mode == "tty" then d.height, d.width = terminal_size() end
  return d
end

function Display:log(text)
  if self.mode == "plain" then
    self.err:write(os.date("%H:%M:%S "), text, "\n")
    self.err:flush()
  elseif self.mode == "tty" and not self.stopped then
    self:line(text)
  end
end

-- Erases the live area (the cursor ends where it began).
function Display:_erase()
  if self.drawn == 0 then return "" end
  local s = "\r" .. (self.drawn > 1 and ("\27[" .. (self.drawn - 1) .. "A") or "") .. "\27[J"
  self.drawn, self.last = 0, nil
  return s
end

--- A permanent line (tty: above the live area, on stdout).
function Display:line(text)
  if self.mode ~= "tty" then return end
  self.out:raw(self:_erase())
  self.out:write(text, "\n")
  self:render()
end

--- A message for stderr, whatever the mode (the live area is set aside meanwhile).
function Display:warn(text)
  if self.mode == "tty" and self.drawn > 0 then
    self.out:raw(self:_erase())
    self.out:flush()
  end
  self.err:write(text, "\n")
  self.err:flush()
  if self.mode == "tty" then self:render() end
end

--- Stops the live display (after Ctrl-C): the area is erased and stays empty.
function Display:stop()
  if self.mode == "tty" then
    self.out:raw(self:_erase())
    self.out:flush()
  end
  self.stopped = true
end

--- A job row: label shown first; state from update().
function Display:add(label)
  local row = { label = label, t0 = now(), phase = "waiting" }
  self.rows[#self.rows + 1] = row
  self:render()
  return row
end

local function remove_row(self, row)
  for i, r in ipairs(self.rows) do
    if r == row then
      table.remove(self.rows, i)
      return
    end
  end
end

function M.state_text(status, qp)
  if status == "in_queue" then
    return qp and ("queued, position " .. qp) or "queued"
  elseif status == "in_progress" then
    return "running"
  elseif status == nil then
    return "waiting"
  end
  return M.escape(status) -- a word of the service's
end

--- Takes in a job's status (on_update).
function Display:update(row, job)
  if row.status == job.status and row.qp == job.queue_position then return end
  row.status, row.qp, row.phase = job.status, job.queue_position, "job"
  if self.mode == "plain" and job.status ~= "failed" and job.status ~= "cancelled" then
    self:log(row.label .. " " .. M.state_text(job.status, job.queue_position))
  else
    self:render()
  end
end

function Display:start_download(row, path)
  row.phase, row.path = "download", path
  row.dl = { t0 = now() }
  if self.mode == "plain" then self:log(row.label .. " downloading to " .. path) end
  self:render()
end

function Display:progress(row, got, total)
  local dl = row.dl
  if not dl then return end
  if not dl.got0 then dl.got0, dl.t0 = got, now() end
  dl.got, dl.total = got, total
  self:render()
end

local function bar(frac, width)
  local full = math.floor(frac * width + 0.5)
  return "[" .. string.rep("#", full) .. string.rep("-", width - full) .. "]"
end

function M.download_text(dl, at)
  if not dl or not finite(dl.got) then return "downloading" end
  local dt = (at or now()) - dl.t0
  local rate = dt > 0.05 and (dl.got - (dl.got0 or 0)) / dt or nil
  if not finite(rate) then rate = nil end
  local parts = { "downloading" }
  if finite(dl.total) and dl.total > 0 then
    local frac = math.max(0, math.min(1, dl.got / dl.total))
    parts[#parts + 1] = bar(frac, 20)
    parts[#parts + 1] = string.format("%3d%%", math.floor(frac * 100))
    parts[#parts + 1] = M.human_bytes(dl.got) .. "/" .. M.human_bytes(dl.total)
  else
    parts[#parts + 1] = M.human_bytes(dl.got)
  end
  if rate and rate > 0 then
    parts[#parts + 1] = M.human_bytes(rate) .. "/s"
    if finite(dl.total) and dl.total > dl.got then
      parts[#parts + 1] = "ETA " .. M.human_time((dl.total - dl.got) / rate)
    end
  end
  return table.concat(parts, "  ")
end

function Display:row_text(row, width)
  local t = now()
  local state
  if row.phase == "download" then
    state = M.download_text(row.dl)
  elseif row.phase == "submitting" then
    state = "submitting"
  else
    state = M.state_text(row.status, row.qp)
  end
  local label = row.label .. string.rep(" ", math.max(0, width - #row.label))
  return label .. "  " .. state .. "  " .. M.human_time(t - row.t0)
end

--- Redraws the live area (tty only), when its text changed.
function Display:render()
  if self.mode ~= "tty" or self.stopped then return end
  local lines, width = {}, 0
  for _, r in ipairs(self.rows) do width = math.max(width, #r.label) end
  local room = math.max(1, self.height - 2)
  for i, r in ipairs(self.rows) do
    if i > room - 1 and #self.rows > room then
      lines[#lines + 1] = string.format("... and %d more", #self.rows - i + 1)
      break
    end
    lines[#lines + 1] = fit(M.escape(self:row_text(r, width)), self.width - 1)
  end
  if self.summary then lines[#lines + 1] = fit(M.escape(self.summary()), self.width - 1) end
  local text = table.concat(lines, "\n")
  if text == self.last then return end
  self.out:raw(self:_erase(), text) -- each line escaped above
  self.out:flush()
  self.drawn, self.last = #lines, text
end

--- Ends a row: tty prints `text` as a permanent line, plain logs it.
function Display:finish(row, text)
  remove_row(self, row)
  if self.mode == "tty" then
    self:line(text)
  else
    self:log((text:gsub("^(%S+)%s%s+", "%1 ")))
  end
end

--- Ends the live display; a summary line stays, up to date.
function Display:close()
  if self.mode == "tty" and not self.stopped then
    self.out:raw(self:_erase())
    if self.summary then self.out:write(fit(M.escape(self.summary()), self.width - 1), "\n") end
    self.out:flush()
  end
end

-- ---------------------------------------------------------------------------------------
-- Context of an API command: client, display, jobs, Ctrl-C
-- ---------------------------------------------------------------------------------------

local function default_journal()
  local base = os.getenv("XDG_STATE_HOME")
  if not base or base:sub(1, 1) ~= "/" then
    local home = os.getenv("HOME")
    if not home or home == "" then return nil end
    base = home .. "/.local/state"
  end
  return base .. "/kling/jobs.jsonl"
end
M.default_journal = default_journal

local function journal_path(o)
  if o.no_journal then return nil end
  return o.journal or default_journal()
end

local function poll_from_env(cmd)
  local text = os.getenv("KLING_POLL")
  if not text or text == "" then return nil end
  local poll = {}
  for k, v in text:gmatch("([%a_]+)=([^,]+)") do
    local n = tonumber(v)
    if not n or n < 0 then usage(cmd, "KLING_POLL: bad value for " .. k) end
    poll[k] = n
  end
  return poll
end

--- The CA bundle to verify the server with, as curl's own tool picks it: --ca-file,
-- then $CURL_CA_BUNDLE, then $SSL_CERT_FILE (an empty variable counts as unset); nil
-- for the system's bundle. A file that cannot be read is a usage error naming where it
-- came from. TLS verification is never switched off.
function M.ca_file(cmd, o)
  local path, from = o.ca_file, "--ca-file"
  for _, var in ipairs { "CURL_CA_BUNDLE", "SSL_CERT_FILE" } do
    if path then break end
    local v = os.getenv(var)
    if v and v ~= "" then path, from = v, var end
  end
  if not path then return nil end
  local f, err = io.open(path, "rb")
  local first = f and f:read(1)
  if f then f:close() end
  if not first then
    usage(cmd, from .. ": cannot read the CA bundle " .. path .. ": " .. (err or "empty, or not a file"))
  end
  return path
end

local Ctx = {}
Ctx.__index = Ctx

-- The commands that submit: the journal's problems reach them as the library's io errors.
local SUBMITS = { generate = true, submit = true, batch = true }

function M.context(cmd, o, opts)
  opts = opts or {}
  local mode
  if o.json then
    mode = "json"
  elseif not o.quiet and M.stdout_is_tty() then
    mode = "tty"
  else
    mode = "plain"
  end
  local self = setmetatable({
    cmd = cmd, o = o, display = M.display(mode), mode = mode,
    mine = {}, submitted = {}, attached = {}, downloading = {}, emitted = {},
    submitting = 0, code = 0,
  }, Ctx)
  if opts.client ~= false then self:make_client() end
  return self
end

function Ctx:make_client()
  local o, cmd = self.o, self.cmd
  local token
  if o.token_file then
    local f, err = io.open(o.token_file, "rb")
    if not f then usage(cmd, "--token-file: " .. tostring(err)) end
    token = trim(f:read("a") or "")
    f:close()
    if token == "" then usage(cmd, "--token-file: " .. o.token_file .. " is empty") end
  end
  local jpath = journal_path(o)
  -- a mistyped --journal must not start a second journal somewhere: its directory is never
  -- made. A command that submits gets the library's io error (nothing is sent, and --json
  -- says not_submitted); any other exits 8 here, before it reads or writes anything.
  if jpath and o.journal and not SUBMITS[cmd] and not is_dir(dirname(jpath)) then
    disk_error(cmd, "--journal " .. jpath .. ": its directory " .. dirname(jpath) .. " does not exist "
      .. "(No such file or directory; only the default journal's directory is created)")
  end
  -- the default journal's directory is made; one that cannot be made is not a reason to
  -- run without the journal: a submit then fails before sending anything (kind io, exit 8)
  if jpath and not o.journal then mkdir_p(dirname(jpath)) end
  self.journal_path = jpath
  local opts = {
    token = token, base_url = o.base_url, journal = jpath or false, ca_file = M.ca_file(cmd, o),
    on_warning = function(msg) self.display:warn("kling: warning: " .. msg) end,
  }
  opts.poll = poll_from_env(cmd)
  local ok, client = pcall(kling.new, opts)
  if not ok then usage(cmd, tostring(client):gsub("^kling%.new: ", "")) end
  self.client = client
end

--- What the journal knows: id -> { id, model, urls, status, output, error,
-- t, tag, intent }, the submits of unknown outcome, and the intents by key
-- (see kling.journal's state()) | nil, err (kind io: the journal cannot be read).
function Ctx:journal_state()
  if self._jstate == nil then
    self._jstate, self._junknown, self._jintents = {}, {}, {}
    if self.journal_path then
      local jobs, unknown, _, intents = journal.open(self.journal_path):state()
      if jobs then
        self._jstate, self._junknown, self._jintents = jobs, unknown, intents
      else
        self._jstate, self._jerr = false, unknown
      end
    end
  end
  if not self._jstate then return nil, self._jerr end
  return self._jstate, self._junknown, self._jintents
end

function Ctx:note(code)
  self.code = worst(self.code, code)
  return code
end

--- Submits; the job is "mine" (Ctrl-C cancels it while queued). opts: client:submit's.
function Ctx:submit(model, input, opts)
  self.submitting = self.submitting + 1
  local job, err = self.client:submit(model, input, opts)
  self.submitting = self.submitting - 1
  if job then
    self.mine[job] = true
    self.submitted[#self.submitted + 1] = job
  end
  return job, err
end

--- Attaches to an id (with its model from --model or the journal).
function Ctx:attach(id)
  local model = self.o.model
  if not model then
    local state = self:journal_state() -- (a journal that cannot be read only loses the model name here)
    local j = state and state[id]
    model = j and j.model or nil
  end
  local job, err = self.client:job(id, model)
  if not job then usage(self.cmd, "invalid request id '" .. tostring(id) .. "' (ids match ^[A-Za-z0-9_-]{1,128}$)") end
  self.attached[#self.attached + 1] = job
  return job, err
end

local function error_object(err)
  if not err then return nil end
  local e = { kind = err.kind, message = err.message, code = err.code, http_status = err.status,
    request_id = err.request_id, request_id_raw = err.request_id_raw, path = err.path }
  if err.errors then
    e.errors = json.array {}
    for _, item in ipairs(err.errors) do e.errors[#e.errors + 1] = { path = item.path, message = item.message } end
  end
  return e
end
M.error_object = error_object

--- The JSON object of a job (for --json).
function M.job_object(job, fields)
  local o = {
    id = job.id, model = job.model, status = job.status, queue_position = job.queue_position,
    output = job.output, video = job.video_url or video_of(job.output), cost = job.cost,
  }
  if job.journal_error then o.journal_error = error_object(job.journal_error) end
  for k, v in pairs(fields or {}) do o[k] = v end
  if o.error and getmetatable(o.error) ~= nil then o.error = error_object(o.error) end
  return o
end

--- Writes one JSON object per job on stdout (--json), once per job.
function Ctx:emit(job, fields)
  if self.mode ~= "json" or (job and self.emitted[job]) then return end
  if job then self.emitted[job] = true end
  local obj = job and M.job_object(job, fields) or fields
  if obj.error and getmetatable(obj.error) ~= nil then obj.error = error_object(obj.error) end
  -- server text shown as JSON: always valid UTF-8. Numbers JSON cannot write (beyond a
  -- double's range, NaN) are shown as null, and the object says so; a value even the
  -- display writer refuses goes out as the journal keeps it (as text)
  local ok, text = pcall(json.encode, obj)
  if not ok then
    obj.output_note = "numbers JSON cannot write (beyond the range of a double, NaN) are shown as null"
    ok, text = pcall(json.encode_display, obj)
    if not ok then text = journal.encode_event(obj) end
  end
  io.stdout:write(text, "\n")
  io.stdout:flush()
end

--- A result line on stdout (off the live display: plain mode only).
function Ctx:result(text)
  if self.mode == "plain" then
    io.stdout:write(text, "\n")
    io.stdout:flush()
  end
end

-- Hints printed under an error. path: the file a failed download was for.
function Ctx:hint(err, job, path)
  local kind = err and err.kind
  if path and (err.transport == "slow" or err.transport == "deadline" or kind == "io") and file_exists(path .. ".part") then
    return "what arrived is kept in " .. path .. ".part; the same command goes on from it"
      .. (kind == "io" and " once the file can be written" or "")
  end
  if kind == "auth" then
    return "set RUNCOMFY_TOKEN (or RUNCOMFY_API_TOKEN), or pass --token-file PATH"
  elseif kind == "timeout" and job then
    return "the job goes on; collect it later with: kling wait " .. job.id
  elseif kind == "submit_unknown" and err.request_id and not job then
    return "the job may exist and be billed; it was not sent again; check it with: kling status " .. err.request_id
      .. " (kling resume collects it if the service knows it)"
  elseif kind == "submit_unknown" then
    return "the job may exist and be billed; it was not sent again (see kling jobs, or your RunComfy dashboard)"
  elseif kind == "payment" then
    return "check the balance of your RunComfy account"
  end
  return nil
end

--- Reports an error (stderr, and the display). Returns its exit code. fields: extra JSON
-- fields; path: the file of a failed download (for the hint).
function Ctx:fail(err, job, row, fields, path)
  local code = code_for(err)
  if self.interrupted then return code end
  local hint = self:hint(err, job, path)
  if row and self.mode ~= "json" then
    local text = row.label .. "  " .. M.error_text(err):gsub("^kling: ", "")
    self.display:finish(row, text .. (hint and ("\n  " .. hint) or ""))
  else
    if row then self.display:finish(row, "") end
    self.display:warn(M.error_text(err) .. (hint and ("\n  " .. hint) or ""))
  end
  if job then
    local f = { error = err }
    for k, v in pairs(fields or {}) do f[k] = v end
    self:emit(job, f)
  elseif self.mode == "json" then
    local f = { error = error_object(err) }
    for k, v in pairs(fields or {}) do f[k] = v end
    self:emit(nil, f)
  end
  return self:note(code)
end

-- Where a job's video goes: target = { file = path } or { dir = path }. In a directory,
-- two jobs of one command never get the same name (their downloads would run at once).
function Ctx:output_path(target, job, fallback_name)
  if target.file then return target.file end
  self.taken = self.taken or {}
  local name = M.name_from_url(job.video_url or video_of(job.output), fallback_name or job.id)
  local path = join(target.dir, name)
  local function free(p) return not self.taken[p] and (self.o.force or not file_exists(p)) end
  if not free(path) then
    -- never overwrite without --force: NAME-1.mp4, NAME-2.mp4, ...
    local stem, ext = name:match("^(.*)(%.[%w]+)$")
    if not stem then stem, ext = name, "" end
    for n = 1, 999 do
      local p = join(target.dir, stem .. "-" .. n .. ext)
      if free(p) then
        path = p
        break
      end
    end
  end
  self.taken[path] = true
  return path
end

--- Waits for a job (live row), then downloads its video when target is given.
-- Returns the exit code for this job, and the error of a failed download (its kind io:
-- a local disk error). fields: extra JSON fields (batch line...).
-- opts: label (row label), name (file name in a target dir), quiet_result.
function Ctx:follow(job, target, opts)
  opts = opts or {}
  local d = self.display
  local label = opts.label or (self.mode == "tty" and job.id:sub(1, 8) or job.id)
  local row = d:add(label)
  row.job = job
  row.status, row.qp = job.status, job.queue_position -- known from the submit: no log line for it
  d:render()
  local out, err = job:wait { timeout = self.o.timeout, on_update = function(j) d:update(row, j) end }
  if self.interrupted then return 130 end
  -- the journal lacks this job's id or its end (the warning said which): exit 8 at the end
  if job.journal_error then self:note(M.EXIT.io) end
  if not out then return self:fail(err, job, row, opts.fields) end
  local video = M.escape(job.video_url or video_of(out)) -- the service's URL, on one line
  if not target then
    d:finish(row, label .. "  completed  " .. video)
    self:result((opts.prefix or "") .. video)
    self:emit(job, opts.fields)
    return self:note(0)
  end
  local path = self:output_path(target, job, opts.name)
  self.downloading[job] = path
  d:start_download(row, path)
  local t0 = now()
  local saved, bytes = job:download(path, {
    on_progress = function(got, total) d:progress(row, got, total) end,
    stall_timeout = self.o.stall_timeout, min_rate = self.o.min_rate, deadline = self.o.download_deadline,
  })
  self.downloading[job] = nil
  if self.interrupted then return 130 end
  if not saved then
    -- no "path": that file was never written; "part" names the bytes kept for the next run
    local f = { part = file_exists(path .. ".part") and (path .. ".part") or nil }
    for k, v in pairs(opts.fields or {}) do f[k] = v end
    return self:fail(bytes, job, row, f, path), bytes
  end
  local rate = M.human_rate(bytes, now() - t0)
  d:finish(row, string.format("%s  saved %s (%s%s) after %s", label, saved, M.human_bytes(bytes),
    rate and (", " .. rate) or "", M.human_time(now() - row.t0)))
  self:result((opts.prefix or "") .. saved)
  local f = { path = saved, bytes = bytes }
  for k, v in pairs(opts.fields or {}) do f[k] = v end
  self:emit(job, f)
  return self:note(0)
end

-- How to collect a job after Ctrl-C.
function Ctx:collect_hint(job)
  if self.resume_hint then return self.resume_hint(job) end
  local path = self.downloading[job] or (self.target and self.target.file)
  if path then
    return "kling wait " .. job.id .. " (or, for the video: kling download " .. job.id .. " -o " .. shell_word(path) .. ")"
  end
  return "kling wait " .. job.id
end

-- The signals a command handles as Ctrl-C: name, how it is said, the exit code (128 + the
-- signal's number, as shells report it), how a second one is asked for.
local SIGNALS = {
  { name = "SIGINT", said = "interrupted", by = "Ctrl-C", code = 130, again = "Ctrl-C again quits at once" },
  { name = "SIGTERM", said = "terminated", by = "SIGTERM", code = 143, again = "a second SIGTERM quits at once" },
  { name = "SIGHUP", said = "hung up", by = "SIGHUP", code = 129, again = "a second SIGHUP quits at once" },
}
M.SIGNALS = SIGNALS

-- The first Ctrl-C (or SIGTERM, SIGHUP): cancel the queued jobs this command submitted,
-- say what keeps running and how to collect it, exit 128 + the signal's number. A second
-- one of the same signal quits at once.
function Ctx:on_interrupt(signal, which)
  which = which or SIGNALS[1]
  self.interrupted = true
  signal.unblock(signal[which.name]) -- the default action from now on: a second one quits at once
  local d = self.display
  d:stop()
  local function say(text)
    io.stderr:write(text, "\n")
    io.stderr:flush()
  end
  say("kling: " .. which.said .. " (" .. which.again .. ")")
  if self.submitting > 0 then
    say("kling: waiting for the answer to the submit in flight (its job is cancelled if still queued)")
    while self.submitting > 0 do self.client:sleep(0.05) end
  end
  local pending, left = {}, 0
  for _, job in ipairs(self.submitted) do
    if not job:done() and not self.downloading[job] then
      pending[#pending + 1] = job
      left = left + 1
    end
  end
  local outcome = {}
  for _, job in ipairs(pending) do
    kling.spawn(function()
      local ok, err = job:cancel()
      outcome[job] = ok and true or err
      left = left - 1
    end)
  end
  while left > 0 do self.client:sleep(0.05, function() return left <= 0 end) end
  local function report(job, status, message)
    self:emit(job, { status = status, error = { kind = "interrupted", message = message } })
  end
  for _, job in ipairs(pending) do
    local r = outcome[job]
    if r == true then
      say("kling: cancelled " .. job.id .. " (it was still queued)")
      if self.on_cancelled then self.on_cancelled(job) end
      report(job, "cancelled", "cancelled after " .. which.by .. " while queued")
    elseif r.kind == "not_cancellable" then
      say("kling: " .. job.id .. " keeps running (a running job cannot be cancelled); collect it with: "
        .. self:collect_hint(job))
      report(job, job.status, which.said .. "; the job keeps running")
    else
      say("kling: could not cancel " .. job.id .. " (" .. M.escape(r.message) .. "); it may still run; collect it with: "
        .. self:collect_hint(job))
      report(job, job.status, which.said .. "; cancel failed: " .. tostring(r.message))
    end
  end
  for job, path in pairs(self.downloading) do
    say("kling: the download of " .. job.id .. " to " .. path .. " was interrupted; collect it with: "
      .. self:collect_hint(job))
    report(job, job.status, which.said .. " during the download")
  end
  for _, job in ipairs(self.attached) do
    if not job:done() and not self.downloading[job] and not self.emitted[job] then
      say("kling: " .. job.id .. " was not cancelled (this command did not submit it); collect it with: "
        .. self:collect_hint(job))
      report(job, job.status, which.said .. "; the job goes on")
    end
  end
  if self.journal_path then say("kling: every request id is in the journal " .. self.journal_path .. " (kling jobs)") end
  -- the client's close ends the downloads in flight: the bytes they hold in memory go to
  -- their .part (kept, with its sidecar, for the next run), and their locks are given back
  self.client:close()
  os.exit(which.code)
end

--- Runs fn inside kling.run with the live display ticking and Ctrl-C, SIGTERM and SIGHUP
-- handled. Returns fn's exit code (the worst noted code when fn returns nil).
function Ctx:run(fn)
  -- The signals are blocked and read through a signalfd (lua-cqueues). SIGINT gets the
  -- default disposition (a shell starts background jobs with SIGINT ignored, which would
  -- drop it before the listener); SIGTERM and SIGHUP keep theirs, so that under nohup a
  -- hangup stays ignored. Without lua-cqueues the signals just end the tool.
  local has_signal, signal = pcall(require, "cqueues.signal")
  local listener
  local numbers, by_number = {}, {}
  if has_signal then
    for _, which in ipairs(SIGNALS) do
      local n = signal[which.name]
      numbers[#numbers + 1] = n
      by_number[n] = which
    end
    signal.block(table.unpack(numbers))
    signal.default(signal.SIGINT)
    listener = signal.listen(table.unpack(numbers))
  end
  local finished, result = false, nil
  kling.run(function()
    kling.spawn(function()
      local stop = function() return finished end
      while not finished do
        self.client:sleep(0.2, stop)
        if finished then break end
        local got = listener and listener:wait(0)
        if got then self:on_interrupt(signal, by_number[got]) end
        self.display:render()
      end
    end)
    result = fn()
    finished = true
  end)
  self.display:close()
  if has_signal then signal.unblock(table.unpack(numbers)) end
  return result or self.code
end

-- ---------------------------------------------------------------------------------------
-- Input of generate / submit / validate
-- ---------------------------------------------------------------------------------------

local function read_source(cmd, path, what)
  local text
  if path == "-" then
    text = io.stdin:read("a")
  else
    local f, err = io.open(path, "rb")
    if not f then usage(cmd, what .. ": " .. tostring(err)) end
    text = f:read("a")
    f:close()
    if text == nil then usage(cmd, what .. ": cannot read " .. path) end
  end
  return text or ""
end

-- JSON the user gave, read as it is written (integers stay integers, [] stays an array).
local function decode_object(text)
  local v, err = json.decode_input(text)
  if v == nil then return nil, "not valid JSON: " .. tostring(err):gsub("^.-: ", "") end
  if type(v) ~= "table" or not trim(text):match("^{") then return nil, "not a JSON object" end
  return v
end

-- --shot "PROMPT:SECONDS"
local function parse_shot(cmd, s)
  local prompt, secs = s:match("^(.*):%s*([^:]-)%s*$")
  local n = secs and tonumber(secs)
  if not prompt or not n then usage(cmd, "--shot wants \"PROMPT:SECONDS\", got '" .. s .. "'") end
  return { prompt = prompt, duration = math.tointeger(n) or n }
end

--- The input of generate/submit: --input FILE, then the flags and PROMPT over it.
function M.build_input(cmd, o, pos)
  local input = {}
  if o.input then
    local obj, err = decode_object(read_source(cmd, o.input, "--input"))
    if not obj then usage(cmd, "--input " .. o.input .. ": " .. err) end
    input = obj
  end
  if #pos > 0 then input.prompt = table.concat(pos, " ") end
  if o.duration ~= nil then input.duration = o.duration end
  if o.aspect_ratio then input.aspect_ratio = o.aspect_ratio end
  if o.negative_prompt then input.negative_prompt = o.negative_prompt end
  if o.cfg_scale ~= nil then input.cfg_scale = o.cfg_scale end
  if o.no_sound and o.sound then usage(cmd, "--sound and --no-sound contradict each other") end
  if o.no_sound then input.sound = false end
  if o.sound then input.sound = true end
  if o.shot then
    local shots = json.array {}
    for _, s in ipairs(o.shot) do shots[#shots + 1] = parse_shot(cmd, s) end
    input.multi_prompt = shots
  end
  return input
end

-- The lines of a validation error: "PREFIX/path: message" each.
local function validation_lines(err, prefix)
  local lines = {}
  for _, item in ipairs(err.errors or {}) do
    lines[#lines + 1] = (prefix or "") .. tostring(item.path) .. ": " .. tostring(item.message)
  end
  if #lines == 0 then lines[1] = (prefix or "") .. tostring(err.message) end
  return lines
end

-- ---------------------------------------------------------------------------------------
-- Commands
-- ---------------------------------------------------------------------------------------

local COMMANDS = {}
local ORDER = {}

local function command(name, def)
  def.name = name
  COMMANDS[name] = def
  ORDER[#ORDER + 1] = name
end

-- Can a file be created in dir? Tried with a probe file (removed at once), so that a
-- read-only or full directory is found before a job is paid for. Exit 8 when not.
local function check_writable(cmd, dir)
  local probe = join(dir, string.format(".kling-probe-%d-%06d", os.time(), math.random(0, 999999)))
  local f, err = io.open(probe, "wb")
  if not f then
    disk_error(cmd, "cannot write in " .. dir .. ": " .. tostring(err):gsub("^.-: ([^:]+)$", "%1"))
  end
  f:close()
  os.remove(probe)
end

--- Checks, before anything is sent, that a download to path could start: the library's
-- own check (kling.client.check_download_target: the directory, the path, its .part,
-- .part.meta, .part.meta.tmp and .part.lock, and no other download writing it). Exit 8
-- when not.
function M.check_target_file(cmd, path)
  local ok, err = client_lib.check_download_target(path)
  if not ok then disk_error(cmd, err.message) end
end

local function output_target(ctx, o, default_dir)
  local cmd = ctx.cmd
  if o.no_download and (o.output or o.out_dir) then usage(cmd, "--no-download contradicts -o/--out-dir") end
  if o.output and o.out_dir then usage(cmd, "give -o FILE or --out-dir DIR, not both") end
  if o.no_download then return nil end
  if o.output then
    if is_dir(o.output) then
      check_writable(cmd, o.output)
      return { dir = o.output }
    end
    if file_exists(o.output) and not o.force then
      usage(cmd, o.output .. " exists; pass --force to overwrite it")
    end
    if not is_dir(dirname(o.output)) then
      disk_error(cmd, "cannot write " .. o.output .. ": its directory " .. dirname(o.output) .. " does not exist")
    end
    check_writable(cmd, dirname(o.output))
    M.check_target_file(cmd, o.output)
    return { file = o.output }
  end
  local dir = o.out_dir or default_dir
  if not dir then return nil end
  if not is_dir(dir) and not mkdir_p(dir) then disk_error(cmd, "cannot create the directory " .. dir) end
  check_writable(cmd, dir)
  return { dir = dir }
end

-- The tag the journal keeps with a submit of generate/submit (see client:submit's
-- opts.tag): the command and the start of the prompt, so that a submit of
-- unknown outcome can be recognised on the dashboard.
local function submit_tag(cmd, input)
  local tag = "kling " .. cmd
  if type(input.prompt) == "string" then
    local prompt = fit((input.prompt:gsub("[%c]", " ")), 50) -- at most 200 bytes: a tag holds 256
    tag = tag .. ": " .. prompt
  end
  return tag
end

local function submit_like(o, pos, cmd, submit_only)
  local model = o.model or kling.DEFAULT_MODEL
  if not models.valid_model_id(model) then usage(cmd, "invalid model id '" .. model .. "'") end
  local input = M.build_input(cmd, o, pos)
  local ctx = M.context(cmd, o, { client = false })
  local target
  if not submit_only and not o.no_wait then target = output_target(ctx, o, ".") end
  local ok, sent = kling.validate(input, model)
  if not ok then
    local lines = validation_lines(sent)
    ctx.display:warn("kling: the input is not valid for " .. model .. " (nothing was sent):\n  " .. table.concat(lines, "\n  "))
    if ctx.mode == "json" then
      io.stdout:write(json.encode { model = model, status = "invalid", error = error_object(sent) }, "\n")
    end
    return 3
  end
  if o.dry_run then
    io.stdout:write(assert(json.encode_wire(sent)), "\n") -- validated: it has a JSON form
    return 0
  end
  ctx:make_client()
  ctx.target = target
  return ctx:run(function()
    local job, err = ctx:submit(model, sent, { tag = submit_tag(cmd, sent) })
    if not job then
      -- submit_unknown: the job may exist (never "not_submitted"), with the id the answer named
      -- when it named one; io: nothing was sent
      return ctx:fail(err, nil, nil, { model = model, id = err.request_id,
        status = err.kind == "submit_unknown" and "unknown" or "not_submitted" })
    end
    if job.journal_error then ctx:note(M.EXIT.io) end -- the id is printed; the journal lacks it
    if ctx.mode == "tty" then
      ctx.display:line("submitted " .. job.id .. "  (" .. model .. ")")
    else
      ctx.display:log(job.id .. " submitted (" .. model .. ")")
    end
    if submit_only or o.no_wait then
      if ctx.mode ~= "json" then io.stdout:write(job.id, "\n") end
      ctx:emit(job)
      return ctx.code
    end
    ctx:follow(job, target)
    return ctx.code
  end)
end

command("generate", {
  flags = flagset("api", "out", "input", "target", "wait", "dl", { ["no-download"] = "flag", ["no-wait"] = "flag" }),
  summary = "submit a job, wait for it and download the video",
  usage = [[
Usage: kling generate [PROMPT] [options]

Submits one job (validated first: nothing is sent for an invalid input), shows
its progress, waits until it ends and downloads the video.

Input (the flags win over --input):
  PROMPT                   the prompt (several words are joined with spaces)
  --duration N             seconds, 3 to 15
  --aspect-ratio R         16:9, 9:16 or 1:1
  --negative-prompt T      what to keep out of the video
  --cfg-scale X            0 to 1
  --no-sound, --sound      sound off (sound=false) or on
  --shot "PROMPT:SECONDS"  one shot of a multi-shot video (repeatable: multi_prompt)
  --input FILE.json|-      a JSON object to start from (- reads stdin)
  --model ID               model (default kling/kling-3.0/pro/text-to-video)
  --dry-run                validate and print the JSON that would be sent; send nothing

Output:
  -o, --output FILE        save the video as FILE (refused if FILE exists, without --force)
  --out-dir DIR            save it in DIR under the name from its URL (default: .)
  --no-download            wait, then print the video's URL instead
  --no-wait                print the request id once submitted, and exit
  --force                  overwrite an existing output file
  --timeout S              give up waiting after S seconds (default 1800; the job goes on)
  --stall-timeout S        a download try that stays under --min-rate for S seconds ends
                           (default 30; > 0, at most 10000000); the next goes on from FILE.part
  --min-rate N             bytes per second below which a try is too slow (default 1024;
                           a whole number from 1 to 1000000000000)
  --download-deadline S    give up the download after S seconds, retries included
                           (default none; > 0, at most 10000000; exit 6, FILE.part is kept)
  --json                   one JSON object per job on stdout
  -q, --quiet              plain log lines instead of the live display

Connection:
  --token-file PATH        read the token from PATH (default: $RUNCOMFY_TOKEN, $RUNCOMFY_API_TOKEN)
  --base-url URL           the API (default: $RUNCOMFY_MODEL_API_BASE or RunComfy's)
  --ca-file PATH           CA bundle to verify the server with (default: $CURL_CA_BUNDLE,
                           then $SSL_CERT_FILE, then the system's); verification is never off
  --journal PATH           the job journal (default: $XDG_STATE_HOME/kling/jobs.jsonl)
  --no-journal             keep no journal

Ctrl-C (and SIGTERM, SIGHUP) cancels the job while it is queued; once it runs
it keeps running and `kling wait ID` collects it. A second one quits at once.

Example:
  kling generate "a red kite over a grey sea at dawn" --duration 5 -o kite.mp4
]],
  run = function(o, pos) return submit_like(o, pos, "generate", false) end,
})

command("submit", {
  flags = flagset("api", "out", "input"),
  summary = "submit a job and print its request id",
  usage = [[
Usage: kling submit [PROMPT] [options]

Validates the input, submits it once and prints the request id (stdout). The
input flags are those of kling generate: --duration N, --aspect-ratio R,
--negative-prompt T, --cfg-scale X, --no-sound, --sound, --shot "PROMPT:SECONDS"
(repeatable), --input FILE.json|-, --model ID, --dry-run.

  --json                   {"id", "model", "status"} on stdout
  --token-file PATH, --base-url URL, --ca-file PATH, --journal PATH, --no-journal  (see kling generate --help)

Example:
  id=$(kling submit "a lighthouse in a storm" --duration 10) && kling wait "$id"
]],
  run = function(o, pos) return submit_like(o, pos, "submit", true) end,
})

local function need_ids(cmd, pos, max)
  if #pos == 0 then usage(cmd, "give a request id") end
  if max and #pos > max then usage(cmd, "give one request id") end
end

command("status", {
  flags = flagset("api", "out", "model"),
  summary = "show a job's status",
  usage = [[
Usage: kling status ID... [--json]

Asks the service for each job's status now: queued (with the queue position),
running, completed (with the video URL), failed (with the reason) or cancelled.
Exit code 0 when every status was read.

  --json     one {"id", "model", "status", "queue_position", "video", "error"} per job
  --model ID the model, for display (default: from the journal)
]],
  run = function(o, pos)
    need_ids("status", pos)
    local ctx = M.context("status", o)
    for _, id in ipairs(pos) do ctx:attach(id) end
    return ctx:run(function()
      for _, job in ipairs(ctx.attached) do
        local status, err = job:refresh()
        if not status then
          ctx:fail(err, job)
        else
          local extra = ""
          local e
          if job.status == "completed" or job.status == "failed" or job.status == "cancelled" then
            local out, rerr = job:result()
            if out then
              extra = "  " .. M.escape(job.video_url or video_of(out))
            elseif rerr and rerr.kind ~= "cancelled" then
              extra = "  " .. M.escape(rerr.message)
              e = rerr
            end
          end
          if ctx.mode == "json" then
            ctx:emit(job, e and { error = e } or nil)
          else
            io.stdout:write(job.id, "  ", M.state_text(job.status, job.queue_position), extra, "\n")
          end
        end
      end
      return ctx.code
    end)
  end,
})

-- Attaches to the ids, follows them all at once (waiting, downloading to
-- target when there is one), and returns the command's exit code.
local function follow_ids(ctx, ids, target)
  ctx.target = target
  for _, id in ipairs(ids) do ctx:attach(id) end
  return ctx:run(function()
    local left = #ctx.attached
    for _, job in ipairs(ctx.attached) do
      kling.spawn(function()
        ctx:follow(job, target, { prefix = #ids > 1 and (job.id .. "\t") or nil })
        left = left - 1
      end)
    end
    while left > 0 do ctx.client:sleep(1, function() return left <= 0 end) end
    return ctx.code
  end)
end

command("wait", {
  flags = flagset("api", "out", "wait", "target", "model", "dl"),
  summary = "wait for jobs to end (and download with -o/--out-dir)",
  usage = [[
Usage: kling wait ID... [options]

Waits until each job ends, with the live display, and prints the video URL, or
downloads the video with -o FILE (one job) or --out-dir DIR.

  --timeout S          give up after S seconds (default 1800; exit 6, the job goes on)
  --stall-timeout S, --min-rate N, --download-deadline S
                       how long a download may take (see kling download --help)
  -o, --output FILE    download the video to FILE (one id only)
  --out-dir DIR        download into DIR (file name from the URL)
  --force              overwrite an existing output file
  --json, -q/--quiet, --model ID, --token-file PATH, --base-url URL, --ca-file PATH, --journal PATH, --no-journal

Ctrl-C (and SIGTERM, SIGHUP) stops waiting; the jobs are not cancelled.
]],
  run = function(o, pos)
    need_ids("wait", pos)
    if o.output and #pos > 1 then usage("wait", "-o FILE takes one id; use --out-dir DIR for several") end
    local ctx = M.context("wait", o)
    local target = (o.output or o.out_dir) and output_target(ctx, o, nil) or nil
    return follow_ids(ctx, pos, target)
  end,
})

command("result", {
  flags = flagset("api", "out", "model"),
  summary = "fetch a job's result now (no waiting)",
  usage = [[
Usage: kling result ID [--json]

Fetches the job's result once, without waiting: prints the video URL of a
completed job (with --json: the whole output). A job that has not ended gives
exit code 6; a failed or cancelled one exit code 5.
]],
  run = function(o, pos)
    need_ids("result", pos, 1)
    local ctx = M.context("result", o)
    local job = ctx:attach(pos[1])
    return ctx:run(function()
      local out, err = job:result()
      if not out then
        if err.kind == "not_ready" then
          ctx.display:warn("kling: " .. job.id .. " has not ended (" .. M.state_text(job.status, job.queue_position)
            .. "); wait for it with: kling wait " .. job.id)
          ctx:emit(job, { error = err })
          return ctx:note(6)
        end
        return ctx:fail(err, job)
      end
      if ctx.mode == "json" then
        ctx:emit(job)
      else
        io.stdout:write(M.escape(job.video_url or video_of(out) or json.encode_display(out)), "\n")
      end
      return 0
    end)
  end,
})

command("cancel", {
  flags = flagset("api", "out", "model"),
  summary = "cancel a queued job",
  usage = [[
Usage: kling cancel ID... [--json]

Cancels each job while it is still queued. A job that already runs cannot be
cancelled: exit code 5 (it keeps running; kling wait ID collects it).
]],
  run = function(o, pos)
    need_ids("cancel", pos)
    local ctx = M.context("cancel", o)
    for _, id in ipairs(pos) do ctx:attach(id) end
    return ctx:run(function()
      for _, job in ipairs(ctx.attached) do
        local ok, err = job:cancel()
        if ok then
          if ctx.mode == "json" then ctx:emit(job) else io.stdout:write(job.id, "  cancelled\n") end
        else
          ctx:fail(err, job)
        end
      end
      return ctx.code
    end)
  end,
})

command("download", {
  flags = flagset("api", "out", "target", "wait", "model", "dl"),
  summary = "download a job's video (waiting for it first)",
  usage = [[
Usage: kling download ID... [-o FILE | --out-dir DIR] [--force]

Waits for the job when it has not ended, then streams its video to FILE.part
and renames it FILE when complete. Without -o the file is named from the URL,
in --out-dir DIR (default: the current directory); an existing file is never
overwritten without --force (another name is chosen in a directory).

  -o, --output FILE    the file (one id only)
  --out-dir DIR        the directory (default .)
  --force              overwrite an existing file
  --timeout S          how long to wait for a job that has not ended (default 1800)
  --stall-timeout S    a try that stays under --min-rate bytes/s for S seconds ends
                       (default 30; > 0, at most 10000000); the next try goes on
                       from FILE.part
  --min-rate N         bytes per second (default 1024; a whole number from 1 to
                       1000000000000)
  --download-deadline S  give up the download after S seconds, retries included
                       (default none; > 0, at most 10000000); exit 6, FILE.part is
                       kept for the next run
These bounds are the library's (kling.client.DOWNLOAD_BOUNDS); a value outside
them is refused before anything is sent (exit 2).

FILE.part is gone on from only when it is known to be the same file and a
validator guards it: its sidecar FILE.part.meta records the URL, the length and
the file host's ETag or Last-Modified, and the request carries If-Range. With a
strong ETag the URL's query string may change (pre-signed URLs); with only a
Last-Modified (a second older than the answer) the whole URL must be the same;
with neither, every try starts over and nothing is kept. A local disk error
(full, read-only, too large) exits 8 and keeps what arrived in FILE.part.
Only one download writes FILE at a time (FILE.part.lock): a second one exits 8
at once, before anything is sent. Ctrl-C, SIGTERM and SIGHUP keep the bytes that
arrived in FILE.part for the next run.
  --json, -q/--quiet, --model ID, --token-file PATH, --base-url URL, --ca-file PATH, --journal PATH, --no-journal
]],
  run = function(o, pos)
    need_ids("download", pos)
    if o.output and #pos > 1 then usage("download", "-o FILE takes one id; use --out-dir DIR for several") end
    local ctx = M.context("download", o)
    local target = output_target(ctx, o, ".")
    return follow_ids(ctx, pos, target)
  end,
})

-- The jobs of the journal, oldest first: list of entries, unknown submits
-- | nil, err (kind io).
local function journal_jobs(ctx)
  local state, unknown = ctx:journal_state()
  if not state then return nil, unknown end
  local list = {}
  for _, j in pairs(state) do list[#list + 1] = j end
  table.sort(list, function(a, b)
    if (a.t or 0) ~= (b.t or 0) then return (a.t or 0) < (b.t or 0) end
    return a.id < b.id
  end)
  return list, unknown
end

-- Reports a journal that cannot be read or written (kind io): exit 8.
local function journal_failed(err)
  io.stderr:write(tostring(err), "\n")
  return M.EXIT.io
end

-- Lists the submits of unknown outcome on stderr: when, model, tag, intent key
-- and what happened, so the user can look for them on the dashboard.
local function report_unknown(unknown, how)
  if #unknown == 0 then return end
  io.stderr:write(string.format("kling: %d submit(s) of unknown outcome in the journal (the job may exist and be "
    .. "billed; look for it on your RunComfy dashboard by its time and tag)%s:\n", #unknown, how or ""))
  for _, u in ipairs(unknown) do
    -- read back from the journal: text that came from outside, escaped
    local parts = { u.t and os.date("%Y-%m-%d %H:%M:%S", u.t) or "?", M.escape(u.model or "?") }
    if u.tag then parts[#parts + 1] = "tag " .. M.escape(u.tag) end
    if u.intent then parts[#parts + 1] = "intent " .. M.escape(u.intent) end
    if u.request_id then
      parts[#parts + 1] = "answered request id " .. M.escape(u.request_id) .. " (check it: kling status "
        .. M.escape(u.request_id) .. "; kling resume looks it up)"
    end
    if u.request_id_raw then parts[#parts + 1] = "answered request_id \"" .. M.escape(u.request_id_raw) .. "\"" end
    parts[#parts + 1] = M.escape(u.message)
    io.stderr:write("  ", table.concat(parts, "  "), "\n")
  end
end

-- Does a journal entry belong to the API the client talks to?
local function same_api(ctx, j)
  local url = type(j.urls) == "table" and j.urls.status
  if type(url) ~= "string" then return true end
  local base = ctx.client.base_url
  return url:sub(1, #base + 1) == base .. "/"
end

command("jobs", {
  flags = flagset("api", "out", { ["all"] = "flag", ["refresh"] = "flag", ["compact"] = "flag", ["forget"] = "flag" }),
  summary = "list the jobs of the journal",
  usage = [[
Usage: kling jobs [--all] [--refresh] [--json]
       kling jobs --forget ID...
       kling jobs --compact

Lists the jobs in the journal (default $XDG_STATE_HOME/kling/jobs.jsonl, or
~/.local/state/kling/jobs.jsonl): by default those that have not ended, with
--all every job with its end (status, video URL or error). Then, on stderr, the
submits of unknown outcome (a lost answer, or a process killed while its submit
was in flight): the job may exist and be billed; each comes with its time, tag
and intent key, to look for it on the dashboard.

  --all        every job, ended ones too
  --refresh    ask the service for the current status of the jobs that have not ended
  --forget ID  mark jobs as ended in the journal (an expired id kling resume should skip);
               with the intent key of a submit of unknown outcome (or the request id its
               answer named): checked, list it no more. An id or key the journal does not
               hold is refused (exit 2) and nothing is written
  --compact    drop the jobs that have ended (and answered submits) from the journal;
               unreadable lines are kept, and counted
  --json       one object per job: {"id", "model", "status", "submitted_at", "video", "error"},
               and {"status": "unknown", "intent", "tag", ...} per submit of unknown outcome
A journal that cannot be read gives exit code 8.
  --journal PATH, --token-file PATH, --base-url URL, --ca-file PATH
]],
  run = function(o, pos)
    if o.no_journal then usage("jobs", "--no-journal: jobs reads the journal") end
    local ctx = M.context("jobs", o)
    if not ctx.journal_path then usage("jobs", "no journal (set HOME or XDG_STATE_HOME, or pass --journal PATH)") end
    if o.forget then
      need_ids("jobs", pos)
      local jobs, unknown, intents = ctx:journal_state()
      if not jobs then return journal_failed(unknown) end
      local by_request = {} -- the request ids answered with an unknown outcome: their intents
      for _, u in ipairs(unknown) do
        if u.request_id and u.intent then by_request[u.request_id] = u.intent end
      end
      -- every id is checked before anything is written: a typo appends nothing
      local events = {}
      for _, id in ipairs(pos) do
        if intents[id] then -- the key of a submit of unknown outcome: checked on the dashboard
          events[#events + 1] = { e = "dismissed", intent = id }
        elseif by_request[id] then -- the request id such a submit's answer named
          events[#events + 1] = { e = "dismissed", intent = by_request[id] }
        elseif jobs[id] then
          events[#events + 1] = { e = "ended", id = id, status = "forgotten", error = "forgotten with kling jobs --forget" }
        else
          usage("jobs", "--forget: '" .. M.escape(id) .. "' is neither a request id nor an intent key of the journal "
            .. ctx.journal_path .. " (kling jobs --all lists them); nothing was written")
        end
      end
      local jn = journal.open(ctx.journal_path)
      for _, event in ipairs(events) do
        local ok, err = jn:append(event)
        if not ok then return journal_failed(err) end
      end
      return 0
    end
    if #pos > 0 then usage("jobs", "unexpected argument '" .. pos[1] .. "'") end
    if o.compact then
      local n, unreadable = ctx.client:compact_journal()
      if not n then return journal_failed(unreadable) end
      io.stdout:write(string.format("dropped %d lines of ended jobs and answered submits from %s\n", n, ctx.journal_path))
      if unreadable > 0 then
        io.stdout:write(string.format("kept %d unreadable line(s) as they were (a write torn by a crash, or damage)\n",
          unreadable))
      end
      return 0
    end
    local list, unknown = journal_jobs(ctx)
    if not list then return journal_failed(unknown) end
    local shown = {}
    for _, j in ipairs(list) do
      if o.all or not j.status then shown[#shown + 1] = j end
    end
    local live = {}
    if o.refresh then
      ctx:run(function()
        local left = 0
        local ask = {}
        for _, j in ipairs(shown) do
          if not j.status and require("kling.client").valid_id(j.id) and same_api(ctx, j) then ask[#ask + 1] = j end
        end
        for _, u in ipairs(unknown) do -- a request id an unknown outcome's answer named: does it exist?
          if u.request_id then ask[#ask + 1] = { id = u.request_id, model = u.model } end
        end
        for _, j in ipairs(ask) do
          left = left + 1
          kling.spawn(function()
            local job = ctx.client:job(j.id, j.model)
            local status, err = job:refresh()
            live[j.id] = status and M.state_text(job.status, job.queue_position) or ("? " .. tostring(err.kind))
            left = left - 1
          end)
        end
        while left > 0 do ctx.client:sleep(1, function() return left <= 0 end) end
      end)
    end
    if ctx.mode == "json" then
      for _, j in ipairs(shown) do
        io.stdout:write(json.encode_display {
          id = j.id, model = j.model, status = j.status or "unfinished", live_status = live[j.id],
          submitted_at = j.t, ended_at = j.ended_t, output = j.output, output_text = j.output_text, output_note = j.output_note,
          video = video_of(j.output), error = j.error and { message = j.error } or nil,
        }, "\n")
      end
      for _, u in ipairs(unknown) do
        io.stdout:write(json.encode {
          status = "unknown", intent = u.intent, model = u.model, tag = u.tag, submitted_at = u.t, digest = u.digest,
          request_id = u.request_id, request_id_raw = u.request_id_raw, live_status = live[u.request_id or false],
          error = { kind = "submit_unknown", message = u.message },
        }, "\n")
      end
    elseif #shown == 0 then
      local what = o.all and "jobs" or "unfinished jobs"
      if #unknown > 0 then what = what .. " with a request id" end -- the others are listed below
      io.stderr:write("kling: no ", what, " in ", ctx.journal_path, "\n")
    else
      local idw = 2
      for _, j in ipairs(shown) do idw = math.max(idw, #M.escape(j.id)) end
      local fmt = "%-" .. idw .. "s  %-19s  %-12s  %s\n"
      io.stdout:write(string.format(fmt, "ID", "SUBMITTED", "STATUS", "MODEL / RESULT"))
      for _, j in ipairs(shown) do
        local status = live[j.id] or j.status or "unfinished"
        local what = j.model or "?"
        if j.status == "completed" then what = video_of(j.output) or what
        elseif j.error then what = j.error end
        -- the journal's contents, each on one line
        io.stdout:write(string.format(fmt, M.escape(j.id), j.t and os.date("%Y-%m-%d %H:%M:%S", j.t) or "?",
          M.escape(status), M.escape(what)))
      end
    end
    for _, u in ipairs(unknown) do
      if u.request_id and live[u.request_id] then u.message = "the service says: " .. live[u.request_id] .. "; " .. u.message end
    end
    report_unknown(unknown, "; once checked, kling jobs --forget INTENT")
    return 0
  end,
})

command("resume", {
  flags = flagset("api", "out", "wait", "dl", { ["out-dir"] = "string", ["no-download"] = "flag", ["force"] = "flag" }),
  summary = "wait for (and download) every unfinished job of the journal",
  usage = [[
Usage: kling resume [--out-dir DIR | --no-download] [options]

Picks up every job of the journal that has not ended (a command killed or
interrupted mid-wait leaves them there), waits for them all at once with the
live display, and downloads each video into --out-dir DIR (default: the current
directory, named from the URL) unless --no-download (then prints the URLs).
Jobs submitted to another API (--base-url) are left alone. A submit of unknown
outcome whose answer named a request id is looked up: when the service knows
it, it is recorded in the journal and collected with the others.

  --out-dir DIR      where the videos go (default .)
  --no-download      print each video's URL instead
  --force            overwrite existing files
  --timeout S        how long to wait (default 1800)
  --stall-timeout S, --min-rate N, --download-deadline S
                     how long each download may take (see kling download --help)
  --json, -q/--quiet, --token-file PATH, --base-url URL, --ca-file PATH, --journal PATH

Ctrl-C (and SIGTERM, SIGHUP) stops waiting; nothing is cancelled.
]],
  run = function(o, pos)
    if #pos > 0 then usage("resume", "unexpected argument '" .. pos[1] .. "'") end
    if o.no_journal then usage("resume", "--no-journal: resume reads the journal") end
    local ctx = M.context("resume", o)
    if not ctx.journal_path then usage("resume", "no journal (set HOME or XDG_STATE_HOME, or pass --journal PATH)") end
    local target = output_target(ctx, o, ".")
    ctx.target = target
    local list, unknown = journal_jobs(ctx)
    if not list then return journal_failed(unknown) end
    local other = 0
    for _, j in ipairs(list) do
      if not j.status and require("kling.client").valid_id(j.id) then
        if same_api(ctx, j) then
          local job = ctx.client:job(j.id, j.model)
          ctx.attached[#ctx.attached + 1] = job
        else
          other = other + 1
        end
      end
    end
    if other > 0 then
      ctx.display:warn(string.format("kling: %d unfinished job(s) in the journal belong to another API; not resumed", other))
    end
    -- a submit of unknown outcome whose answer named a request id: looked up; a job the
    -- service knows is recorded (a submitted line with its intent) and collected below
    local still = {}
    for _, u in ipairs(unknown) do
      if u.request_id and u.intent then
        local job = ctx.client:job(u.request_id, u.model)
        local status, err = job:refresh()
        if status then
          local ok, jerr = journal.open(ctx.journal_path):append { e = "submitted", id = job.id, intent = u.intent,
            model = u.model, urls = job.urls, tag = u.tag, digest = u.digest,
            note = "looked up by kling resume: the service knows the request id the submit's answer named" }
          if not ok then
            ctx:note(M.EXIT.io)
            ctx.display:warn(tostring(jerr))
          end
          ctx.display:warn("kling: the submit of unknown outcome " .. u.intent .. " was answered with request id " .. job.id
            .. ", which the service knows (" .. M.state_text(job.status, job.queue_position) .. "): collecting it")
          ctx.attached[#ctx.attached + 1] = job
        else
          u.message = (err.kind == "not_found" and "the service does not know its request id (most likely no job was "
            .. "created)" or ("its request id could not be looked up (" .. err.kind .. ": " .. err.message .. ")"))
            .. "; " .. tostring(u.message)
          still[#still + 1] = u
        end
      else
        still[#still + 1] = u
      end
    end
    report_unknown(still, "; they cannot be resumed")
    if #ctx.attached == 0 then
      ctx.display:warn("kling: nothing to resume in " .. ctx.journal_path)
      return 0
    end
    return ctx:run(function()
      local left = #ctx.attached
      for _, job in ipairs(ctx.attached) do
        kling.spawn(function()
          ctx:follow(job, target, { prefix = job.id .. "\t" })
          left = left - 1
        end)
      end
      while left > 0 do ctx.client:sleep(1, function() return left <= 0 end) end
      return ctx.code
    end)
  end,
})

-- ---------------------------------------------------------------------------------------
-- validate, models, schema
-- ---------------------------------------------------------------------------------------

-- Splits a batch line object into its input, key and model.
-- { "input": {...}, "name"/"id": K, "model": M } or the input itself (with an
-- optional "name"/"id" that is taken out unless the model's schema has such a field).
function M.line_parts(obj, model)
  local schema = models.schema(model)
  local props = type(schema) == "table" and type(schema.properties) == "table" and schema.properties or {}
  if type(obj.input) == "table" and not props.input then
    return obj.input, safe_key(obj.name) or safe_key(obj.id), type(obj.model) == "string" and obj.model or model
  end
  local input, key = {}, nil
  for k, v in pairs(obj) do input[k] = v end
  for _, k in ipairs { "name", "id" } do
    if input[k] ~= nil and not props[k] then
      key = key or safe_key(input[k])
      input[k] = nil
    end
  end
  return input, key, model
end

local function read_lines(text)
  local lines, n = {}, 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    line = line:gsub("\r$", "")
    if line:find("%S") and not line:match("^%s*#") then lines[#lines + 1] = { n = n, text = line } end
  end
  return lines
end

command("validate", {
  flags = flagset("model", { ["json"] = "flag" }),
  summary = "check an input (or a batch file) against the model's schema",
  usage = [[
Usage: kling validate [FILE|-] [--model ID] [--json]

Checks a JSON input (a file, or stdin with - or no argument) against the
model's schema, as generate would before sending anything. A file of JSON
lines (a batch file) is checked line by line. Prints "valid" (exit 0), or every
problem with its path (exit 3), e.g.
  /duration: duration must be an integer from 3 to 15, got 16

  --model ID   the model (default kling/kling-3.0/pro/text-to-video)
  --json       {"valid": true, "input": {...as it would be sent}} or {"valid": false, "errors": [...]}
]],
  run = function(o, pos)
    if #pos > 1 then usage("validate", "give one file") end
    local model = o.model or kling.DEFAULT_MODEL
    local path = pos[1] or "-"
    local text = read_source("validate", path, path == "-" and "stdin" or path)
    local items = {}
    local whole = json.decode_input(text)
    if type(whole) == "table" and trim(text):match("^{") then
      items[1] = { obj = whole }
    else
      for _, l in ipairs(read_lines(text)) do
        local obj, err = decode_object(l.text)
        items[#items + 1] = { n = l.n, obj = obj, err = err }
      end
      if #items == 0 then
        io.stderr:write("kling validate: ", path == "-" and "stdin" or path, ": no input\n")
        return 2
      end
    end
    local bad = 0
    for _, it in ipairs(items) do
      local prefix = it.n and ("line " .. it.n .. ": ") or ""
      local result
      if not it.obj then
        bad = bad + 1
        result = { valid = false, line = it.n, errors = { { path = "/", message = it.err } } }
        io.stderr:write(prefix, it.err, "\n")
      else
        local input, key, m = it.obj, nil, model
        if it.n then input, key, m = M.line_parts(it.obj, model) end
        local ok, sent = kling.validate(input, m)
        if ok then
          result = { valid = true, line = it.n, key = key, model = m, input = sent }
        else
          bad = bad + 1
          result = { valid = false, line = it.n, key = key, model = m, errors = error_object(sent).errors }
          for _, line in ipairs(validation_lines(sent, prefix)) do io.stderr:write(line, "\n") end
        end
      end
      -- valid: the input exactly as it would be sent (the wire's rules)
      if o.json then io.stdout:write(result.valid and json.encode_wire(result) or json.encode(result), "\n") end
    end
    if not o.json then
      if bad == 0 then
        io.stdout:write(#items == 1 and not items[1].n and "valid\n" or string.format("valid: %d inputs\n", #items))
      else
        io.stderr:write(string.format("kling validate: %d of %d input(s) not valid for %s\n", bad, #items, model))
      end
    end
    return bad == 0 and 0 or 3
  end,
})

command("models", {
  flags = flagset({ ["json"] = "flag" }),
  summary = "list the models whose schema is known",
  usage = [[
Usage: kling models [--json]

Lists the models whose input schema ships with kling (their inputs are
validated before sending). Any other RunComfy model can still be used by id
(--model ID); its input is then sent as given.
]],
  run = function(o, pos)
    if #pos > 0 then usage("models", "unexpected argument '" .. pos[1] .. "'") end
    for _, id in ipairs(models.list()) do
      if o.json then
        local d = models.describe(id)
        local names = json.array {}
        for _, f in ipairs(d and d.fields or {}) do names[#names + 1] = f.name end
        io.stdout:write(json.encode { id = id, default = id == kling.DEFAULT_MODEL, fields = names }, "\n")
      else
        io.stdout:write(id, id == kling.DEFAULT_MODEL and "  (default)" or "", "\n")
      end
    end
    return 0
  end,
})

local CLI_FLAG = {
  prompt = "PROMPT", negative_prompt = "--negative-prompt", duration = "--duration",
  aspect_ratio = "--aspect-ratio", cfg_scale = "--cfg-scale", sound = "--sound/--no-sound",
  multi_prompt = "--shot", shot_type = nil,
}

local function show_value(v)
  if type(v) == "string" then
    if #v > 60 then v = fit(v, 57) .. "..." end
    return string.format("%q", v)
  elseif type(v) == "number" then
    if math.tointeger(v) then return tostring(math.tointeger(v)) end
    return string.format("%g", v)
  end
  return tostring(v)
end

local function number_text(v)
  if math.tointeger(v) then return tostring(math.tointeger(v)) end
  return string.format("%g", v)
end

local function describe_fields(fields, raw_props, prefix, out, default_model)
  for _, f in ipairs(fields or {}) do
    local raw = type(raw_props) == "table" and raw_props[f.name] or {}
    if type(raw) ~= "table" then raw = {} end
    local bits = {}
    local t = f.type
    if f.type == "array" and f.items and f.items.type ~= "object" then t = "array of " .. tostring(f.items.type) end
    bits[#bits + 1] = t
    if f.required then bits[#bits + 1] = "required" end
    if f.minimum or f.maximum then
      if f.minimum and f.maximum then
        bits[#bits + 1] = number_text(f.minimum) .. " to " .. number_text(f.maximum)
      elseif f.minimum then
        bits[#bits + 1] = ">= " .. number_text(f.minimum)
      else
        bits[#bits + 1] = "<= " .. number_text(f.maximum)
      end
    end
    if f.enum then
      local vals = {}
      for _, v in ipairs(f.enum) do vals[#vals + 1] = tostring(v) end
      bits[#bits + 1] = "one of " .. table.concat(vals, ", ")
    end
    if f.min_items or f.max_items then
      bits[#bits + 1] = string.format("%s to %s items", f.min_items or 0, f.max_items or "any")
    end
    if raw.default ~= nil then bits[#bits + 1] = "default " .. show_value(raw.default) end
    local flag = default_model and prefix == "" and CLI_FLAG[f.name]
    local head = prefix .. f.name .. "  " .. table.concat(bits, ", ")
    if flag then head = head .. "   [" .. flag .. "]" end
    out[#out + 1] = head
    if type(raw.description) == "string" then out[#out + 1] = "    " .. raw.description end
    if f.sum_of then
      local of = f.sum_of:gsub("^([^.]+)%.", "%1[].")
      out[#out + 1] = "    must equal the sum of " .. of .. " when that is given (filled in from it when left out)"
    end
    if f.items and f.items.fields then
      local ritems = type(raw.items) == "table" and (raw.items.properties or raw.items) or {}
      describe_fields(f.items.fields, ritems, prefix .. f.name .. "[].", out, default_model)
    end
  end
end

command("schema", {
  flags = flagset({ ["json"] = "flag" }),
  summary = "show a model's input fields: types, ranges, defaults",
  usage = [[
Usage: kling schema [MODEL] [--json]

Shows the input fields of a model (default kling/kling-3.0/pro/text-to-video),
read from its schema: type, whether required, range or allowed values, default,
description, and the generate flag that sets it.

  --json   {"model", "fields": [{"name", "type", "required", "minimum", "maximum",
           "enum", "default", "description", "items"}]}
]],
  run = function(o, pos)
    if #pos > 1 then usage("schema", "give one model") end
    local model = pos[1] or kling.DEFAULT_MODEL
    local d = models.valid_model_id(model) and models.describe(model) or nil
    if not d then
      io.stderr:write("kling schema: no schema is known for '", model, "' (kling models lists those that are)\n")
      return 2
    end
    local raw = kling.schema(model) or {}
    if o.json then
      local function enrich(fields, raw_props)
        local list = json.array {}
        for _, f in ipairs(fields or {}) do
          local r = type(raw_props) == "table" and type(raw_props[f.name]) == "table" and raw_props[f.name] or {}
          local e = {}
          for k, v in pairs(f) do e[k] = v end
          e.default, e.description = r.default, r.description
          if f.enum then e.enum = json.array(f.enum) end
          if f.items then
            e.items = { type = f.items.type }
            if f.items.fields then
              local ritems = type(r.items) == "table" and (r.items.properties or r.items) or {}
              e.items.fields = enrich(f.items.fields, ritems)
            end
          end
          list[#list + 1] = e
        end
        return list
      end
      io.stdout:write(json.encode { model = model, fields = enrich(d.fields, raw.properties) }, "\n")
      return 0
    end
    local out = { model .. (model == kling.DEFAULT_MODEL and "  (default model)" or ""), "" }
    describe_fields(d.fields, raw.properties, "", out, model == kling.DEFAULT_MODEL)
    io.stdout:write(table.concat(out, "\n"), "\n")
    return 0
  end,
})

command("emulator", {
  passthrough = true,
  summary = "run the local emulator of the API (kling emulator --help)",
  usage = [[
Usage: kling emulator [flags]

Runs the local emulator of RunComfy's Model API (the same as kling-emulator;
see doc/EMULATOR.md). Its first line gives the URL to point kling at:
  kling emulator --port 0 --queue 2 --run 5 &
  export RUNCOMFY_MODEL_API_BASE=http://127.0.0.1:PORT/v1 RUNCOMFY_TOKEN=anything
Flags: kling emulator --help.
]],
  run = function(_, argv) return require("kling.emulator").main(argv) end,
})

command("batch", {
  flags = flagset("api", "out", "wait", "model", "dl", {
    ["concurrency"] = "count", ["out-dir"] = "string", ["retry-failed"] = "flag",
    ["retry-unknown"] = "flag",
  }),
  summary = "run a file of inputs (JSON lines), N at a time, resumable",
  usage = [[
Usage: kling batch FILE.jsonl --out-dir DIR [--concurrency N] [options]

Runs one job per line of FILE.jsonl (a JSON object: the input itself, or
{"input": {...}, "name": K, "model": M}). Every line is validated before
anything is sent. At most N jobs are in flight at once (submitted and not yet
downloaded); each video goes to DIR/KEY.mp4, where KEY is the line's "name"
or "id" field (taken out of the input) or line-N (N: its line number).

Re-running the same command after a crash or Ctrl-C skips the lines whose file
exists, re-attaches to the jobs already submitted for the others (recorded in
DIR/.kling-batch.jsonl right after each submit) and submits only the rest: no
line is sent twice.

  --out-dir DIR        where the videos and the batch state go (required)
  --concurrency N      jobs in flight at once (default 4)
  --model ID           the model of lines that name none (default kling/kling-3.0/pro/text-to-video)
  --timeout S          how long to wait for each job (default 1800)
  --stall-timeout S, --min-rate N, --download-deadline S
                       how long each download may take (see kling download --help)
  --retry-failed       submit again the lines whose job failed or was cancelled
  --retry-unknown      submit again the lines whose earlier submit has an unknown
                       outcome (it may have created a billed job)
  --json               one object per line: {"line", "key", "id", "status", "path", "bytes", "error"}
  -q, --quiet          plain log lines instead of the live display
  --token-file PATH, --base-url URL, --ca-file PATH, --journal PATH, --no-journal

Ctrl-C (and SIGTERM, SIGHUP) stops submitting, cancels the queued jobs of this
run (they are submitted again next time) and leaves the running ones to the next
run of the command.
]],
  run = function(o, pos) return require("kling.cli.batch").run(M, o, pos) end,
})

command("help", {
  flags = flagset(),
  summary = "show help for a command",
  usage = "Usage: kling help [COMMAND]\n",
  run = function(_, pos)
    if pos[1] then
      local c = COMMANDS[pos[1]]
      if not c then usage("help", "unknown command '" .. pos[1] .. "'") end
      io.stdout:write(c.usage, c.passthrough and "" or ("\n" .. EXIT_HELP))
      return 0
    end
    io.stdout:write(M.main_usage())
    return 0
  end,
})

-- ---------------------------------------------------------------------------------------
-- Main
-- ---------------------------------------------------------------------------------------

function M.main_usage()
  local lines = {
    "Usage: kling COMMAND [options]      (kling COMMAND --help for each)",
    "",
    "A client for RunComfy's Model API (Kling 3.0 Pro text-to-video by default).",
    "",
    "Commands:",
  }
  for _, name in ipairs(M.ORDER) do
    lines[#lines + 1] = string.format("  %-10s %s", name, COMMANDS[name].summary)
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = [[
The token comes from $RUNCOMFY_TOKEN (or $RUNCOMFY_API_TOKEN) or --token-file
PATH, never from a flag value; the API from $RUNCOMFY_MODEL_API_BASE or
--base-url. Every submitted request id is written to the journal
($XDG_STATE_HOME/kling/jobs.jsonl, default ~/.local/state/kling/jobs.jsonl)
before anything else happens: kling jobs lists them, kling resume collects them.

Example:
  kling generate "a red kite over a grey sea at dawn" --duration 5 -o kite.mp4
]]
  lines[#lines + 1] = EXIT_HELP
  return table.concat(lines, "\n")
end

local stdout_tty
--- Is stdout a terminal? (asked once)
function M.stdout_is_tty()
  if stdout_tty == nil then
    local forced = os.getenv("KLING_TTY")
    if forced == "1" then stdout_tty = true
    elseif forced == "0" then stdout_tty = false
    else stdout_tty = os.execute("test -t 1") == true end
  end
  return stdout_tty
end

-- Global options may come before the command: they are moved after it.
local function split_command(argv)
  local pre, i = {}, 1
  local api = GROUPS.api
  while i <= #argv and argv[i]:sub(1, 1) == "-" and argv[i] ~= "-" do
    local a = argv[i]
    if a == "--token" or a:match("^%-%-token=") then usage(nil, TOKEN_FLAG) end
    pre[#pre + 1] = a
    local name = a:match("^%-%-([^=]+)$")
    if name and api[name] == "string" then
      i = i + 1
      pre[#pre + 1] = argv[i]
    end
    i = i + 1
  end
  local rest = {}
  for j = i + 1, #argv do rest[#rest + 1] = argv[j] end
  return argv[i], pre, rest
end

local function run_main(argv)
  local name, pre, rest = split_command(argv)
  if not name then
    for _, a in ipairs(pre) do
      if a == "--help" or a == "-h" then
        io.stdout:write(M.main_usage())
        return 0
      elseif a == "--version" then
        io.stdout:write("kling ", kling.VERSION, "\n")
        return 0
      end
    end
    io.stderr:write(M.main_usage())
    return 2
  end
  if name == "--version" then
    io.stdout:write("kling ", kling.VERSION, "\n")
    return 0
  end
  local c = COMMANDS[name]
  if not c then usage(nil, "unknown command '" .. name .. "' (kling --help lists them)") end
  if c.passthrough then
    for _, a in ipairs(pre) do table.insert(rest, 1, a) end
    return c.run(nil, rest)
  end
  local all = {}
  for _, a in ipairs(pre) do all[#all + 1] = a end
  for _, a in ipairs(rest) do all[#all + 1] = a end
  local o, pos = M.parse_args(name, all, c.flags)
  M.json_output = o.json == true -- stdout then carries JSON only, written as it is
  if o.help then
    io.stdout:write(c.usage, "\n", EXIT_HELP)
    return 0
  end
  return c.run(o, pos)
end

--- Runs the tool with argv (the script's arg table). Returns the exit code.
function M.main(argv)
  local args = {}
  for i = 1, #(argv or {}) do args[i] = argv[i] end
  local ok, code = xpcall(run_main, function(e)
    if getmetatable(e) == UsageError then return e end
    if type(e) == "string" and e:match("interrupted!$") then return { interrupted = true } end
    return { internal = tostring(e), trace = debug.traceback() }
  end, args)
  if ok then return code or 0 end
  local e = code
  if getmetatable(e) == UsageError then
    local who = e.cmd and ("kling " .. e.cmd) or "kling"
    if e.code then -- a local file problem: nothing was sent
      io.stderr:write(who, ": ", e.message, "\n")
      return e.code
    end
    io.stderr:write(who, ": ", e.message, "\n",
      "Try '", who, " --help'.\n")
    return 2
  end
  if e.interrupted then
    io.stderr:write("kling: interrupted\n")
    return 130
  end
  io.stderr:write("kling: internal error: ", e.internal, "\n")
  if os.getenv("KLING_DEBUG") then io.stderr:write(e.trace, "\n") end
  return 1
end

M.COMMANDS = COMMANDS
M.ORDER = { "generate", "submit", "status", "wait", "result", "cancel", "download", "jobs", "resume",
  "batch", "validate", "models", "schema", "emulator", "help" }
do -- every command is listed once in M.ORDER
  local listed = {}
  for _, name in ipairs(M.ORDER) do listed[name] = assert(COMMANDS[name], name) end
  for _, name in ipairs(ORDER) do assert(listed[name], name) end
end
M.usage = usage
M.Ctx = Ctx
M.safe_key = safe_key
M.read_lines = read_lines
M.decode_object = decode_object
M.file_exists = file_exists
M.is_dir = is_dir
M.mkdir_p = mkdir_p
M.join = join
M.code_for = code_for
M.worst = worst
M.output_target = output_target
M.validation_lines = validation_lines
M.quote = quote
M.now = now

return M
