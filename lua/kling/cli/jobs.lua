--- kling jobs [--all] [--refresh]: the jobs of the journal; --forget ID..., --compact.
local kling = require "kling"
local json = require "kling.json"
local journal = require "kling.journal"
local exit = require "kling.cli.exit"
local output = require "kling.cli.output"
local context = require "kling.cli.context"
local display = require "kling.cli.display"
local video_of = require("kling.job").video_of

local io = output.io -- luacheck: ignore (shadows the global on purpose: escaped streams)
local EXIT = exit.EXIT

local C = {
  name = "jobs",
  summary = "list the jobs of the journal",
  args = "[ID...]",
  argname = "ID",
  args_help = "with --forget: the request ids or intent keys to forget",
  options = { "all", "refresh", "forget", "compact", "out", "api" },
  option_help = {
    forget = "mark the jobs ID... as ended in the journal (an expired id kling resume should skip); with the "
      .. "intent key of a submit of unknown outcome (or the request id its answer named): checked, list it no "
      .. "more. An id or key the journal does not hold is refused (exit 2) and nothing is written",
    json = 'one object per job: {"id", "model", "status", "submitted_at", "video", "error"}, and '
      .. '{"status": "unknown", "intent", "tag", ...} per submit of unknown outcome',
  },
  description = [[
Lists the jobs in the journal (default $XDG_STATE_HOME/kling/jobs.jsonl, or
~/.local/state/kling/jobs.jsonl): by default those that have not ended, with --all every
job with its end (status, video URL or error). Then, on stderr, the submits of unknown
outcome (a lost answer, or a process killed while its submit was in flight): the job may
exist and be billed; each comes with its time, tag and intent key, to look for it on the
dashboard. A journal that cannot be read gives exit code 8.]],
  examples = { "kling jobs --refresh", "kling jobs --all --json", "kling jobs --forget 3f0c...", "kling jobs --compact" },
}

