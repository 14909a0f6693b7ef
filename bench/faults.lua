-- Faults of the network and of the disk, each over N jobs:
--   lua5.4 bench/faults.lua [N] [seed] [phases]
-- phases: a comma-separated list of network, journal, download (default: all
-- three, in that order), e.g. `lua5.4 bench/faults.lua 1000 42` or
-- `lua5.4 bench/faults.lua 1000 42 journal,download`. Each phase asserts what
-- it prints and ends with a line "...: all accounted for"; a failed assertion
-- stops the script with an error (exit status 1).
--
-- network: an emulator that faults 20% of the replies on every route (429s,
-- 5xx, resets, slow replies, broken JSON, dropped submits that still created
-- their job, error bodies, cut downloads), with a journal. Checks, and prints:
-- every job ends completed or with a reported error kind; the jobs the
-- emulator created == the jobs the client knows (no duplicate submits), with
-- every submit_unknown accounted for; the submits that reached the emulator
-- == the submits sent + the 429s (0 doubled: no submit replayed on a new
-- connection after a reused one was reset); every accepted request id is in
-- the journal.
--
-- journal: the journal on a small tmpfs that fills up and gets its space back
-- over and over while submits run until N jobs were accepted (each waited on
-- at once, so the ends are journaled meanwhile), with some submit answers lost. Checks, and prints: jobs created by the
-- emulator == jobs known to the caller (ids returned, or unknown-outcome
-- records in the journal tied to the job by the digest of its body); no line
-- (prompt) sent twice; nothing sent for a submit refused with kind io; no
-- torn line left in the journal; every wait ended without raising. Needs root
-- (mount); skipped with a message otherwise.
--
-- download: the videos of N completed jobs (each of its own size, 16 to 512
-- KiB, and its own bytes: @emu:bytes and @emu:pattern) downloaded, 6 at a
-- time, into a 4 MiB tmpfs, with 10% of the file host's answers cut in the
-- middle and 10% answered 503. The finished files fill the tmpfs; a download
-- that fails with kind io frees it (every finished file is checked again,
-- then deleted) and the same path is downloaded again, going on from its
-- .part. Checks, and prints: jobs created == ids known; every download ends
-- with a file whose bytes are exactly the job's video (against the pattern,
-- and against the same file fetched with the curl CLI: size and SHA-256);
-- every disk failure is kind io, not retryable, with err.path (the .part or
-- its sidecar) and the system's reason; what a failed call leaves is a .part
-- of verified bytes (a prefix of the video, never 0 bytes) with its sidecar,
-- and never the final file; the next call sends Range from the .part's size;
-- no .part or sidecar is left beside a finished file or on the tmpfs at the
-- end; the token never goes to the file host. Counts: calls, requests, io
-- failures by file, resumes from a .part, start-overs, in-call retries, 416s.
-- Needs root (mount); skipped with a message otherwise.
package.path = "lua/?.lua;spec/?.lua;" .. package.path
local util = dofile("bench/util.lua")
local kling = require "kling"
local core = require "kling.core"
local journal = require "kling.journal"
local json = require "kling.json"

local N = tonumber(arg[1]) or 1000
local SEED = arg[2] or "42"
local PHASES = {}
for p in (arg[3] or "network,journal,download"):gmatch("[^,]+") do
  if p ~= "network" and p ~= "journal" and p ~= "download" then
    io.stderr:write("bench/faults.lua: unknown phase '", p, "' (network, journal, download)\n")
    os.exit(2)
  end
  PHASES[p] = true
end

