--- kling batch FILE.jsonl --out-dir DIR [--concurrency N]: one job per line,
-- at most N in flight, resumable after a crash (see doc/CLI.md).
--
-- The batch state DIR/.kling-batch.jsonl maps each line's key to its request
-- id, one JSON event per line, written with the journal's rules (kling.journal,
-- journal.c: under a lock, fsynced, checked; an append that fails leaves the
-- file as it was; a fragment left by a crash is never glued to the next line):
--   {"e":"submitting","key":K,"hash":H,"t":T,"tag":TAG}   just before a submit
--       (a line whose mark cannot be written is not submitted: the batch stops, exit 8)
--   {"e":"submitted","key":K,"id":ID,"model":M,"hash":H,"t":T}   as soon as it returns
--   {"e":"unknown","key":K,"hash":H,"t":T,"message":...,"id":ID}   a submit of unknown outcome
--       (ID: the request id its answer named, when it named one: never sent again)
--   {"e":"ended","key":K,"id":ID,"status":S,"t":T}   the job ended (and was downloaded, if completed)
--   {"e":"not_sent","key":K,"t":T}   the submit was refused (an error answer): no job exists
--   {"e":"released","key":K,"id":ID,"t":T}   cancelled after Ctrl-C: submit it again next time
-- H is a hash of the line's text: an edited line is a new input.
--
-- The run: every line read and validated (B.read_items), what to do with each decided
-- from the state and the journal (B.plan), then the lines re-attached and submitted, at
-- most N in flight (B.execute).
local kling = require "kling"
local json = require "kling.json"
local journal = require "kling.journal"
local errors = require "kling.errors"
local exit = require "kling.cli.exit"
local files = require "kling.cli.files"
local input = require "kling.cli.input"
local format = require "kling.cli.format"
local output = require "kling.cli.output"
local context = require "kling.cli.context"

local io = output.io -- luacheck: ignore (shadows the global on purpose: escaped streams)
local EXIT = exit.EXIT

local B = {
  name = "batch",
  summary = "run a file of inputs (JSON lines), N at a time, resumable",
  args = "FILE.jsonl",
  argname = "FILE.jsonl",
  args_help = 'one JSON object per line: the input itself, or {"input": {...}, "name": K, "model": M} (- reads stdin)',
  options = { "out-dir", "concurrency", "model", "wait", "dl", "retry-failed", "retry-unknown", "out", "api", "submit-timeout" },
  option_help = {
    ["out-dir"] = "where the videos and the batch state go (required)",
    model = "the model of lines that name none (default kling/kling-3.0/pro/text-to-video)",
    timeout = "how long to wait for each job (default 1800)",
    json = 'one object per line: {"line", "key", "id", "status", "path", "bytes", "error"}',
  },
  description = [[
Runs one job per line of FILE.jsonl. Every line is validated before anything is sent. At
most N jobs are in flight at once (submitted and not yet downloaded); each video goes to
DIR/KEY.mp4, where KEY is the line's "name" or "id" field (taken out of the input) or
line-N (N: its line number).

Re-running the same command after a crash or Ctrl-C skips the lines whose file exists,
re-attaches to the jobs already submitted for the others (recorded in
DIR/.kling-batch.jsonl right after each submit) and submits only the rest: no line is
sent twice.]],
  notes = "Ctrl-C (and SIGTERM, SIGHUP) stops submitting, cancels the queued jobs of this run (they are "
    .. "submitted again next time) and leaves the running ones to the next run of the command.",
  examples = { "kling batch jobs.jsonl --out-dir videos --concurrency 8" },
}

B.STATE_FILE = ".kling-batch.jsonl"

--- FNV-1a (32 bits) of a string, as 8 hex digits.
function B.hash(s)
  local h = 2166136261
  for i = 1, #s do h = ((h ~ s:byte(i)) * 16777619) & 0xffffffff end
  return string.format("%08x", h)
end

