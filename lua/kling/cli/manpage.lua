--- kling.cli.manpage: the manual page kling(1), written from the same definitions the tool
-- parses and helps with: the commands (kling.cli.commands), their options
-- (kling.cli.options), the environment (kling.cli.env) and the exit codes
-- (kling.cli.exit). `make man` writes it to doc/kling.1; a spec checks that doc/kling.1
-- is what M.render() writes, so the page cannot drift from the tool.
local kling = require "kling"
local commands = require "kling.cli.commands"
local options = require "kling.cli.options"
local env = require "kling.cli.env"
local exit = require "kling.cli.exit"
local help = require "kling.cli.help"

local M = {}

-- Text for roff: backslashes and hyphens escaped, a line never starting with . or '.
local function esc(s)
  s = s:gsub("\\", "\\e"):gsub("%-", "\\-")
  s = s:gsub("\n([.'])", "\n\\&%1")
  if s:match("^[.']") then s = "\\&" .. s end
  return s
end
M.escape = esc

-- A paragraph of plain text (blank lines separate paragraphs; lines that start with
-- spaces are kept as they are, in a no-fill block).
local function paragraphs(text, out)
  local literal = false
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    if line:match("^  ") then
      if not literal then
        out[#out + 1] = ".nf"
        literal = true
      end
      out[#out + 1] = esc(line)
    else
      if literal then
        out[#out + 1] = ".fi"
        literal = false
      end
      out[#out + 1] = line == "" and ".PP" or esc(line)
    end
  end
  if literal then out[#out + 1] = ".fi" end
end

-- The label of an option: "\fB\-o\fR, \fB\-\-output\fR \fIFILE\fR".
local function option_label(opt)
  local names = "\\fB\\-\\-" .. esc(opt.name) .. "\\fR"
  if opt.short then names = "\\fB\\-" .. esc(opt.short) .. "\\fR, " .. names end
  if opt.arg then names = names .. " \\fI" .. esc(opt.arg) .. "\\fR" end
  return names
end

local function command_section(def, out)
  out[#out + 1] = ".SS \"kling " .. esc(def.name) .. (def.args and (" " .. esc(def.args)) or "")
    .. (def.passthrough and "" or " [options]") .. "\""
  paragraphs(def.description or def.summary, out)
  if def.args and def.args_help then
    out[#out + 1] = ".TP"
    out[#out + 1] = "\\fI" .. esc(def.argname or def.args) .. "\\fR"
    out[#out + 1] = esc(def.args_help)
  end
  local own = def.option_help or {}
  for _, opt in ipairs(options.resolve(def.options or {})) do
    out[#out + 1] = ".TP"
    out[#out + 1] = option_label(opt)
    out[#out + 1] = esc(own[opt.name] or opt.help)
  end
  if def.notes then
    out[#out + 1] = ".PP"
    paragraphs(def.notes, out)
  end
  for _, e in ipairs(def.examples or {}) do
    out[#out + 1] = ".PP"
    out[#out + 1] = ".nf"
    out[#out + 1] = "    " .. esc(e)
    out[#out + 1] = ".fi"
  end
end

local HEAD = {
  ".SH NAME",
  "kling \\- submit, watch, cancel and download RunComfy Model API jobs (Kling 3.0 video)",
  ".SH SYNOPSIS",
  ".B kling",
  ".I COMMAND",
  "[\\fIoptions\\fR] [\\fIarguments\\fR]",
  ".br",
  ".B kling",
  "\\fB\\-\\-help\\fR | \\fB\\-\\-version\\fR",
}

local SYNTAX = "Options may come in any order around the arguments; \\fB\\-\\-name=value\\fR and "
  .. "\\fB\\-\\-name value\\fR both work; \\fB\\-\\-\\fR ends the options. The connection options may also "
  .. "come before the command. \\fBkling help\\fR \\fICOMMAND\\fR and \\fBkling\\fR \\fICOMMAND\\fR "
  .. "\\fB\\-\\-help\\fR print the same help."

-- FILES and SEE ALSO (roff already).
local TAIL = {
  ".SH FILES",
  ".TP",
  "\\fI$XDG_STATE_HOME/kling/jobs.jsonl\\fR (or \\fI~/.local/state/kling/jobs.jsonl\\fR)",
  "the journal: every paid submit's intent, request id and end (\\fB\\-\\-journal\\fR, "
    .. "\\fB\\-\\-no\\-journal\\fR)",
  ".TP",
  "\\fIDIR/.kling\\-batch.jsonl\\fR",
  "the state of \\fBkling batch\\fR in its \\fB\\-\\-out\\-dir\\fR: which line was submitted as which job",
  ".TP",
  "\\fIFILE.part\\fR, \\fIFILE.part.meta\\fR, \\fIFILE.part.lock\\fR",
  "a download in progress, its validators, and its lock",
  ".SH SEE ALSO",
  "\\fBkling\\-emulator\\fR (\\fBkling emulator \\-\\-help\\fR), \\fBcurl\\fR(1); doc/CLI.md, "
    .. "doc/JOURNAL.md and README.md in kling's sources.",
}

local function append(out, lines)
  for _, l in ipairs(lines) do out[#out + 1] = l end
end

-- A .TP entry: its label (roff) and its text (plain).
local function entry(out, label, text)
  append(out, { ".TP", label, esc(text) })
end

--- The manual page, as roff (man macros).
function M.render()
  local out = {
    ".\\\" kling(1): written by kling.cli.manpage from the tool's own definitions (make man); do not edit.",
    ".TH KLING 1 \"\" \"kling " .. esc(kling.VERSION) .. "\" \"User Commands\"",
    ".nh", -- no hyphenation: option names and paths stay whole
    ".ad l",
  }
  append(out, HEAD)
  out[#out + 1] = ".SH DESCRIPTION"
  paragraphs(require("kling.cli.parser").DESCRIPTION, out)
  out[#out + 1] = ".PP"
  paragraphs(help.NOTES, out)
  append(out, { ".PP", SYNTAX, ".SH COMMANDS" })
  for _, def in ipairs(commands.all()) do command_section(def, out) end
  out[#out + 1] = ".SH ENVIRONMENT"
  for _, v in ipairs(env.VARS) do
    local names = {}
    for i, n in ipairs(v.names) do names[i] = "\\fB" .. esc(n) .. "\\fR" end
    entry(out, table.concat(names, ", "), v.help)
  end
  out[#out + 1] = ".SH EXIT STATUS"
  for _, c in ipairs(exit.CODES) do entry(out, "\\fB" .. c.code .. "\\fR", table.concat(c.help, " ")) end
  append(out, { ".PP", "With several jobs the most serious outcome wins." })
  append(out, TAIL)
  return table.concat(out, "\n") .. "\n"
end

return M