local function network_phase()
  local faults = {
    -- submit: 20% (reset_reused: a kept-alive connection the server closed; the submit must
    -- not be sent again by libcurl)
    "submit:429:0.04:1", "submit:503:0.04", "submit:reset:0.03", "submit:reset_reused:0.03",
    "submit:drop_after_create:0.03", "submit:slow:0.03:3",
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
  -- submit_timeout 2: a submit answered 3 s late (submit:slow) ends submit_unknown, its job
  -- created (a submit waits 90 s by default)
  local client = kling.new { base_url = emu.api, token = "bench", timeout = 2, submit_timeout = 2, journal = jpath,
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
  -- every submit reaches the emulator once, plus once more after each 429 it answered (the one
  -- answer kling asks again after; 6 retries make running out of them negligible): any other
  -- attempt is a submit sent twice (libcurl replaying a POST on a new connection)
  local inj = stats.faults.injected.submit or {}
  local doubled = stats.faults.submit_attempts - N - (inj["429"] or 0)
  print(string.format("submits: %d sent by the caller, %d attempts at the emulator, %d answered 429, %d reset on a reused connection; %d doubled; connections opened %d",
    N, stats.faults.submit_attempts, inj["429"] or 0, inj.reset_reused or 0, doubled, client._engine:stats().sockets_opened))
  print(string.format("accounting: %d created = %d accepted + %d of the %d submit_unknown (%d dropped after create, %d answered too late); %d accepted ids unknown to the emulator",
    #records, #jobs, #records - #jobs, unknown, by_dropped, by_slow, known_missing))
  print(string.format("journal: %d of %d accepted ids; client retries %d; downloads %d of %d sampled (%s)", in_journal,
    #jobs, client._engine:stats().retries, downloads, math.min(100, #jobs),
    #download_errors > 0 and table.concat(download_errors, ",") or "no errors"))
  assert(#records == #jobs + by_dropped + by_slow, "a job was created that the client does not account for")
  assert(#records - #jobs <= unknown, "more unknown jobs than submit_unknown answers: a submit was doubled")
  assert(known_missing == 0 and in_journal == #jobs)
  assert(doubled == 0, "a submit reached the emulator more often than it was sent")
  print("all accounted for")
end

-- The journal on a small tmpfs that fills up and gets its space back while
-- N submits (and their waits) run.
local function journal_phase()
  local disk = require "disk"
  local http = require "socket.http"
  local dir = io.popen("mktemp -d"):read("l")
  local mnt = dir .. "/journal-fs"
  local ok, why = disk.mount_tmpfs(mnt, "1m")
  if not ok then
    print("journal disk faults: skipped: " .. why .. " (run as root)")
    os.execute("rm -rf " .. dir)
    return
  end
  local emu = util.start_emulator { "--token", "bench", "--queue", "0:0.5", "--run", "0.5:1.5", "--seed", SEED,
    "--faults", "submit:drop_after_create:0.03", "--faults", "submit:slow:0.02:3" }
  local jpath = mnt .. "/jobs.jsonl"
  local client = kling.new { base_url = emu.api, token = "bench", timeout = 2, submit_timeout = 2, journal = jpath,
    on_warning = false, retries = { max = 6, base = 0.05, cap = 1 }, poll = { initial = 0.5, near = 1 } }

  -- the filesystem fills up (a file takes every free block) and gets its space back, every 0.1 to 0.3 s
  local full, toggles, done = false, 0, false
  local chunk = string.rep("\0", 4096)
  local function fill()
    local f = assert(io.open(mnt .. "/.fill", "wb"))
    f:setvbuf("no")
    while f:write(chunk) do end
    f:close()
  end
  local rng = math.random
  math.randomseed(tonumber(SEED) or 42)

  local t0 = core.now()
  local attempts, jobs, io_errors, unknown_errors, other_errors = {}, {}, {}, {}, {}
  local with_journal_error = 0
  local submit_error = {} -- job -> its journal_error after submit (a later one is its end's)
  local outs, waiting = {}, 0
  kling.run(function()
    kling.spawn(function()
      while not done do
        -- full for 0.05 to 0.15 s, free for 0.1 to 0.3 s
        client:sleep(full and 0.05 + rng() * 0.1 or 0.1 + rng() * 0.2, function() return done end)
        if done then break end
        if full then os.remove(mnt .. "/.fill") else fill() end
        full, toggles = not full, toggles + 1
      end
    end)
    local next_i, running = 0, 0
    for _ = 1, 16 do
      running = running + 1
      kling.spawn(function()
        while #jobs < N and next_i < 3 * N do -- until N jobs were accepted
          next_i = next_i + 1
          local i = next_i
          client:sleep(0.04) -- paced (about 400 submits/s) so that the disk fills up many times meanwhile
          local input = { prompt = "disk " .. SEED .. " " .. i }
          local _, sent = kling.validate(input)
          attempts[i] = "sha256:" .. core.sha256(json.encode(sent)) -- the body's digest, as the intent has it
          local job, err = client:generate(input)
          if job then
            jobs[#jobs + 1] = job
            local k = #jobs
            waiting = waiting + 1
            kling.spawn(function() -- waited on at once: the ends come while the disk fills and empties
              outs[k] = job:wait { timeout = 120 }
              waiting = waiting - 1
            end)
            if job.journal_error then with_journal_error = with_journal_error + 1 end
            submit_error[job] = job.journal_error
          elseif err.kind == "io" then
            io_errors[#io_errors + 1] = i
          elseif err.kind == "submit_unknown" then
            unknown_errors[#unknown_errors + 1] = err
          else
            other_errors[#other_errors + 1] = err.kind
          end
        end
        running = running - 1
      end)
    end
    while running > 0 or waiting > 0 do
      client:sleep(0.05, function() return running == 0 and waiting == 0 end)
    end
    done = true
  end)
  local wall = core.now() - t0
  os.remove(mnt .. "/.fill")

  local completed, ended_unjournaled = 0, 0
  for i, job in ipairs(jobs) do
    if outs[i] then completed = completed + 1 end
    if job.journal_error ~= submit_error[job] then ended_unjournaled = ended_unjournaled + 1 end
  end
  local jstate, unknown, unreadable = assert(journal.open(jpath):state())
  local unknown_by_digest, unknown_records = {}, 0
  for _, u in ipairs(unknown) do
    unknown_records = unknown_records + 1
    if u.digest then unknown_by_digest[u.digest] = (unknown_by_digest[u.digest] or 0) + 1 end
  end
  local returned = {}
  for _, job in ipairs(jobs) do returned[job.id] = true end

  -- every job the emulator created, with the digest of the body it received
  local records = emu:get_json("/__emulator/jobs")
  local created_digest, seen, twice = {}, {}, 0
  for _, r in ipairs(records) do
    local body = assert(http.request(emu.root .. "/__emulator/jobs/" .. r.request_id))
    local d = "sha256:" .. core.sha256(json.decode(body).body)
    created_digest[r.request_id] = d
    if seen[d] then twice = twice + 1 end
    seen[d] = true
  end
  local known_by_id, known_by_unknown, missing, returned_not_created = 0, 0, 0, 0
  for _, r in ipairs(records) do
    if returned[r.request_id] then
      known_by_id = known_by_id + 1
    elseif (unknown_by_digest[created_digest[r.request_id]] or 0) > 0 then
      unknown_by_digest[created_digest[r.request_id]] = unknown_by_digest[created_digest[r.request_id]] - 1
      known_by_unknown = known_by_unknown + 1
    else
      missing = missing + 1
    end
  end
  for id in pairs(returned) do
    if not created_digest[id] then returned_not_created = returned_not_created + 1 end
  end
  local io_sent = 0
  for _, i in ipairs(io_errors) do
    if seen[attempts[i]] then io_sent = io_sent + 1 end
  end
  local in_journal = 0 -- a submitted line recorded (an ended line alone does not count)
  for _, job in ipairs(jobs) do if jstate[job.id] and jstate[job.id].intent then in_journal = in_journal + 1 end end
  local stats = emu:stats()
  emu:stop()
  disk.umount(mnt)
  os.execute("rm -rf " .. dir)

  print(string.format("journal on a 1 MiB tmpfs, full and free again %d times: %d submits in %.1f s: %d jobs returned "
    .. "(%d of them with journal_error: id returned, intent left open), %d refused with kind io (nothing sent), "
    .. "%d submit_unknown, %d other errors; %d completed", toggles, #attempts, wall, #jobs, with_journal_error, #io_errors,
    #unknown_errors, #other_errors, completed))
  print(string.format("emulator: %d submit attempts, %d jobs created; faults injected: %s", stats.faults.submit_attempts,
    #records, json.encode(stats.faults.injected)))
  print(string.format("accounting: %d created = %d known by the id returned + %d known by an unknown-outcome record in "
    .. "the journal (of %d such records); %d created jobs unknown to the caller; %d returned ids the emulator lacks; "
    .. "%d lines sent twice; %d io-refused submits that reached the emulator", #records, known_by_id, known_by_unknown,
    unknown_records, missing, returned_not_created, twice, io_sent))
  print(string.format("journal: %d of %d returned ids in a submitted line (the others: intent left open, id returned), "
    .. "%d ends not recorded (their waits ended all the same), %d unreadable lines", in_journal, #jobs,
    ended_unjournaled, unreadable))
  assert(missing == 0, "a job was created that the caller does not know of")
  assert(#records == known_by_id + known_by_unknown)
  assert(returned_not_created == 0 and twice == 0 and io_sent == 0, "a line was sent twice, or sent after an io refusal")
  assert(unreadable == 0, "a torn line was left in the journal")
  assert(in_journal + with_journal_error == #jobs, "a returned id is neither journaled nor flagged")
  assert(#io_errors > 0 and toggles > 2, "the disk never filled up: the bench tested nothing")
  print("journal disk faults: all accounted for")
end

-- Downloads on a small tmpfs that fills up mid-run, over and over: the videos
-- of N completed jobs (each of its own size and its own bytes), W at a time,
-- with cuts and 503s on the file host. Finished files stay on the tmpfs (they
-- are what fills it); a download that fails with kind io frees the space (each
-- finished file is checked again, then deleted) and its path is downloaded
-- again at once, going on from its .part.
local function disk_download_phase()
  local disk = require "disk"
  local http = require "socket.http"
  local emulator = require "kling.emulator"
  local FS, W = "4m", 6                       -- the tmpfs, and downloads at once
  local MIN, MAX = 16 * 1024, 512 * 1024      -- video sizes (bytes): W of the largest take half the tmpfs
  local MAX_CALLS = 60                        -- download calls per job before the bench gives up on it
  local dir = io.popen("mktemp -d"):read("l")
  local mnt = dir .. "/download-fs"
  local ok, why = disk.mount_tmpfs(mnt, FS)
  if not ok then
    print("download disk faults: skipped: " .. why .. " (run as root)")
    os.execute("rm -rf " .. dir)
    return
  end
  local emu = util.start_emulator { "--token", "bench", "--queue", "0", "--run", "0", "--seed", SEED,
    "--faults", "download:cut:0.1", "--faults", "download:503:0.1" }
  local client = kling.new { base_url = emu.api, token = "bench", timeout = 5, on_warning = false,
    retries = { max = 6, base = 0.02, cap = 0.2 }, poll = { initial = 0.5, near = 1 } }

  -- N jobs, each with a size of its own and the pattern shifted by its own amount
  math.randomseed(tonumber(SEED) or 42)
  local sizes, shifts, used = {}, {}, {}
  for i = 1, N do
    local s
    repeat s = math.random(MIN, MAX) until not used[s]
    used[s], sizes[i], shifts[i] = true, s, math.random(0, 250)
  end
  local function expected(i, n) return emulator.pattern_bytes(shifts[i], n or sizes[i]) end

  local t0 = core.now()
  local jobs, submit_errors = {}, 0
  kling.run(function()
    local next_i = 0
    for _ = 1, 16 do
      kling.spawn(function()
        while next_i < N do
          next_i = next_i + 1
          local i = next_i
          local job = client:generate { prompt = string.format("download %s %d @emu:bytes=%d @emu:pattern=%d", SEED, i,
            sizes[i], shifts[i]) }
          if job then jobs[i] = job else submit_errors = submit_errors + 1 end
        end
      end)
    end
  end)
  assert(submit_errors == 0, "a submit failed (no submit faults in this phase)")
  local outs = kling.wait_all(jobs, { timeout = 120 })
  local completed = 0
  for i = 1, N do if outs[i] then completed = completed + 1 end end
  assert(completed == N, "a job did not complete")

  local function size_of(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local n = f:seek("end")
    f:close()
    return n
  end
  local function read(path)
    local f = assert(io.open(path, "rb"))
    local data = f:read("a")
    f:close()
    return data
  end
  local function file_requests(i) -- what the file host saw of job i's file
    local body, code = http.request(emu.root .. "/__emulator/jobs/" .. jobs[i].id)
    assert(code == 200, "the emulator's job record: " .. tostring(code))
    return json.decode(body).file_requests
  end

  local c = { calls = 0, io = 0, io_bad = 0, resumed = 0, resumed_bytes = 0, start_over = 0, fresh = 0,
    range_wrong = 0, no_request = 0, in_call_resume = 0, in_call_restart = 0, fills = 0, freed_files = 0,
    corrupt_files = 0, corrupt_parts = 0, empty_parts = 0, parts_kept = 0, part_no_meta = 0, leftovers = 0,
    final_on_failure = 0, gave_up = 0, requests = 0, bytes = 0, in_call_wrong = 0, lost_parts = 0,
    complete_416 = 0, retried_after_io = 0, io_whole_part = 0 }
  local io_by_file, other_kinds, problems = {}, {}, {}
  local function problem(text) if #problems < 10 then problems[#problems + 1] = text end end
  local paths, calls, seen, done, hashes, kept = {}, {}, {}, {}, {}, {}
  for i = 1, N do paths[i], calls[i], seen[i] = mnt .. "/clip" .. i .. ".mp4", 0, 0 end

  -- the disk is full: each finished file is checked again and deleted
  local function free_space(final)
    if #kept == 0 then return end
    for _, i in ipairs(kept) do
      if read(paths[i]) ~= expected(i) then
        c.corrupt_files = c.corrupt_files + 1
        problem("clip" .. i .. ".mp4 changed after its download finished")
      end
      os.remove(paths[i])
    end
    if not final then c.fills = c.fills + 1 end
    c.freed_files, kept = c.freed_files + #kept, {}
  end

  -- one call of job:download for job i; true when the file is there
  local function attempt(i)
    local path = paths[i]
    local part, meta = path .. ".part", path .. ".part.meta"
    local had = size_of(part) or 0
    calls[i], c.calls = calls[i] + 1, c.calls + 1
    local got, n = jobs[i]:download(path, { stall_timeout = 5 })
    -- the requests of this call, as the file host saw them: the first goes on
    -- from the .part (Range: bytes=SIZE-) or starts from 0 (no Range)
    local list = file_requests(i)
    assert(#list < 100, "the emulator keeps the last 100 requests of a file: too many for this count")
    local short_flush -- a try after a cut that went on from before where the cut stopped
    for k = seen[i] + 1, #list do
      local r = list[k].range
      r = type(r) == "string" and r or nil
      c.requests = c.requests + 1
      if list[k].status == 416 then c.complete_416 = c.complete_416 + 1 end
      if k > seen[i] + 1 then
        -- a try again within the call: after a cut, from where the cut left the .part (the
        -- emulator sends the first half of what was asked), after a 503 from where the last began;
        -- from before that point only when the bytes of the cut try could not all be written
        local prev = list[k - 1]
        local from = tonumber(type(prev.range) == "string" and prev.range:match("^bytes=(%d+)%-$")) or 0
        local upto = prev.fault == "cut" and from + (sizes[i] - from) // 2 or from
        local at = r and tonumber(r:match("^bytes=(%d+)%-$")) or 0
        if r then c.in_call_resume = c.in_call_resume + 1 else c.in_call_restart = c.in_call_restart + 1 end
        if at < upto and at >= from and (at > 0 or not r) then
          short_flush = short_flush or { k = k, at = at, upto = upto }
        elseif at ~= upto or (at == 0 and r) then
          c.in_call_wrong = c.in_call_wrong + 1
          problem(string.format("clip%d: after %s (%s), a try with %s", i, tostring(prev.fault), tostring(prev.range),
            tostring(r)))
        end
      elseif had > 0 then
        if r == "bytes=" .. had .. "-" then
          c.resumed, c.resumed_bytes = c.resumed + 1, c.resumed_bytes + had
        elseif r then
          c.range_wrong = c.range_wrong + 1
          problem(string.format("clip%d: %s with a .part of %d bytes", i, r, had))
        else
          c.start_over = c.start_over + 1
        end
      elseif r then
        c.range_wrong = c.range_wrong + 1
        problem(string.format("clip%d: %s without a .part", i, r))
      else
        c.fresh = c.fresh + 1
      end
    end
    if #list == seen[i] then c.no_request = c.no_request + 1 end
    seen[i] = #list
    if short_flush then
      -- the .part could not take the cut try's bytes (the disk was full), and yet the download
      -- was tried again: an io error is not retryable, and such a call must end with kind io
      c.retried_after_io = c.retried_after_io + 1
      if got or n.kind ~= "io" then
        c.in_call_wrong = c.in_call_wrong + 1
        problem(string.format("clip%d: a try from byte %d after a cut at byte %d, and the call ended %s", i,
          short_flush.at, short_flush.upto, got and "well" or n.kind))
      end
    end

    if got then
      if got ~= path or n ~= sizes[i] then
        c.corrupt_files = c.corrupt_files + 1
        problem(string.format("clip%d: download returned %s, %s for %d bytes", i, tostring(got), tostring(n), sizes[i]))
      end
      if size_of(part) or size_of(meta) or size_of(meta .. ".tmp") then
        c.leftovers = c.leftovers + 1
        problem("clip" .. i .. ": a .part or its sidecar left beside the finished file")
      end
      local data = read(path)
      if data ~= expected(i) then
        c.corrupt_files = c.corrupt_files + 1
        problem(string.format("clip%d.mp4: %d bytes, not the job's %d-byte video", i, #data, sizes[i]))
      end
      hashes[i], done[i] = core.sha256(data), true
      c.bytes = c.bytes + #data
      kept[#kept + 1] = i
      return true
    end

    local err = n
    if err.kind == "io" then
      c.io = c.io + 1
      local p = err.path
      local which = p == part and ".part" or p == meta .. ".tmp" and ".part.meta.tmp" or p == meta and ".part.meta"
        or p == path and "the file" or p == mnt and "the directory" or nil
      if which and err.retryable == false and err.message:find(p, 1, true)
          and err.message:find("No space left on device", 1, true) then
        io_by_file[which] = (io_by_file[which] or 0) + 1
      else
        c.io_bad = c.io_bad + 1
        problem(string.format("clip%d: io error with path %s: %s", i, tostring(p), err.message))
      end
    else
      other_kinds[err.kind] = (other_kinds[err.kind] or 0) + 1
      if err.kind ~= "network" then problem(string.format("clip%d: %s: %s", i, err.kind, err.message)) end
    end
    -- what a failure leaves: a .part of verified bytes only (a prefix of the video), with its sidecar
    local psize = size_of(part)
    if psize then
      c.parts_kept = c.parts_kept + 1
      if psize == sizes[i] and err.kind == "io" then c.io_whole_part = c.io_whole_part + 1 end
      if psize == 0 then
        c.empty_parts = c.empty_parts + 1
        problem("clip" .. i .. ": a 0-byte .part left")
      elseif psize > sizes[i] or read(part) ~= expected(i, psize) then
        c.corrupt_parts = c.corrupt_parts + 1
        problem(string.format("clip%d: a .part of %d bytes that is not a prefix of the video", i, psize))
      end
      if not size_of(meta) then c.part_no_meta = c.part_no_meta + 1 end
    elseif had > 0 then
      c.lost_parts = c.lost_parts + 1
      problem(string.format("clip%d: the .part of %d verified bytes is gone after a failed call (%s)", i, had, err.kind))
    end
    if size_of(path) then
      c.final_on_failure = c.final_on_failure + 1
      problem("clip" .. i .. ".mp4 in place after a failed download")
    end
    return false, err.kind
  end

  local t1 = core.now()
  kling.run(function()
    local next_i, active, retry = 0, 0, {}
    for _ = 1, W do
      kling.spawn(function()
        while true do
          -- a path that failed is downloaded again first, so at most W videos are unfinished at a time
          local i
          if #retry > 0 then
            i = table.remove(retry, 1)
          elseif next_i < N then
            next_i = next_i + 1
            i = next_i
          elseif active == 0 then
            break
          end
          if i then
            active = active + 1
            local finished_now, kind = attempt(i)
            active = active - 1
            if not finished_now then
              if kind == "io" then free_space() end
              if calls[i] >= MAX_CALLS then c.gave_up = c.gave_up + 1 else retry[#retry + 1] = i end
            end
          else
            client:sleep(0.01) -- one still running may fail and come back
          end
        end
      end)
    end
  end)
  local wall = core.now() - t1
  free_space(true)
  local left = {}
  for name in io.popen("ls -A " .. mnt):lines() do left[#left + 1] = name end

  -- what the file host serves, fetched with the curl CLI (faults off), against what was downloaded
  emu:set_faults {}
  local refdir = dir .. "/reference"
  os.execute("mkdir -p " .. refdir)
  local finished, ref_mismatch, pattern_mismatch = 0, 0, 0
  for first = 1, N, 100 do
    local cfg = assert(io.open(refdir .. "/curl.cfg", "w"))
    for i = first, math.min(first + 99, N) do
      cfg:write(string.format('url = "%s"\noutput = "%s/%d"\n', jobs[i].output.video, refdir, i))
    end
    cfg:close()
    assert(os.execute("curl -sS -f -K " .. refdir .. "/curl.cfg"), "curl could not fetch the reference files")
    for i = first, math.min(first + 99, N) do
      local ref = read(refdir .. "/" .. i)
      os.remove(refdir .. "/" .. i)
      local h = core.sha256(ref)
      if done[i] then
        finished = finished + 1
        if #ref ~= sizes[i] or h ~= hashes[i] then
          ref_mismatch = ref_mismatch + 1
          problem(string.format("clip%d: downloaded sha256 %s, the file host serves %d bytes with sha256 %s", i,
            hashes[i], #ref, h))
        end
      end
      if ref ~= expected(i) then pattern_mismatch = pattern_mismatch + 1 end
    end
  end
  local stats = emu:stats()
  local records = emu:get_json("/__emulator/jobs")
  emu:stop()
  disk.umount(mnt)
  os.execute("rm -rf " .. dir)

  local function list(t)
    local l = {}
    for k, v in pairs(t) do l[#l + 1] = k .. " " .. v end
    table.sort(l)
    return #l > 0 and table.concat(l, ", ") or "none"
  end
  print(string.format("downloads on a %siB tmpfs, %d at a time: %d jobs created by the emulator, %d ids returned "
    .. "(submitted and completed in %.1f s); videos of %d to %d bytes, %.1f MiB in all", FS:upper(), W, #records,
    #jobs, t1 - t0, MIN, MAX, c.bytes / 1048576))
  print(string.format("%d downloads finished of %d in %.1f s, %d download calls, %d requests to the file host; "
    .. "the disk was full %d times (finished files checked and deleted: %d, the last ones at the end)", finished, N,
    wall, c.calls, c.requests, c.fills, c.freed_files))
  print(string.format("failures: %d io (%s), %d of them not kind io with the path and the system's reason; other "
    .. "kinds: %s", c.io, list(io_by_file), c.io_bad, list(other_kinds)))
  print(string.format("after a failure: %d .part files kept (%d of 0 bytes, %d without their sidecar), %d not a "
    .. "prefix of the video, %d with verified bytes lost; %d final files in place after a failed call", c.parts_kept,
    c.empty_parts, c.part_no_meta, c.corrupt_parts, c.lost_parts, c.final_on_failure))
  print(string.format("calls: %d went on from the .part (Range from its size; %.1f MiB not fetched again), %d started "
    .. "over despite a .part, %d started from 0 with no .part, %d asked for a range that was not the .part's, %d sent "
    .. "nothing; tried again within a call after a cut or a 503: %d with Range, %d from 0 (%d not from where "
    .. "the .part ended); %d calls found their .part complete (416) and renamed it", c.resumed,
    c.resumed_bytes / 1048576, c.start_over, c.fresh, c.range_wrong, c.no_request, c.in_call_resume, c.in_call_restart,
    c.in_call_wrong, c.complete_416))
  print(string.format("tried again after the disk was full: %d calls, after a cut whose bytes the .part could not all "
    .. "take, sent another try (io is not retryable) and ended kind io; %d io failures left a .part that held the "
    .. "whole video", c.retried_after_io, c.io_whole_part))
  print(string.format("emulator faults injected: %s; token sent to the file host %d times",
    json.encode(stats.faults.injected), stats.files.authorization_headers))
  print(string.format("files: %d corrupted (against the pattern, and against the %d files curl fetched: %d differ, "
    .. "%d of curl's differ from the pattern); %d .part/sidecar left beside finished files; left on the tmpfs at the "
    .. "end: %s; jobs given up after %d calls: %d", c.corrupt_files, N, ref_mismatch, pattern_mismatch, c.leftovers,
    #left > 0 and table.concat(left, " ") or "nothing", MAX_CALLS, c.gave_up))
  for _, p in ipairs(problems) do print("  problem: " .. p) end
  assert(#records == N and #jobs == N, "jobs created != jobs known")
  assert(finished == N and c.gave_up == 0, "a download never finished")
  assert(c.corrupt_files == 0 and ref_mismatch == 0 and pattern_mismatch == 0, "a corrupted file")
  assert(c.corrupt_parts == 0 and c.empty_parts == 0 and c.final_on_failure == 0, "a failure left wrong bytes")
  assert(c.lost_parts == 0, "a failure lost the verified bytes of a .part")
  assert(c.io_bad == 0, "a disk failure was not kind io with its path")
  assert(c.leftovers == 0 and #left == 0, "a .part or a sidecar was left behind")
  assert(c.range_wrong == 0 and c.in_call_wrong == 0, "a range that was not the .part's")
  assert(stats.files.authorization_headers == 0, "the token went to the file host")
  assert(c.retried_after_io == 0 and c.io_whole_part == 0, "a download was tried again after the disk was full")
  assert(c.io > 0 and c.fills > 2 and c.resumed > 0, "the disk never filled up: the bench tested nothing")
  print("download disk faults: all accounted for")
end

-- A phase that fails midway leaves no tmpfs mounted (as far as umount can).
local function guarded(phase)
  local ok, err = xpcall(phase, debug.traceback)
  if not ok then
    require("disk").umount_all()
    error(err, 0)
  end
end

if PHASES.network then network_phase() end
if PHASES.journal then guarded(journal_phase) end
if PHASES.download then guarded(disk_download_phase) end
