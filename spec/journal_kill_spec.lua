-- SIGKILL at random points across 200 submits: processes that submit in a
-- loop (some answers delayed by the emulator) are killed after a random delay,
-- before, during or after a submit's request. Then resume(): every job the
-- service created is either in the journal (and collected) or reported as a
-- submit of unknown outcome (tied to it by the digest of its body); none is
-- missing. The random generator is seeded: KLING_KILL_SEED=N replays a run.
local helpers = require "helpers"
local kling = require "kling"
local core = require "kling.core"

local TOKEN = "kill-token-0c4f"
local q = helpers.quote
local ATTEMPTS = 200
local WORKERS = 4

describe("the journal under SIGKILL at random points", function()
  local emu, dir

  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0.05", "--run", "0.05", "--seed", "7",
      "--faults", "submit:slow:0.3:0.25", "--faults", "submit:slow:0.3:0.05" }
    dir = helpers.tmpdir()
  end)
  teardown(function()
    if emu then emu:stop() end
    os.execute("rm -rf " .. q(dir))
  end)

  it("leaves no job the service created unknown to resume(), over " .. ATTEMPTS .. " submits", function()
    local seed = tonumber(os.getenv("KLING_KILL_SEED")) or (os.time() % 100000)
    print(string.format("\nSIGKILL spec: seed %d (KLING_KILL_SEED=%d replays the kill delays)", seed, seed))
    math.randomseed(seed)
    local path = dir .. "/jobs.jsonl"
    local worker = dir .. "/worker.lua"
    helpers.write_file(worker, string.format([[
      local kling = require "kling"
      local log = assert(io.open(arg[1], "a"))
      log:setvbuf("no")
      local c = kling.new { base_url = %q, token = %q, journal = %q, timeout = 5, on_warning = false }
      for i = 1, 1000 do
        log:write("a ", i, "\n") -- an attempt: the submit may be killed from here on
        local job, err = c:submit(kling.DEFAULT_MODEL, { prompt = arg[2] .. "-" .. i }, { tag = arg[2] .. "-" .. i })
        log:write("r ", i, " ", job and job.id or err.kind, "\n")
      end
    ]], emu.api, TOKEN, path))
    local env = string.format("cd %s && LUA_PATH=%s LUA_CPATH=%s", q(helpers.root), q(helpers.root .. "/lua/?.lua;;"),
      q(helpers.root .. "/build/?.so;;"))

    local attempts, rounds, kills = 0, 0, 0
    local function count_attempts()
      local n = 0
      for r = 1, rounds do
        for w = 1, WORKERS do
          for line in (helpers.read_file(string.format("%s/log-%d-%d", dir, r, w)) or ""):gmatch("[^\n]+") do
            if line:match("^a ") then n = n + 1 end
          end
        end
      end
      return n
    end
    while attempts < ATTEMPTS do
      rounds = rounds + 1
      local parts = {}
      for w = 1, WORKERS do
        -- killed 0 to 0.6 s after its start: before its first submit, or at any point of one
        local delay = math.random() * 0.6
        local name = string.format("w%d-%d", rounds, w)
        parts[#parts + 1] = string.format("( %s lua5.4 %s %s %s >/dev/null 2>&1 & p=$!; sleep %.3f; kill -KILL $p; wait $p ) &",
          env, q(worker), q(string.format("%s/log-%d-%d", dir, rounds, w)), name, delay)
        kills = kills + 1
      end
      os.execute("{ " .. table.concat(parts, " ") .. " wait; } 2>/dev/null")
      attempts = count_attempts()
    end

    local c = kling.new { base_url = emu.api, token = TOKEN, journal = path, poll = { initial = 0.05, near = 0.1 },
      on_warning = false }
    local pending_jobs, unknown = assert(c:resume())
    local jobs, _, unreadable = require("kling.journal").open(path):state()
    local by_digest = {}
    for _, u in ipairs(unknown) do
      if u.digest then by_digest[u.digest] = (by_digest[u.digest] or 0) + 1 end
    end

    local records = emu:get_json("/__emulator/jobs")
    local in_journal, via_unknown, missing = 0, 0, {}
    for _, r in ipairs(records) do
      if jobs[r.request_id] then
        in_journal = in_journal + 1
      else
        local digest = "sha256:" .. core.sha256(emu:job_record(r.request_id).body)
        if (by_digest[digest] or 0) > 0 then
          by_digest[digest] = by_digest[digest] - 1 -- each unknown outcome accounts for one job at most
          via_unknown = via_unknown + 1
        else
          missing[#missing + 1] = r.request_id
        end
      end
    end
    local outs, errs = kling.wait_all(pending_jobs, { timeout = 60 })
    local collected = 0
    for i = 1, #pending_jobs do
      if outs[i] and not errs[i] then collected = collected + 1 end
    end
    print(string.format("SIGKILL spec: %d processes killed over %d rounds; %d submits attempted; the service created %d jobs: "
      .. "%d in the journal (%d collected now), %d reported as unknown outcome (of %d unknown outcomes: the others never "
      .. "reached the service); %d missing; %d unreadable journal lines", kills, rounds, attempts, #records, in_journal,
      collected, via_unknown, #unknown, #missing, unreadable))
    assert.same({}, missing)
    assert.equals(#records, in_journal + via_unknown)
    assert.equals(#pending_jobs, collected)
    assert.is_true(#records > 0)
    c:close()
  end)
end)
