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
local kling = require "kling"
local json = require "kling.json"
local journal = require "kling.journal"

local B = {}

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

function B.run(cli, o, pos)
  local io = cli.io -- stdout and stderr behind the CLI's escaping (cli.escape)
  local cmd = "batch"
  local usage = cli.usage
  if #pos ~= 1 then usage(cmd, "give one FILE.jsonl") end
  if not o.out_dir then usage(cmd, "--out-dir DIR is required (the videos and the batch state go there)") end
  if o.output then usage(cmd, "-o is not for batch; use --out-dir DIR") end
  local concurrency = o.concurrency or 4
  local default_model = o.model or kling.DEFAULT_MODEL
  local file = pos[1]
  local text
  if file == "-" then
    text = io.stdin:read("a") or ""
  else
    local f, err = io.open(file, "rb")
    if not f then usage(cmd, tostring(err)) end
    text = f:read("a") or ""
    f:close()
  end

  -- every line parsed and validated before anything is sent
  local items, by_key, problems = {}, {}, {}
  for _, l in ipairs(cli.read_lines(text)) do
    local obj, derr = cli.decode_object(l.text)
    if not obj then
      problems[#problems + 1] = { n = l.n, lines = { "line " .. l.n .. ": " .. derr } }
    else
      local input, key, model = cli.line_parts(obj, default_model)
      key = key or ("line-" .. l.n)
      if by_key[key] then
        usage(cmd, string.format("line %d: the name '%s' is already used on line %d", l.n, key, by_key[key].n))
      end
      local ok, sent = kling.validate(input, model)
      local item = { n = l.n, key = key, model = model, input = sent, hash = B.hash(l.text),
        path = cli.join(o.out_dir, key .. ".mp4") }
      by_key[key] = item
      items[#items + 1] = item
      if not ok then
        problems[#problems + 1] = { n = l.n, key = key, err = sent,
          lines = cli.validation_lines(sent, "line " .. l.n .. " (" .. key .. "): ") }
      end
    end
  end
  if #items == 0 and #problems == 0 then usage(cmd, file .. ": no input lines") end
  if #problems > 0 then
    for _, p in ipairs(problems) do
      for _, line in ipairs(p.lines) do io.stderr:write(line, "\n") end
      if o.json then
        io.stdout:write(json.encode { line = p.n, key = p.key, status = "invalid",
          error = p.err and cli.error_object(p.err) or { kind = "validation", message = p.lines[1] } }, "\n")
      end
    end
    io.stderr:write(string.format("kling batch: %d line(s) of %s are not valid; nothing was sent\n", #problems, file))
    return 3
  end

  if not cli.is_dir(o.out_dir) and not cli.mkdir_p(o.out_dir) then
    usage(cmd, "cannot create the directory " .. o.out_dir)
  end
  local state_path = cli.join(o.out_dir, B.STATE_FILE)
  local store = journal.open(state_path, { what = "batch state" })
  local state, claimed = B.load_state(store)
  if not state then
    io.stderr:write(tostring(claimed), "\n")
    return cli.EXIT.io
  end

  local ctx = cli.context(cmd, o)
  local d = ctx.display

  -- Appends to the batch state: true | nil, err (kind io; exit 8 at the end).
  -- `said` tells what a failure means for the line, printed under the error.
  local state_error
  local function append(ev, said)
    local ok, err = store:append(ev)
    if ok then return true end
    ctx:note(cli.EXIT.io)
    state_error = state_error or err
    if said then d:warn(tostring(err) .. "\n  " .. said) end
    return nil, err
  end

  -- what to do with each line
  local to_submit, to_attach = {}, {}
  local jstate, by_tag
  for _, item in ipairs(items) do
    local rec = state[item.key]
    if rec and rec.hash and rec.hash ~= item.hash then
      d:warn(string.format("kling: line %d (%s) changed since its earlier submit%s; submitting the new input",
        item.n, item.key, rec.id and (" (" .. cli.escape(rec.id) .. ")") or ""))
      rec = nil
    end
    if cli.file_exists(item.path) then
      item.action, item.id = "skip", rec and rec.id
    elseif rec and rec.id then
      if FINAL[rec.status] and rec.status ~= "completed" and o.retry_failed then
        item.action = "submit"
      else
        item.action, item.id, item.model = "attach", rec.id, rec.model or item.model
      end
    elseif rec and rec.submitting_t then
      -- killed (or stopped by a disk error) between the mark and the line that
      -- records the answer: the library's journal has the submit's intent under
      -- the tag the mark carries (fsynced before the request left), and then its
      -- answer: the request id (re-attach), a refusal for sure (not_sent: submit
      -- again), or nothing / submit_unknown (unknown: never sent again). Marks
      -- from before tags are matched by model and time.
      if not jstate then
        local unknown_or_err, intents
        jstate, unknown_or_err, intents = ctx:journal_state()
        if not jstate then
          io.stderr:write(tostring(unknown_or_err), "\n")
          return cli.EXIT.io
        end
        by_tag = {} -- the library's intents, by the tag of the submit that wrote them
        for _, it in pairs(intents) do
          if type(it.tag) == "string" then by_tag[it.tag] = it end
        end
      end
      local found, n = nil, 0
      for id, j in pairs(jstate) do
        local t = j.t or 0
        local match
        if rec.tag then
          match = j.tag == rec.tag
        else
          match = j.model == item.model and t >= rec.submitting_t and t <= rec.submitting_t + ADOPT_WINDOW
        end
        if not claimed[id] and match then
          found, n = id, n + 1
        end
      end
      local intent = rec.tag and by_tag[rec.tag]
      if n == 1 then
        claimed[found] = true
        append({ e = "submitted", key = item.key, id = found, model = item.model, hash = item.hash },
          "the next run finds " .. found .. " in the journal again")
        item.action, item.id = "attach", found
      elseif intent and intent.outcome == "not_sent" then
        item.action = "submit" -- the journal says the service refused it for sure: no job exists
      elseif o.retry_unknown then
        item.action = "submit"
      else
        item.action = "unknown"
        item.unknown_t, item.unknown_tag = rec.submitting_t, rec.tag
      end
    elseif rec and rec.unknown then
      item.action = o.retry_unknown and "submit" or "unknown"
      item.unknown_id = rec.request_id
    else
      item.action = "submit"
    end
    if item.action == "submit" then to_submit[#to_submit + 1] = item end
    if item.action == "attach" then to_attach[#to_attach + 1] = item end
  end

  -- every video's file can be written (the library's check: the directory, KEY.mp4, its
  -- .part and sidecar files, no other download writing it) before anything is submitted
  for _, item in ipairs(items) do
    if item.action == "submit" or item.action == "attach" then cli.check_target_file(cmd, item.path) end
  end

  -- the summary line (queued / running / done / failed)
  local started = cli.now()
  d.summary = function()
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
        s = (st == "in_queue" or st == nil) and not ctx.downloading[item.job] and "queued" or "running"
      elseif item.submitting then
        s = "queued"
      else
        s = "pending"
      end
      c[s] = c[s] + 1
    end
    return string.format("batch %s: %d queued, %d running, %d done, %d failed, %d to submit  %s",
      file, c.queued, c.running, c.done, c.failed, c.pending, cli.human_time(cli.now() - started))
  end

  local job_item = {}
  ctx.resume_hint = function() return "run the same kling batch command again" end
  ctx.on_cancelled = function(job)
    local item = job_item[job]
    if item then
      append({ e = "released", key = item.key, id = job.id }, "the next run reports " .. job.id .. " as cancelled "
        .. "instead of submitting the line again")
    end
  end

  return ctx:run(function()
    local inflight = 0
    -- the error that stops new submits (the batch state or a video cannot be written)
    local stopped

    for _, item in ipairs(items) do
      if item.action == "skip" then
        d:log(item.key .. " skipped: " .. item.path .. " exists")
        ctx:emit(nil, { line = item.n, key = item.key, id = item.id, status = "completed", path = item.path,
          skipped = true })
        ctx:result(item.key .. "\t" .. item.path)
      elseif item.action == "unknown" then
        local when = item.unknown_t and (" at " .. os.date("%Y-%m-%d %H:%M:%S", item.unknown_t)) or ""
        local tag = item.unknown_tag and (", tag " .. item.unknown_tag) or ""
        local what = item.unknown_id and ("its answer named request id " .. item.unknown_id .. " beside an error; check "
          .. "it with: kling status " .. item.unknown_id) or "its answer never came"
        ctx:fail(require("kling.errors").new("submit_unknown",
          "an earlier submit of this line" .. when .. tag .. " may have created a job (" .. what .. "); "
            .. "it is not sent again (--retry-unknown sends it anyway)", { request_id = item.unknown_id }), nil, nil,
          { line = item.n, key = item.key, status = "unknown", id = item.unknown_id })
      end
    end

    local function follow(item, job)
      inflight = inflight + 1
      item.job = job
      job_item[job] = item
      kling.spawn(function()
        local code, derr = ctx:follow(job, { file = item.path }, {
          label = item.key, prefix = item.key .. "\t", fields = { line = item.n, key = item.key },
        })
        if derr and derr.kind == "io" and not stopped and not ctx.interrupted then
          -- the out-dir cannot take the videos: no more paid jobs that could not be saved
          stopped = derr
          d:warn("kling: batch: no more submits (a video could not be written in " .. o.out_dir .. "); the jobs "
            .. "already submitted are collected by the same command once the disk can take them")
        end
        if not ctx.interrupted then
          item.outcome = code
          if FINAL[job.status] then
            append({ e = "ended", key = item.key, id = job.id, status = job.status },
              "the next run looks at " .. job.id .. " again (nothing is submitted twice)")
          end
        end
        inflight = inflight - 1
      end)
    end

    for _, item in ipairs(to_attach) do
      local job = ctx.client:job(item.id, item.model)
      ctx.attached[#ctx.attached + 1] = job
      d:log(item.key .. " re-attached to " .. cli.escape(item.id))
      follow(item, job)
    end

    for _, item in ipairs(to_submit) do
      while inflight >= concurrency and not ctx.interrupted and not stopped do
        ctx.client:sleep(1, function() return inflight < concurrency or ctx.interrupted or stopped ~= nil end)
      end
      if ctx.interrupted then break end
      if stopped then
        ctx:emit(nil, { line = item.n, key = item.key, status = "not_submitted",
          error = { kind = stopped.kind, message = "not submitted after an earlier error: " .. tostring(stopped.message) } })
      else
        -- a tag of this submit alone, journaled with its answer (see the recovery above)
        local tag = string.format("batch:%s:%d:%08x", item.key, os.time(), math.random(0, 0x7fffffff))
        local marked, merr = append { e = "submitting", key = item.key, hash = item.hash, tag = tag }
        if not marked then
          -- no mark, no submit: a crash now could not tell whether the line was sent
          item.outcome = ctx:fail(merr, nil, nil, { line = item.n, key = item.key, model = item.model,
            status = "not_submitted" })
          stopped = merr
          d:warn("kling: batch: no more submits (the batch state cannot be written); run the same command again "
            .. "once it can")
        else
          item.submitting = true
          local job, err = ctx:submit(item.model, item.input, { tag = tag })
          item.submitting = nil
          if job then
            local ok = append({ e = "submitted", key = item.key, id = job.id, model = item.model, hash = item.hash },
              item.key .. " was submitted as " .. job.id .. " (keep the id); "
                .. (ctx.journal_path and "the journal has it under tag " .. tag .. ", so the next run re-attaches to it"
                  or "without a journal the next run reports the line as of unknown outcome"))
            d:log(item.key .. " submitted as " .. job.id)
            if not ok then
              stopped = state_error
              d:warn("kling: batch: no more submits (the batch state cannot be written)")
            end
            follow(item, job)
          else
            local said = "the next run looks for this submit in the journal (tag " .. tag .. ") and never sends it twice"
            -- an answer that named a request id is never "not sent": the line is never sent again
            local unknown = err.kind == "submit_unknown" or err.request_id ~= nil or err.request_id_raw ~= nil
            if unknown then
              append({ e = "unknown", key = item.key, hash = item.hash, message = err.message, id = err.request_id }, said)
            else
              append({ e = "not_sent", key = item.key }, said) -- refused for sure: no job exists
            end
            item.outcome = ctx:fail(err, nil, nil, { line = item.n, key = item.key, model = item.model,
              id = err.request_id, status = unknown and "unknown" or "not_submitted" })
            if err.kind ~= "validation" and err.kind ~= "bad_request" then
              stopped = err
              d:warn("kling: batch: no more submits after this error; run the same command again to go on")
            elseif state_error then
              stopped = state_error
            end
          end
        end
      end
    end

    while inflight > 0 do
      ctx.client:sleep(1, function() return inflight <= 0 end)
    end
    if ctx.mode == "plain" then d:log(d.summary()) end
    return ctx.code
  end)
end

return B
