--- kling.cli.commands: the commands of the tool, in the order --help lists them. Each is a
-- module kling.cli.NAME returning its definition (kling.cli.parser reads the fields):
--
--   name, summary           the command and its line in `kling --help`
--   args, args_help         its positional arguments in the usage line ("ID...") and help
--   argname, choices        their name in help ("ID"), and the words they may be (if any)
--   options                 option and group names of kling.cli.options ({ "api", "out", ... })
--   option_help             name -> a help line of this command's own for an option
--   sections                section -> its title in this command's help
--   description, notes      text before and after the options in `kling NAME --help`
--   examples                command lines shown under "Examples:"
--   passthrough             the words after the command go to run as they are (emulator)
--   run(o, pos)             runs it: o the options (key: the name with '-' as '_'), pos
--                           the positional arguments; returns the exit code
--
-- A new command is a new file here and its name in this list (and its section in
-- doc/CLI.md; the manual page is generated: make man).
local M = {}

M.NAMES = { "generate", "submit", "status", "wait", "result", "cancel", "download", "jobs", "resume", "batch",
  "validate", "models", "schema", "emulator", "completion", "help" }

local loaded

--- The definitions of every command, in order.
function M.all()
  if not loaded then
    loaded = {}
    for i, name in ipairs(M.NAMES) do
      local def = require("kling.cli." .. name)
      assert(def.name == name, "kling.cli." .. name .. " defines command " .. tostring(def.name))
      loaded[i] = def
      loaded[name] = def
    end
  end
  return loaded
end

--- The definition of command name, or nil.
function M.get(name)
  return M.all()[name]
end

return M
