--- kling.cli.env: the environment variables the command-line tool reads (and those the
-- library and libcurl read for it), in one table: --help's "Environment:" block, the
-- manual page's ENVIRONMENT section and doc/CLI.md's table are checked against it (spec
-- cli_parts_spec.lua). The tool reads variables through M.get, which a spec can point at
-- a table of its own (M.set_getenv) to try NO_COLOR, TERM or KLING_TTY in process.
local M = {}

-- name (or names), meaning. `who`: "cli" (read by the tool), "library" (by kling.new),
-- "libcurl".
M.VARS = {
  { names = { "RUNCOMFY_TOKEN", "RUNCOMFY_API_TOKEN", "RUNCOMFY_API_KEY" }, who = "library",
    help = "the API token (the first one set); never taken from a flag value" },
  { names = { "RUNCOMFY_MODEL_API_BASE" }, who = "library",
    help = "the API (default https://model-api.runcomfy.net/v1); --base-url wins" },
  { names = { "CURL_CA_BUNDLE", "SSL_CERT_FILE" }, who = "cli",
    help = "the CA bundle to verify the server with, after --ca-file, in this order (empty: unset)" },
  { names = { "http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "no_proxy" }, who = "libcurl",
    help = "proxies, as libcurl reads them (loopback and plain-http API requests never use one)" },
  { names = { "XDG_STATE_HOME", "HOME" }, who = "cli",
    help = "where the journal is: $XDG_STATE_HOME/kling/jobs.jsonl, or ~/.local/state/kling/jobs.jsonl" },
  { names = { "NO_COLOR" }, who = "cli", help = "set and not empty: no colour" },
  { names = { "TERM" }, who = "cli", help = "dumb: no colour and no live redraw (plain log lines, as off a terminal)" },
  { names = { "COLUMNS", "LINES" }, who = "cli", help = "the terminal's size, when it cannot be asked" },
  { names = { "KLING_POLL" }, who = "cli",
    help = "the polling schedule, e.g. initial=0.2,near=1,max=5 (keys of kling.new's poll option)" },
  { names = { "KLING_TTY" }, who = "cli", help = "1: the live display even off a terminal; 0: plain log lines" },
  { names = { "KLING_DEBUG" }, who = "cli", help = "set: an internal error (exit 1) prints its traceback" },
}

local getenv = os.getenv

--- The value of variable `name`, or nil (an empty value is returned as "").
function M.get(name)
  return getenv(name)
end

--- Reads variables from `vars` (a table name -> value) instead of the process's
-- environment; nil goes back to os.getenv. For specs.
function M.set_getenv(vars)
  if vars == nil then
    getenv = os.getenv
  else
    getenv = function(name) return vars[name] end
  end
end

--- The "Environment:" block of --help (every KLING_* variable among them), wrapped at
-- width characters (default 92).
function M.help(width)
  local wrap = require("kling.cli.format").wrap
  local margin = string.rep(" ", 27)
  local lines = { "Environment:" }
  for _, v in ipairs(M.VARS) do
    local names = "  " .. table.concat(v.names, ", ")
    local text = wrap(v.help, (width or 92) - #margin)
    if #names > #margin - 2 then
      lines[#lines + 1] = names
    else
      lines[#lines + 1] = names .. string.rep(" ", #margin - #names) .. table.remove(text, 1)
    end
    for _, l in ipairs(text) do lines[#lines + 1] = margin .. l end
  end
  return table.concat(lines, "\n") .. "\n"
end

return M
