--- The durable job journal: a write-ahead log of paid submits. One JSON line
-- per event, appended under an exclusive lock and flushed to disk (fsync)
-- before the call that caused it goes on (see journal.c):
--
--   {"e":"intent","key":K,"model":M,"t":T,"digest":"sha256:...","tag":TAG}
--       before a submit's request leaves (nothing is sent when it cannot be
--       written). K is unique to the submit; the digest is the SHA-256 of the
--       exact body sent; tag is the caller's opts.tag of client:submit.
--   {"e":"submitted","id":ID,"intent":K,"model":M,"t":T,"urls":{...},"tag":TAG,"digest":D}
--       the submit was answered with request id ID (before submit returns the job)
--   {"e":"submit_unknown","intent":K,"model":M,"t":T,"message":...,"tag":TAG,"digest":D,
--    "request_id":ID,"request_id_raw":R}   the submit may have created a job; ID is
--       the request id its answer carried beside an error (the job can be looked
--       up by it), R (when the answer held a request_id the library refuses) that
--       id, escaped. Once the journal knows ID as a job (a later submitted line,
--       e.g. written by `kling resume` when the service knows ID, or an ended
--       line), the outcome is no longer unknown.
--   {"e":"not_sent","intent":K,"model":M,"t":T,"kind":KIND,"message":...}
--       the submit was refused for sure: no job exists
--   {"e":"ended","id":ID,"status":"completed","output":{...},"t":...}  once a job has ended
--       (an output that cannot be written as JSON, e.g. a number beyond the
--       range of a double or nesting deeper than 64 levels, is written as text
--       in "output_text", with "output_note" saying so)
--   {"e":"dismissed","intent":K,"t":T}   the user has seen a submit of unknown
--       outcome (kling jobs --forget K)
--
-- An intent with no later line for its key is a submit of unknown outcome
-- (the process died while the request may have been in flight): resume()
-- and `kling jobs` report it, with its time and tag.
--
-- Several processes may append to one journal. An append that fails part-way
-- leaves the file as it was; a line torn by a writer killed mid-write is
-- skipped on reading (counted as unreadable), and a whole event glued after
-- such a fragment (by an older kling) is recovered. Compaction drops only
-- what it can read and no longer needs, and keeps unreadable lines verbatim.
-- The token is never written: lines hold ids, model ids, URLs built from the
-- base URL, statuses, outputs and (scrubbed) messages.
local core = require "kling.core"
local json = require "kling.json"
local errors = require "kling.errors"
local protocol = require "kling.protocol"
local cjson = require "cjson"
local math = require("kling.compat").math -- math.type on 5.1 and LuaJIT

local M = {}

local Journal = {}
Journal.__index = Journal
Journal.__name = "kling.journal"

-- For outputs json.encode refuses (numbers beyond a double's range, deep
-- nesting): written as text instead, so an end is always recorded.
local loose = cjson.new()
loose.encode_invalid_numbers(true)
loose.encode_max_depth(core.json.max_depth) -- as deep as answers are decoded

--- A journal at path (created on the first append; its directory must exist).
-- opts.what names it in messages (default "journal"; the batch state says
-- "batch state").
function M.open(path, opts)
  if type(path) ~= "string" or path == "" then error("kling: journal must be a path", 2) end
  return setmetatable({ path = path, what = opts and opts.what or "journal" }, Journal)
end

function Journal:__tostring()
  return "kling.journal(" .. self.path .. ")"
end

-- An error of kind io for a failure of journal.c.
function Journal:_io_error(message, errno)
  return errors.new("io", self.what .. ": " .. tostring(message), { path = self.path, retryable = false, errno = errno })
end

