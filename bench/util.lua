-- Shared by the benchmarks: start the emulator, read /proc, fetch JSON.
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

--- CPU seconds (user + system) of this process.
function M.cpu()
  return os.clock()
end

return M
