--- kling.cli.context: what a command that talks to the service works with: its options,
-- its display (kling.cli.display, by kling.cli.term's rule), the client (token, base URL,
-- CA bundle, journal, KLING_POLL), what the journal knows, the jobs it submitted or
-- attached to, its exit code so far (the most serious), its --json objects, and Ctrl-C,
-- SIGTERM and SIGHUP (Ctx:run, kling.cli.signals).
--
--   local ctx = context.new("wait", o)      -- the client is made at once (opts.client ~= false)
--   return ctx:run(function() ... ctx:follow(job, target) ... return ctx.code end)
local kling = require "kling"
local journal = require "kling.journal"
local client_lib = require "kling.client"
local exit = require "kling.cli.exit"
local env = require "kling.cli.env"
local term = require "kling.cli.term"
local files = require "kling.cli.files"
local format = require "kling.cli.format"
local output = require "kling.cli.output"
local display = require "kling.cli.display"
local video_of = require("kling.job").video_of

local io = output.io -- luacheck: ignore (shadows the global on purpose: escaped streams)
local EXIT = exit.EXIT

local M = {}

local Ctx = {}
Ctx.__index = Ctx
M.Ctx = Ctx

-- ---------------------------------------------------------------------------------------
-- Where things are: the journal, the CA bundle, the polling schedule
-- ---------------------------------------------------------------------------------------

--- The default journal: $XDG_STATE_HOME/kling/jobs.jsonl, or ~/.local/state/kling/jobs.jsonl
-- (nil without a HOME).
function M.default_journal()
  local base = env.get("XDG_STATE_HOME")
  if not base or base:sub(1, 1) ~= "/" then
    local home = env.get("HOME")
    if not home or home == "" then return nil end
    base = home .. "/.local/state"
  end
  return base .. "/kling/jobs.jsonl"
end

local function journal_path(o)
  if o.no_journal then return nil end
  return o.journal or M.default_journal()
end

local function poll_from_env(cmd)
  local text = env.get("KLING_POLL")
  if not text or text == "" then return nil end
  local poll = {}
  for k, v in text:gmatch("([%a_]+)=([^,]+)") do
    local n = tonumber(v)
    if not n or n < 0 then exit.usage(cmd, "KLING_POLL: bad value for " .. k) end
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
    local v = env.get(var)
    if v and v ~= "" then path, from = v, var end
  end
  if not path then return nil end
  local f, err = io.open(path, "rb")
  local first = f and f:read(1)
  if f then f:close() end
  if not first then
    exit.usage(cmd, from .. ": cannot read the CA bundle " .. path .. ": " .. (err or "empty, or not a file"))
  end
  return path
end

-- The commands that submit: the journal's problems reach them as the library's io errors.
local SUBMITS = { generate = true, submit = true, batch = true }

-- ---------------------------------------------------------------------------------------
-- The context
-- ---------------------------------------------------------------------------------------

--- The context of command `cmd` with options o. opts.client = false: no client yet
-- (Ctx:make_client later, once the input is known to be valid).
function M.new(cmd, o, opts)
  opts = opts or {}
  local mode = term.display_mode(o)
  local self = setmetatable({
    cmd = cmd, o = o, display = display.new(mode), mode = mode,
    submitted = {}, attached = {}, downloading = {}, emitted = {},
    submitting = 0, code = EXIT.ok,
  }, Ctx)
  if opts.client ~= false then self:make_client() end
  return self
end

