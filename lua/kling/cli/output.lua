--- kling.cli.output: the one place where text reaches stdout and stderr.
--
-- Text from outside (a server, a journal, a file) is escaped on its way to a terminal
-- (M.escape: control characters, bidi controls, bytes that are not UTF-8); --json output is
-- valid UTF-8 JSON whatever a server sent (M.json_line). Every file of the tool writes
-- through M.io (`local io = require("kling.cli.output").io`): its stdout and stderr are
-- escaping streams over the real ones, or over the sinks a spec gives to M.set_sinks, so
-- what a command printed can be read without a process or a terminal.
local json = require "kling.json"
local journal = require "kling.journal"
local video_of = require("kling.job").video_of

local M = {}

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

-- ---------------------------------------------------------------------------------------
-- Streams
-- ---------------------------------------------------------------------------------------

--- Whether stdout carries JSON only (--json): then nothing written to it is changed.
M.json_mode = false

--- A stream that escapes everything written to it (M.escape, keeping newlines and tabs);
-- :raw() writes the tool's own control sequences (the live display) as they are. sink:
-- anything with write(self, ...) and flush(self) (a file, or a spec's table). is_stdout:
-- with --json (M.json_mode) this stream passes JSON through unchanged.
function M.stream(sink, is_stdout)
  local stream = { sink = sink }
  function stream.write(self, ...)
    if is_stdout and M.json_mode then
      sink:write(...)
      return self
    end
    local args = table.pack(...)
    for k = 1, args.n do args[k] = M.escape(args[k], true) end
    sink:write(table.unpack(args, 1, args.n))
    return self
  end
  function stream.raw(self, ...)
    sink:write(...)
    return self
  end
  function stream.flush() return sink:flush() end
  function stream.setvbuf(_, ...) if sink.setvbuf then return sink:setvbuf(...) end end
  return stream
end

--- A sink that keeps what is written (for specs): sink.text() is all of it.
function M.memory_sink()
  local parts = {}
  local sink = {}
  function sink.write(self, ...)
    for i = 1, select("#", ...) do parts[#parts + 1] = tostring((select(i, ...))) end
    return self
  end
  function sink.flush() return true end
  function sink.text() return table.concat(parts) end
  return sink
end

--- The streams every command writes to (and nothing else writes): `io` with stdout and
-- stderr behind M.escape; the rest of the real io (open, stdin...) as it is.
M.io = setmetatable({}, { __index = io })

--- Points M.io's streams at sinks: { stdout =, stderr =, stdin = } (each optional:
-- the real one). kling.cli.main calls it once per run; a spec gives memory sinks.
function M.set_sinks(sinks)
  sinks = sinks or {}
  M.io.stdout = M.stream(sinks.stdout or io.stdout, true)
  M.io.stderr = M.stream(sinks.stderr or io.stderr, false)
  M.io.stdin = sinks.stdin or io.stdin
end
M.set_sinks()

-- ---------------------------------------------------------------------------------------
-- JSON output
-- ---------------------------------------------------------------------------------------

--- The JSON object of an error of the library (--json's "error"), or nil.
function M.error_object(err)
  if not err then return nil end
  local e = { kind = err.kind, message = err.message, code = err.code, http_status = err.status,
    request_id = err.request_id, request_id_raw = err.request_id_raw, path = err.path }
  if err.errors then
    e.errors = json.array {}
    for _, item in ipairs(err.errors) do e.errors[#e.errors + 1] = { path = item.path, message = item.message } end
  end
  return e
end

--- The JSON object of a job (for --json), with `fields` laid over it.
function M.job_object(job, fields)
  local o = {
    id = job.id, model = job.model, status = job.status, queue_position = job.queue_position,
    output = job.output, video = job.video_url or video_of(job.output), cost = job.cost,
  }
  if job.journal_error then o.journal_error = M.error_object(job.journal_error) end
  for k, v in pairs(fields or {}) do o[k] = v end
  if o.error and getmetatable(o.error) ~= nil then o.error = M.error_object(o.error) end
  return o
end

--- One line of --json output for obj: always valid UTF-8 JSON. Numbers JSON cannot write
-- (beyond a double's range, NaN) are shown as null, and the object says so
-- (output_note); a value even the display writer refuses goes out as the journal keeps it.
function M.json_line(obj)
  if obj.error and getmetatable(obj.error) ~= nil then obj.error = M.error_object(obj.error) end
  local ok, text = pcall(json.encode, obj)
  if not ok then
    obj.output_note = "numbers JSON cannot write (beyond the range of a double, NaN) are shown as null"
    ok, text = pcall(json.encode_display, obj)
    if not ok then text = journal.encode_event(obj) end
  end
  return text
end

return M
