-- N jobs submitted and waited on concurrently in one process, one client.
--   lua5.4 bench/many_jobs.lua [N] [max_connections]
-- Prints wall time, client CPU seconds, peak RSS, HTTP requests per job and
-- TCP connections opened (the client's count and the emulator's).
local util = dofile("bench/util.lua")
local kling = require "kling"
local core = require "kling.core"

local N = tonumber(arg[1]) or 10000
local MAXC = tonumber(arg[2]) or 8

local emu = util.start_emulator { "--token", "bench", "--load" }
local client = kling.new { base_url = emu.api, token = "bench", max_connections = MAXC }

local rss0 = util.peak_rss_mib()
local t0, c0 = core.now(), util.cpu()
local SUBMITTERS = 64
local jobs, failed_submits = {}, 0
kling.run(function()
  -- submit from a pool of tasks (a submit is a request of its own), then wait
  -- on all of them at once: the engine polls every job, no coroutine per job
  local next_i = 0
  for _ = 1, SUBMITTERS do
    kling.spawn(function()
      while next_i < N do
        next_i = next_i + 1
        local job, err = client:generate { prompt = "bench clip " .. next_i, duration = 5 }
        if job then jobs[#jobs + 1] = job else failed_submits = failed_submits + 1; io.stderr:write(tostring(err), "\n") end
      end
    end)
  end
end)
local submitted_at = core.now() - t0
local outs, errs = kling.wait_all(jobs, { timeout = 600 })
local ok, failed = 0, failed_submits
for i = 1, #jobs do
  if outs[i] then ok = ok + 1 else failed = failed + 1; io.stderr:write(tostring(errs[i]), "\n") end
end
local wall, cpu = core.now() - t0, util.cpu() - c0
local st = client._engine:stats()
local ps = client._engine:poll_stats()
local es = emu:stats()
emu:stop()
print(string.format("jobs %d: completed %d, failed %d", N, ok, failed))
print(string.format("all submitted after %.2f s (%d submitting tasks)", submitted_at, SUBMITTERS))
print(string.format("wall %.2f s, client CPU %.2f s, peak RSS %.1f MiB (%.1f MiB before the jobs)", wall, cpu,
  util.peak_rss_mib(), rss0))
print(string.format("HTTP requests %d (%.2f per job: 1 submit, %.2f status polls, %.2f result fetches), retries %d",
  st.requests, st.requests / N, ps.polls / N, ps.fetches / N, ps.retries))
print(string.format("TCP connections: the client opened %d, at most %d open at once (max_connections %d)",
  st.sockets_opened, st.sockets_peak, MAXC))
print(string.format("the emulator accepted %d, counted at most %d open at once (it notices a close late)",
  es.connections.total, es.connections.peak))
