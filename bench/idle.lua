-- Idle cost: N jobs that each take RUN seconds, waited on together; the
-- client's CPU time over the whole wait.
--   lua5.4 bench/idle.lua [N] [RUN]
local util = dofile("bench/util.lua")
local kling = require "kling"
local core = require "kling.core"

local N = tonumber(arg[1]) or 100
local RUN = tonumber(arg[2]) or 60

local emu = util.start_emulator { "--token", "bench", "--queue", "0", "--run", tostring(RUN) }
local client = kling.new { base_url = emu.api, token = "bench" }
local jobs = {}
for i = 1, N do jobs[i] = assert(client:generate { prompt = "idle " .. i }) end
local t0, c0 = core.now(), util.cpu()
local outs = kling.wait_all(jobs, { timeout = RUN * 3 })
local wall, cpu = core.now() - t0, util.cpu() - c0
local done = 0
for i = 1, N do if outs[i] then done = done + 1 end end
local ps = client._engine:poll_stats()
emu:stop()
print(string.format("%d jobs of %g s: %d completed; wait %.1f s wall, client CPU %.3f s (%.2f ms per job), %d status polls (%.1f per job)",
  N, RUN, done, wall, cpu, cpu * 1000 / N, ps.polls, ps.polls / N))
