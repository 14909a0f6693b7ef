-- N jobs submitted and waited on concurrently in one process, one client,
-- against raw libcurl making the same HTTP requests, in one run:
--   lua5.4 bench/many_jobs.lua [N] [max_connections] [LIB_DIR]
-- Against the emulator in --load mode (each job ends 1-5 s after its submit,
-- in another process: its CPU is not the client's):
-- 1. kling: 64 tasks submit N jobs, then kling.wait_all waits on all of them.
--    Prints wall time, client CPU (os.clock deltas), peak RSS, HTTP requests
--    per job, TCP connections (the client's count and the emulator's),
--    the mean notice latency (the emulator's noticed_at_clock - ends_at), and
--    status polls per job by when the job ended after the waits began: the
--    waits begin once the last job is submitted, so the faster the submits,
--    the younger the jobs are at their first poll and the more polls they get
--    (bench/RESULTS.md, issue 13: 1.9 polls per job with 2 s of submits, 2.3
--    with 0.9 s, the same schedule).
-- 2. raw libcurl (bench/many_jobs_raw.c, built here): the same requests (N
--    submits with the bodies kling sent, as many status GETs as kling made,
--    N result GETs) on one multi handle with the same connection cap, as
--    many transfers at once as kling lets into libcurl (eng:stats()'s
--    active_cap) and the same headers, against the same emulator; its CPU is
--    getrusage of its process.
-- Then the ratio of client CPU per job (goal <= 1.5) and peak RSS against
-- 64 MB (issue 13). The emulator's own request counts (reset between the
-- two) show that both sides made the same requests. LIB_DIR (optional): the
-- kling side from another checkout (its lua/ and build/), e.g. an old build.
-- MANY_JOBS_CALLGRIND=M in the environment (e.g. 300) adds instructions per
-- job of both sides (valgrind --tool=callgrind, kling's side in a child
-- process), as (count for 3M jobs - count for M jobs) / 2M so that start-up
-- cancels out: instruction counts do not depend on the machine's load, CPU
-- seconds do (the kernel's share is in the CPU figures only).
-- Internal: bench/many_jobs.lua --child API N MAXC [LIB_DIR]
local child = arg[1] == "--child"
local LIB = child and arg[5] or arg[3]
local util = dofile("bench/util.lua")
if LIB then -- after util.lua, which puts this checkout's lua/ and build/ first
  package.path = LIB .. "/lua/?.lua;" .. package.path
  package.cpath = LIB .. "/build/?.so;" .. package.cpath
end
local kling = require "kling"
local core = require "kling.core"
local helpers = require "helpers"
local q = helpers.quote

local TOKEN = "bench"
local SUBMITTERS = 64

-- kling's side: n jobs submitted by 64 tasks, then waited on all at once.
-- Returns the jobs, the submits that failed, and the time the waits began.
local function kling_side(client, n)
  local jobs, failed_submits = {}, 0
  kling.run(function()
    -- submit from a pool of tasks (a submit is a request of its own), then wait
    -- on all of them at once: the engine polls every job, no coroutine per job
    local next_i = 0
    for _ = 1, SUBMITTERS do
      kling.spawn(function()
        while next_i < n do
          next_i = next_i + 1
          local job, err = client:generate { prompt = "bench clip " .. next_i, duration = 5 }
          if job then jobs[#jobs + 1] = job else failed_submits = failed_submits + 1; io.stderr:write(tostring(err), "\n") end
        end
      end)
    end
  end)
  local waits_at = core.now() -- the emulator's clock too (CLOCK_MONOTONIC, doc/EMULATOR.md)
  local outs, errs = kling.wait_all(jobs, { timeout = 600 })
  return jobs, failed_submits, waits_at, outs, errs
end

if child then
  local client = kling.new { base_url = arg[2], token = TOKEN, max_connections = tonumber(arg[4]) }
  local jobs, failed_submits, _, outs = kling_side(client, tonumber(arg[3]))
  for i = 1, #jobs do assert(outs[i] and failed_submits == 0, "a job of the child failed") end
  print("polls " .. client._engine:poll_stats().polls)
  os.exit(0)
end

local N = tonumber(arg[1]) or 10000
local MAXC = tonumber(arg[2]) or 8
local CG = tonumber(os.getenv("MANY_JOBS_CALLGRIND") or "")

local sh = util.sh

-- the peer is built before anything is measured
local dir = util.tmpdir()
local raw = util.compile(dir, "many_jobs_raw")

local emu = util.start_emulator { "--token", TOKEN, "--load" }
local client = kling.new { base_url = emu.api, token = TOKEN, max_connections = MAXC }

local rss0 = util.peak_rss_mib()
local t0, c0 = core.now(), util.cpu()
local jobs, failed_submits, waits_at, outs, errs = kling_side(client, N)
local submitted_at = waits_at - t0
local ok, failed = 0, failed_submits
for i = 1, #jobs do
  if outs[i] then ok = ok + 1 else failed = failed + 1; io.stderr:write(tostring(errs[i]), "\n") end
end
local wall, cpu = core.now() - t0, util.cpu() - c0
local rss = util.peak_rss_mib()
local st = client._engine:stats()
local ps = client._engine:poll_stats()
local es = emu:stats()

-- the emulator's view of kling's jobs: notice latency, and status polls by
-- when a job ended after the waits began (they begin once every job is
-- submitted, so a job's polls depend on how long the submits took)
local records = helpers.json(helpers.http("GET", emu.root .. "/__emulator/jobs").body)
local lat, noticed, by_end = 0, 0, {}
for _, r in ipairs(records) do
  if type(r.noticed_at_clock) == "number" then
    lat, noticed = lat + (r.noticed_at_clock - r.ends_at), noticed + 1
  end
  local b = math.max(-1, math.min(5, math.floor(r.ends_at - waits_at)))
  by_end[b] = by_end[b] or { jobs = 0, polls = 0 }
  by_end[b].jobs, by_end[b].polls = by_end[b].jobs + 1, by_end[b].polls + r.status_polls
end
local ends = {}
for b = -1, 5 do
  local e = by_end[b]
  if e then
    local span = b == -1 and "before" or b == 5 and "5 s on" or string.format("%d-%d s", b, b + 1)
    ends[#ends + 1] = string.format("%s %d jobs %.2f", span, e.jobs, e.polls / e.jobs)
  end
end

-- what kling sent for its first job, for the peer to send the same: the body
-- of "bench clip 1" cut around its 1, and the User-Agent
local first
for _, j in ipairs(jobs) do
  local r = emu:job_record(j.id)
  if r.body:find("bench clip 1\"", 1, true) then first = r break end
end
assert(first, "no job of kling's with the prompt \"bench clip 1\"")
local at = first.body:find("bench clip 1\"", 1, true) + #"bench clip "
local prefix, suffix = first.body:sub(1, at - 1), first.body:sub(at + 1)
local model = jobs[1].model

emu:reset() -- the peer's requests counted on their own
local out = sh(table.concat({ q(raw), q(emu.api), TOKEN, N, MAXC, ps.polls, q(model), q(prefix), q(suffix),
  q(first.headers["user-agent"]), st.active_cap }, " "))
local r = {}
for k, v in out:gmatch("(%S+) (%S+)") do r[k] = tonumber(v) end
assert(r.cpu, "no figures from the raw peer: " .. out)
local rs = emu:stats()

-- instructions per job (callgrind), both sides against the same emulator
local cg
if CG then
  local instructions = util.instructions
  local function both(n)
    local ki, o = instructions(table.concat({ "lua5.4 bench/many_jobs.lua --child", q(emu.api), n, MAXC,
      LIB and q(LIB) or "" }, " "))
    local polls = assert(tonumber(o:match("polls (%d+)")), "no poll count from the child: " .. o)
    local ri = instructions(table.concat({ q(raw), q(emu.api), TOKEN, n, MAXC, polls, q(model), q(prefix), q(suffix),
      q(first.headers["user-agent"]), st.active_cap }, " "))
    return ki, ri
  end
  local k1, r1 = both(CG)
  local k3, r3 = both(3 * CG)
  cg = { kling = (k3 - k1) / (2 * CG), raw = (r3 - r1) / (2 * CG) }
end
emu:stop()
os.execute("rm -rf " .. q(dir))

print(string.format("jobs %d: completed %d, failed %d%s", N, ok, failed, LIB and (", kling from " .. LIB) or ""))
print(string.format("all submitted after %.2f s (%d submitting tasks)", submitted_at, SUBMITTERS))
print(string.format("wall %.2f s, client CPU %.2f s, peak RSS %.1f MiB (%.1f MiB before the jobs)", wall, cpu, rss, rss0))
print(string.format("HTTP requests %d (%.2f per job: 1 submit, %.2f status polls, %.2f result fetches), retries %d",
  st.requests, st.requests / N, ps.polls / N, ps.fetches / N, ps.retries))
print(string.format("mean notice latency %.3f s (the emulator's noticed_at_clock - ends_at, over %d jobs)",
  noticed > 0 and lat / noticed or 0 / 0, noticed))
print("status polls per job by when the job ended, from the start of the waits: " .. table.concat(ends, ", "))
print(string.format("TCP connections: the client opened %d, at most %d open at once (max_connections %d)",
  st.sockets_opened, st.sockets_peak, MAXC))
print(string.format("the emulator accepted %d, counted at most %d open at once (it notices a close late)",
  es.connections.total, es.connections.peak))
print(string.format("API transfers in libcurl at once: kling at most %d (its cap %d), raw libcurl at most %d",
  st.active_peak, st.active_cap, st.active_cap))
print(string.format("raw libcurl (one multi handle, at most %d connections): wall %.2f s, client CPU %.2f s, peak RSS %.1f MiB",
  MAXC, r.wall, r.cpu, r.rss_mib))
print(string.format("raw libcurl requests: %d submits, %d status polls, %d result fetches (%d said completed); "
  .. "connections opened %d", r.submits, r.polls, r.results, r.completed, r.connections))
print(string.format("the emulator counted: kling %d submits, %d status, %d result; raw libcurl %d submits, %d status, %d result",
  es.requests.submit, es.requests.status, es.requests.result, rs.requests.submit, rs.requests.status, rs.requests.result))
if es.requests.submit ~= rs.requests.submit or es.requests.status ~= rs.requests.status
  or es.requests.result ~= rs.requests.result then
  print("WARNING: the two sides did not make the same requests: the ratio below compares different work")
end
print(string.format("client CPU per job: kling %.3f ms, raw libcurl %.3f ms: ratio %.2f (goal <= 1.5)",
  cpu / N * 1e3, r.cpu / N * 1e3, cpu / r.cpu))
print(string.format("peak RSS: kling %.1f MB (goal < 64 MB), raw libcurl %.1f MB", rss * 1.048576, r.rss_mib * 1.048576))
if cg then
  print(string.format("callgrind, instructions per job (%d and %d jobs): kling %.0fk, raw libcurl %.0fk: ratio %.2f",
    CG, 3 * CG, cg.kling / 1e3, cg.raw / 1e3, cg.kling / cg.raw))
end
