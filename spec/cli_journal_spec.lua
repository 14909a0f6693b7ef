-- The command-line tool and the write-ahead journal: submits of unknown
-- outcome reported by jobs and resume, nothing sent when the journal cannot be
-- written (exit 8), journals that cannot be read (exit 8), ids kept when only
-- the answer's line fails, `unknown` in --json, batch state written with the
-- journal's rules. The real bin/kling against the emulator.
local helpers = require "helpers"
local disk = require "disk"
local cjson = require "cjson"
local journal = require "kling.journal"

local q = helpers.quote
local TOKEN = "cli-journal-token-3d9e"

local cli_run = require "cli_run"

local emu, dir, runner

-- A file-size limit (ulimit -f, 512-byte blocks) for the run: writes past it fail
-- part-way, then EFBIG (SIGXFSZ ignored by the shell first, as by kling itself).
local function run_opts(opts)
  opts = opts or {}
  local o = { state = opts.state }
  if opts.ulimit_blocks then o.prefix = string.format("trap '' XFSZ; ulimit -f %d", opts.ulimit_blocks) end
  return o
end

--- Runs bin/kling to the end: { code, out, err } (spec/cli_run.lua).
local function kling(args, opts) return runner.run(args, run_opts(opts)) end

--- Starts bin/kling in the background: { pid, wait(seconds) -> res, kill(sig) }.
local function spawn(args, opts) return runner.spawn(args, run_opts(opts)) end

local eventually = cli_run.eventually

