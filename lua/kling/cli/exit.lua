--- kling.cli.exit: how the command-line tool ends. The exit codes by name (one table:
-- the code, its line in --help and the manual page, how serious it is), the code of each
-- error kind of the library, and the two errors a command raises to stop at once: a usage
-- error (exit 2, with a hint to --help) and a local file problem found before anything is
-- sent (exit 8).
--
-- No other file of the tool writes an exit number: they all say EXIT.name.
local M = {}

-- name, code, rank (when several jobs end differently, the highest rank wins), and the
-- lines of the exit-code table in --help (the first line is also the manual page's).
M.CODES = {
  { name = "ok", code = 0, rank = 0, help = { "success" } },
  { name = "internal", code = 1, rank = 8, help = { "internal error (a bug: please report it; KLING_DEBUG=1 prints",
    "the traceback)" } },
  { name = "usage", code = 2, rank = 1, help = { "usage error (unknown option, missing argument, output file exists...)" } },
  { name = "validation", code = 3, rank = 2, help = { "validation error: the input breaks the model's schema (nothing was sent),",
    "or the service refused it (HTTP 400/422)" } },
  { name = "auth", code = 4, rank = 6, help = { "authentication or payment problem (no or wrong token, no balance)" } },
  { name = "failed", code = 5, rank = 3, help = { "a job failed or was cancelled (or could not be cancelled: it runs)" } },
  { name = "timeout", code = 6, rank = 4, help = { "timeout: a job is still running; it can be collected later (kling wait ID);",
    "a download too slow or past --download-deadline (FILE.part is kept)" } },
  { name = "network", code = 7, rank = 5, help = { "network or server error (also: submit of unknown outcome, rate limited,",
    "unknown request id, an answer the contract does not allow)" } },
  { name = "io", code = 8, rank = 7, help = { "local file or disk error (journal, batch state, download target): the",
    "message names the path; for a submit, nothing was sent unless its",
    "request id was printed (then only the journal lacks it)" } },
  { name = "hangup", code = 129, rank = 9, help = { "hangup (SIGHUP), handled as Ctrl-C is" } },
  { name = "interrupted", code = 130, rank = 9, help = { "interrupted (Ctrl-C, SIGINT)" } },
  { name = "terminated", code = 143, rank = 9, help = { "terminated (SIGTERM), handled as Ctrl-C is" } },
}

--- EXIT.name -> code (EXIT.ok, EXIT.usage, EXIT.io, EXIT.interrupted...).
M.EXIT = {}
local RANK = {}
for _, c in ipairs(M.CODES) do
  M.EXIT[c.name] = c.code
  RANK[c.code] = c.rank
end
setmetatable(M.EXIT, { __index = function(_, name) error("kling.cli.exit: no exit code named " .. tostring(name), 2) end })

local E = M.EXIT

--- The exit code of each error kind of the library (kling.errors).
M.KIND_EXIT = {
  validation = E.validation, bad_request = E.validation,
  auth = E.auth, payment = E.auth,
  failed = E.failed, cancelled = E.failed, not_cancellable = E.failed,
  timeout = E.timeout, not_ready = E.timeout,
  network = E.network, server = E.network, rate_limited = E.network, submit_unknown = E.network,
  protocol = E.network, not_found = E.network,
  io = E.io,
}

--- The exit code of an error of the library (a kind it does not know: network's).
function M.code_for(err)
  return M.KIND_EXIT[err and err.kind] or E.network
end

--- Of two exit codes, the most serious (a code not in the table ranks as io's).
function M.worst(a, b)
  if (RANK[b] or RANK[E.io]) > (RANK[a] or RANK[E.io]) then return b end
  return a
end

--- The "Exit codes:" block of --help.
function M.help()
  local lines = { "Exit codes:" }
  for _, c in ipairs(M.CODES) do
    for i, text in ipairs(c.help) do
      lines[#lines + 1] = i == 1 and string.format("  %-4d %s", c.code, text) or ("       " .. text)
    end
  end
  return table.concat(lines, "\n") .. "\n"
end

-- ---------------------------------------------------------------------------------------
-- The errors a command raises to stop at once (caught by kling.cli.main)
-- ---------------------------------------------------------------------------------------

local Stop = {}
Stop.__index = Stop
Stop.__tostring = function(e) return e.message end

--- Raises a usage error of command `cmd` (nil: the tool itself): "kling CMD: message",
-- "Try 'kling CMD --help'.", exit 2. `tip` (optional): a line printed under the message
-- (a "Did you mean" of the parser).
function M.usage(cmd, message, tip)
  error(setmetatable({ cmd = cmd, message = message, tip = tip, code = E.usage, hint = true }, Stop), 0)
end

--- Raises a local file problem found before anything is sent (kind io, exit 8; no hint).
function M.disk(cmd, message)
  error(setmetatable({ cmd = cmd, message = message, code = E.io }, Stop), 0)
end

--- Is e an error raised by usage() or disk()?
function M.is_stop(e)
  return getmetatable(e) == Stop
end

return M
