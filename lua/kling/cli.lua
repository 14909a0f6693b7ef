--- kling.cli: the command-line tool (bin/kling). See doc/CLI.md and `kling --help`.
--
--   os.exit(require("kling.cli").main(arg))
--
-- main parses the command line (kling.cli.parser, on lua-argparse), runs the command's
-- module (kling.cli.NAME, listed in kling.cli.commands) and turns what stopped it into
-- an exit code (kling.cli.exit). Every command is built on the public library (kling,
-- kling.journal, kling.models, kling.json). Results go to stdout; progress and messages to
-- stderr, except the live display on a terminal, which is drawn on stdout; all of it
-- through kling.cli.output, which escapes text from outside.
--
-- The parts, and which way calls go (each only calls those below it):
--   cli.lua                       main: parse, dispatch, exit code
--   cli/<command>.lua             one file per command (its definition and run)
--   cli/help.lua, completion.lua  help texts and completion scripts, from the parser
--   cli/parser.lua                lua-argparse parsers from commands.lua + options.lua
--   cli/batch.lua ... context.lua the client, the journal, following jobs, signals.lua
--   cli/display.lua, input.lua, files.lua, term.lua, env.lua, format.lua, output.lua, exit.lua
local kling = require "kling"
local exit = require "kling.cli.exit"
local env = require "kling.cli.env"
local output = require "kling.cli.output"
local parser = require "kling.cli.parser"
local help = require "kling.cli.help"

local io = output.io -- luacheck: ignore (shadows the global on purpose: escaped streams)
local EXIT = exit.EXIT

local M = {}

--- The version line of `kling --version`.
function M.version_text()
  return string.format("kling %s (libcurl %s, %s)\n", kling.VERSION, require("kling.core").curl_version, _VERSION)
end

-- Runs the command line argv: its exit code (or raises what stops it).
local function run(argv)
  local parsed = parser.parse(argv)
  if parsed.usage then
    io.stderr:write(help.main_help())
    return EXIT.usage
  elseif parsed.help then
    io.stdout:write(help.main_help())
    return EXIT.ok
  elseif parsed.version then
    io.stdout:write(M.version_text())
    return EXIT.ok
  end
  local def, o = parsed.command, parsed.o
  if o.help then
    io.stdout:write(help.command_help(def))
    return EXIT.ok
  end
  output.json_mode = o.json == true -- stdout then carries JSON only, written as it is
  return def.run(o, parsed.pos)
end

-- What stopped a run, as an exit code (the message written on stderr).
local function report(e)
  if exit.is_stop(e) then
    local who = e.cmd and ("kling " .. e.cmd) or "kling"
    io.stderr:write(who, ": ", e.message, "\n")
    if e.tip then io.stderr:write(e.tip, "\n") end
    if e.hint then io.stderr:write("Try '", who, " --help'.\n") end
    return e.code
  end
  if e.interrupted then
    io.stderr:write("kling: interrupted\n")
    return EXIT.interrupted
  end
  io.stderr:write("kling: internal error: ", e.internal, "\n")
  if env.get("KLING_DEBUG") then io.stderr:write(e.trace, "\n") end
  return EXIT.internal
end

--- Runs the tool with argv (the script's arg table). Returns the exit code.
-- opts (for specs; all optional): stdout, stderr (sinks with write and flush), stdin (a
-- file), env (a table of variables read instead of the process's environment).
function M.main(argv, opts)
  opts = opts or {}
  output.set_sinks(opts)
  output.json_mode = false
  if opts.env then env.set_getenv(opts.env) end
  local args = {}
  for i = 1, #(argv or {}) do args[i] = argv[i] end
  local ok, code = xpcall(run, function(e)
    if exit.is_stop(e) then return e end
    if type(e) == "string" and e:match("interrupted!$") then return { interrupted = true } end
    return { internal = tostring(e), trace = debug.traceback() }
  end, args)
  if not ok then code = report(code) end
  io.stdout:flush()
  io.stderr:flush()
  if opts.env then env.set_getenv(nil) end
  if opts.stdout or opts.stderr or opts.stdin then output.set_sinks() end
  return code or EXIT.ok
end

-- ---------------------------------------------------------------------------------------
-- The names earlier versions of this module exported (and specs use)
-- ---------------------------------------------------------------------------------------

local format = require "kling.cli.format"
local display = require "kling.cli.display"

M.EXIT = EXIT
M.KIND_EXIT = exit.KIND_EXIT
M.io = io
M.escape = output.escape
M.error_text = output.error_text
M.error_object = output.error_object
M.job_object = output.job_object
M.human_bytes = format.human_bytes
M.human_time = format.human_time
M.human_rate = format.human_rate
M.name_from_url = format.name_from_url
M.state_text = display.state_text
M.download_text = display.download_text
M.display = display.new
M.default_journal = function() return require("kling.cli.context").default_journal() end
M.SIGNALS = require("kling.cli.signals").SIGNALS

return M
