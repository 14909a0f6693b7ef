-- The durable journal, a write-ahead log of paid submits: an intent on disk
-- before a submit's request leaves, its answer after; nothing sent when the
-- intent cannot be written; torn writes that leave no fragment and lose no
-- line; unusable journals reported as kind io; ends recorded whatever the
-- output holds; refused ids kept; resume after SIGKILL; several writers;
-- compaction; no token in it.
local helpers = require "helpers"
local disk = require "disk"
local kling = require "kling"
local core = require "kling.core"
local json = require "kling.json"
local journal = require "kling.journal"

local TOKEN = "journal-token-5b1e"
local q = helpers.quote

local function lines(path)
  local t = {}
  for l in (helpers.read_file(path) or ""):gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

local function events(path)
  local t = {}
  for _, l in ipairs(lines(path)) do t[#t + 1] = json.decode(l) end
  return t
end

-- A valid journal line of exactly n bytes (newline included), of an event kling ignores.
local function pad_line(n)
  local line = json.encode { e = "note", pad = string.rep("x", n - 22) } .. "\n"
  assert(#line == n)
  return line
end

local function of_kind(evs, e)
  local t = {}
  for _, ev in ipairs(evs) do if ev.e == e then t[#t + 1] = ev end end
  return t
end

describe("the journal", function()
  local emu, dir

  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0.2", "--run", "0.5" }
    dir = helpers.tmpdir()
  end)
  teardown(function()
    disk.umount_all()
    if emu then emu:stop() end
    os.execute("rm -rf " .. q(dir))
  end)

  local function client(path, extra)
    local opts = { base_url = emu.api, token = TOKEN, journal = path, poll = { initial = 0.05, near = 0.1 },
      on_warning = false }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return kling.new(opts)
  end

  local function created() return emu:stats().jobs_created end
  local function last_job() local all = emu:get_json("/__emulator/jobs") return all[#all] end

  -- A child process that submits one job with a journal: { id, kind, message, path, jkind, jmessage, raw }.
  local function child_submit(path, prompt, opts)
    local ok, out = disk.lua_child(string.format([[
      local kling = require "kling"
      local json = require "kling.json"
      local c = kling.new { base_url = %q, token = %q, journal = %q, on_warning = false, timeout = 5 }
      local job, err = c:generate { prompt = %q }
      local je = job and job.journal_error or err and err.journal_error
      io.write(json.encode { id = job and job.id, kind = err and err.kind, message = err and err.message,
        path = err and err.path, jkind = je and je.kind, jmessage = je and je.message }, "\n")
    ]], emu.api, TOKEN, path, prompt), opts)
    assert(ok, out)
    local last
    for l in out:gmatch("[^\n]+") do last = l end
    return json.decode(last)
  end

  describe("as a write-ahead log", function()
    it("writes an intent line (model, time, digest of the body, key) before the request, then the answer refers to it", function()
      local path = dir .. "/a.jsonl"
      local c = client(path)
      local job = assert(c:generate { prompt = "journaled" })
      local evs = events(path)
      assert.equals(2, #evs)
      local intent, sub = evs[1], evs[2]
      assert.equals("intent", intent.e)
      assert.matches("^%x+$", intent.key)
      assert.equals(32, #intent.key)
      assert.equals(kling.DEFAULT_MODEL, intent.model)
      assert.is_number(intent.t)
      -- the digest is that of the exact body the service received
      assert.equals("sha256:" .. core.sha256(emu:job_record(job.id).body), intent.digest)
      assert.equals("submitted", sub.e)
      assert.equals(job.id, sub.id)
      assert.equals(intent.key, sub.intent)
      assert.equals(intent.key, job.intent)
      assert.equals(kling.DEFAULT_MODEL, sub.model)
      assert(job:wait())
      evs = events(path)
      assert.equals(3, #evs)
      assert.equals("ended", evs[3].e)
      assert.equals("completed", evs[3].status)
      assert.equals(job.output.video, evs[3].output.video)
      assert.is_nil(helpers.read_file(path):find(TOKEN, 1, true))
      c:close()
    end)

    it("reports a submit killed while its request was in flight as of unknown outcome, with its time and tag", function()
      local path = dir .. "/killed-in-flight.jsonl"
      emu:set_faults { "submit:slow:1:30" } -- the job is created at once, its answer comes 30 s later
      local before = created()
      local script = dir .. "/in-flight.lua"
      helpers.write_file(script, string.format([[
        local kling = require "kling"
        local c = kling.new { base_url = %q, token = %q, journal = %q, timeout = 60 }
        c:submit(kling.DEFAULT_MODEL, { prompt = "killed in flight" }, { tag = "mine-42" })
      ]], emu.api, TOKEN, path))
      os.execute(string.format("cd %s && LUA_PATH=%s LUA_CPATH=%s lua5.4 %s >/dev/null 2>&1 & echo $! > %s",
        q(helpers.root), q(helpers.root .. "/lua/?.lua;;"), q(helpers.root .. "/build/?.so;;"), q(script),
        q(dir .. "/in-flight.pid")))
      local deadline = os.time() + 10
      while created() == before and os.time() < deadline do helpers.sleep(0.05) end
      os.execute("kill -KILL " .. assert(tonumber(helpers.read_file(dir .. "/in-flight.pid"))))
      emu:set_faults {}
      assert.equals(before + 1, created()) -- the job exists and is billed
      local record = emu:job_record(last_job().request_id)

      local c = client(path)
      local jobs, unknown = c:resume()
      assert.equals(0, #jobs)
      assert.equals(1, #unknown)
      local u = unknown[1]
      assert.equals("intent", u.e)
      assert.equals("mine-42", u.tag)
      assert.equals(kling.DEFAULT_MODEL, u.model)
      assert.is_true(math.abs(u.t - os.time()) < 60)
      assert.matches("no answer was recorded", u.message, 1, true)
      -- the digest ties it to the job the service created
      assert.equals("sha256:" .. core.sha256(record.body), u.digest)
      c:close()
    end)

    it("marks a submit whose answer was lost submit_unknown, referring to its intent, and reports it once", function()
      local path = dir .. "/dropped.jsonl"
      local c = client(path, { retries = false })
      emu:set_faults { "submit:drop_after_create:1" }
      local job, err = c:submit(kling.DEFAULT_MODEL, { prompt = "dropped" }, { tag = "t-drop" })
      emu:set_faults {}
      assert.is_nil(job)
      assert.equals("submit_unknown", err.kind)
      local evs = events(path)
      assert.equals(2, #evs)
      assert.equals("intent", evs[1].e)
      assert.equals("submit_unknown", evs[2].e)
      assert.equals(evs[1].key, evs[2].intent)
      assert.equals("t-drop", evs[2].tag)
      local _, unknown = c:resume()
      assert.equals(1, #unknown)
      assert.equals("submit_unknown", unknown[1].e)
      assert.equals("t-drop", unknown[1].tag)
      assert.equals(evs[1].digest, unknown[1].digest)
      c:close()
    end)

    it("completes the intent of a submit refused for sure with not_sent, which is no unknown outcome", function()
      local path = dir .. "/refused.jsonl"
      local c = client(path)
      local job, err = c:generate { prompt = "no money @emu:error200=400002" }
      assert.is_nil(job)
      assert.equals("payment", err.kind)
      local evs = events(path)
      assert.equals(2, #evs)
      assert.equals("not_sent", evs[2].e)
      assert.equals(evs[1].key, evs[2].intent)
      assert.equals("payment", evs[2].kind)
      local jobs, unknown = c:resume()
      assert.equals(0, #jobs)
      assert.equals(0, #unknown)
      c:close()
    end)

    it("records failed and cancelled ends too", function()
      local path = dir .. "/b.jsonl"
      local c = client(path)
      local f = assert(c:generate { prompt = "bad @emu:fail=Nope" })
      local k = assert(c:generate { prompt = "cancel @emu:queue=5" })
      f:wait()
      assert(k:cancel())
      local jobs = journal.open(path):state()
      assert.equals("failed", jobs[f.id].status)
      assert.equals("Nope", jobs[f.id].error)
      assert.equals("cancelled", jobs[k.id].status)
      c:close()
    end)

    it("lets a new process resume every unfinished job after the first was killed with SIGKILL", function()
      local path = dir .. "/killed.jsonl"
      local script = dir .. "/victim.lua"
      helpers.write_file(script, string.format([[
        local kling = require "kling"
        local c = kling.new { base_url = %q, token = %q, journal = %q }
        local jobs = {}
        for i = 1, 5 do jobs[i] = assert(c:generate { prompt = "victim " .. i .. " @emu:run=1.5" }) end
        io.write("submitted\n") io.flush()
        kling.wait_all(jobs)
        io.write("finished\n")
      ]], emu.api, TOKEN, path))
      local out = dir .. "/victim.out"
      os.execute(string.format("cd %s && LUA_PATH=%s LUA_CPATH=%s lua5.4 %s > %s 2>&1 & echo $! > %s",
        q(helpers.root), q(helpers.root .. "/lua/?.lua;;"), q(helpers.root .. "/build/?.so;;"), q(script), q(out),
        q(dir .. "/victim.pid")))
      local deadline = os.time() + 10
      while not (helpers.read_file(out) or ""):find("submitted") and os.time() < deadline do helpers.sleep(0.05) end
      local pid = tonumber(helpers.read_file(dir .. "/victim.pid"))
      os.execute("kill -KILL " .. pid)
      helpers.sleep(0.1)
      assert.is_nil((helpers.read_file(out) or ""):find("finished"))

      local c = client(path)
      local jobs, unknown = c:resume()
      assert.equals(5, #jobs)
      assert.equals(0, #unknown)
      local outs, errs = kling.wait_all(jobs)
      for i = 1, 5 do
        assert.is_nil(errs[i])
        assert.is_string(outs[i].video)
      end
      assert.equals(0, #(c:resume()))
      c:close()
    end)

    it("writes the caller's tag with the request, and refuses a tag that is not a short string", function()
      local path = dir .. "/tag.jsonl"
      local c = client(path)
      local job = assert(c:submit(kling.DEFAULT_MODEL, { prompt = "tagged" }, { tag = "mine-1" }))
      local jobs, _, _, intents = journal.open(path):state()
      assert.equals("mine-1", jobs[job.id].tag)
      assert.equals("mine-1", intents[job.intent].tag)
      assert.equals("submitted", intents[job.intent].outcome)
      assert.has_error(function() c:submit(kling.DEFAULT_MODEL, { prompt = "x" }, { tag = 42 }) end)
      assert.has_error(function() c:submit(kling.DEFAULT_MODEL, { prompt = "x" }, { tag = string.rep("t", 257) }) end)
      c:close()
    end)

    it("needs a journal to resume", function()
      local c = client(nil)
      local jobs, err = c:resume()
      assert.is_nil(jobs)
      assert.equals("validation", err.kind)
      c:close()
    end)

    it("computes the digests with SHA-256 as FIPS 180-4 defines it", function()
      assert.equals("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", core.sha256(""))
      assert.equals("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", core.sha256("abc"))
      assert.equals("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        core.sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
      assert.equals("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0", core.sha256(string.rep("a", 1000000)))
      assert.are_not.equal(core.random_key(), core.random_key())
    end)
  end)

  describe("that cannot be written", function()
    -- Each: a journal path and what the system says; the submit must send nothing.
    local cases = {
      { name = "a directory (EISDIR)", path = function() os.execute("mkdir -p " .. q(dir .. "/isdir")) return dir .. "/isdir" end,
        reason = "Is a directory" },
      { name = "a missing directory (ENOENT)", path = function() return dir .. "/no-such-dir/jobs.jsonl" end,
        reason = "No such file or directory" },
      { name = "a full filesystem (ENOSPC, a tmpfs filled up)", path = function()
          local mnt = dir .. "/full"
          local ok, why = disk.mount_tmpfs(mnt, "64k")
          if not ok then return nil, why end
          disk.fill(mnt)
          return mnt .. "/jobs.jsonl", function() disk.umount(mnt) end
        end, reason = "No space left on device" },
      { name = "a device (/dev/full), which is not a regular file", path = function() return "/dev/full" end,
        reason = "not a regular file" },
      { name = "a place even root may not create a file (EACCES, /sys)", path = function()
          local f, _, code = io.open("/sys/kling-journal-spec.jsonl", "a+")
          if f then f:close() os.remove("/sys/kling-journal-spec.jsonl") end
          if code ~= 13 then return nil, "/sys/kling-journal-spec.jsonl does not give EACCES here" end
          return "/sys/kling-journal-spec.jsonl"
        end, reason = "Permission denied" },
      { name = "a read-only filesystem (EROFS, tmpfs mounted ro)", path = function()
          local mnt = dir .. "/ro"
          local ok, why = disk.mount_tmpfs(mnt, "64k", { ro = true })
          if not ok then return nil, why end
          return mnt .. "/jobs.jsonl", function() disk.umount(mnt) end
        end, reason = "Read-only file system" },
    }
    for _, case in ipairs(cases) do
      it("sends nothing and returns kind io with the path and the reason: " .. case.name, function()
        local path, cleanup = case.path()
        if not path then pending("skipped: " .. tostring(cleanup)) end
        local c = client(path)
        local before, attempts = created(), emu:stats().requests.submit
        local job, err = c:generate { prompt = "must not be sent" }
        if type(cleanup) == "function" then cleanup() end
        assert.is_nil(job)
        assert.equals("io", err.kind)
        assert.equals(path, err.path)
        assert.is_false(err.retryable)
        assert.matches(path, err.message, 1, true)
        assert.matches(case.reason, err.message, 1, true)
        assert.matches("not sent", err.message, 1, true)
        assert.equals(before, created())
        assert.equals(attempts, emu:stats().requests.submit)
        c:close()
      end)
    end

    it("sends nothing when the intent fails part-way (EFBIG under ulimit -f), and leaves the file as it was", function()
      local path = dir .. "/efbig.jsonl"
      -- 1024 bytes allowed (ulimit -f 2); the journal holds 1000: the intent line starts, then fails
      local pad = pad_line(1000)
      helpers.write_file(path, pad)
      local before = created()
      local r = child_submit(path, "too big to journal", { ulimit_blocks = 2 })
      assert.is_nil(r.id)
      assert.equals("io", r.kind)
      assert.equals(path, r.path)
      assert.matches("File too large", r.message, 1, true)
      assert.equals(before, created())
      assert.equals(pad, helpers.read_file(path)) -- no fragment left
    end)

    it("fails an append cut short by a full filesystem (tmpfs) without a fragment, and goes on once space is back", function()
      local mnt = dir .. "/full"
      local ok, why = disk.mount_tmpfs(mnt, "64k")
      if not ok then pending("skipped: " .. why) end
      local path = mnt .. "/jobs.jsonl"
      -- the journal's page holds 4000 bytes: 96 bytes of room, then no block left
      local pad = pad_line(4000)
      helpers.write_file(path, pad)
      disk.fill(mnt)
      local c = client(path)
      local before = created()
      local job, err = c:generate { prompt = "no room" }
      assert.is_nil(job)
      assert.equals("io", (err or {}).kind)
      assert.matches("No space left on device", err.message, 1, true)
      local text = helpers.read_file(path)
      assert.equals(before, created())
      disk.unfill(mnt)
      job = assert(c:generate { prompt = "room again" })
      local after = helpers.read_file(path)
      c:close()
      disk.umount(mnt)
      assert.equals(pad, text)
      assert.equals(pad, after:sub(1, #pad))
      local evs = {}
      for l in after:sub(#pad + 1):gmatch("[^\n]+") do evs[#evs + 1] = json.decode(l) end
      assert.equals(2, #evs)
      assert.equals(job.id, evs[2].id)
    end)
  end)

  describe("when the answer's line cannot be written", function()
    -- The journal holds so much that the intent fits under the file-size limit and the next line does not.
    local function prefill(path, limit)
      local intent = journal.encode_event { e = "intent", key = string.rep("0", 32), model = kling.DEFAULT_MODEL,
        digest = "sha256:" .. string.rep("0", 64), t = os.time() }
      local pad = pad_line(limit - (#intent + 1) - 20)
      helpers.write_file(path, pad)
      return pad
    end

    it("returns the job with journal_error, keeps the intent open, and resume() reports it", function()
      local path = dir .. "/no-submitted.jsonl"
      local pad = prefill(path, 1024)
      local before = created()
      local r = child_submit(path, "accepted, not recorded", { ulimit_blocks = 2 })
      assert.is_string(r.id) -- the id is not lost: the caller has it
      assert.equals("io", r.jkind)
      assert.matches("File too large", r.jmessage, 1, true)
      assert.equals(before + 1, created())
      assert.equals(r.id, last_job().request_id)
      local text = helpers.read_file(path)
      assert.equals(pad, text:sub(1, #pad))
      local rest = lines(path)
      assert.equals(2, #rest) -- the pad and the intent: no fragment of the submitted line
      assert.equals("intent", json.decode(rest[2]).e)
      local c = client(path)
      local jobs, unknown = c:resume()
      assert.equals(0, #jobs)
      assert.equals(1, #unknown)
      assert.equals("intent", unknown[1].e)
      assert.equals("sha256:" .. core.sha256(emu:job_record(r.id).body), unknown[1].digest)
      c:close()
    end)

    it("returns submit_unknown with journal_error when its line cannot be written, and the intent stays open", function()
      local path = dir .. "/no-unknown.jsonl"
      prefill(path, 1024)
      emu:set_faults { "submit:drop_after_create:1" }
      local r = child_submit(path, "dropped, not recorded", { ulimit_blocks = 2 })
      emu:set_faults {}
      assert.equals("submit_unknown", r.kind)
      assert.equals("io", r.jkind)
      local _, unknown = client(path):resume()
      assert.equals(1, #unknown)
      assert.equals("intent", unknown[1].e)
    end)

    it("ends a wait with its outcome, and job.journal_error, when the ended line cannot be written", function()
      local path = dir .. "/no-ended.jsonl"
      local warnings = {}
      local c = client(path, { on_warning = function(m) warnings[#warnings + 1] = m end })
      local job = assert(c:generate { prompt = "ends unrecorded" })
      assert(os.rename(path, path .. ".moved"))
      os.execute("mkdir " .. q(path)) -- the journal's path is now a directory: EISDIR
      local out, err = job:wait { timeout = 10 }
      assert.is_nil(err)
      assert.is_string(out.video)
      assert.equals("io", job.journal_error.kind)
      assert.matches("Is a directory", job.journal_error.message, 1, true)
      assert.matches("the end of job " .. job.id, warnings[1], 1, true)
      c:close()
    end)
  end)

  describe("torn writes", function()
    it("begins the next line on a fresh line after a fragment left by a writer killed mid-line", function()
      local path = dir .. "/fragment.jsonl"
      local c = client(path)
      local first = assert(c:generate { prompt = "before the tear" })
      local f = assert(io.open(path, "ab"))
      f:write('{"e":"submitted","id":"half-writ')
      f:close()
      local second = assert(c:generate { prompt = "after the tear" })
      local l = lines(path)
      assert.equals('{"e":"submitted","id":"half-writ', l[3])
      local jobs = c:resume()
      assert.equals(2, #jobs)
      local ids = { [jobs[1].id] = true, [jobs[2].id] = true }
      assert.is_true(ids[first.id] and ids[second.id])
      local _, bad = journal.open(path):read()
      assert.equals(1, bad)
      c:close()
    end)

    it("recovers a whole event glued after a fragment (as an older kling wrote them)", function()
      local path = dir .. "/glued.jsonl"
      local c = client(path)
      local job = assert(c:generate { prompt = "glued" })
      local l = lines(path)
      -- the fragment of a failed append, then the submitted line written straight after it
      helpers.write_file(path, l[1] .. "\n" .. '{"e":"submitted","id":"lost-in-the-tear' .. l[2] .. "\n")
      local jobs = c:resume()
      assert.equals(1, #jobs)
      assert.equals(job.id, jobs[1].id)
      local evs, bad, recovered = journal.open(path):read()
      assert.equals(2, #evs)
      assert.equals(1, bad)
      assert.equals(1, recovered)
      c:close()
    end)

    it("keeps unreadable lines verbatim on compaction, and its counts are true", function()
      local path = dir .. "/compact-torn.jsonl"
      local c = client(path)
      local done = assert(c:generate { prompt = "done" })
      assert(done:wait())
      local open_job = assert(c:generate { prompt = "still queued @emu:queue=30" })
      local l = lines(path) -- intent, submitted, ended of done; intent, submitted of open_job
      assert.equals(5, #l)
      local frag1, frag2 = '{"e":"submitted","id":"torn-one', '{"e":"ended","id":"x","sta'
      helpers.write_file(path, table.concat({ l[1], l[2], frag1, l[3], frag2 .. l[4], l[5] }, "\n") .. "\n")
      local dropped, unreadable = c:compact_journal()
      assert.equals(4, dropped) -- done's three lines, open_job's answered intent
      assert.equals(2, unreadable)
      local after = lines(path)
      assert.same({ frag1, frag2, l[5] }, after)
      assert.equals(open_job.id, c:resume()[1].id)
      -- compaction again: nothing more to drop, the unreadable lines still there
      dropped, unreadable = c:compact_journal()
      assert.equals(0, dropped)
      assert.equals(2, unreadable)
      assert.same({ frag1, frag2, l[5] }, lines(path))
      c:close()
    end)

    it("compacts away what has ended or been answered, keeping open jobs, open intents and unknown outcomes", function()
      local path = dir .. "/compact.jsonl"
      local c = client(path, { retries = false })
      local done = assert(c:generate { prompt = "done" })
      assert(done:wait())
      local open_job = assert(c:generate { prompt = "still queued @emu:queue=30" })
      assert.is_nil(c:generate { prompt = "refused @emu:error200=400002" })
      emu:set_faults { "submit:drop_after_create:1" }
      assert.is_nil(c:generate { prompt = "lost" })
      emu:set_faults {}
      local open_intent = journal.encode_event { e = "intent", key = "feedfacefeedfacefeedfacefeedface",
        model = kling.DEFAULT_MODEL, t = os.time(), digest = "sha256:00" }
      local f = assert(io.open(path, "ab"))
      f:write(open_intent, "\n")
      f:close()
      assert.equals(10, #lines(path))
      local dropped, unreadable = c:compact_journal()
      assert.equals(7, dropped) -- done: 3; open_job's intent; refused: intent and not_sent; lost: intent
      assert.equals(0, unreadable)
      local kinds = {}
      for _, ev in ipairs(events(path)) do kinds[#kinds + 1] = ev.e end
      assert.same({ "submitted", "submit_unknown", "intent" }, kinds)
      local jobs, unknown = c:resume()
      assert.equals(open_job.id, jobs[1].id)
      assert.equals(2, #unknown)
      local again = assert(c:generate { prompt = "after compaction" })
      assert.equals(again.id, of_kind(events(path), "submitted")[2].id)
      c:close()
    end)

    it("takes appends from several processes at once without losing or mixing lines", function()
      local path = dir .. "/shared.jsonl"
      local code = string.format([[
        local j = require("kling.journal").open(%q)
        for i = 1, 200 do assert(j:append { e = "submitted", id = "p" .. arg[1] .. "-" .. i, model = "m" }) end
      ]], path)
      local script = dir .. "/writer.lua"
      helpers.write_file(script, code)
      local cmd = string.format("cd %s && LUA_PATH=%s LUA_CPATH=%s", q(helpers.root), q(helpers.root .. "/lua/?.lua;;"),
        q(helpers.root .. "/build/?.so;;"))
      os.execute(string.format("%s lua5.4 %s 1 & %s lua5.4 %s 2 & %s lua5.4 %s 3 & wait", cmd, q(script), cmd, q(script), cmd, q(script)))
      local jobs, _, bad = journal.open(path):state()
      local n = 0
      for _ in pairs(jobs) do n = n + 1 end
      assert.equals(600, n)
      assert.equals(0, bad)
    end)
  end)

  describe("that cannot be read", function()
    it("makes resume() return kind io for a directory, with the path and the reason", function()
      local path = dir .. "/a-dir"
      os.execute("mkdir -p " .. q(path))
      local c = client(path)
      local jobs, err = c:resume()
      assert.is_nil(jobs)
      assert.equals("io", err.kind)
      assert.equals(path, err.path)
      assert.is_false(err.retryable)
      assert.matches("Is a directory", err.message, 1, true)
      local n, cerr = c:compact_journal()
      assert.is_nil(n)
      assert.equals("io", cerr.kind)
      c:close()
    end)

    it("refuses a journal that is not a regular file (/dev/full) instead of reading it forever", function()
      local c = client("/dev/full")
      local jobs, err = c:resume()
      assert.is_nil(jobs)
      assert.equals("io", err.kind)
      assert.matches("not a regular file", err.message, 1, true)
      c:close()
    end)

    it("reads a journal that does not exist yet (or whose directory does not) as empty", function()
      for _, path in ipairs { dir .. "/not-yet.jsonl", dir .. "/no-dir-yet/jobs.jsonl" } do
        local jobs, unknown = client(path):resume()
        assert.same({}, jobs)
        assert.same({}, unknown)
      end
    end)
  end)

  describe("ends whatever the output holds", function()
    it("ends job:wait and journals the end when the output holds a number beyond a double (1e400)", function()
      local path = dir .. "/huge.jsonl"
      local c = client(path)
      local job = assert(c:generate { prompt = "huge @emu:output=huge" })
      local out, err = job:wait { timeout = 10 }
      assert.is_nil(err)
      assert.equals(math.huge, out.extra)
      assert.is_string(out.video)
      local jobs = journal.open(path):state()
      assert.equals("completed", jobs[job.id].status)
      assert.matches('"extra":inf', jobs[job.id].output_text, 1, true)
      assert.matches(job.id, jobs[job.id].output_text, 1, true)
      assert.equals(0, #(c:resume()))
      c:close()
    end)

    it("ends job:wait and journals the end when the output nests deeper than 64 levels", function()
      local path = dir .. "/deep.jsonl"
      local c = client(path)
      local job = assert(c:generate { prompt = "deep @emu:output=deep" })
      local out, err = job:wait { timeout = 10 }
      assert.is_nil(err)
      local depth, v = 0, out.extra
      while type(v) == "table" do depth, v = depth + 1, v[1] end
      assert.equals(100, depth)
      local ended = of_kind(events(path), "ended")[1]
      assert.equals("completed", ended.status)
      -- the journal's writer holds 100 levels: the output is kept as it came
      depth, v = 0, ended.output.extra
      while type(v) == "table" do depth, v = depth + 1, v[1] end
      assert.equals(100, depth)
      assert.is_nil(ended.output_note)
      c:close()
    end)

    it("gives every job of a wait_all its outcome when some outputs cannot be re-encoded", function()
      local path = dir .. "/wait-all.jsonl"
      local c = client(path)
      local jobs = {}
      for i = 1, 11 do
        local odd = ({ [2] = " @emu:output=huge", [5] = " @emu:output=deep", [8] = " @emu:output=huge",
          [11] = " @emu:output=deep" })[i] or ""
        jobs[i] = assert(c:generate { prompt = "job " .. i .. odd })
      end
      local outs, errs = kling.wait_all(jobs, { timeout = 20 })
      for i = 1, 11 do
        assert.is_nil(errs[i])
        assert.is_string(outs[i].video)
      end
      assert.equals(11, #of_kind(events(path), "ended"))
      assert.equals(0, #(c:resume()))
      c:close()
    end)

    it("journals such an end through job:result() too", function()
      local c = client(dir .. "/result-a.jsonl")
      local job = assert(c:generate { prompt = "result route @emu:output=huge" })
      assert(job:wait { timeout = 10 })
      local path = dir .. "/result-b.jsonl"
      local c2 = client(path)
      local again = assert(c2:job(job.id, job.model))
      local out, err = again:result()
      assert.is_nil(err)
      assert.equals(math.huge, out.extra)
      assert.equals("completed", of_kind(events(path), "ended")[1].status)
      c:close()
      c2:close()
    end)

    it("writes every event, replacing what cannot be written and saying so", function()
      local text = journal.encode_event { e = "ended", id = "x", output = { n = 0 / 0, fn = print } }
      local ev = json.decode(text)
      assert.equals("ended", ev.e)
      assert.equals("x", ev.id)
      assert.is_string(ev.output_note)
      assert.is_nil(ev.output)
    end)
  end)

  describe("ids the library refuses", function()
    -- what the emulator answers (@emu:request_id=KIND), escaped as kling keeps it
    local expected = {
      long = string.rep("a", 300),
      dotdot = "../../etc/passwd",
      utf8 = "r\\xc3\\xa9sum\\xc3\\xa9-\\xc4\\xb3",
      ctrl = "id\\x1b]0;pwned\\x07\\x0d\\x1b[2J",
      number = "12345",
    }
    for _, kind in ipairs { "long", "dotdot", "utf8", "ctrl", "number" } do
      it("keeps a refused request_id (" .. kind .. ") escaped in the error and the journal, and never uses it", function()
        local path = dir .. "/odd-" .. kind .. ".jsonl"
        local c = client(path)
        local polls = emu:stats().requests.status
        local job, err = c:generate { prompt = "odd id @emu:request_id=" .. kind }
        assert.is_nil(job)
        assert.equals("submit_unknown", err.kind)
        assert.equals(expected[kind], err.request_id_raw)
        assert.is_nil(err.request_id_raw:find("[^ -~]"))
        assert.matches(expected[kind], err.message, 1, true)
        local su = of_kind(events(path), "submit_unknown")[1]
        assert.equals(expected[kind], su.request_id_raw)
        local _, unknown = c:resume()
        assert.equals(expected[kind], unknown[1].request_id_raw)
        assert.equals(polls, emu:stats().requests.status)
        c:close()
      end)
    end
  end)
end)
