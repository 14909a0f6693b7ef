--- kling.cli.parser: the command line, parsed by lua-argparse from the definitions of
-- kling.cli.commands and kling.cli.options (nothing here knows a particular command).
--
-- What the tool adds to argparse, to keep its documented interface:
-- * the connection options may come before the command (`kling --base-url URL status ID`):
--   they are moved after it;
-- * `--name VALUE` takes the next word as the value even when it starts with '-'
--   (`--timeout -1` is a bad value, not an unknown option);
-- * the token is never taken from a flag value: --token is refused with the reason;
-- * errors are worded as the tool's ("--duration needs a value"), with argparse's "Did
--   you mean" for a mistyped command or option.
--
--   local parsed = parser.parse(argv)
--   -- { command = def | nil, o = options, pos = positional words, version = bool, help = bool }
local argparse = require "argparse"
local options = require "kling.cli.options"
local commands = require "kling.cli.commands"
local exit = require "kling.cli.exit"

local M = {}

M.TOKEN_FLAG = "the token is never taken from a flag value (it would show in the process list and "
  .. "in your shell history): set RUNCOMFY_TOKEN (or RUNCOMFY_API_TOKEN), or pass --token-file PATH"

M.DESCRIPTION = "A client for RunComfy's Model API (Kling 3.0 Pro text-to-video by default)."

