--- kling.emulator.http: the emulator's HTTP/1.1 reader and writer (RFC 9112).
--
-- read_request reads one request (head and body) from a cqueues socket; write_reply is
-- the single place answers are written. Both work on any connected cqueues socket, so a
-- spec drives them over a socketpair. The listener (kling.emulator.listener) calls
-- prepare once per connection, then read_request / write_reply in turn (pipelined
-- requests are read one after the other from the socket's buffer).
--
-- What the reader accepts and refuses (-> nil, why, status: the status to answer before
-- closing; no status when the peer is gone or went quiet):
--   empty lines before a request line are skipped; lines may end in CRLF or LF;
--   a request line other than "METHOD TARGET HTTP/x.y" -> 400; a version other than
--   1.0 and 1.1 -> 505; a request line longer than limits.line -> 414;
--   a header line longer than limits.line, more than limits.headers header lines, or a
--   head longer than limits.head -> 431; a header line without "name:" (a name that is
--   not a token, a space before the colon, garbage) or folded onto the previous line
--   (obs-fold) -> 400;
--   repeated headers are joined with ", " (so two different Content-Lengths -> 400);
--   Content-Length other than digits -> 400; beyond limits.body -> 413;
--   Transfer-Encoding other than "chunked" -> 501; "chunked" with a Content-Length: the
--   chunks are read and the connection closes after the answer (RFC 9112 6.1);
--   a chunk size that is not hex, a chunk not followed by CRLF -> 400; chunks adding up
--   past limits.body -> 413; chunk extensions and trailers are read and dropped;
--   Expect: 100-continue (HTTP/1.1, a body to come): "100 Continue" is written first;
--   end of file or a timeout inside a request (a body cut short) -> nil without status.
local cqueues = require "cqueues"

local M = {}

local format, concat = string.format, table.concat
local min = math.min

M.REASONS = {
  [100] = "Continue", [200] = "OK", [206] = "Partial Content", [400] = "Bad Request",
  [401] = "Unauthorized", [402] = "Payment Required", [403] = "Forbidden",
  [404] = "Not Found", [405] = "Method Not Allowed", [408] = "Request Timeout",
  [301] = "Moved Permanently", [302] = "Found", [303] = "See Other",
  [307] = "Temporary Redirect", [308] = "Permanent Redirect", [411] = "Length Required", [413] = "Content Too Large",
  [414] = "URI Too Long", [416] = "Range Not Satisfiable",
  [422] = "Unprocessable Entity", [429] = "Too Many Requests",
  [431] = "Request Header Fields Too Large", [500] = "Internal Server Error",
  [501] = "Not Implemented", [502] = "Bad Gateway", [503] = "Service Unavailable",
  [504] = "Gateway Timeout", [505] = "HTTP Version Not Supported",
}
local REASONS = M.REASONS

--- The reader's limits, unless the caller gives others: timeout (seconds of silence inside
-- a request, and before one on a kept-alive connection), line (bytes of one line, CRLF
-- included), head (bytes of all header lines), headers (lines), body (bytes).
M.LIMITS = { timeout = 60, line = 8192, head = 64 * 1024, headers = 200, body = 64 * 1024 * 1024 }

local CHUNK = 64 * 1024 -- the writer's piece of a streamed body

--- Set a connection up for the reader and writer: binary, unbuffered writes, lines of at
-- most limits.line bytes.
function M.prepare(con, limits)
  con:setmode("b", "bn")
  con:setmaxline((limits or M.LIMITS).line)
end

local TOO_LONG = {} -- read_line's error for a line that does not fit