-- --forget ID...: every id is checked before anything is written (a typo appends nothing).
local function forget(ctx, ids)
  local jobs, unknown, intents = ctx:journal_state()
  if not jobs then return context.journal_failed(unknown) end
  local by_request = {} -- the request ids answered with an unknown outcome: their intents
  for _, u in ipairs(unknown) do
    if u.request_id and u.intent then by_request[u.request_id] = u.intent end
  end
  local events = {}
  for _, id in ipairs(ids) do
    if intents[id] then -- the key of a submit of unknown outcome: checked on the dashboard
      events[#events + 1] = { e = "dismissed", intent = id }
    elseif by_request[id] then -- the request id such a submit's answer named
      events[#events + 1] = { e = "dismissed", intent = by_request[id] }
    elseif jobs[id] then
      events[#events + 1] = { e = "ended", id = id, status = "forgotten", error = "forgotten with kling jobs --forget" }
    else
      exit.usage("jobs", "--forget: '" .. output.escape(id) .. "' is neither a request id nor an intent key of the "
        .. "journal " .. ctx.journal_path .. " (kling jobs --all lists them); nothing was written")
    end
  end
  local jn = journal.open(ctx.journal_path)
  for _, event in ipairs(events) do
    local ok, err = jn:append(event)
    if not ok then return context.journal_failed(err) end
  end
  return EXIT.ok
end

-- --compact
local function compact(ctx)
  local n, unreadable = ctx.client:compact_journal()
  if not n then return context.journal_failed(unreadable) end
  io.stdout:write(string.format("dropped %d lines of ended jobs and answered submits from %s\n", n, ctx.journal_path))
  if unreadable > 0 then
    io.stdout:write(string.format("kept %d unreadable line(s) as they were (a write torn by a crash, or damage)\n",
      unreadable))
  end
  return EXIT.ok
end

-- --refresh: the status now of the jobs shown that have not ended (and of the request ids
-- the answers of unknown submits named): id -> text.
local function refresh(ctx, shown, unknown)
  local live = {}
  ctx:run(function()
    local left = 0
    local ask = {}
    for _, j in ipairs(shown) do
      if not j.status and context.valid_id(j.id) and ctx:same_api(j) then ask[#ask + 1] = j end
    end
    for _, u in ipairs(unknown) do -- a request id an unknown outcome's answer named: does it exist?
      if u.request_id then ask[#ask + 1] = { id = u.request_id, model = u.model } end
    end
    for _, j in ipairs(ask) do
      left = left + 1
      kling.spawn(function()
        local job = ctx.client:job(j.id, j.model)
        local status, err = job:refresh()
        live[j.id] = status and display.state_text(job.status, job.queue_position) or ("? " .. tostring(err.kind))
        left = left - 1
      end)
    end
    while left > 0 do ctx.client:sleep(1, function() return left <= 0 end) end
  end)
  return live
end

local function print_json(shown, unknown, live)
  for _, j in ipairs(shown) do
    io.stdout:write(json.encode_display {
      id = j.id, model = j.model, status = j.status or "unfinished", live_status = live[j.id],
      submitted_at = j.t, ended_at = j.ended_t, output = j.output, output_text = j.output_text,
      output_note = j.output_note, video = video_of(j.output), error = j.error and { message = j.error } or nil,
      cost = j.cost,
    }, "\n")
  end
  for _, u in ipairs(unknown) do
    io.stdout:write(json.encode {
      status = "unknown", intent = u.intent, model = u.model, tag = u.tag, submitted_at = u.t, digest = u.digest,
      request_id = u.request_id, request_id_raw = u.request_id_raw, live_status = live[u.request_id or false],
      error = { kind = "submit_unknown", message = u.message },
    }, "\n")
  end
end

local function print_table(shown, live)
  local esc = output.escape
  local idw = 2
  for _, j in ipairs(shown) do idw = math.max(idw, #esc(j.id)) end
  -- the id padded by hand: string.format takes widths of two digits at most (an id: 128 bytes)
  local fmt = "%s  %-19s  %-12s  %s\n"
  local function pad(s) return s .. string.rep(" ", idw - #s) end
  io.stdout:write(string.format(fmt, pad("ID"), "SUBMITTED", "STATUS", "MODEL / RESULT"))
  for _, j in ipairs(shown) do
    local status = live[j.id] or j.status or "unfinished"
    local what = j.model or "?"
    if j.status == "completed" then what = video_of(j.output) or what
    elseif j.error then what = j.error end
    if j.cost then what = what .. "  (cost " .. tostring(j.cost) .. ")" end -- (kept when asked: --cost)
    -- the journal's contents, each on one line
    io.stdout:write(string.format(fmt, pad(esc(j.id)), j.t and os.date("%Y-%m-%d %H:%M:%S", j.t) or "?", esc(status),
      esc(what)))
  end
end

function C.run(o, pos)
  if o.no_journal then exit.usage("jobs", "--no-journal: jobs reads the journal") end
  local ctx = context.new("jobs", o)
  if not ctx.journal_path then exit.usage("jobs", "no journal (set HOME or XDG_STATE_HOME, or pass --journal PATH)") end
  if o.forget then
    if #pos == 0 then exit.usage("jobs", "give a request id") end
    return forget(ctx, pos)
  end
  if #pos > 0 then exit.usage("jobs", "unexpected argument '" .. pos[1] .. "'") end
  if o.compact then return compact(ctx) end
  local list, unknown = ctx:journal_jobs()
  if not list then return context.journal_failed(unknown) end
  local shown = {}
  for _, j in ipairs(list) do
    if o.all or not j.status then shown[#shown + 1] = j end
  end
  local live = o.refresh and refresh(ctx, shown, unknown) or {}
  if ctx.mode == "json" then
    print_json(shown, unknown, live)
  elseif #shown == 0 then
    local what = o.all and "jobs" or "unfinished jobs"
    if #unknown > 0 then what = what .. " with a request id" end -- the others are listed below
    io.stderr:write("kling: no ", what, " in ", ctx.journal_path, "\n")
  else
    print_table(shown, live)
  end
  for _, u in ipairs(unknown) do
    if u.request_id and live[u.request_id] then u.message = "the service says: " .. live[u.request_id] .. "; " .. u.message end
  end
  context.report_unknown(unknown, "; once checked, kling jobs --forget INTENT")
  return EXIT.ok
end

return C