-- Adds the options of a command definition to argparse command c.
local function add_options(c, def)
  local own = def.option_help or {}
  local sections, order = {}, {}
  for _, opt in ipairs(options.resolve(def.options or {})) do
    local names = (opt.short and ("-" .. opt.short .. " ") or "") .. "--" .. opt.name
    local help = own[opt.name] or opt.help
    local element
    if opt.kind == "flag" then
      element = c:flag(names, help)
    else
      element = c:option(names, help):argname(opt.arg)
      local convert = options.converter(opt)
      if convert then element:convert(convert) end
      if opt.kind == "list" then element:count("*") end
      if opt.short then
        -- "-o, --output FILE" on one line (argparse puts each alias on a line of its own)
        local label = "-" .. opt.short .. ", --" .. opt.name .. " " .. opt.arg
        element._get_label_lines = function() return { label } end
      end
    end
    local section = opt.section
    if not sections[section] then
      sections[section] = {}
      order[#order + 1] = section
    end
    table.insert(sections[section], element)
  end
  for _, section in ipairs(order) do
    c:group((def.sections or {})[section] or section, table.unpack(sections[section]))
  end
end

--- The root parser with a command parser per command (argparse objects: their help,
-- usage and shell completion are argparse's).
function M.build()
  local root = argparse("kling", M.DESCRIPTION)
    :add_help(false):require_command(false):command_target("command")
    :usage("Usage: kling COMMAND [options]      (kling COMMAND --help for each)")
    :help_usage_margin(2):help_description_margin(27):help_max_width(92)
  root:flag("-h --help", "show this help")
  root:flag("-V --version", "print kling's version and exit")
  for _, def in ipairs(commands.all()) do
    local c = root:command(def.name):summary(def.summary):target("command_" .. def.name):add_help(false)
    c:usage("Usage: kling " .. def.name .. (def.args and (" " .. def.args) or "") .. (def.passthrough and "" or " [options]"))
    if def.description then c:description(def.description) end
    if def.passthrough then
      c:handle_options(false)
      c:argument(def.args or "ARG", def.args_help):args("*"):target("args")
    else
      local arg = c:argument(def.argname or "ARG", def.args_help):args("*"):target("args")
      if not def.args then arg:hidden(true) end
      if def.choices then arg:choices(def.choices) end
      -- (argparse's own flag for a help command: its completion offers the command names)
      if def.help_command then c._is_help_command = true end
      c:flag("-h --help", "show this help")
      add_options(c, def)
    end
  end
  return root
end

local built
local function root_parser()
  built = built or M.build()
  return built
end
M.root = root_parser

-- The argparse command of def.
local function command_parser(def)
  for _, c in ipairs(root_parser()._commands) do
    if c._name == def.name then return c end
  end
end
M.command_parser = command_parser

-- Which options of a command take a value: "--name" and "-x" -> true.
local function value_options(def)
  local set = {}
  for _, opt in ipairs(options.resolve(def.options or {})) do
    if options.takes_value(opt) then
      set["--" .. opt.name] = true
      if opt.short then set["-" .. opt.short] = true end
    end
  end
  return set
end

local function refuse_token(cmd, word)
  if word == "--token" or word:match("^%-%-token=") then exit.usage(cmd, M.TOKEN_FLAG) end
end

-- The words of a command's own arguments, ready for argparse: a value that starts with
-- '-' is glued to its option ("--timeout=-1", "-o-x"), so that it is taken as the value
-- it is. Words after "--" are left alone.
local function glue_values(def, words)
  local takes = value_options(def)
  local out, i = {}, 1
  while i <= #words do
    local w = words[i]
    if w == "--" then
      for j = i, #words do out[#out + 1] = words[j] end
      break
    end
    refuse_token(def.name, w)
    local nxt = words[i + 1]
    if takes[w] and nxt and nxt:sub(1, 1) == "-" and nxt ~= "-" then
      out[#out + 1] = (w:sub(1, 2) == "--" and (w .. "=") or w) .. nxt
      i = i + 2
    else
      out[#out + 1] = w
      i = i + 1
    end
  end
  return out
end

-- argparse's messages in the tool's words: message, tip (the "Did you mean" line, or nil).
local function reword(msg)
  local text, tip = msg:match("^([^\n]*)\n(.*)$")
  text = text or msg
  local name = text:match("^option '([^']+)' requires an argument$") or text:match("^option '([^']+)' requires ")
  if name then text = name .. " needs a value" end
  name = text:match("^option '([^']+)' does not take arguments$")
  if name then text = name .. " takes no value" end
  local unknown = text:match("^unknown option '([^']+)'$")
  if unknown and #unknown <= 2 then tip = nil end -- one letter off a one-letter option: no real tip
  if unknown and (unknown:match("^%-%d") or unknown:match("^%-%.%d")) then
    text, tip = text .. " (a value starting with '-' goes after '--')", nil
  end
  return text, tip
end

-- argparse's result as the commands read it: option keys with '_' for '-', flags true or
-- nil, repeatable options nil when not given, the positional words in pos.
local function options_of(result, def)
  local o = {}
  for _, opt in ipairs(options.resolve(def.options or {})) do
    local key = opt.name:gsub("-", "_")
    local v = result[key]
    if v == false or (type(v) == "table" and #v == 0) then v = nil end
    o[key] = v
  end
  if result.help then o.help = true end
  return o, result.args or {}
end

--- The "Did you mean" line for a word that is not a command (or nil).
function M.tip(word)
  local ok, msg = root_parser():pparse { word }
  if ok then return nil end
  local _, tip = reword(msg)
  return tip
end

--- Parses argv (the words after `kling`): { command = def, o = options, pos = words }, or
-- { version = true } / { help = true } for the tool itself, or { usage = true } when no
-- command was given. Raises a usage error (kling.cli.exit) for anything it cannot take.
-- The words before the command (the connection options, --help, --version, with their
-- values), and the index of the command's word.
local function before_command(argv)
  local pre, i = {}, 1
  local api = {}
  for _, name in ipairs(options.GROUPS.api) do
    if options.takes_value(options.BY_NAME[name]) then api["--" .. name] = true end
  end
  while argv[i] and argv[i]:sub(1, 1) == "-" and argv[i] ~= "-" do
    refuse_token(nil, argv[i])
    pre[#pre + 1] = argv[i]
    if api[argv[i]] and argv[i + 1] then
      pre[#pre + 1] = argv[i + 1]
      i = i + 1
    end
    i = i + 1
  end
  return pre, i
end

function M.parse(argv)
  local pre, i = before_command(argv)
  local name = argv[i]
  if not name then
    if #pre == 0 then return { usage = true } end
    local ok, result = root_parser():pparse(pre)
    if not ok then exit.usage(nil, reword(result)) end
    if result.help then return { help = true } end
    if result.version then return { version = true } end
    return { usage = true }
  end
  local rest = { table.unpack(argv, i + 1) }
  local def = commands.get(name)
  if def and def.passthrough then
    for k = #pre, 1, -1 do table.insert(rest, 1, pre[k]) end
    return { command = def, o = {}, pos = rest }
  end
  local words = { name }
  if def then
    for _, w in ipairs(glue_values(def, pre)) do words[#words + 1] = w end
    for _, w in ipairs(glue_values(def, rest)) do words[#words + 1] = w end
  end
  local ok, result = root_parser():pparse(words)
  if not ok then exit.usage(def and def.name or nil, reword(result)) end
  if result.version then return { version = true } end
  local o, pos = options_of(result, def)
  return { command = def, o = o, pos = pos }
end

return M