-- The JSON text of an event. Never raises: a value json.encode refuses is
-- written as text (output_text) or left out, and the line says so.
local function encode_event(event)
  local ok, s = pcall(json.encode, event)
  if ok and type(s) == "string" then return s end
  local reason = tostring(s):gsub("^.-:%d+: ", "")
  local copy = {}
  for k, v in pairs(event) do copy[k] = v end
  if copy.output ~= nil then
    local ok2, text = pcall(loose.encode, copy.output)
    copy.output = nil
    if ok2 then
      copy.output_text = text
      copy.output_note = "the output could not be written as JSON (" .. reason .. "); output_text holds it as text, "
        .. "with numbers beyond the range of a double written inf or -inf and NaN as nan"
    else
      copy.output_note = "the output could not be written (" .. reason .. "; " .. tostring(text) .. ") and is not kept"
    end
    ok, s = pcall(json.encode, copy)
    if ok and type(s) == "string" then return s end
  end
  -- last resort: every field that can be written, and the names of the others
  local safe, left = {}, {}
  for k, v in pairs(copy) do
    local fine, text = false, nil
    if type(k) == "string" then fine, text = pcall(json.encode, { [k] = v }) end
    if fine and type(text) == "string" then safe[k] = v else left[#left + 1] = tostring(k) end
  end
  table.sort(left)
  safe.note = "fields that could not be written: " .. table.concat(left, ", ")
  ok, s = pcall(json.encode, safe)
  if ok and type(s) == "string" then return s end
  return json.encode { e = type(event.e) == "string" and event.e or "unknown", id = type(event.id) == "string" and event.id or nil,
    t = math.type(event.t) == "integer" and event.t or nil, note = "the event could not be written" }
end
M.encode_event = encode_event

--- Appends one event (a table; t, the time, is added when missing).
-- Returns true | nil, err (kind io: err.path, the system's reason in the
-- message; the file is left as it was).
function Journal:append(event)
  event.t = event.t or os.time()
  local ok, msg, errno = core.journal.append(self.path, encode_event(event) .. "\n")
  if ok then return true end
  return nil, self:_io_error(msg, errno)
end

local function decode_event(s)
  local ok, ev = pcall(json.decode, s)
  if ok and type(ev) == "table" and type(ev.e) == "string" then return ev end
  return nil
end

-- At most this many places are tried in an unreadable line (see recover).
local RECOVER_TRIES = 1000

-- A line that does not parse may be a fragment (a writer killed mid-line, or
-- an append of an older kling that failed part-way) with a whole event glued
-- after it. Returns that event and where it starts, or nil.
local function recover(line)
  local pos, tries = line:find('{"', 2, true), 0
  while pos and tries < RECOVER_TRIES do
    tries = tries + 1
    local ev = decode_event(line:sub(pos))
    if ev then return ev, pos end
    pos = line:find('{"', pos + 1, true)
  end
  return nil
end

-- Splits journal text into entries { text = the line's text, ev = the event
-- or nil when unreadable }: a recovered event and the fragment before it are
-- two entries.
local function entries_of(text)
  local list = {}
  for line in text:gmatch("[^\n]+") do
    local ev = decode_event(line)
    if ev then
      list[#list + 1] = { text = line, ev = ev }
    else
      local found, pos = recover(line)
      if found then
        list[#list + 1] = { text = line:sub(1, pos - 1) }
        list[#list + 1] = { text = line:sub(pos), ev = found, recovered = true }
      else
        list[#list + 1] = { text = line }
      end
    end
  end
  return list
end

--- Reads every event. Returns events, unreadable, recovered | nil, err (kind
-- io). unreadable counts the lines (or fragments) that hold no event;
-- recovered the events found after such a fragment. A journal that does not
-- exist yet is empty.
function Journal:read()
  local text, msg, errno = core.journal.read(self.path)
  if not text then return nil, self:_io_error(msg, errno) end
  local events, bad, recovered = {}, 0, 0
  for _, entry in ipairs(entries_of(text)) do
    if entry.ev then
      events[#events + 1] = entry.ev
      if entry.recovered then recovered = recovered + 1 end
    else
      bad = bad + 1
    end
  end
  return events, bad, recovered
end

local OPEN_INTENT = "no answer was recorded for this submit: the process may have ended while its request "
  .. "was in flight (or it is in flight now); the job may exist and be billed"

--- The state of every request in the journal. Returns
--   jobs: id -> { id, model, urls, tag, intent, digest, t, status (nil while
--         not ended), output, output_text, output_note, error, ended_t, run
--         (seconds from submit to end, when the submitting process saw it),
--         cost (the job's cost, when it was asked for: include_cost) }
--   unknown: the submits of unknown outcome, oldest first: the submit_unknown
--         events (but those whose request_id the journal knows as a job), and
--         the intents that never got an answer (e = "intent", with message
--         saying so); each with intent (the key), t, model, tag, digest,
--         message and, when the answer held one, request_id (a valid id: look
--         it up) or request_id_raw (a refused id, escaped)
--   unreadable: the count of unreadable lines
--   intents: key -> { key, model, tag, t, digest, outcome ("submitted",
--         "submit_unknown", "not_sent" or nil while open), id, dismissed }
-- | nil, err (kind io).
function Journal:state()
  local events, bad = self:read()
  if not events then return nil, bad end
  local jobs, intents, su, dismissed = {}, {}, {}, {}
  local function close(key, outcome, id)
    if type(key) ~= "string" then return end
    local it = intents[key]
    if not it then -- its intent line was compacted away
      it = { key = key }
      intents[key] = it
    end
    it.outcome, it.id = outcome, id
  end
  for _, ev in ipairs(events) do
    local e = ev.e
    if e == "intent" and type(ev.key) == "string" then
      local it = intents[ev.key] or { key = ev.key }
      it.model, it.tag, it.t, it.digest = ev.model, ev.tag, ev.t, ev.digest
      intents[ev.key] = it
    elseif e == "submitted" and type(ev.id) == "string" then
      jobs[ev.id] = jobs[ev.id] or { id = ev.id, model = ev.model, urls = ev.urls, t = ev.t, tag = ev.tag,
        intent = ev.intent, digest = ev.digest }
      close(ev.intent, "submitted", ev.id)
    elseif e == "ended" and type(ev.id) == "string" then
      local j = jobs[ev.id] or { id = ev.id, model = ev.model }
      j.status, j.output, j.output_text, j.error, j.ended_t = ev.status, ev.output, ev.output_text, ev.error, ev.t
      j.output_note = ev.output_note
      j.run = math.type(ev.run) and ev.run >= 0 and ev.run or nil
      local cost = ev.cost -- a finite number only (1e999 reads as inf)
      if math.type(cost) and cost == cost and cost > -math.huge and cost < math.huge then j.cost = cost end -- (a later end without it does not forget it)
      jobs[ev.id] = j
    elseif e == "submit_unknown" then
      su[#su + 1] = ev
      close(ev.intent, "submit_unknown")
    elseif e == "not_sent" then
      close(ev.intent, "not_sent")
    elseif e == "dismissed" and type(ev.intent) == "string" then
      dismissed[ev.intent] = true
    end
  end
  local unknown = {}
  for _, ev in ipairs(su) do
    local rid = protocol.valid_id(ev.request_id) and ev.request_id or nil
    local known = rid ~= nil and jobs[rid] ~= nil -- looked up and found, or waited for: a job now
    if known and type(ev.intent) == "string" and intents[ev.intent] and intents[ev.intent].outcome ~= "submitted" then
      close(ev.intent, "submitted", rid)
    end
    if not known and not (type(ev.intent) == "string" and dismissed[ev.intent]) then
      local it = type(ev.intent) == "string" and intents[ev.intent] or {}
      unknown[#unknown + 1] = { e = "submit_unknown", intent = ev.intent, t = it.t or ev.t, answered_t = ev.t,
        model = ev.model or it.model, tag = ev.tag or it.tag, digest = ev.digest or it.digest, message = ev.message,
        request_id = rid, request_id_raw = ev.request_id_raw }
    end
  end
  for key, it in pairs(intents) do
    if dismissed[key] then it.dismissed = true end
    if not it.outcome and not it.dismissed then
      unknown[#unknown + 1] = { e = "intent", intent = key, t = it.t, model = it.model, tag = it.tag,
        digest = it.digest, message = OPEN_INTENT }
    end
  end
  table.sort(unknown, function(a, b)
    local ta, tb = tonumber(a.t) or 0, tonumber(b.t) or 0
    if ta ~= tb then return ta < tb end
    return tostring(a.intent) < tostring(b.intent)
  end)
  return jobs, unknown, bad, intents
end

--- Rewrites the journal under the lock appenders take, keeping what is still
-- needed: the requests that have not ended, the submits of unknown outcome
-- (not dismissed), the intents still open, events of kinds it does not know,
-- and every line it cannot read, verbatim. It drops the lines of the jobs
-- that have ended, the intents that got an answer, the refused submits, the
-- dismissed unknown outcomes and those whose request id is a job that has
-- ended.
-- Returns dropped, unreadable (lines dropped; unreadable lines kept as they
-- were) | nil, err (kind io; the journal is left as it was).
function Journal:compact()
  local lock, msg, errno = core.journal.lock(self.path)
  if not lock then return nil, self:_io_error(msg, errno) end
  local text, rmsg, rerrno = lock:read()
  if not text then
    lock:close()
    return nil, self:_io_error(rmsg, rerrno)
  end
  local entries = entries_of(text)
  local ended, answered, dismissed = {}, {}, {}
  for _, entry in ipairs(entries) do
    local ev = entry.ev
    if ev then
      if ev.e == "ended" and type(ev.id) == "string" then ended[ev.id] = true end
      if (ev.e == "submitted" or ev.e == "submit_unknown" or ev.e == "not_sent") and type(ev.intent) == "string" then
        answered[ev.intent] = true
      end
      if ev.e == "dismissed" and type(ev.intent) == "string" then dismissed[ev.intent] = true end
    end
  end
  local keep, dropped, unreadable = {}, 0, 0
  for _, entry in ipairs(entries) do
    local ev, drop = entry.ev, false
    if not ev then
      unreadable = unreadable + 1
    elseif ev.e == "submitted" or ev.e == "ended" then
      drop = type(ev.id) == "string" and ended[ev.id] == true
    elseif ev.e == "intent" then
      drop = type(ev.key) == "string" and (answered[ev.key] or dismissed[ev.key]) == true
    elseif ev.e == "not_sent" or ev.e == "dismissed" then
      drop = true
    elseif ev.e == "submit_unknown" then
      -- dismissed, or its request id is a job that has ended (looked up, then collected)
      drop = (type(ev.intent) == "string" and dismissed[ev.intent] == true)
        or (type(ev.request_id) == "string" and ended[ev.request_id] == true)
    end
    if drop then dropped = dropped + 1 else keep[#keep + 1] = entry.text end
  end
  local ok, wmsg, werrno = lock:replace(#keep > 0 and table.concat(keep, "\n") .. "\n" or "")
  lock:close()
  if not ok then return nil, self:_io_error(wmsg, werrno) end
  return dropped, unreadable
end

return M
