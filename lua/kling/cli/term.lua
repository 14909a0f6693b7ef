--- kling.cli.term: what the command-line tool makes of its terminal: which display a
-- command gets (the live area, plain log lines, or nothing but JSON), whether it may use
-- colour, and the terminal's size. Asked of the C core (kling.core.term: isatty and
-- TIOCGWINSZ), never of a program; the variables through kling.cli.env.
--
--   --json                         -> "json"   (stdout carries JSON only)
--   -q/--quiet                     -> "plain"
--   KLING_TTY=1 / KLING_TTY=0      -> "tty" / "plain" (forced)
--   TERM=dumb                      -> "plain"  (a terminal that cannot redraw)
--   stdout a terminal              -> "tty", else "plain"
-- Colour: on the live display only, unless NO_COLOR is set (and not empty) or TERM=dumb.
local env = require "kling.cli.env"

local M = {}

local core_term -- kling.core.term, loaded when first asked
local function term()
  core_term = core_term or require("kling.core").term
  return core_term
end

--- Is descriptor fd (1: stdout) a terminal? A spec may set M.isatty to a function.
function M.isatty(fd)
  return term().isatty(fd)
end

--- The display of a command with options o (json, quiet): "json", "tty" or "plain".
function M.display_mode(o)
  if o.json then return "json" end
  if o.quiet then return "plain" end
  local forced = env.get("KLING_TTY")
  if forced == "1" then return "tty" end
  if forced == "0" then return "plain" end
  if env.get("TERM") == "dumb" then return "plain" end
  return M.isatty(1) and "tty" or "plain"
end

--- May the display of mode use colour? (https://no-color.org: NO_COLOR set and not
-- empty turns it off; so does TERM=dumb.)
function M.colour(mode)
  if mode ~= "tty" then return false end
  local no = env.get("NO_COLOR")
  if no ~= nil and no ~= "" then return false end
  return env.get("TERM") ~= "dumb"
end

--- The size of the terminal on stdout: rows, columns (from the terminal; else $LINES and
-- $COLUMNS; else 24 x 80). Sizes too small to draw in are not taken.
function M.size()
  local rows, cols = term().size(1)
  if not cols or cols < 20 then cols = tonumber(env.get("COLUMNS")) or 80 end
  if not rows or rows < 3 then rows = tonumber(env.get("LINES")) or 24 end
  return rows, cols
end

return M