--- Makes the client: the token (its file), the journal, the CA bundle, KLING_POLL.
-- Raises a usage error (or exit 8 for a --journal whose directory does not exist).
function Ctx:make_client()
  local o, cmd = self.o, self.cmd
  local token
  if o.token_file then
    local f, err = io.open(o.token_file, "rb")
    if not f then exit.usage(cmd, "--token-file: " .. tostring(err)) end
    token = format.trim(f:read("a") or "")
    f:close()
    if token == "" then exit.usage(cmd, "--token-file: " .. o.token_file .. " is empty") end
  end
  local jpath = journal_path(o)
  -- a mistyped --journal must not start a second journal somewhere: its directory is never
  -- made. A command that submits gets the library's io error (nothing is sent, and --json
  -- says not_submitted); any other exits 8 here, before it reads or writes anything.
  if jpath and o.journal and not SUBMITS[cmd] and not files.is_dir(files.dirname(jpath)) then
    exit.disk(cmd, "--journal " .. jpath .. ": its directory " .. files.dirname(jpath) .. " does not exist "
      .. "(No such file or directory; only the default journal's directory is created)")
  end
  -- the default journal's directory is made; one that cannot be made is not a reason to
  -- run without the journal: a submit then fails before sending anything (kind io, exit 8)
  if jpath and not o.journal then files.mkdir_p(files.dirname(jpath)) end
  self.journal_path = jpath
  local opts = {
    token = token, base_url = o.base_url, journal = jpath or false, ca_file = M.ca_file(cmd, o),
    on_warning = function(msg) self.display:warn("kling: warning: " .. msg) end,
    include_cost = o.cost or nil, -- --cost (generate, wait, result)
  }
  opts.poll = poll_from_env(cmd)
  opts.submit_timeout = o.submit_timeout
  local ok, client = pcall(kling.new, opts)
  if not ok then exit.usage(cmd, tostring(client):gsub("^kling%.new: ", "")) end
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

