--- kling.emulator.cli: kling-emulator's command line, on lua-argparse.
--
-- The flags (doc/EMULATOR.md's table; a spec checks the two against each other), their
-- conversion into the options of emulator.new, the help (generated: the flags from the
-- parser, the faults from kling.emulator.faults' table), and the program: listen, print
-- the first line, serve until SIGTERM, SIGINT or (--exit-on-stdin-eof) the end of stdin.
local argparse = require "argparse"
local emulator = require "kling.emulator"
local faults = require "kling.emulator.faults"
local clock = require "kling.emulator.clock"

local M = {}

local format, floor = string.format, math.floor
local D = emulator.DEFAULTS

-- Converters: text -> value | nil, message. A bad value is "bad value for --NAME: why".
local function bad(name, why) return nil, format("bad value for --%s: %s", name, why) end

local function string_value(name)
  return function(text)
    if text == "" then return bad(name, text) end
    return text
  end
end

local function whole(name, lo, hi)
  return function(text)
    local n = tonumber(text)
    if not n or n ~= floor(n) then return bad(name, text) end
    n = floor(n)
    if (lo and n < lo) or (hi and n > hi) then return bad(name, text) end
    return n
  end
end

local function timing(name)
  return function(text)
    if not emulator.parse_timing(text) then return bad(name, text) end
    return text
  end
end

local function fault_list(text)
  local list, err = faults.parse_faults(text)
  if not list or #list == 0 then return bad("faults", err or text) end
  return text
end

local function clock_kind(text)
  for _, kind in ipairs(clock.KINDS) do
    if kind == text then return text end
  end
  return bad("clock", text .. " (" .. table.concat(clock.KINDS, " or ") .. ")")
end

local function not_ready_kind(text)
  if not emulator.NOT_READY_KINDS[text] then return bad("result-not-ready", text .. " (status or 400005)") end
  return text
end

local function wait_value(text)
  if not emulator.parse_wait(text) then return bad("result-lag", text .. " (N answers or Ss seconds)") end
  return text
end

-- The flags: long name, argument name (nil: a flag), converter, help.
local FLAGS = {
  { "host", "H", string_value("host"), "address both listeners bind to (default " .. D.host .. ")" },
  { "port", "N", whole("port", 0, 65535), "API port (default " .. D.port .. "; 0 = pick a free port)" },
  { "files-port", "N", whole("files-port", 0, 65535), "file host port (default 0 = pick a free port)" },
  { "token", "T", string_value("token"), "the only bearer token accepted (default: any non-empty token)" },
  { "queue", "S|LO:HI", timing("queue"), "seconds a job waits in the queue (default " .. D.queue
    .. "); with LO:HI each job draws its time uniformly from [LO, HI] (seeded)" },
  { "run", "S|LO:HI", timing("run"), "seconds a job runs (default " .. D.run .. "), or a range as for --queue" },
  { "load", nil, nil, "benchmark preset: --queue 0:1 --run 1:4 unless given, --quiet" },
  { "queue-position", "N", whole("queue-position", 0), "queue position reported at submit (default "
    .. D.queue_position .. ")" },
  { "video-bytes", "N", whole("video-bytes", 0), "serve N bytes of the test pattern instead of the sample MP4" },
  { "seed", "N", whole("seed"), "seed for ids, drawn times and fault decisions (default: varies)" },
  { "faults", "SPEC", fault_list, "inject faults, SPEC = ROUTE:FAULT:RATE[:ARG] (repeatable, or comma-separated); "
    .. "ROUTE, FAULT and ARG: see Faults below; RATE: 0 to 1; "
    .. "e.g. --faults status:503:0.2 --faults all:429:0.1:2" },
  { "result-not-ready", "KIND", not_ready_kind, "what the result route of an unfinished job answers: status (its "
    .. "status body, the default) or 400005 (HTTP 400 with error_code 400005)" },
  { "result-lag", "N|Ss", wait_value, "a completed job's first N result requests (or those in the S seconds "
    .. "after its end) answer 400005 (default none)" },
  { "clock", "KIND", clock_kind, "the jobs' clock: monotonic (default) or manual (moves only when driven "
    .. "by POST /__emulator/clock)" },
  { "exit-on-stdin-eof", nil, nil, "exit when standard input reaches end of file" },
  { "quiet", nil, nil, "no per-request log lines on stderr" },
}
M.FLAGS = FLAGS

local NUMBERS = { "one", "two", "three", "four", "five", "six", "seven", "eight", "nine" }
local EPILOG = "Faults (FAULT in --faults; * = acts on the request first; [routes] unless all "
  .. (NUMBERS[#faults.ROUTES - 1] or #faults.ROUTES - 1) .. "):\n"
  .. "  ROUTE: " .. table.concat(faults.ROUTES, " ") .. "\n"
  .. faults.help("  ")
  .. "\nFirst line on stdout once listening:\n"
  .. "  kling-emulator api=http://HOST:PORT/v1 files=http://HOST:PORT2 stats=http://HOST:PORT/__emulator/stats\n"
  .. "See doc/EMULATOR.md."

local function parser()
  local p = argparse("kling-emulator", "A local stand-in for RunComfy's Model API (for tests and offline development).")
    :add_help(false)
    :usage("Usage: kling-emulator [options]")
    :help_max_width(92)
  for _, flag in ipairs(FLAGS) do
    local name, argname, convert, help = flag[1], flag[2], flag[3], flag[4]
    if argname then
      local o = p:option("--" .. name, help):argname(argname):convert(convert)
      if name == "faults" then o:count("*") end
    else
      p:flag("--" .. name, help)
    end
  end
  p:flag("-h --help", "show this help")
  p:argument("extra"):args("*"):hidden(true)
  return p
end

--- The help text (--help).
function M.usage()
  return parser():get_help() .. "\n\n" .. EPILOG .. "\n"
end

--- Parse command-line arguments into server options (only the flags given).
-- @return opts | nil, message
function M.parse_args(argv)
  local ok, result = parser():pparse(argv)
  if not ok then
    local unknown = result:match("^unknown option '([^']*)'")
    if unknown then result = "unknown argument: " .. unknown .. result:match("^[^\n]*(.*)$") end
    return nil, result
  end
  if result.extra[1] then return nil, "unknown argument: " .. result.extra[1] end
  local opts = {}
  for _, flag in ipairs(FLAGS) do
    local key = flag[1]:gsub("%-", "_")
    local value = result[key]
    if key == "faults" then
      if #value > 0 then opts.faults = value end
    elseif value ~= nil then
      opts[key] = value
    end
  end
  if result.help then opts.help = true end
  return opts
end

-- Stop the server on SIGTERM or SIGINT, and (stdin_eof) when stdin reaches its end.
local function stop_on_signals(server, stdin_eof)
  local signal = require "cqueues.signal"
  signal.ignore(signal.SIGPIPE)
  -- block, then restore the default disposition (a shell starts background jobs with
  -- SIGINT ignored, which would discard it before the signal listener sees it)
  signal.block(signal.SIGTERM, signal.SIGINT)
  signal.default(signal.SIGTERM, signal.SIGINT)
  local listener = signal.listen(signal.SIGTERM, signal.SIGINT)
  server.cq:wrap(function()
    listener:wait()
    server:stop()
  end)
  if stdin_eof then
    server.cq:wrap(function()
      local stdin = require("cqueues.socket").fdopen(0)
      stdin:onerror(function(_, _, why) return why end)
      while stdin:xread(-4096, "b") do end
      server:stop()
    end)
  end
end

--- Run the emulator as a program.
-- @param argv list of arguments (the script's arg table)
-- @return exit status (0; 1 when it cannot listen; 2 for a usage error)
function M.main(argv)
  local opts, err = M.parse_args(argv or {})
  if not opts then
    io.stderr:write("kling-emulator: ", err, "\n", M.usage())
    return 2
  end
  if opts.help then
    io.stdout:write(M.usage())
    return 0
  end
  local server = emulator.new(opts)
  local api_url, files_url = server:listen()
  if not api_url then
    io.stderr:write("kling-emulator: ", files_url, "\n")
    return 1
  end
  stop_on_signals(server, opts.exit_on_stdin_eof)
  io.stdout:write(format("kling-emulator api=%s files=%s stats=%s\n", api_url, files_url, server.stats_url))
  io.stdout:flush()
  server:loop()
  return 0
end

return M
