--- kling help [COMMAND]: the help texts, generated: the usage lines, arguments and options
-- by lua-argparse from the parser (kling.cli.parser), the rest from the command's
-- definition, the environment from kling.cli.env and the exit codes from kling.cli.exit.
-- `kling help CMD` and `kling CMD --help` print the same text.
local exit = require "kling.cli.exit"
local env = require "kling.cli.env"
local format = require "kling.cli.format"
local output = require "kling.cli.output"

local io = output.io -- luacheck: ignore (shadows the global on purpose: escaped streams)

local C = {
  name = "help",
  summary = "show help for a command",
  args = "[COMMAND]",
  argname = "COMMAND",
  args_help = "a command (default: the tool's help)",
  help_command = true,
  description = "Shows the help of a command (as `kling COMMAND --help` does), or of the tool.",
}

local WIDTH = 92

-- A paragraph of a definition, wrapped (lines that start with spaces are kept as they are).
local function paragraphs(text)
  if not text then return nil end
  if text:find("\n") then return text end
  return table.concat(format.wrap(text, WIDTH - 4), "\n")
end

local function examples_block(def)
  if not def.examples or #def.examples == 0 then return nil end
  local lines = { #def.examples == 1 and "Example:" or "Examples:" }
  for _, e in ipairs(def.examples) do lines[#lines + 1] = "  " .. e end
  return table.concat(lines, "\n")
end

--- The help of command def: `kling NAME --help`.
function C.command_help(def)
  local parser = require "kling.cli.parser"
  if def.passthrough then
    return require("kling.emulator.cli").usage()
  end
  local blocks = { (parser.command_parser(def):get_help():gsub("\n+$", "")) }
  blocks[#blocks + 1] = paragraphs(def.notes)
  blocks[#blocks + 1] = examples_block(def)
  blocks[#blocks + 1] = exit.help()
  return table.concat(blocks, "\n\n")
end

C.NOTES = [[
The token comes from $RUNCOMFY_TOKEN (or $RUNCOMFY_API_TOKEN) or --token-file PATH, never
from a flag value; the API from $RUNCOMFY_MODEL_API_BASE or --base-url. Every submitted
request id is written to the journal ($XDG_STATE_HOME/kling/jobs.jsonl, default
~/.local/state/kling/jobs.jsonl) before anything else happens: kling jobs lists them,
kling resume collects them. Ctrl-C, SIGTERM and SIGHUP cancel the jobs a command submitted
that are still queued, and exit 130, 143 or 129.

Example:
  kling generate "a red kite over a grey sea at dawn" --duration 5 -o kite.mp4]]

--- The tool's help: `kling --help`.
function C.main_help()
  local parser = require "kling.cli.parser"
  return table.concat({ (parser.root():get_help():gsub("\n+$", "")), C.NOTES, (env.help(WIDTH):gsub("\n+$", "")),
    exit.help() }, "\n\n")
end

--- The usage error's short form (kling with no command): the tool's help.
function C.run(_, pos)
  local commands = require "kling.cli.commands"
  if #pos > 1 then exit.usage("help", "give one command") end
  if pos[1] then
    local def = commands.get(pos[1])
    if not def then
      local tip = require("kling.cli.parser").tip(pos[1])
      exit.usage("help", "unknown command '" .. pos[1] .. "'", tip)
    end
    io.stdout:write(C.command_help(def))
    return exit.EXIT.ok
  end
  io.stdout:write(C.main_help())
  return exit.EXIT.ok
end

return C
