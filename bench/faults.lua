-- N jobs against an emulator that faults 20% of the replies on every route
-- (429s, 5xx, resets, slow replies, broken JSON, dropped submits that still
-- created their job, error bodies, cut downloads), with a journal.
--   lua5.4 bench/faults.lua [N] [seed]
-- Checks, and prints: every job ends completed or with a reported error kind;
-- the jobs the emulator created == the jobs the client knows (no duplicate
-- submits), with every submit_unknown accounted for; every accepted request
-- id is in the journal.
local util = dofile("bench/util.lua")
local kling = require "kling"
local core = require "kling.core"
local journal = require "kling.journal"

local N = tonumber(arg[1]) or 1000
local SEED = arg[2] or "42"

local faults = {
  -- submit: 20%
  "submit:429:0.05:1", "submit:503:0.05", "submit:reset:0.04", "submit:drop_after_create:0.03", "submit:slow:0.03:3",
  -- status: 20%
  "status:429:0.03:1", "status:500:0.03", "status:503:0.04", "status:reset:0.04", "status:truncated_json:0.03",
  "status:malformed_json:0.02", "status:slow:0.01:3",
  -- result: 20%
  "result:502:0.05", "result:504:0.04", "result:reset:0.04", "result:truncated_json:0.04", "result:429date:0.03",
  -- downloads: 20%
  "download:cut:0.1", "download:503:0.1",
}
local args = { "--token", "bench", "--queue", "0:1", "--run", "1:3", "--seed", SEED }
for _, f in ipairs(faults) do args[#args + 1] = "--faults"; args[#args + 1] = f end
local emu = util.start_emulator(args)

local dir = io.popen("mktemp -d"):read("l")
local jpath = dir .. "/jobs.jsonl"
local client = kling.new { base_url = emu.api, token = "bench", timeout = 2, journal = jpath,
  retries = { max = 6, base = 0.05, cap = 1 }, poll = { initial = 0.5, near = 1 } }

local t0 = core.now()
local jobs, submit_errors = {}, {}
kling.run(function()
  local next_i = 0
  for _ = 1, 32 do
    kling.spawn(function()
      while next_i < N do
        next_i = next_i + 1
        local job, err = client:generate { prompt = "faulty " .. next_i }
        if job then jobs[#jobs + 1] = job else submit_errors[#submit_errors + 1] = err end
      end
    end)
  end
end)
local outs, errs = kling.wait_all(jobs, { timeout = 300 })

-- download a sample through cut and faulted transfers
local downloads, download_errors = 0, {}
kling.run(function()
  for i = 1, math.min(100, #jobs) do
    kling.spawn(function()
      if outs[i] then
        local ok, err = jobs[i]:download(dir .. "/clip" .. i .. ".mp4")
        if ok then downloads = downloads + 1 else download_errors[#download_errors + 1] = err.kind .. " (" .. err.message .. ")" end
      end
    end)
  end
end)
local wall = core.now() - t0

local kinds = {}
local function count(k) kinds[k] = (kinds[k] or 0) + 1 end
local completed = 0
for i = 1, #jobs do
  if outs[i] then completed = completed + 1 else count("wait:" .. errs[i].kind) end
end
local unknown = 0
for _, e in ipairs(submit_errors) do
  count("submit:" .. e.kind)
  if e.kind == "submit_unknown" then unknown = unknown + 1 end
end

local stats = emu:stats()
local records = emu:get_json("/__emulator/jobs")
local by_dropped, by_slow = 0, 0
local created = {}
for _, r in ipairs(records) do
  created[r.request_id] = true
  if r.created_by_dropped_submit then by_dropped = by_dropped + 1 end
  if r.submit_fault == "slow" then by_slow = by_slow + 1 end
end
local known_missing = 0
for _, j in ipairs(jobs) do if not created[j.id] then known_missing = known_missing + 1 end end
local jstate = journal.open(jpath):state()
local in_journal = 0
for _, j in ipairs(jobs) do if jstate[j.id] then in_journal = in_journal + 1 end end
emu:stop()
os.execute("rm -rf " .. dir)

print(string.format("%d submits in %.1f s: %d jobs accepted, %d submit errors; %d completed", N, wall, #jobs,
  #submit_errors, completed))
local kl = {}
for k, n in pairs(kinds) do kl[#kl + 1] = k .. " " .. n end
table.sort(kl)
print("error kinds: " .. (#kl > 0 and table.concat(kl, ", ") or "none"))
print(string.format("emulator: %d submit attempts, %d jobs created; faults injected: %s", stats.faults.submit_attempts,
  #records, require("kling.json").encode(stats.faults.injected)))
print(string.format("accounting: %d created = %d accepted + %d of the %d submit_unknown (%d dropped after create, %d answered too late); %d accepted ids unknown to the emulator",
  #records, #jobs, #records - #jobs, unknown, by_dropped, by_slow, known_missing))
print(string.format("journal: %d of %d accepted ids; client retries %d; downloads %d of %d sampled (%s)", in_journal,
  #jobs, client._engine:stats().retries, downloads, math.min(100, #jobs),
  #download_errors > 0 and table.concat(download_errors, ",") or "no errors"))
assert(#records == #jobs + by_dropped + by_slow, "a job was created that the client does not account for")
assert(#records - #jobs <= unknown, "more unknown jobs than submit_unknown answers: a submit was doubled")
assert(known_missing == 0 and in_journal == #jobs)
print("all accounted for")
