-- The cold-start case of learned polling: 30 jobs of the same run time
-- (60 s times SCALE) submitted at once by a new process, waited on together.
--   lua5.4 bench/coldstart.lua [SCALE] [N] [LIB_DIR]
-- Three processes in turn, against one emulator (no queue):
-- 1. kling's default schedule with a new, empty journal (no history);
-- 2. kling's default schedule in a new process with the journal of 1 (its
--    jobs' run times: history);
-- 3. a fixed 2 s poller (the default schedule's bounds at 2 s, no journal).
-- Poll settings are scaled with the run time (as bench/polling.lua does).
-- Prints, per process: status polls per job, requests per job (polls +
-- result fetches), and the mean notice latency (from the emulator's end of a
-- job, its ends_at, to the client knowing it ended; unscaled seconds); then
-- the ratios to the fixed poller. Goals (issue 13): with history <= 1/3 of
-- the fixed poller's status polls and a mean notice latency <= 4 s; without
-- history no worse than before. LIB_DIR: the kling side from another
-- checkout (its lua/ and build/), e.g. an old build.
-- Internal: bench/coldstart.lua --child MODE API ROOT JOURNAL SCALE N [LIB_DIR]
local child = arg[1] == "--child"
local LIB = child and arg[8] or arg[3]
local util = dofile("bench/util.lua")
if LIB then -- after util.lua, which puts this checkout's lua/ and build/ first
  package.path = LIB .. "/lua/?.lua;" .. package.path
  package.cpath = LIB .. "/build/?.so;" .. package.cpath
end
local kling = require "kling"
local core = require "kling.core"
local helpers = require "helpers"
local cclient = require "kling.client"

local TOKEN = "bench-cold"

if child then
  local mode, api, root, jpath, scale, n = arg[2], arg[3], arg[4], arg[5], tonumber(arg[6]), tonumber(arg[7])
  local poll = {}
  if mode == "fixed" then
    local f = 2 * scale
    poll = { initial = f, min = f, near = f, max = f, factor = 1, jitter = 0 }
  else
    for k, v in pairs(cclient.DEFAULT_POLL) do poll[k] = v end
    for _, k in ipairs { "initial", "min", "near", "max" } do poll[k] = poll[k] * scale end
  end
  local c = kling.new { base_url = api, token = TOKEN, poll = poll, on_warning = false,
    journal = jpath ~= "-" and jpath or nil }
  local jobs = {}
  for i = 1, n do
    jobs[i] = assert(c:generate { prompt = string.format("cold %d @emu:run=%.3f", i, 60 * scale) })
  end
  local noticed = {}
  local outs = kling.wait_all(jobs, {
    timeout = 3600,
    on_update = function(job)
      if not noticed[job.id] and (job.status == "completed" or job.status == "failed" or job.status == "cancelled") then
        noticed[job.id] = core.now()
      end
    end,
  })
  for i = 1, n do assert(outs[i], "job " .. i .. " did not complete") end
  local res = helpers.http("GET", root .. "/__emulator/jobs")
  local records = {}
  for _, r in ipairs(helpers.json(res.body)) do records[r.request_id] = r end
  local polls, fetches, lat = 0, 0, 0
  for _, j in ipairs(jobs) do
    local r = records[j.id]
    polls, fetches = polls + r.status_polls, fetches + r.result_fetches
    lat = lat + ((noticed[j.id] or core.now()) - r.ends_at)
  end
  print(string.format("%.4f %.4f %.4f", polls / n, (polls + fetches) / n, lat / n / scale))
  c:close()
  os.exit(0)
end

local SCALE = tonumber(arg[1]) or 0.25
local N = tonumber(arg[2]) or 30
local emu = util.start_emulator { "--token", TOKEN, "--queue", "0", "--run", "1" }
local dir = io.popen("mktemp -d"):read("l")
local jpath = dir .. "/jobs.jsonl"

local function run(mode, journal)
  local cmd = table.concat({ "lua5.4 bench/coldstart.lua --child", mode, helpers.quote(emu.api), helpers.quote(emu.root),
    helpers.quote(journal), SCALE, N, LIB and helpers.quote(LIB) or "" }, " ")
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  assert(p:close(), out)
  local polls, reqs, lat = out:match("(%S+) (%S+) (%S+)%s*$")
  return { polls = tonumber(polls), requests = tonumber(reqs), latency = tonumber(lat) }
end

local cold = run("kling", jpath)
local warm = run("kling", jpath)
local fixed = run("fixed", "-")
emu:stop()
os.execute("rm -rf " .. helpers.quote(dir))

print(string.format("%d jobs of %g s (60 s scaled by %g) submitted at once, one process each%s", N, 60 * SCALE, SCALE,
  LIB and (", kling from " .. LIB) or ""))
local function line(name, r)
  print(string.format("%-34s %5.1f status polls per job, %5.1f requests per job, mean notice latency %.2f s (unscaled)",
    name, r.polls, r.requests, r.latency))
end
line("kling, no history (new journal)", cold)
line("kling, history (the journal of 1)", warm)
line("fixed 2 s poller", fixed)
print(string.format("status polls over the fixed poller's: no history %.2f, history %.2f (goal <= 0.33 with history, "
  .. "latency <= 4 s)", cold.polls / fixed.polls, warm.polls / fixed.polls))
