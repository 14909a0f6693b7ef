--- fuzz/answer_seeds.lua: writes the seed corpus of fuzz/answer_fuzz.c into
-- fuzz/corpus/answer/ (see the input layout at the top of answer_fuzz.c).
--
--   lua5.4 fuzz/answer_seeds.lua [dir]
local dir = arg[1] or "fuzz/corpus/answer"

-- The watch's initial status (answer_fuzz.c's INITIAL) and flags.
local START = { none = 0, in_queue = 1, in_progress = 2, completed = 3, succeeded = 4, unknown = 5, long = 6, empty = 7 }
local UPDATES_EACH = 8

local CURL = { ok = 0, resolve = 6, connect = 7, write = 23, partial = 18, timeout = 28, tls = 35,
  got_nothing = 52, recv = 56, redirects = 47, http2 = 16, aborted = 42, strange = 99 }

-- One exchange. o: status, code (CURL key), sent (the request went out),
-- piece (body written in pieces of this size), wait (seconds before it),
-- max_body (bytes, a multiple of 16 up to 4080), headers (list), body.
local function exchange(o)
  local status = o.status or 200
  local code = CURL[o.code or "ok"] | ((o.sent == false) and 0 or 0x80)
  local wait = math.floor((o.wait or 1) * 8)
  local cap = o.max_body and o.max_body // 16 or 0
  local head = { "HTTP/1.1 " .. status .. " X\r\n" }
  for _, h in ipairs(o.headers or { "Content-Type: application/json\r\n" }) do head[#head + 1] = h end
  return string.char(status >> 8, status & 0xff, code, o.piece or 0, wait, cap)
    .. table.concat(head) .. "\r\n" .. (o.body or "")
end

local function seed(name, start, exchanges)
  local parts = {}
  for i, e in ipairs(exchanges) do parts[i] = exchange(e) end
  local f = assert(io.open(dir .. "/" .. name, "wb"))
  f:write(string.char(start), table.concat(parts, "\n%%\n"))
  f:close()
end

local function status(s, extra) return '{"request_id":"fuzz-1","status":"' .. s .. '"' .. (extra or "") .. "}" end
local RESULT = '{"request_id":"fuzz-1","status":"succeeded","output":{"video":"https://files.example/v.mp4"},'
  .. '"created_at":"2025-01-01T00:00:00Z","finished_at":"2025-01-01T00:01:00Z"}'

seed("lifecycle", START.none | UPDATES_EACH, {
  { body = status("in_queue", ',"queue_position":3') },
  { body = status("in_queue", ',"queue_position":1'), wait = 2 },
  { body = status("in_progress"), wait = 2 },
  { body = status("completed"), wait = 5 },
  { body = RESULT },
})
seed("succeeded_raw_words", START.in_queue, {
  { body = status("pending") }, { body = status("starting") }, { body = status("processing") },
  { body = status("succeeded") }, { body = status("succeeded", ',"output":{"video":"v"}') },
})
seed("retry_after_seconds", START.in_queue | UPDATES_EACH, {
  { status = 429, headers = { "Retry-After: 2\r\n" }, body = '{"detail":"slow down"}' },
  { status = 429, headers = { "retry-after:   7.5  \r\n" } },
  { body = status("in_queue", ',"queue_position":0') },
})
seed("retry_after_date_and_5xx", START.in_progress, {
  { status = 503, headers = { "Retry-After: Wed, 21 Oct 2037 07:28:00 GMT\r\n" } },
  { status = 500 }, { status = 502 }, { status = 504 }, { status = 408 },
  { status = 503, headers = { "Retry-After: 1e999\r\n" } },
  { body = status("failed", ',"error":{"error_code":500001,"error_message":"boom"}') },
  { body = '{"status":"failed"}' },
})
seed("error_body_in_200", START.in_queue, {
  { body = '{"error_code":404001,"error_message":"request not found"}' },
})
seed("error_code_null", START.in_queue, {
  { body = status("in_progress", ',"error_code":null') },
})
seed("http_404", START.none, {
  { status = 404, body = '{"error_code":404001,"error_message":"expired"}' },
})
seed("malformed_json", START.in_queue, {
  { body = '{"status":"in_q' }, { body = "<html>502 Bad Gateway</html>" }, { body = "[1,2" },
  { body = '"just a string"' }, { body = "" }, { body = "null" },
})
seed("truncated_then_valid", START.in_queue | UPDATES_EACH, {
  { body = '{"status":"in_progress",' }, { body = status("in_progress"), piece = 1 },
})
seed("transport_errors", START.in_queue, {
  { code = "resolve", sent = false }, { code = "connect", sent = false }, { code = "timeout", sent = false },
  { code = "timeout" }, { code = "got_nothing" }, { code = "recv" }, { code = "partial" },
  { code = "http2" }, { code = "tls", sent = false },
})
seed("transport_fatal", START.in_queue, { { code = "redirects" } })
seed("strange_curl_code", START.in_queue, { { code = "strange" } })
seed("too_large", START.in_queue, {
  { max_body = 32, body = status("in_queue", ',"queue_position":12345,"padding":"' .. ("x"):rep(64) .. '"'), piece = 7 },
})
seed("continue_then_answer", START.none, {
  { headers = { "Content-Length: 5\r\n", "\r\n", "HTTP/1.1 200 OK\r\n", "Content-Type: application/json\r\n",
    "Content-Length: 28\r\n", "Retry-After:\r\n", "X-Other: y\r\n" }, body = status("in_queue"), piece = 3 },
})
seed("odd_statuses", START.unknown | UPDATES_EACH, {
  { body = '{"status":42}' }, { body = '{"status":["in_queue"]}' }, { body = '{"status":"paused"}' },
  { body = '{"status":"' .. ("q"):rep(80) .. '"}' }, { body = '{"status":"in_queue","queue_position":-1}' },
  { body = '{"status":"in_queue","queue_position":1e300}' }, { body = '{"status":"in_queue","queue_position":2.5}' },
  { body = '{"status":"in_queue","queue_position":"3"}' }, { body = '{"status":"in_queue\\u0000x"}' },
  { body = '{"status":"cancelled"}' },
})
seed("result_not_ended", START.completed, {
  { body = status("in_progress") }, { body = status("completed") }, { body = status("canceled") },
})
seed("long_status_kept", START.long, { { body = status(("z"):rep(60)) }, { body = status(("z"):rep(60)) } })
seed("empty_start", START.empty, { { status = 201, body = status("in_queue") } })
seed("status_zero", START.succeeded, { { status = 0, body = "" } })
