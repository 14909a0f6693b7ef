-- Shared by the benchmarks: start the emulator, read /proc, run commands,
-- build the raw libcurl programs, count instructions under callgrind.
package.path = "lua/?.lua;spec/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath

local helpers = require "helpers"

local M = {}

--- Starts the emulator with extra flags (see spec/helpers.lua).
M.start_emulator = helpers.start_emulator

--- Peak resident set size of this process, in MiB (VmHWM).
function M.peak_rss_mib()
  local f = assert(io.open("/proc/self/status"))
  local kb
  for line in f:lines() do
    kb = kb or tonumber(line:match("^VmHWM:%s+(%d+)"))
  end
  f:close()
  return kb / 1024
end

--- Runs a shell command; returns its output (stdout and stderr), or raises
-- with the command and its output when it fails.
function M.sh(cmd)
  local p = assert(io.popen("(" .. cmd .. ") 2>&1"))
  local out = p:read("*a")
  local ok = p:close()
  if not ok then error(cmd .. ": " .. out) end
  return out
end

--- Builds bench/NAME.c (a raw libcurl program, with bench/raw_clock.h) into
-- dir/NAME; returns its path.
function M.compile(dir, name)
  local path = dir .. "/" .. name
  M.sh("cc -O2 -o " .. helpers.quote(path) .. " bench/" .. name .. ".c -lcurl")
  return path
end

--- A new temporary directory (mktemp -d); returns its path.
function M.tmpdir()
  return (M.sh("mktemp -d"):gsub("%s+$", ""))
end

--- Instructions executed by a command under callgrind (valgrind
-- --tool=callgrind); returns the count and the command's output.
function M.instructions(cmd)
  local out = M.sh("valgrind --tool=callgrind --callgrind-out-file=/dev/null " .. cmd)
  return assert(tonumber(out:match("Collected : (%d+)")), "no callgrind count: " .. out), out
end

--- CPU seconds (user + system) of this process.
function M.cpu()
  return os.clock()
end

return M