--- Reads the batch state (a path, or a kling.journal object): key -> record,
-- and the set of every id it names | nil, err (kind io). A state file that
-- does not exist yet is empty.
function B.load_state(path)
  local store = type(path) == "string" and journal.open(path, { what = "batch state" }) or path
  local events, err = store:read()
  if not events then return nil, err end
  local state, claimed = {}, {}
  for _, ev in ipairs(events) do
    if type(ev.key) == "string" then
      local key = ev.key
      if type(ev.id) == "string" then claimed[ev.id] = true end
      if ev.e == "submitting" then
        state[key] = { submitting_t = ev.t, hash = ev.hash, tag = ev.tag }
      elseif ev.e == "submitted" and type(ev.id) == "string" then
        state[key] = { id = ev.id, model = ev.model, hash = ev.hash }
      elseif ev.e == "unknown" then
        state[key] = { unknown = true, hash = ev.hash, message = ev.message,
          request_id = type(ev.id) == "string" and ev.id or nil }
      elseif ev.e == "ended" and state[key] and state[key].id == ev.id then
        state[key].status = ev.status
      elseif ev.e == "released" and state[key] and state[key].id == ev.id then
        state[key] = nil
      elseif ev.e == "not_sent" and state[key] and state[key].submitting_t then
        state[key] = nil
      end
    end
  end
  return state, claimed
end

local FINAL = { completed = true, failed = true, cancelled = true }

