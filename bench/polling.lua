-- Polling efficiency: the same jobs, run times spread uniformly over
-- 60-300 s (times SCALE), watched by kling's adaptive schedule and by fixed
-- 2 s polling (times SCALE), side by side in one process on two clients.
-- Each side runs its N jobs as a batch with CONC in flight (a new submit
-- when one ends), as `kling batch --concurrency` would.
--   lua5.4 bench/polling.lua [N] [SCALE] [CONC]
-- Reports requests per job (status polls + result fetches) and the notice
-- latency: from the moment the emulator ends a job (its ends_at, on the same
-- monotonic clock as kling.core.now) to the client knowing it ended.
local util = dofile("bench/util.lua")
local kling = require "kling"
local core = require "kling.core"
local cclient = require "kling.client"

local N = tonumber(arg[1]) or 100
local SCALE = tonumber(arg[2]) or 0.1
local CONC = tonumber(arg[3]) or 25

local emu = util.start_emulator { "--token", "bench", "--queue", "0", "--run", "1", "--seed", "7" }

-- the run times, drawn once, used by both sides
local rng = 12345
local function rand() -- a small LCG, so both sides and every run see the same times
  rng = (rng * 1103515245 + 12345) % 2147483648
  return rng / 2147483648
end
local runs = {}
for i = 1, N do runs[i] = (60 + 240 * rand()) * SCALE end

local adaptive_poll = {}
for k, v in pairs(cclient.DEFAULT_POLL) do adaptive_poll[k] = v end
for _, k in ipairs { "initial", "min", "near", "max" } do adaptive_poll[k] = adaptive_poll[k] * SCALE end
local fixed = 2 * SCALE
local sides = {
  { name = "kling adaptive", poll = adaptive_poll },
  { name = string.format("fixed %g s", 2), poll = { initial = fixed, min = fixed, near = fixed, max = fixed, factor = 1, jitter = 0 } },
}

local function run_side(side)
  local client = kling.new { base_url = emu.api, token = "bench", poll = side.poll }
  side.client, side.jobs, side.noticed = client, {}, {}
  local next_i = 0
  for _ = 1, CONC do
    kling.spawn(function()
      while next_i < N do
        next_i = next_i + 1
        local i = next_i
        local job = assert(client:generate { prompt = string.format("job %d @emu:run=%.3f", i, runs[i]) })
        side.jobs[i] = job
        assert(job:wait { timeout = 3600 })
        side.noticed[i] = core.now()
      end
    end)
  end
end

local t0 = core.now()
kling.run(function()
  for _, side in ipairs(sides) do run_side(side) end
end)
local wall = core.now() - t0

for _, side in ipairs(sides) do
  local ps = side.client._engine:poll_stats()
  local sum, max = 0, 0
  for i = 1, N do
    local rec = emu:job_record(side.jobs[i].id)
    local lat = side.noticed[i] - rec.ends_at
    sum = sum + lat
    if lat > max then max = lat end
  end
  side.requests = (ps.polls + ps.fetches) / N
  side.latency = sum / N / SCALE
  print(string.format("%-16s %6.1f requests per job (%.1f polls + %.1f fetches), notice latency mean %.2f s, max %.2f s (unscaled)",
    side.name, side.requests, ps.polls / N, ps.fetches / N, side.latency, max / SCALE))
end
emu:stop()
print(string.format("%d jobs per side, run times %g-%g s scaled by %g, %d in flight per side, %.0f s wall",
  N, 60 * SCALE, 300 * SCALE, SCALE, CONC, wall))
print(string.format("requests ratio adaptive/fixed %.2f; mean notice latency %.2f s vs %.2f s",
  sides[1].requests / sides[2].requests, sides[1].latency, sides[2].latency))
