--- kling.emulator.files: the file host, the stand-in for the CDN that serves the outputs.
--
-- GET and HEAD /v/{id}.mp4 (a completed job's file, with validators, Range and If-Range),
-- /r/N/{id}.mp4 (@emu:redirect hops), and POST /__emulator/jobs/{id}/change (the file
-- becomes another version). The bytes come from kling.emulator.pattern. Handlers take
-- (server, req, capture) and return a reply (kling.emulator.reply); a file reply carries
-- a byte source (source, offset, length) that the writer streams, and the job's record of
-- the request (record), which a fault may amend.
local util = require "kling.emulator.util"
local jobs = require "kling.emulator.jobs"
local pattern = require "kling.emulator.pattern"
local reply = require "kling.emulator.reply"

local M = {}

local format = string.format
local floor, max, min = math.floor, math.max, math.min
local null, not_found, error_reply, json_reply = reply.null, reply.not_found, reply.error_reply, reply.json_reply
local job_state = jobs.state

local ID_PATTERN = "^[A-Za-z0-9_-]+$"
M.MAX_FILE_REQUESTS = 100   -- requests of a job's file kept in its record

--- The video URL a result answer gives (server:video_url): through N redirect hops with
-- @emu:redirect=N, and pre-signed (a query string that changes on every answer) with
-- @emu:signed.
function M.video_url(server, job)
  local url = server.files_url .. "/v/" .. job.id .. ".mp4"
  if job.redirect then url = format("%s/r/%d/%s.mp4", server.files_url, job.redirect, job.id) end
  if job.signed then
    job.signatures = job.signatures + 1
    url = format("%s?X-Expires=3600&X-Signature=%08x", url, (job.signatures * 2654435761) & 0xFFFFFFFF)
  end
  return url
end

--- The ETag and Last-Modified the file host gives for a job's file now
-- (server:file_validators; nil when @emu:validators leaves one out; a weak ETag with
-- validators=weak). Both change when the file changes.
function M.file_validators(server, job)
  local size = pattern.size(job)
  local which = job.validators
  local etag, lastmod
  if which == "both" or which == "etag" or which == "weak" then
    etag = format('"%s-%d-%d"', job.id:sub(1, 8), job.version, size)
    if which == "weak" then etag = "W/" .. etag end
  end
  if which == "both" or which == "lastmod" then
    lastmod = util.http_date(floor(server:wall(job.ends)) + job.version)
  end
  return etag, lastmod
end

--- Parse a single-range Range header against size.
-- @return first, last (inclusive) | false (unsatisfiable) | nil (absent or ignored)
function M.parse_range(header, size)
  if not header then return nil end
  local spec = header:match("^%s*bytes%s*=%s*(.-)%s*$")
  if not spec or spec:find(",", 1, true) then return nil end
  local a, b = spec:match("^(%d*)%-(%d*)$")
  if not a or (a == "" and b == "") then return nil end
  if a == "" then
    local n = tonumber(b)
    if n == 0 or size == 0 then return false end
    return max(0, size - n), size - 1
  end
  local first = tonumber(a)
  local last = b ~= "" and tonumber(b) or nil
  if last and last < first then return nil end
  if first >= size then return false end
  return first, min(last or size - 1, size - 1)
end
local parse_range = M.parse_range

-- Does an If-Range value still name the file? A strong ETag compared whole, or the exact
-- Last-Modified date (RFC 9110 13.1.5: a weak ETag never matches).
local function if_range_holds(value, etag, lastmod)
  if not value then return true end
  value = value:match("^%s*(.-)%s*$")
  if value:sub(1, 1) == '"' then return etag ~= nil and etag:sub(1, 1) == '"' and value == etag end
  if value:sub(1, 2) == "W/" then return false end
  return lastmod ~= nil and value == lastmod
end

-- Notes a request of a job's file in its record (the last MAX_FILE_REQUESTS).
local function note_file_request(job, req)
  local list = job.file_requests
  if #list >= M.MAX_FILE_REQUESTS then table.remove(list, 1) end
  local entry = { method = req.method, path = req.path, range = req.headers.range or null,
    if_range = req.headers["if-range"] or null, status = null, fault = null }
  list[#list + 1] = entry
  return entry
end

-- ---------------------------------------------------------------------------------------
-- Handlers
-- ---------------------------------------------------------------------------------------

M.handlers = {}
local handlers = M.handlers

--- GET/HEAD /v/{id}.mp4: the whole file (200), a range (206) or 416; 404 unless completed.
function handlers.download(self, req, id)
  local job = id:match(ID_PATTERN) and self.jobs[id]
  if not job or job_state(job, self.clock()) ~= "completed" then
    return not_found("File not found")
  end
  local record = note_file_request(job, req)
  local source = pattern.source(job)
  local size = source.size
  local etag, lastmod = self:file_validators(job)
  -- Date, as every HTTP origin sends it (RFC 9110 6.6.1): a client judges a Last-Modified by it
  local headers = { { "Accept-Ranges", "bytes" }, { "Date", util.http_date(floor(self:wall(self.clock()))) } }
  if etag then headers[#headers + 1] = { "ETag", etag } end
  if lastmod then headers[#headers + 1] = { "Last-Modified", lastmod } end
  local first, last = parse_range(req.headers.range, size)
  -- If-Range that no longer holds: the Range is ignored and the whole file comes (200)
  if first ~= nil and not job.ifrange_ignore and not if_range_holds(req.headers["if-range"], etag, lastmod) then
    first, last = nil, nil
  end
  if first == false then
    headers[#headers + 1] = { "Content-Range", format("bytes */%d", size) }
    record.status = 416
    return { status = 416, body = "", type = "video/mp4", headers = headers, record = record }
  end
  local status, range = 200, nil
  if first then
    status = 206
    range = { first = first, last = last, size = size }
    headers[#headers + 1] = { "Content-Range", format("bytes %d-%d/%d", first, last, size) }
  else
    first, last = 0, size - 1
  end
  record.status = status
  return {
    status = status, type = "video/mp4", headers = headers, range = range, record = record,
    source = source, offset = first, length = last - first + 1,
  }
end

--- /r/N/{id}.mp4 (@emu:redirect=N): a redirect to /r/N-1/..., then to /v/{id}.mp4 (or to
-- @emu:redirect_to's URL), alternating between 127.0.0.1 and localhost when bound to
-- 127.0.0.1, so every hop goes to another loopback URL.
function handlers.redirect(self, req, capture)
  local n, id = capture:match("^(%d+)/([^/]*)$")
  local job = id and id:match(ID_PATTERN) and self.jobs[id]
  if not job or job_state(job, self.clock()) ~= "completed" then
    return not_found("File not found")
  end
  local record = note_file_request(job, req)
  n = tonumber(n)
  local base = self.files_url
  if self.host == "127.0.0.1" and n % 2 == 1 then base = base:gsub("^http://127%.0%.0%.1:", "http://localhost:") end
  local target
  if n <= 1 then
    target = job.redirect_to or (base .. "/v/" .. id .. ".mp4")
  else
    target = format("%s/r/%d/%s.mp4", base, n - 1, id)
  end
  local query = req.target:match("%?(.*)$")
  if query and not job.redirect_to then target = target .. "?" .. query end
  record.status = job.redirect_code
  return { status = job.redirect_code, body = "", type = "text/plain", headers = { { "Location", target } }, record = record }
end

--- POST /__emulator/jobs/{id}/change: the job's file becomes another (a new version: other
-- bytes, another ETag and Last-Modified), of {"bytes": N} bytes when given.
function handlers.change_file(self, req, id)
  local job = self.jobs[id]
  if not job then return not_found("Request not found") end
  local ok, body = pcall(reply.json.decode, req.body ~= "" and req.body or "{}")
  if not ok or type(body) ~= "table" then return error_reply(400, 400001, "Expected a JSON object") end
  local bytes = body.bytes
  if bytes ~= nil and (type(bytes) ~= "number" or bytes < 0 or bytes ~= floor(bytes)) then
    return error_reply(400, 400001, "bytes: expected a whole number >= 0")
  end
  job.version = job.version + 1
  job.bytes = bytes and floor(bytes) or pattern.size(job)
  local etag, lastmod = self:file_validators(job)
  return json_reply(200, { request_id = job.id, file_version = job.version, video_bytes = job.bytes,
    etag = etag or null, last_modified = lastmod or null })
end

return M