-- A journal entry can be the answer to a submit marked at time T when it was
-- written between T and T + ADOPT_WINDOW seconds (a submit's exchange is bounded
-- by the client's timeouts, 40 s by default).
local ADOPT_WINDOW = 60

--- Reads and validates every line of file (o: the command's options) before anything
-- is sent: the items ({ n, key, model, input, hash, path } each), or nil and the exit
-- code after the problems were reported (each as "line N (KEY): /path: message").
function B.read_items(o, file)
  local cmd = "batch"
  local text
  if file == "-" then
    text = io.stdin:read("a") or ""
  else
    local f, err = io.open(file, "rb")
    if not f then exit.usage(cmd, tostring(err)) end
    text = f:read("a") or ""
    f:close()
  end
  local default_model = o.model or kling.DEFAULT_MODEL
  local items, by_key, problems = {}, {}, {}
  for _, l in ipairs(input.read_lines(text)) do
    local obj, derr = input.decode_object(l.text)
    if not obj then
      problems[#problems + 1] = { n = l.n, lines = { "line " .. l.n .. ": " .. derr } }
    else
      local sent_input, key, model = input.line_parts(obj, default_model)
      key = key or ("line-" .. l.n)
      if by_key[key] then
        exit.usage(cmd, string.format("line %d: the name '%s' is already used on line %d", l.n, key, by_key[key].n))
      end
      local ok, sent = kling.validate(sent_input, model)
      local item = { n = l.n, key = key, model = model, input = sent, hash = B.hash(l.text),
        path = files.join(o.out_dir, key .. ".mp4") }
      by_key[key] = item
      items[#items + 1] = item
      if not ok then
        problems[#problems + 1] = { n = l.n, key = key, err = sent,
          lines = input.validation_lines(sent, "line " .. l.n .. " (" .. key .. "): ") }
      end
    end
  end
  if #items == 0 and #problems == 0 then exit.usage(cmd, file .. ": no input lines") end
  if #problems == 0 then return items end
  for _, p in ipairs(problems) do
    for _, line in ipairs(p.lines) do io.stderr:write(line, "\n") end
    if o.json then
      io.stdout:write(json.encode { line = p.n, key = p.key, status = "invalid",
        error = p.err and output.error_object(p.err) or { kind = "validation", message = p.lines[1] } }, "\n")
    end
  end
  io.stderr:write(string.format("kling batch: %d line(s) of %s are not valid; nothing was sent\n", #problems, file))
  return nil, EXIT.validation
end

-- A line whose mark is in the state without its answer: killed (or stopped by a disk
-- error) between the mark and the line that records the answer. The library's journal has
-- the submit's intent under the tag the mark carries (fsynced before the request left),
-- and then its answer: the request id (re-attach), a refusal for sure (not_sent: submit
-- again), or nothing / submit_unknown (unknown: never sent again). Marks from before tags
-- are matched by model and time. run: the batch's shared state (journal, tags, claimed).
local function adopt(run, item, rec)
  local jstate = run.jstate
  local found, n = nil, 0
  for id, j in pairs(jstate) do
    local t = j.t or 0
    local match
    if rec.tag then
      match = j.tag == rec.tag
    else
      match = j.model == item.model and t >= rec.submitting_t and t <= rec.submitting_t + ADOPT_WINDOW
    end
    if not run.claimed[id] and match then
      found, n = id, n + 1
    end
  end
  local intent = rec.tag and run.by_tag[rec.tag]
  if n == 1 then
    run.claimed[found] = true
    run.append({ e = "submitted", key = item.key, id = found, model = item.model, hash = item.hash },
      "the next run finds " .. found .. " in the journal again")
    item.action, item.id = "attach", found
  elseif intent and intent.outcome == "not_sent" then
    item.action = "submit" -- the journal says the service refused it for sure: no job exists
  elseif run.o.retry_unknown then
    item.action = "submit"
  else
    item.action = "unknown"
    item.unknown_t, item.unknown_tag = rec.submitting_t, rec.tag
  end
end

-- The library's journal, read once, for adopt(): true, or nil and the exit code.
local function load_journal(run)
  if run.jstate then return true end
  local jstate, unknown_or_err, intents = run.ctx:journal_state()
  if not jstate then
    io.stderr:write(tostring(unknown_or_err), "\n")
    return nil, EXIT.io
  end
  run.jstate, run.by_tag = jstate, {} -- the library's intents, by the tag of the submit that wrote them
  for _, it in pairs(intents) do
    if type(it.tag) == "string" then run.by_tag[it.tag] = it end
  end
  return true
end

--- Decides what to do with each item (item.action: "skip", "attach", "submit" or
-- "unknown") from the batch state and the journal. Returns the items to submit and those
-- to re-attach, or nil and the exit code.
function B.plan(run, items)
  local to_submit, to_attach = {}, {}
  local o, d = run.o, run.ctx.display
  for _, item in ipairs(items) do
    local rec = run.state[item.key]
    if rec and rec.hash and rec.hash ~= item.hash then
      d:warn(string.format("kling: line %d (%s) changed since its earlier submit%s; submitting the new input",
        item.n, item.key, rec.id and (" (" .. output.escape(rec.id) .. ")") or ""))
      rec = nil
    end
    if files.exists(item.path) then
      item.action, item.id = "skip", rec and rec.id
    elseif rec and rec.id then
      if FINAL[rec.status] and rec.status ~= "completed" and o.retry_failed then
        item.action = "submit"
      else
        item.action, item.id, item.model = "attach", rec.id, rec.model or item.model
      end
    elseif rec and rec.submitting_t then
      local ok, code = load_journal(run)
      if not ok then return nil, code end
      adopt(run, item, rec)
    elseif rec and rec.unknown then
      item.action = o.retry_unknown and "submit" or "unknown"
      item.unknown_id = rec.request_id
    else
      item.action = "submit"
    end
    if item.action == "submit" then to_submit[#to_submit + 1] = item end
    if item.action == "attach" then to_attach[#to_attach + 1] = item end
  end
  return to_submit, to_attach
end

-- The summary line under the rows: "batch FILE: 1 queued, 2 running, 0 done, 1 failed,
-- 1 to submit  0:04".
local function summary(run, items, file)
  local started = run.ctx.display.now()
  return function()
    local c = { pending = 0, queued = 0, running = 0, done = 0, failed = 0 }
    for _, item in ipairs(items) do
      local s
      if item.outcome then
        s = item.outcome == 0 and "done" or "failed"
      elseif item.action == "skip" then
        s = "done"
      elseif item.action == "unknown" then
        s = "failed"
      elseif item.job then
        local st = item.job.status
        s = (st == "in_queue" or st == nil) and not run.ctx.downloading[item.job] and "queued" or "running"
      elseif item.submitting then
        s = "queued"
      else
        s = "pending"
      end
      c[s] = c[s] + 1
    end
    return string.format("batch %s: %d queued, %d running, %d done, %d failed, %d to submit  %s",
      file, c.queued, c.running, c.done, c.failed, c.pending, format.human_time(run.ctx.display.now() - started))
  end
end

-- The lines already done (their video exists) and those of unknown outcome: reported.
local function report_settled(ctx, items)
  for _, item in ipairs(items) do
    if item.action == "skip" then
      ctx.display:log(item.key .. " skipped: " .. item.path .. " exists")
      ctx:emit(nil, { line = item.n, key = item.key, id = item.id, status = "completed", path = item.path,
        skipped = true })
      ctx:result(item.key .. "\t" .. item.path)
    elseif item.action == "unknown" then
      local when = item.unknown_t and (" at " .. os.date("%Y-%m-%d %H:%M:%S", item.unknown_t)) or ""
      local tag = item.unknown_tag and (", tag " .. item.unknown_tag) or ""
      local what = item.unknown_id and ("its answer named request id " .. item.unknown_id .. " beside an error; check "
        .. "it with: kling status " .. item.unknown_id) or "its answer never came"
      ctx:fail(errors.new("submit_unknown",
        "an earlier submit of this line" .. when .. tag .. " may have created a job (" .. what .. "); "
          .. "it is not sent again (--retry-unknown sends it anyway)", { request_id = item.unknown_id }), nil, nil,
        { line = item.n, key = item.key, status = "unknown", id = item.unknown_id })
    end
  end
end

-- Waits for and downloads the job of item, in a task of its own (at most N at once).
local function follow(run, item, job)
  local ctx, d = run.ctx, run.ctx.display
  run.inflight = run.inflight + 1
  item.job = job
  run.job_item[job] = item
  kling.spawn(function()
    local code, derr = ctx:follow(job, { file = item.path }, {
      label = item.key, prefix = item.key .. "\t", fields = { line = item.n, key = item.key },
    })
    if derr and derr.kind == "io" and not run.stopped and not ctx.interrupted then
      -- the out-dir cannot take the videos: no more paid jobs that could not be saved
      run.stopped = derr
      d:warn("kling: batch: no more submits (a video could not be written in " .. run.o.out_dir .. "); the jobs "
        .. "already submitted are collected by the same command once the disk can take them")
    end
    if not ctx.interrupted then
      item.outcome = code
      if FINAL[job.status] then
        run.append({ e = "ended", key = item.key, id = job.id, status = job.status },
          "the next run looks at " .. job.id .. " again (nothing is submitted twice)")
      end
    end
    run.inflight = run.inflight - 1
  end)
end

-- The submit of one line: its mark first (no mark, no submit: a crash then could not tell
-- whether the line was sent), then the submit, then its answer in the state.
local function submit_line(run, item)
  local ctx, d = run.ctx, run.ctx.display
  -- a tag of this submit alone, journaled with its answer (see adopt)
  local tag = string.format("batch:%s:%d:%08x", item.key, os.time(), math.random(0, 0x7fffffff))
  local marked, merr = run.append { e = "submitting", key = item.key, hash = item.hash, tag = tag }
  if not marked then
    item.outcome = ctx:fail(merr, nil, nil, { line = item.n, key = item.key, model = item.model,
      status = "not_submitted" })
    run.stopped = merr
    d:warn("kling: batch: no more submits (the batch state cannot be written); run the same command again "
      .. "once it can")
    return
  end
  item.submitting = true
  local job, err = ctx:submit(item.model, item.input, { tag = tag })
  item.submitting = nil
  if job then
    local ok = run.append({ e = "submitted", key = item.key, id = job.id, model = item.model, hash = item.hash },
      item.key .. " was submitted as " .. job.id .. " (keep the id); "
        .. (ctx.journal_path and "the journal has it under tag " .. tag .. ", so the next run re-attaches to it"
          or "without a journal the next run reports the line as of unknown outcome"))
    d:log(item.key .. " submitted as " .. job.id)
    if not ok then
      run.stopped = run.state_error
      d:warn("kling: batch: no more submits (the batch state cannot be written)")
    end
    follow(run, item, job)
    return
  end
  local said = "the next run looks for this submit in the journal (tag " .. tag .. ") and never sends it twice"
  -- an answer that named a request id is never "not sent": the line is never sent again
  local unknown = err.kind == "submit_unknown" or err.request_id ~= nil or err.request_id_raw ~= nil
  if unknown then
    run.append({ e = "unknown", key = item.key, hash = item.hash, message = err.message, id = err.request_id }, said)
  else
    run.append({ e = "not_sent", key = item.key }, said) -- refused for sure: no job exists
  end
  item.outcome = ctx:fail(err, nil, nil, { line = item.n, key = item.key, model = item.model,
    id = err.request_id, status = unknown and "unknown" or "not_submitted" })
  if err.kind ~= "validation" and err.kind ~= "bad_request" then
    run.stopped = err
    d:warn("kling: batch: no more submits after this error; run the same command again to go on")
  elseif run.state_error then
    run.stopped = run.state_error
  end
end

--- Re-attaches and submits (at most N in flight), then waits for every job: the exit code.
function B.execute(run, items, to_submit, to_attach)
  local ctx = run.ctx
  return ctx:run(function()
    report_settled(ctx, items)
    for _, item in ipairs(to_attach) do
      local job = ctx.client:job(item.id, item.model)
      ctx.attached[#ctx.attached + 1] = job
      ctx.display:log(item.key .. " re-attached to " .. output.escape(item.id))
      follow(run, item, job)
    end
    for _, item in ipairs(to_submit) do
      while run.inflight >= run.concurrency and not ctx.interrupted and not run.stopped do
        ctx.client:sleep(1, function()
          return run.inflight < run.concurrency or ctx.interrupted or run.stopped ~= nil
        end)
      end
      if ctx.interrupted then break end
      if run.stopped then
        ctx:emit(nil, { line = item.n, key = item.key, status = "not_submitted", error = { kind = run.stopped.kind,
          message = "not submitted after an earlier error: " .. tostring(run.stopped.message) } })
      else
        submit_line(run, item)
      end
    end
    while run.inflight > 0 do
      ctx.client:sleep(1, function() return run.inflight <= 0 end)
    end
    if ctx.mode == "plain" then ctx.display:log(ctx.display.summary()) end
    return ctx.code
  end)
end

-- The batch's shared state: its context, the batch state file read, and run.append,
-- which writes to it | nil, the exit code (a state that cannot be read: exit 8).
local function open_run(o)
  if not files.is_dir(o.out_dir) and not files.mkdir_p(o.out_dir) then
    exit.usage("batch", "cannot create the directory " .. o.out_dir)
  end
  local store = journal.open(files.join(o.out_dir, B.STATE_FILE), { what = "batch state" })
  local state, claimed = B.load_state(store)
  if not state then
    io.stderr:write(tostring(claimed), "\n")
    return nil, EXIT.io
  end
  local ctx = context.new("batch", o)
  local run = { ctx = ctx, o = o, state = state, claimed = claimed, inflight = 0, job_item = {},
    concurrency = o.concurrency or 4 }
  -- Appends to the batch state: true | nil, err (kind io; exit 8 at the end).
  -- `said` tells what a failure means for the line, printed under the error.
  function run.append(ev, said)
    local ok, err = store:append(ev)
    if ok then return true end
    ctx:note(EXIT.io)
    run.state_error = run.state_error or err
    if said then ctx.display:warn(tostring(err) .. "\n  " .. said) end
    return nil, err
  end
  return run
end

function B.run(o, pos)
  local cmd = "batch"
  if #pos ~= 1 then exit.usage(cmd, "give one FILE.jsonl") end
  if not o.out_dir then exit.usage(cmd, "--out-dir DIR is required (the videos and the batch state go there)") end
  local file = pos[1]
  local items, code = B.read_items(o, file)
  if not items then return code end
  local run, failed = open_run(o)
  if not run then return failed end
  local ctx = run.ctx
  local to_submit, to_attach = B.plan(run, items)
  if not to_submit then return to_attach end
  -- every video's file can be written (the library's check: the directory, KEY.mp4, its
  -- .part and sidecar files, no other download writing it) before anything is submitted
  for _, item in ipairs(items) do
    if item.action == "submit" or item.action == "attach" then files.check_target_file(cmd, item.path) end
  end
  ctx.display.summary = summary(run, items, file)
  ctx.resume_hint = function() return "run the same kling batch command again" end
  ctx.on_cancelled = function(job)
    local item = run.job_item[job]
    if item then
      run.append({ e = "released", key = item.key, id = job.id }, "the next run reports " .. job.id .. " as cancelled "
        .. "instead of submitting the line again")
    end
  end
  return B.execute(run, items, to_submit, to_attach)
end

return B