--- The jobs of the journal, oldest first: list of entries, the submits of unknown
-- outcome | nil, err (kind io).
function Ctx:journal_jobs()
  local state, unknown = self:journal_state()
  if not state then return nil, unknown end
  local list = {}
  for _, j in pairs(state) do list[#list + 1] = j end
  table.sort(list, function(a, b)
    if (a.t or 0) ~= (b.t or 0) then return (a.t or 0) < (b.t or 0) end
    return a.id < b.id
  end)
  return list, unknown
end

--- Does a journal entry belong to the API the client talks to?
function Ctx:same_api(j)
  local url = type(j.urls) == "table" and j.urls.status
  if type(url) ~= "string" then return true end
  local base = self.client.base_url
  return url:sub(1, #base + 1) == base .. "/"
end

--- Notes an exit code: the command's code is the most serious one noted.
function Ctx:note(code)
  self.code = exit.worst(self.code, code)
  return code
end

--- Submits; the job is this command's (Ctrl-C cancels it while queued). opts: client:submit's.
function Ctx:submit(model, input, opts)
  self.submitting = self.submitting + 1
  local job, err = self.client:submit(model, input, opts)
  self.submitting = self.submitting - 1
  if job then self.submitted[#self.submitted + 1] = job end
  return job, err
end

--- Attaches to an id (with its model from --model or the journal). An id the library
-- refuses is a usage error.
function Ctx:attach(id)
  local model = self.o.model
  if not model then
    local state = self:journal_state() -- (a journal that cannot be read only loses the model name here)
    local j = state and state[id]
    model = j and j.model or nil
  end
  local job, err = self.client:job(id, model)
  if not job then
    exit.usage(self.cmd, "invalid request id '" .. tostring(id) .. "' (ids match ^[A-Za-z0-9_-]{1,128}$)")
  end
  self.attached[#self.attached + 1] = job
  return job, err
end

-- ---------------------------------------------------------------------------------------
-- Results, JSON objects and errors
-- ---------------------------------------------------------------------------------------

--- Writes one JSON object on stdout (--json only), once per job (job nil: fields alone).
function Ctx:emit(job, fields)
  if self.mode ~= "json" or (job and self.emitted[job]) then return end
  if job then self.emitted[job] = true end
  local obj = job and output.job_object(job, fields) or fields
  io.stdout:write(output.json_line(obj), "\n")
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
  if path and (err.transport == "slow" or err.transport == "deadline" or kind == "io")
    and files.exists(path .. ".part") then
    return "what arrived is kept in " .. path .. ".part; the same command goes on from it"
      .. (kind == "io" and " once the file can be written" or "")
  end
  if kind == "auth" then
    return "set RUNCOMFY_TOKEN (or RUNCOMFY_API_TOKEN, RUNCOMFY_API_KEY), or pass --token-file PATH"
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
  local code = exit.code_for(err)
  if self.interrupted then return code end
  local hint = self:hint(err, job, path)
  if row and self.mode ~= "json" then
    local text = row.label .. "  " .. output.error_text(err):gsub("^kling: ", "")
    self.display:finish(row, text .. (hint and ("\n  " .. hint) or ""), "fail")
  else
    if row then self.display:finish(row, "") end
    self.display:warn(output.error_text(err) .. (hint and ("\n  " .. hint) or ""))
  end
  if job or self.mode == "json" then
    local f = { error = job and err or output.error_object(err) }
    for k, v in pairs(fields or {}) do f[k] = v end
    self:emit(job, f)
  end
  return self:note(code)
end

--- Reports a journal (or batch state) that cannot be read or written (kind io): exit 8.
function M.journal_failed(err)
  io.stderr:write(tostring(err), "\n")
  return EXIT.io
end

--- Lists the submits of unknown outcome on stderr: when, model, tag, intent key and what
-- happened, so the user can look for them on the dashboard. how: added to the heading.
function M.report_unknown(unknown, how)
  if #unknown == 0 then return end
  io.stderr:write(string.format("kling: %d submit(s) of unknown outcome in the journal (the job may exist and be "
    .. "billed; look for it on your RunComfy dashboard by its time and tag)%s:\n", #unknown, how or ""))
  local esc = output.escape
  for _, u in ipairs(unknown) do
    -- read back from the journal: text that came from outside, escaped
    local parts = { u.t and os.date("%Y-%m-%d %H:%M:%S", u.t) or "?", esc(u.model or "?") }
    if u.tag then parts[#parts + 1] = "tag " .. esc(u.tag) end
    if u.intent then parts[#parts + 1] = "intent " .. esc(u.intent) end
    if u.request_id then
      parts[#parts + 1] = "answered request id " .. esc(u.request_id) .. " (check it: kling status "
        .. esc(u.request_id) .. "; kling resume looks it up)"
    end
    if u.request_id_raw then parts[#parts + 1] = "answered request_id \"" .. esc(u.request_id_raw) .. "\"" end
    parts[#parts + 1] = esc(u.message)
    io.stderr:write("  ", table.concat(parts, "  "), "\n")
  end
end

-- ---------------------------------------------------------------------------------------
-- Following jobs: wait, then download
-- ---------------------------------------------------------------------------------------

--- Where a job's video goes: target = { file = path } or { dir = path }. In a directory,
-- two jobs of one command never get the same name (their downloads would run at once),
-- and an existing file is never overwritten without --force (NAME-1.mp4, NAME-2.mp4...).
function Ctx:output_path(target, job, fallback_name)
  if target.file then return target.file end
  self.taken = self.taken or {}
  local name = format.name_from_url(job.video_url or video_of(job.output), fallback_name or job.id)
  local path = files.join(target.dir, name)
  local function free(p) return not self.taken[p] and (self.o.force or not files.exists(p)) end
  if not free(path) then
    local stem, ext = name:match("^(.*)(%.[%w]+)$")
    if not stem then stem, ext = name, "" end
    for n = 1, 999 do
      local p = files.join(target.dir, stem .. "-" .. n .. ext)
      if free(p) then
        path = p
        break
      end
    end
  end
  self.taken[path] = true
  return path
end

-- Merges extra JSON fields over base (a new table).
local function with_fields(base, extra)
  for k, v in pairs(extra or {}) do base[k] = v end
  return base
end

--- Downloads a completed job's video to target (the second half of Ctx:follow): the exit
-- code, and the error of a failed download (its kind io: a local disk error).
function Ctx:download(job, row, target, opts)
  local d = self.display
  local path = self:output_path(target, job, opts.name)
  self.downloading[job] = path
  d:start_download(row, path)
  local t0 = d.now()
  local saved, bytes = job:download(path, {
    on_progress = function(got, total) d:progress(row, got, total) end,
    stall_timeout = self.o.stall_timeout, min_rate = self.o.min_rate, deadline = self.o.download_deadline,
  })
  self.downloading[job] = nil
  if self.interrupted then return EXIT.interrupted end
  if not saved then
    -- no "path": that file was never written; "part" names the bytes kept for the next run
    local part = files.exists(path .. ".part") and (path .. ".part") or nil
    return self:fail(bytes, job, row, with_fields({ part = part }, opts.fields), path), bytes
  end
  local rate = format.human_rate(bytes, d.now() - t0)
  d:finish(row, string.format("%s  saved %s (%s%s) after %s", row.label, saved, format.human_bytes(bytes),
    rate and (", " .. rate) or "", format.human_time(d.now() - row.t0)), "ok")
  self:result((opts.prefix or "") .. saved)
  self:emit(job, with_fields({ path = saved, bytes = bytes }, opts.fields))
  return self:note(EXIT.ok)
end

--- Waits for a job (live row), then downloads its video when target is given.
-- Returns the exit code for this job, and the error of a failed download (its kind io:
-- a local disk error). opts: label (row label), name (file name in a target dir),
-- prefix (of the result line), fields (extra JSON fields: a batch line...).
function Ctx:follow(job, target, opts)
  opts = opts or {}
  local d = self.display
  local label = opts.label or (self.mode == "tty" and job.id:sub(1, 8) or job.id)
  local row = d:add(label)
  row.job = job
  row.status, row.qp = job.status, job.queue_position -- known from the submit: no log line for it
  d:render()
  local out, err = job:wait { timeout = self.o.timeout, on_update = function(j) d:update(row, j) end }
  if self.interrupted then return EXIT.interrupted end
  -- the journal lacks this job's id or its end (the warning said which): exit 8 at the end
  if job.journal_error then self:note(EXIT.io) end
  if not out then return self:fail(err, job, row, opts.fields) end
  if not target then
    local video = output.escape(job.video_url or video_of(out)) -- the service's URL, on one line
    d:finish(row, label .. "  completed  " .. video, "ok")
    self:result((opts.prefix or "") .. video)
    self:emit(job, opts.fields)
    return self:note(EXIT.ok)
  end
  return self:download(job, row, target, opts)
end

--- Follows every attached job at once (waiting, downloading to target when there is
-- one) inside Ctx:run; returns the command's exit code. prefix(job): the result line's.
function Ctx:follow_all(target, prefix)
  self.target = target
  return self:run(function()
    local left = #self.attached
    for _, job in ipairs(self.attached) do
      kling.spawn(function()
        self:follow(job, target, { prefix = prefix and prefix(job) or nil })
        left = left - 1
      end)
    end
    while left > 0 do self.client:sleep(1, function() return left <= 0 end) end
    return self.code
  end)
end

--- How to collect a job after Ctrl-C.
function Ctx:collect_hint(job)
  if self.resume_hint then return self.resume_hint(job) end
  local path = self.downloading[job] or (self.target and self.target.file)
  if path then
    return "kling wait " .. job.id .. " (or, for the video: kling download " .. job.id .. " -o "
      .. format.shell_word(path) .. ")"
  end
  return "kling wait " .. job.id
end

--- Runs fn inside kling.run with the live display ticking and Ctrl-C, SIGTERM and SIGHUP
-- handled (kling.cli.signals). Returns fn's exit code (the worst noted code when fn
-- returns nil).
function Ctx:run(fn)
  return require("kling.cli.signals").run(self, fn)
end

--- Is id a request id the library takes (kling.client's rule)?
M.valid_id = client_lib.valid_id

return M