local function json_lines(text)
  local list = {}
  for line in text:gmatch("[^\n]+") do list[#list + 1] = cjson.decode(line) end
  return list
end

local function events(path)
  local list = {}
  for line in (helpers.read_file(path) or ""):gmatch("[^\n]+") do list[#list + 1] = cjson.decode(line) end
  return list
end

local function created() return emu:stats().jobs_created end
local function trim(s) return (s:gsub("%s+$", "")) end

-- A valid journal line of exactly n bytes (newline included), of an event kling ignores.
local function pad_line(n)
  local line = cjson.encode { e = "note", pad = string.rep("x", n - 22) } .. "\n"
  assert(#line == n)
  return line
end

describe("kling and its journal", function()
  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0.2", "--run", "0.2" }
    dir = helpers.tmpdir()
    runner = cli_run.new { api = emu.api, token = TOKEN, dir = dir }
  end)
  teardown(function()
    if runner then runner.cleanup() end
    disk.umount_all()
    if emu then emu:stop() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)
  after_each(function() emu:set_faults {} end)

  describe("submits of unknown outcome", function()
    it("reports a generate killed while its submit was in flight in jobs, jobs --all and resume, with its time and tag", function()
      local st = dir .. "/state-killed"
      local jpath = st .. "/kling/jobs.jsonl"
      emu:set_faults { "submit:slow:1:30" } -- the job is created at once, its answer comes 30 s later
      local before = created()
      local p = spawn({ "generate", "killed mid-submit" }, { state = st })
      eventually(function() return created() > before end, 10, "the job to be created")
      p.kill("KILL")
      p.wait(5)
      emu:set_faults {}
      assert.equals(before + 1, created())
      for _, args in ipairs { { "jobs" }, { "jobs", "--all" } } do
        local res = kling(args, { state = st })
        assert.equals(0, res.code, res.err)
        assert.matches("1 submit(s) of unknown outcome", res.err, 1, true)
        assert.matches(os.date("%Y-%m-%d "), res.err, 1, true)
        assert.matches("tag kling generate: killed mid-submit", res.err, 1, true)
        assert.matches("intent " .. events(jpath)[1].key, res.err, 1, true)
        assert.is_nil(res.err:find("no jobs in", 1, true))
      end
      local res = kling({ "jobs", "--all", "--json" }, { state = st })
      local objs = json_lines(res.out)
      assert.equals(1, #objs)
      assert.equals("unknown", objs[1].status)
      assert.equals("kling generate: killed mid-submit", objs[1].tag)
      assert.equals("submit_unknown", objs[1].error.kind)
      res = kling({ "resume", "--no-download" }, { state = st })
      assert.equals(0, res.code, res.err)
      assert.matches("1 submit(s) of unknown outcome", res.err, 1, true)
      assert.matches("tag kling generate: killed mid-submit", res.err, 1, true)
      -- once checked on the dashboard, forgotten by its intent key
      res = kling({ "jobs", "--forget", events(jpath)[1].key }, { state = st })
      assert.equals(0, res.code, res.err)
      res = kling({ "jobs", "--all" }, { state = st })
      assert.is_nil(res.err:find("unknown outcome", 1, true))
    end)

    for _, cmd in ipairs { "submit", "generate" } do
      it("prints status unknown, not not_submitted, for a submit of unknown outcome: " .. cmd .. " --json and text", function()
        local st = dir .. "/state-unknown-" .. cmd
        emu:set_faults { "submit:drop_after_create:1" }
        local res = kling({ cmd, "lost answer", "--json" }, { state = st })
        assert.equals(7, res.code, res.err)
        local o = json_lines(res.out)[1]
        assert.equals("unknown", o.status)
        assert.equals("submit_unknown", o.error.kind)
        res = kling({ cmd, "lost answer again" }, { state = st })
        assert.equals(7, res.code)
        assert.equals("", res.out)
        assert.matches("the job may exist and be billed", res.err, 1, true)
        emu:set_faults {}
        -- a refusal for sure stays not_submitted
        res = kling({ cmd, "no balance @emu:error200=400002", "--json" }, { state = st })
        assert.equals(4, res.code)
        assert.equals("not_submitted", json_lines(res.out)[1].status)
      end)
    end

    it("keeps a refused request_id, escaped, in --json, on stderr and in the journal", function()
      local st = dir .. "/state-odd"
      local res = kling({ "submit", "odd @emu:request_id=ctrl", "--json" }, { state = st })
      assert.equals(7, res.code)
      local o = json_lines(res.out)[1]
      assert.equals("unknown", o.status)
      assert.equals("id\\x1b]0;pwned\\x07\\x0d\\x1b[2J", o.error.request_id_raw)
      assert.is_nil((res.out .. res.err):find("\27", 1, true))
      assert.matches("id\\x1b]0;pwned", res.err, 1, true)
      res = kling({ "jobs" }, { state = st })
      assert.matches('answered request_id "id\\x1b]0;pwned\\x07\\x0d\\x1b[2J"', res.err, 1, true)
    end)
  end)

  describe("a journal that cannot be written", function()
    local cases = {
      { name = "a directory (EISDIR)", path = function() os.execute("mkdir -p " .. q(dir .. "/jdir")) return dir .. "/jdir" end,
        reason = "Is a directory" },
      { name = "a full filesystem (ENOSPC)", path = function()
          local mnt = dir .. "/full-journal"
          local ok, why = disk.mount_tmpfs(mnt, "64k")
          if not ok then return nil, why end
          disk.fill(mnt)
          return mnt .. "/jobs.jsonl"
        end, reason = "No space left on device" },
      { name = "a device, not a regular file", path = function() return "/dev/full" end, reason = "not a regular file" },
      { name = "a directory that cannot be made (ENOENT)", path = function() return "/proc/kling-no-such/jobs.jsonl" end,
        reason = "No such file or directory" },
      { name = "a place root may not write (EACCES)", path = function()
          local f, _, code = io.open("/sys/kling-cli-spec.jsonl", "a+")
          if f then f:close() os.remove("/sys/kling-cli-spec.jsonl") end
          if code ~= 13 then return nil, "/sys gives no EACCES here" end
          return "/sys/kling-cli-spec.jsonl"
        end, reason = "Permission denied" },
    }
    for _, case in ipairs(cases) do
      it("makes generate and submit exit 8 and send nothing: " .. case.name, function()
        local path, why = case.path()
        if not path then pending("skipped: " .. why) end
        local before = created()
        for _, cmd in ipairs { "generate", "submit" } do
          local res = kling { cmd, "never sent", "--journal", path }
          assert.equals(8, res.code, res.err)
          assert.equals("", res.out)
          assert.matches(path, res.err, 1, true)
          assert.matches(case.reason, res.err, 1, true)
          assert.matches("not sent", res.err, 1, true)
          res = kling { cmd, "never sent", "--journal", path, "--json" }
          assert.equals(8, res.code)
          local o = json_lines(res.out)[1]
          assert.equals("not_submitted", o.status)
          assert.equals("io", o.error.kind)
          assert.equals(path, o.error.path)
        end
        assert.equals(before, created())
      end)
    end

    it("makes batch exit 8 and send nothing; a re-run with a good journal sends each line once", function()
      local file = dir .. "/two.jsonl"
      helpers.write_file(file, '{"prompt":"one"}\n{"prompt":"two"}\n')
      local out = dir .. "/two-out"
      local before = created()
      local res = kling { "batch", file, "--out-dir", out, "--journal", "/dev/full", "--json" }
      assert.equals(8, res.code, res.err)
      assert.equals(before, created())
      local objs = json_lines(res.out)
      assert.equals(2, #objs)
      for _, o in ipairs(objs) do assert.equals("not_submitted", o.status) end
      res = kling { "batch", file, "--out-dir", out }
      assert.equals(0, res.code, res.err)
      assert.equals(before + 2, created())
    end)

    it("prints the id and exits 8 when only the answer's line cannot be written (submit)", function()
      local path = dir .. "/submitted-fails.jsonl"
      -- measure the intent line of such a submit, then leave room for it and not for the next line
      local probe = dir .. "/probe.jsonl"
      assert.equals(0, kling({ "submit", "measured", "--journal", probe }).code)
      local intent_len = #(helpers.read_file(probe):match("^[^\n]*\n"))
      local pad = pad_line(1024 - intent_len - 20)
      helpers.write_file(path, pad)
      local before = created()
      local res = kling({ "submit", "measured", "--journal", path }, { ulimit_blocks = 2 })
      assert.equals(8, res.code, res.err)
      local id = trim(res.out)
      assert.matches("^[%w-]+$", id)
      assert.equals(before + 1, created())
      assert.matches("request " .. id .. " was accepted", res.err, 1, true)
      assert.matches("File too large", res.err, 1, true)
      local evs = events(path)
      assert.equals(2, #evs) -- the pad and the intent, no fragment
      assert.equals("intent", evs[2].e)
      -- the journal reports the open intent; the id was printed
      res = kling { "jobs", "--journal", path }
      assert.matches("1 submit(s) of unknown outcome", res.err, 1, true)
    end)

    it("waits to the end and exits 8 when only the ended line cannot be written (generate)", function()
      local path = dir .. "/ended-fails.jsonl"
      local probe = dir .. "/probe2.jsonl"
      assert.equals(0, kling({ "generate", "measured too", "--no-download", "--journal", probe }).code)
      local l = {}
      for line in helpers.read_file(probe):gmatch("[^\n]*\n") do l[#l + 1] = line end
      assert.equals(3, #l)
      local pad = pad_line(2048 - #l[1] - #l[2] - 20)
      helpers.write_file(path, pad)
      local res = kling({ "generate", "measured too", "--no-download", "--journal", path }, { ulimit_blocks = 4 })
      assert.equals(8, res.code, res.err)
      assert.matches("^https?://%S+%.mp4\n$", res.out)
      assert.matches("could not be written to the journal", res.err, 1, true)
      local evs = events(path)
      assert.equals(3, #evs) -- pad, intent, submitted: no fragment of the ended line
      assert.equals("submitted", evs[3].e)
      -- kling resume collects it later
      res = kling { "resume", "--no-download", "--journal", path }
      assert.equals(0, res.code, res.err)
      assert.matches(evs[3].id, res.out, 1, true)
    end)
  end)

  describe("a journal that cannot be read", function()
    it("makes jobs, jobs --all, --compact, --forget and resume say what is wrong and exit 8", function()
      local path = dir .. "/not-a-journal"
      os.execute("mkdir -p " .. q(path))
      for _, args in ipairs { { "jobs" }, { "jobs", "--all" }, { "jobs", "--compact" }, { "jobs", "--forget", "abc" },
        { "resume" }, { "resume", "--no-download" } } do
        table.insert(args, "--journal")
        table.insert(args, path)
        local res = kling(args)
        assert.equals(8, res.code, table.concat(args, " ") .. ": " .. res.err)
        assert.matches(path, res.err, 1, true)
        assert.matches("Is a directory", res.err, 1, true)
        assert.is_nil(res.err:find("no jobs", 1, true))
      end
    end)

    it("reads a journal that does not exist yet as empty (exit 0)", function()
      local res = kling { "jobs", "--all", "--journal", dir .. "/not-yet.jsonl" }
      assert.equals(0, res.code, res.err)
      assert.matches("no jobs in", res.err, 1, true)
      res = kling { "resume", "--journal", dir .. "/not-yet.jsonl" }
      assert.equals(0, res.code, res.err)
    end)
  end)

  describe("outputs JSON cannot hold", function()
    for _, kind in ipairs { "huge", "deep" } do
      it("end generate and wait normally, are journaled, and leave nothing for resume (" .. kind .. ")", function()
        local st = dir .. "/state-odd-output-" .. kind
        local res = kling({ "generate", "odd output @emu:output=" .. kind, "--no-download", "--json" }, { state = st })
        assert.equals(0, res.code, res.err)
        local o = json_lines(res.out)[1]
        assert.equals("completed", o.status)
        if kind == "huge" then -- shown as null, and said so
          assert.equals(cjson.null, o.output.extra)
          assert.is_string(o.output_note)
        else -- 100 levels: JSON holds them
          local depth, v = 0, o.output.extra
          while type(v) == "table" do depth, v = depth + 1, v[1] end
          assert.equals(100, depth)
        end
        local id = o.id
        res = kling({ "wait", id, "--json" }, { state = st })
        assert.equals(0, res.code, res.err)
        res = kling({ "resume", "--no-download" }, { state = st })
        assert.equals(0, res.code, res.err)
        assert.matches("nothing to resume", res.err, 1, true)
        res = kling({ "jobs", "--all", "--json" }, { state = st })
        assert.equals(0, res.code, res.err)
        assert.equals("completed", json_lines(res.out)[1].status)
        if kind == "huge" then -- the journal keeps it as text
          assert.matches('"extra":inf', json_lines(res.out)[1].output_text, 1, true)
        else
          assert.is_table(json_lines(res.out)[1].output)
        end
      end)
    end
  end)

  describe("compaction", function()
    it("keeps unreadable lines and says how many, with a true count of what it dropped", function()
      local path = dir .. "/compact.jsonl"
      assert.equals(0, kling({ "generate", "ends", "--no-download", "--journal", path }).code)
      local f = assert(io.open(path, "ab"))
      f:write('{"e":"submitted","id":"torn-by-a-cra')
      f:close()
      local res = kling { "submit", "after the tear", "--journal", path }
      assert.equals(0, res.code, res.err)
      local id = trim(res.out)
      res = kling { "jobs", "--compact", "--journal", path }
      assert.equals(0, res.code, res.err)
      assert.matches("dropped 4 lines", res.out, 1, true) -- 3 of the ended job, 1 answered intent
      assert.matches("kept 1 unreadable line", res.out, 1, true)
      local text = helpers.read_file(path)
      assert.matches('{"e":"submitted","id":"torn-by-a-cra\n', text, 1, true)
      res = kling { "jobs", "--journal", path }
      assert.matches(id, res.out, 1, true)
    end)
  end)

  describe("batch state", function()
    it("stops with exit 8 and submits nothing when the state cannot be written (full disk); a re-run sends each line once", function()
      local out = dir .. "/batch-full"
      local ok, why = disk.mount_tmpfs(out, "64k")
      if not ok then pending("skipped: " .. why) end
      local file = dir .. "/full.jsonl"
      helpers.write_file(file, '{"prompt":"first"}\n{"prompt":"second"}\n')
      disk.fill(out)
      local before = created()
      local res = kling { "batch", file, "--out-dir", out, "--json" }
      local created_full = created()
      disk.unfill(out)
      local res2 = kling { "batch", file, "--out-dir", out }
      local created_after = created()
      local videos = helpers.read_file(out .. "/line-1.mp4") and helpers.read_file(out .. "/line-2.mp4")
      disk.umount(out)
      assert.equals(8, res.code, res.err)
      assert.equals(before, created_full)
      assert.matches("No space left on device", res.err, 1, true)
      local objs = json_lines(res.out)
      assert.equals("not_submitted", objs[1].status)
      assert.equals("io", objs[1].error.kind)
      assert.equals(0, res2.code, res2.err)
      assert.equals(before + 2, created_after)
      assert.is_string(videos)
    end)

    it("exits 8 before sending anything when the state file is a directory", function()
      local out = dir .. "/batch-isdir"
      os.execute("mkdir -p " .. q(out .. "/.kling-batch.jsonl"))
      local file = dir .. "/isdir.jsonl"
      helpers.write_file(file, '{"prompt":"one"}\n')
      local before = created()
      local res = kling { "batch", file, "--out-dir", out }
      assert.equals(8, res.code, res.err)
      assert.matches("Is a directory", res.err, 1, true)
      assert.equals(before, created())
    end)

    it("submits again a crashed line whose submit the journal says was refused, and never one it cannot place", function()
      local st = dir .. "/state-batch-intents"
      local jpath = st .. "/kling/jobs.jsonl"
      os.execute("mkdir -p " .. q(st .. "/kling"))
      local out = dir .. "/batch-intents"
      os.execute("mkdir -p " .. q(out))
      local l1, l2, l3 = '{"prompt":"refused before"}', '{"prompt":"in flight before"}', '{"prompt":"no trace"}'
      local file = dir .. "/intents.jsonl"
      helpers.write_file(file, l1 .. "\n" .. l2 .. "\n" .. l3 .. "\n")
      local hash = require("kling.cli.batch").hash
      local t = os.time() - 5
      -- what crashed runs leave: three marks; the journal has line 1's intent refused for sure
      -- (not_sent), line 2's intent with no answer, and nothing for line 3
      local state = {}
      for i, line in ipairs { l1, l2, l3 } do
        state[i] = cjson.encode { e = "submitting", key = "line-" .. i, hash = hash(line), t = t, tag = "batch:line-" .. i .. ":x" }
      end
      helpers.write_file(out .. "/.kling-batch.jsonl", table.concat(state, "\n") .. "\n")
      local jn = journal.open(jpath)
      assert(jn:append { e = "intent", key = "k1", model = "kling/kling-3.0/pro/text-to-video", tag = "batch:line-1:x", t = t })
      assert(jn:append { e = "not_sent", intent = "k1", kind = "payment", t = t })
      assert(jn:append { e = "intent", key = "k2", model = "kling/kling-3.0/pro/text-to-video", tag = "batch:line-2:x", t = t })
      local before = created()
      local res = kling({ "batch", file, "--out-dir", out, "--json" }, { state = st })
      assert.equals(7, res.code, res.err)
      assert.equals(before + 1, created())
      local by = {}
      for _, o in ipairs(json_lines(res.out)) do by[o.key] = o end
      assert.equals("completed", by["line-1"].status)
      assert.equals("unknown", by["line-2"].status)
      assert.equals("unknown", by["line-3"].status)
      assert.matches("tag batch:line-2:x", by["line-2"].error.message, 1, true)
    end)
  end)
end)
