-- kling's cost per status request against raw libcurl, in one run:
--   lua5.4 bench/overhead.lua [N] [LIB_DIR]
-- Against the emulator on loopback (plain HTTP/1.1):
-- - N sequential job:refresh() vs a raw libcurl easy loop (bench/overhead_raw.c,
--   built here) making the same GETs with the same header lines (kling's
--   User-Agent too): client CPU in
--   BENCH_ROUNDS (default 9) rounds, each running both sides in turn; the
--   ratio printed is the median of the rounds' ratios (BENCH_VERBOSE=1 prints
--   each round).
-- - N concurrent refreshes inside kling.run (max_connections 8) vs a raw
--   libcurl multi loop with the same connection cap: client CPU.
-- - callgrind (valgrind --tool=callgrind): instructions per request of both,
--   as (count for 3M requests - count for M requests) / 2M, so that start-up
--   cancels out; instruction counts do not depend on the machine's load.
-- Prints each figure and the ratios. LIB_DIR (optional): the kling side from
-- another checkout (its lua/ and build/), for a before/after in one session.
-- Internal: bench/overhead.lua --child seq|run BASE TOKEN ID N [LIB_DIR]
local LIB = arg[1] == "--child" and arg[7] or arg[2]
local util = dofile("bench/util.lua")
if LIB then -- after util.lua, which puts this checkout's lua/ and build/ first
  package.path = LIB .. "/lua/?.lua;" .. package.path
  package.cpath = LIB .. "/build/?.so;" .. package.cpath
end
local kling = require "kling"

local TOKEN = os.getenv("BENCH_TOKEN") or "bench-overhead"

local function refreshes(mode, base, id, n)
  local c = kling.new { base_url = base, token = TOKEN, on_warning = false, max_connections = 8 }
  local job = assert(c:job(id))
  assert(job:refresh()) -- the connection, the first answer
  local c0 = util.cpu()
  if mode == "seq" then
    for _ = 1, n do assert(job:refresh()) end
  else
    kling.run(function()
      for _ = 1, n do kling.spawn(function() assert(job:refresh()) end) end
    end)
  end
  local cpu = util.cpu() - c0
  c:close()
  return cpu
end

if arg[1] == "--child" then
  local cpu = refreshes(arg[2], arg[3], arg[5], tonumber(arg[6]))
  print(string.format("%.6f", cpu))
  os.exit(0)
end

local N = tonumber(arg[1]) or 2000
local M = 100 -- requests of the smaller callgrind run

local sh = util.sh
local q = require("helpers").quote

local dir = util.tmpdir()
local raw = util.compile(dir, "overhead_raw")

local emu = util.start_emulator { "--token", TOKEN, "--queue", "0", "--run", "0" }
local c = kling.new { base_url = emu.api, token = TOKEN, on_warning = false }
local job = assert(c:generate { prompt = "a cat asked after many times @emu:queue=100000" })
c:close()
local url = job.urls.status
local ua = assert(emu:job_record(job.id).headers["user-agent"]) -- the peer sends kling's User-Agent too

local function raw_cpu(mode, n)
  local out = sh(table.concat({ q(raw), mode, q(url), TOKEN, n, q(ua), mode == "multi" and 8 or "" }, " "))
  return tonumber(out:match("^(%S+)"))
end

local instructions = util.instructions

local function per_request_instr(kling_mode, raw_mode)
  local function kcmd(n)
    return table.concat({ "lua5.4 bench/overhead.lua --child", kling_mode, q(emu.api), TOKEN, job.id, n, LIB and q(LIB) or "" }, " ")
  end
  local function rcmd(n)
    return table.concat({ q(raw), raw_mode, q(url), TOKEN, n, q(ua), raw_mode == "multi" and 8 or "" }, " ")
  end
  local k = (instructions(kcmd(3 * M)) - instructions(kcmd(M))) / (2 * M)
  local r = (instructions(rcmd(3 * M)) - instructions(rcmd(M))) / (2 * M)
  return k, r
end

-- CPU: ROUNDS rounds, kling and raw libcurl one after the other in each; the
-- ratio is the median of the rounds' ratios (this machine's speed drifts by 2x
-- over seconds, under other tenants' load: both sides of a round see the same)
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS")) or 9
local function median(t)
  table.sort(t)
  local n = #t
  return n % 2 == 1 and t[(n + 1) / 2] or (t[n / 2] + t[n / 2 + 1]) / 2
end
local ks, rs, kr, rr = {}, {}, {}, {}
for i = 1, ROUNDS do
  ks[i] = refreshes("seq", emu.api, job.id, N)
  rs[i] = raw_cpu("easy", N)
  kr[i] = refreshes("run", emu.api, job.id, 200)
  rr[i] = raw_cpu("multi", 200)
end
local qs, qr = {}, {}
for i = 1, ROUNDS do qs[i], qr[i] = ks[i] / rs[i], kr[i] / rr[i] end
local kseq, rseq, krun, rrun = median(ks), median(rs), median(kr), median(rr)
local ratio_seq, ratio_run = median(qs), median(qr)
if os.getenv("BENCH_VERBOSE") then
  for i = 1, ROUNDS do
    print(string.format("round %d: seq %.1f / %.1f us = %.2f; run %.1f / %.1f us = %.2f", i, ks[i] / N * 1e6, rs[i] / N * 1e6,
      ks[i] / rs[i], kr[i] / 200 * 1e6, rr[i] / 200 * 1e6, kr[i] / rr[i]))
  end
end
local ki_seq, ri_seq = per_request_instr("seq", "easy")
local ki_run, ri_run = per_request_instr("run", "multi")
emu:stop()
os.execute("rm -rf " .. q(dir))

print(string.format("status GETs on loopback (HTTP/1.1)%s; CPU: medians of %d rounds (ratio: the median of the rounds' ratios)", LIB and (", kling from " .. LIB) or "", ROUNDS))
print(string.format("sequential, %d requests: kling job:refresh() %.1f us CPU each, raw libcurl easy loop %.1f us: ratio %.2f (goal <= 1.2)",
  N, kseq / N * 1e6, rseq / N * 1e6, ratio_seq))
print(string.format("200 at once (8 connections): kling.run refreshes %.1f us CPU each, raw libcurl multi loop %.1f us: ratio %.2f (goal <= 1.3)",
  krun / 200 * 1e6, rrun / 200 * 1e6, ratio_run))
print(string.format("callgrind, instructions per request: sequential kling %.1fk, raw easy %.1fk: ratio %.2f", ki_seq / 1e3,
  ri_seq / 1e3, ki_seq / ri_seq))
print(string.format("callgrind, instructions per request: %d at once in kling.run %.1fk, raw multi (cap 8) %.1fk: ratio %.2f",
  M, ki_run / 1e3, ri_run / 1e3, ki_run / ri_run))
