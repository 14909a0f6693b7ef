--- The durable job journal: one JSON line per event, appended and flushed
-- to disk (fsync) before the call that caused it returns.
--
--   {"e":"submitted","id":ID,"model":M,"t":EPOCH,"urls":{...},"tag":T}  before submit returns the job
--     (tag: the caller's opts.tag of client:submit, when given)
--   {"e":"ended","id":ID,"status":"completed","output":{...},"t":...}  once a job has ended
--   {"e":"submit_unknown","model":M,"t":...,"message":...}     a submit that may have arrived
--
-- Several processes may append to one journal (each line is written under an
-- exclusive lock); a torn last line (a process killed mid-write) is skipped
-- on reading; compaction drops the jobs that have ended. The token is never
-- written: lines hold ids, model ids, URLs built from the base URL, statuses,
-- outputs and (scrubbed) messages.
local core = require "kling.core"
local json = require "kling.json"

local M = {}

local Journal = {}
Journal.__index = Journal
Journal.__name = "kling.journal"

--- A journal at path (created on the first append; its directory must exist).
function M.open(path)
  if type(path) ~= "string" or path == "" then error("kling: journal must be a path", 2) end
  return setmetatable({ path = path }, Journal)
end

function Journal:__tostring()
  return "kling.journal(" .. self.path .. ")"
end

--- Appends one event (a table); returns true | nil, message.
function Journal:append(event)
  event.t = event.t or os.time()
  return core.journal_append(self.path, json.encode(event) .. "\n")
end

-- Parses journal text: events in order, and how many lines were unreadable.
local function parse(text)
  local events, bad = {}, 0
  for line in text:gmatch("[^\n]+") do
    local ok, ev = pcall(json.decode, line)
    if ok and type(ev) == "table" and type(ev.e) == "string" then
      events[#events + 1] = ev
    else
      bad = bad + 1 -- a torn line (killed mid-write) or damage: skipped
    end
  end
  return events, bad
end

--- Reads every event. Returns events, unreadable_lines | nil, message.
function Journal:read()
  local f = io.open(self.path, "rb")
  if not f then return {}, 0 end
  local text = f:read("a")
  f:close()
  return parse(text)
end

--- The state of every request in the journal: a table id -> { id, model,
-- urls, tag, status (nil while not ended), output, error, t }, plus a list of
-- the submit_unknown events and the count of unreadable lines.
function Journal:state()
  local events, bad = self:read()
  local jobs, unknown = {}, {}
  for _, ev in ipairs(events) do
    if ev.e == "submitted" and type(ev.id) == "string" then
      jobs[ev.id] = jobs[ev.id] or { id = ev.id, model = ev.model, urls = ev.urls, t = ev.t, tag = ev.tag }
    elseif ev.e == "ended" and type(ev.id) == "string" then
      local j = jobs[ev.id] or { id = ev.id, model = ev.model }
      j.status, j.output, j.error, j.ended_t = ev.status, ev.output, ev.error, ev.t
      jobs[ev.id] = j
    elseif ev.e == "submit_unknown" then
      unknown[#unknown + 1] = ev
    end
  end
  return jobs, unknown, bad
end

--- Rewrites the journal with the requests that have not ended (and the
-- submit_unknown events), under the lock appenders take. Returns the number
-- of lines dropped | nil, message.
function Journal:compact()
  local lock, err = core.journal_lock(self.path)
  if not lock then return nil, err end
  local text = lock:read()
  local events = parse(text)
  local ended = {}
  for _, ev in ipairs(events) do
    if ev.e == "ended" and ev.id then ended[ev.id] = true end
  end
  local keep, dropped = {}, 0
  for _, ev in ipairs(events) do
    if (ev.e == "submitted" or ev.e == "ended") and ended[ev.id] then
      dropped = dropped + 1
    else
      keep[#keep + 1] = json.encode(ev)
    end
  end
  local ok, rerr = lock:replace(#keep > 0 and table.concat(keep, "\n") .. "\n" or "")
  lock:close()
  if not ok then return nil, rerr end
  return dropped
end

return M