-- One line without its CRLF (or LF). -> line | nil, err (TOO_LONG, or the socket's / "eof")
local byte, sub = string.byte, string.sub

local function read_line(con, timeout, max_line)
  local line, err = con:xread("*L", "b", timeout)
  if not line then return nil, err or "eof" end
  local n = #line
  local last, before = byte(line, n), byte(line, n - 1)
  if last ~= 10 then
    -- no newline: the line filled the socket's line buffer, or the peer closed mid-line
    if n >= max_line then return nil, TOO_LONG end
    return nil, "eof"
  end
  return sub(line, 1, before == 13 and n - 2 or n - 1)
end

local NO_QUERY = setmetatable({}, { __newindex = function() error("read-only") end })

local function parse_query(query)
  local t = {}
  for k, v in query:gmatch("([^&=]+)=?([^&]*)") do t[k] = v end
  return t
end

-- The body of a chunked request. -> body | nil, err, status
local function read_chunked(con, limits)
  local timeout, max_line = limits.timeout, limits.line
  local parts, total = {}, 0
  while true do
    local size_line, err = read_line(con, timeout, max_line)
    if not size_line then
      if err == TOO_LONG then return nil, "bad chunk", 400 end
      return nil, "eof in body"
    end
    local hex = size_line:match("^(%x+)[ \t]*;") or size_line:match("^(%x+)[ \t]*$")
    if not hex then return nil, "bad chunk", 400 end
    hex = hex:match("^0*(%x*)$")
    if #hex > 15 then return nil, "body too large", 413 end -- beyond 2^60: no overflow
    local size = hex == "" and 0 or tonumber(hex, 16)
    if size == 0 then break end
    total = total + size
    if total > limits.body then return nil, "body too large", 413 end
    local data, rerr = con:xread(size, "b", timeout)
    if not data or #data < size then return nil, rerr or "eof in body" end
    parts[#parts + 1] = data
    local after, aerr = read_line(con, timeout, max_line)
    if not after then
      if aerr == TOO_LONG then return nil, "bad chunk", 400 end
      return nil, "eof in body"
    end
    if after ~= "" then return nil, "bad chunk", 400 end
  end
  local size = 0
  repeat -- trailers: read and dropped, within the head's limits
    local trailer, err = read_line(con, timeout, max_line)
    if not trailer then
      if err == TOO_LONG then return nil, "trailer too long", 431 end
      return nil, "eof in body"
    end
    size = size + #trailer + 2
    if size > limits.head then return nil, "trailers too long", 431 end
  until trailer == ""
  return concat(parts)
end

-- A header name as the reader keeps it (lowercase), or nil when it is not a token (RFC 9110
-- 5.1). The names seen are remembered (a few hundred at most): the same few come in every
-- request.
local FIELD_NAMES, field_names = {}, 0
local function field_name(raw)
  local name = FIELD_NAMES[raw]
  if name ~= nil then return name or nil end
  name = not raw:find("[^%w!#$%%&'*+%-.^_`|~]") and raw:lower()
  if field_names < 512 then
    FIELD_NAMES[raw], field_names = name, field_names + 1
  end
  return name or nil
end

-- The request line and the header fields. -> req (without body and keep_alive) | nil, err, status
local function read_head(con, limits)
  local timeout, max_line = limits.timeout, limits.line
  local line, err
  repeat
    line, err = read_line(con, timeout, max_line)
    if not line then
      if err == TOO_LONG then return nil, "request line too long", 414 end
      return nil, err
    end
  until line ~= ""
  local method, target, version = line:match("^(%u+) (%S+) HTTP/(%d%.%d)$")
  if not method then return nil, "bad request line", 400 end
  if version ~= "1.1" and version ~= "1.0" then return nil, "HTTP version not supported", 505 end
  local headers, n, size = {}, 0, 0
  local max_headers, max_head = limits.headers, limits.head
  while true do
    local h, herr = read_line(con, timeout, max_line)
    if not h then
      if herr == TOO_LONG then return nil, "header line too long", 431 end
      return nil, "eof in headers"
    end
    if h == "" then break end
    local name, value = h:match("^([^:%s]+):%s*(.-)%s*$")
    name = name and field_name(name)
    if not name then
      local first = h:byte(1)
      if first == 32 or first == 9 then return nil, "folded header line", 400 end
      return nil, "bad header line", 400
    end
    n, size = n + 1, size + #h + 2
    if n > max_headers then return nil, "too many headers", 431 end
    if size > max_head then return nil, "header section too large", 431 end
    local old = headers[name]
    headers[name] = old and (old .. ", " .. value) or value
  end
  if target:byte(1) ~= 47 then target = target:gsub("^https?://[^/]*", "") end -- 47: "/"
  local path, query = target:match("^([^?#]*)%??([^#]*)")
  return {
    method = method, target = target, path = path, query = query ~= "" and parse_query(query) or NO_QUERY,
    version = version, headers = headers,
  }
end

-- How the body is framed: -> "chunked" | length (bytes, 0 for none) | nil, err, status.
-- Sets req.keep_alive.
local function framing(req, limits)
  local headers = req.headers
  local connection = headers.connection
  if req.version == "1.1" then
    req.keep_alive = not (connection and connection:lower():find("close", 1, true))
  else
    req.keep_alive = connection ~= nil and connection:lower():find("keep-alive", 1, true) ~= nil
  end
  local length = headers["content-length"]
  local encoding = headers["transfer-encoding"]
  if encoding then
    if encoding:lower() ~= "chunked" then return nil, "unsupported transfer coding", 501 end
    if length then req.keep_alive = false end -- framing in doubt: no request after this one
    return "chunked"
  end
  if not length then return 0 end
  if not length:match("^%d+$") then return nil, "bad content-length", 400 end
  length = tonumber(length)
  if length > limits.body then return nil, "body too large", 413 end
  return length
end

--- Read one request (head and body).
-- @param con a cqueues socket (prepared with prepare)
-- @param limits optional, see M.LIMITS
-- @return req { method, target, path, query (name -> raw value), version ("1.0" | "1.1"),
--   headers (lowercase name -> value), keep_alive, body } | nil, err, status (set when the
--   peer should get an error answer before the connection closes)
function M.read_request(con, limits)
  limits = limits or M.LIMITS
  local req, err, status = read_head(con, limits)
  if not req then return nil, err, status end
  local length
  length, err, status = framing(req, limits)
  if not length then return nil, err, status end
  if length == 0 then
    req.body = ""
    return req
  end
  local expect = req.headers.expect
  if expect and req.version == "1.1" and expect:lower() == "100-continue" then
    local ok, werr = con:xwrite("HTTP/1.1 100 Continue\r\n\r\n", "bn")
    if not ok then return nil, werr end
  end
  if length == "chunked" then
    local body
    body, err, status = read_chunked(con, limits)
    if not body then return nil, err, status end
    req.body = body
  else
    local data, rerr = con:xread(length, "b", limits.timeout)
    if not data or #data < length then return nil, rerr or "eof in body" end
    req.body = data
  end
  return req
end

local STATUS_LINES = {}
for code, reason in pairs(REASONS) do STATUS_LINES[code] = code .. " " .. reason end
local SIMPLE_HEAD = "HTTP/1.1 %s\r\nServer: kling-emulator\r\nContent-Length: %d\r\nContent-Type: %s\r\n\r\n%s"

-- Send a reply's byte source: its length, or half of it when cut; trickle: that many bytes,
-- then a second's pause. -> bytes sent | nil, err
local function stream(con, reply, length, files, sleep)
  local source, offset, left, sent = reply.source, reply.offset, reply.cut and length // 2 or length, 0
  local trickle = reply.trickle
  sleep = sleep or cqueues.sleep
  while left > 0 do
    local n = min(left, CHUNK)
    if trickle then -- ARG bytes, then a second's pause, until the client gives up
      if sent > 0 then sleep(1) end
      n = min(left, trickle)
    end
    -- a source reads at most CHUNK bytes at once: a larger trickle goes in pieces
    local done = 0
    while done < n do
      local piece = min(n - done, CHUNK)
      local ok, err = con:xwrite(source.read(offset + done, piece), "bn")
      if not ok then return nil, err end
      done = done + piece
    end
    offset, left, sent = offset + n, left - n, sent + n
    if files then files.bytes_sent = files.bytes_sent + n end
  end
  return sent
end

--- Write a reply: the one place answers go out.
-- @param con a cqueues socket
-- @param req the request (nil when it could not be read: the connection then closes)
-- @param reply status, type, headers ({ {name, value}, ... }), and body (string) or
--   source/offset/length (streamed in pieces of 64 KiB; cut: only the first half;
--   trickle: that many bytes, then a second's pause, and so on)
-- @param files optional table whose bytes_sent counts the streamed body's bytes
-- @param sleep optional function(seconds) for trickle's pauses (default cqueues.sleep)
-- @return bytes of body sent | nil, err
function M.write_reply(con, req, reply, files, sleep)
  local status = reply.status
  local body = reply.body
  if body and reply.type and not reply.headers and req and req.keep_alive and req.version == "1.1"
      and req.method ~= "HEAD" then
    -- the common case (a JSON answer on a kept-alive HTTP/1.1 connection): one format
    local ok, err = con:xwrite(format(SIMPLE_HEAD, STATUS_LINES[status] or status .. " Unknown",
      #body, reply.type, body), "bn")
    if not ok then return nil, err end
    return #body
  end
  local length = reply.source and reply.length or #(body or "")
  local head = {
    format("HTTP/1.1 %d %s", status, REASONS[status] or "Unknown"),
    "Server: kling-emulator",
    "Content-Length: " .. length,
  }
  if reply.type then head[#head + 1] = "Content-Type: " .. reply.type end
  for _, h in ipairs(reply.headers or {}) do head[#head + 1] = h[1] .. ": " .. h[2] end
  if not (req and req.keep_alive) then
    head[#head + 1] = "Connection: close"
  elseif req.version == "1.0" then
    head[#head + 1] = "Connection: keep-alive"
  end
  head[#head + 1] = "\r\n"
  head = concat(head, "\r\n")
  local send_body = not (req and req.method == "HEAD")
  if not reply.source then
    local ok, err = con:xwrite(send_body and head .. (reply.body or "") or head, "bn")
    if not ok then return nil, err end
    return send_body and length or 0
  end
  local ok, err = con:xwrite(head, "bn")
  if not ok then return nil, err end
  if not send_body then return 0 end
  return stream(con, reply, length, files, sleep)
end

return M
