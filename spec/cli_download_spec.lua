-- The command-line tool's downloads (issue 9, part 2): a .part of another video is never
-- gone on from, a complete .part is finished, local disk errors exit 8 and keep the .part,
-- an empty body is an error, redirects between loopback URLs work, the download flags
-- (--stall-timeout, --min-rate, --download-deadline) on every command that downloads, and
-- every number the tool prints is formatted safely.
local helpers = require "helpers"
local cjson = require "cjson"
local emulator = require "kling.emulator"
local cli = require "kling.cli"

local q = helpers.quote
local TOKEN = "cli-download-token-5e02"

local cli_run = require "cli_run"
local emu, dir, state, runner

local function pattern(n, shift)
  return emulator.pattern_bytes(shift or 0, n)
end

--- Runs bin/kling to the end: { code, out, err } (spec/cli_run.lua). opts: env (map), prefix
-- (shell commands run before kling, e.g. a ulimit).
local function kling(args, opts) return runner.run(args, opts) end

local function trim(s) return (s:gsub("%s+$", "")) end

-- Submits through the CLI and waits (in the emulator) until the job has completed.
local function completed(prompt)
  local res = kling { "submit", prompt .. " @emu:queue=0 @emu:run=0" }
  assert.equals(0, res.code, res.err)
  local id = trim(res.out)
  helpers.eventually(function() return emu:job_record(id).state == "completed" end, 10, "the job to complete")
  return id
end

local size_of = helpers.size_of

-- A tmpfs at path (spec/disk.lua), opts "size=64k" or "ro,size=64k": false when it cannot
-- be mounted (not root).
local function mounted(path, opts)
  return require("disk").mount_tmpfs(path, opts:match("size=(%w+)"), { ro = opts:find("ro") ~= nil }) == true
end

describe("kling downloads (command line)", function()
  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0", "--run", "0", "--seed", "4" }
    dir = helpers.tmpdir()
    state = dir .. "/state"
    runner = cli_run.new { api = emu.api, token = TOKEN, dir = dir, state = state }
  end)

  teardown(function()
    if runner then runner.cleanup() end
    if emu then emu:stop() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  after_each(function() emu:set_faults {} end)

  -- kling download ID -o path with the file host cutting every answer: exit 7, a .part kept.
  local function cut_download(id, path)
    emu:set_faults { "download:cut:1" }
    local res = kling { "download", id, "-o", path }
    emu:set_faults {}
    assert.equals(7, res.code, res.err)
    return assert(helpers.read_file(path .. ".part"))
  end

  it("never goes on from the .part of another video: the second video is saved whole", function()
    local a = completed("video A @emu:bytes=600000 @emu:pattern=1")
    local b = completed("video B @emu:bytes=600000")
    local path = dir .. "/clip.mp4"
    local part = cut_download(a, path)
    assert.equals(pattern(#part, 1), part)
    local res = kling { "download", b, "-o", path, "--json" }
    assert.equals(0, res.code, res.err)
    assert.equals(600000, cjson.decode(res.out).bytes)
    assert.equals(pattern(600000), helpers.read_file(path))
    assert.is_nil(size_of(path .. ".part"))
    assert.is_nil(size_of(path .. ".part.meta"))
  end)

  it("batch: a line whose input changed gets its new video whole in KEY.mp4, not onto the old .part", function()
    local file, out = dir .. "/changed.jsonl", dir .. "/batch-changed"
    helpers.write_file(file, '{"prompt":"first take @emu:bytes=600000 @emu:pattern=3 @emu:queue=0 @emu:run=0","name":"k"}\n')
    emu:set_faults { "download:cut:1" }
    local res = kling { "batch", file, "--out-dir", out }
    emu:set_faults {}
    assert.equals(7, res.code, res.err)
    local part = assert(helpers.read_file(out .. "/k.mp4.part"))
    assert.equals(pattern(#part, 3), part)
    helpers.write_file(file, '{"prompt":"second take @emu:bytes=600000 @emu:queue=0 @emu:run=0","name":"k"}\n')
    res = kling { "batch", file, "--out-dir", out }
    assert.equals(0, res.code, res.err)
    assert.equals(pattern(600000), helpers.read_file(out .. "/k.mp4"))
  end)

  it("finishes a .part that already holds the whole file (416), exit 0", function()
    local id = completed("complete @emu:bytes=600000")
    local path = dir .. "/complete.mp4"
    local part = cut_download(id, path)
    local f = assert(io.open(path .. ".part", "ab"))
    f:write(pattern(600000):sub(#part + 1))
    f:close()
    local sent = emu:stats().files.bytes_sent
    local res = kling { "download", id, "-o", path, "--json" }
    assert.equals(0, res.code, res.err)
    local o = cjson.decode(res.out)
    assert.equals(600000, o.bytes)
    assert.equals(path, o.path)
    assert.equals(pattern(600000), helpers.read_file(path))
    assert.equals(sent, emu:stats().files.bytes_sent)
    assert.is_nil(size_of(path .. ".part"))
  end)

  it("refuses an empty body: exit 7, kind protocol, no file, nothing said to be saved", function()
    local id = completed("empty @emu:bytes=0")
    local path = dir .. "/empty.mp4"
    local res = kling { "download", id, "-o", path }
    assert.equals(7, res.code, res.err)
    assert.matches("the file host sent an empty body", res.err, 1, true)
    assert.is_nil(res.err:find("saved", 1, true))
    assert.equals("", res.out)
    assert.is_nil(size_of(path))
    assert.is_nil(size_of(path .. ".part"))
    res = kling { "download", id, "-o", path, "--json" }
    assert.equals(7, res.code)
    assert.equals("protocol", cjson.decode(res.out).error.kind)
    -- generate, too
    res = kling { "generate", "empty again @emu:bytes=0 @emu:queue=0 @emu:run=0", "-o", dir .. "/empty2.mp4" }
    assert.equals(7, res.code, res.err)
    assert.is_nil(size_of(dir .. "/empty2.mp4"))
  end)

  it("follows redirects between loopback http URLs", function()
    local id = completed("redirected @emu:bytes=50000 @emu:redirect=2")
    local path = dir .. "/redirected.mp4"
    local res = kling { "download", id, "-o", path }
    assert.equals(0, res.code, res.err)
    assert.equals(pattern(50000), helpers.read_file(path))
    res = kling { "wait", id, "-o", dir .. "/redirected-wait.mp4" }
    assert.equals(0, res.code, res.err)
    assert.equals(pattern(50000), helpers.read_file(dir .. "/redirected-wait.mp4"))
  end)

  describe("local disk errors exit 8", function()
    it("on a full disk, naming the .part and the reason; the .part is kept and the next run goes on", function()
      local full = dir .. "/full"
      if not mounted(full, "size=64k") then
        pending("cannot mount a tmpfs here (needs root): not tested")
        return
      end
      finally(function() os.execute("umount " .. q(full)) end)
      local id = completed("full @emu:bytes=300000")
      local path = full .. "/clip.mp4"
      local res = kling { "download", id, "-o", path }
      assert.equals(8, res.code, res.err)
      assert.matches("io: download failed: cannot write '" .. path .. ".part': No space left on device", res.err, 1, true)
      assert.matches("kept in " .. path .. ".part", res.err, 1, true)
      local part = assert(helpers.read_file(path .. ".part"))
      assert.equals(pattern(#part), part)
      res = kling { "download", id, "-o", path, "--json" }
      assert.equals(8, res.code)
      local o = cjson.decode(res.out)
      assert.equals("io", o.error.kind)
      assert(os.execute("mount -o remount,size=1m tmpfs " .. q(full)))
      res = kling { "download", id, "-o", path }
      assert.equals(0, res.code, res.err)
      assert.equals(pattern(300000), helpers.read_file(path))
    end)

    it("on a file size limit (EFBIG), with generate too", function()
      local path = dir .. "/efbig.mp4"
      local res = kling({ "generate", "big @emu:bytes=300000 @emu:queue=0 @emu:run=0", "-o", path },
        { prefix = "ulimit -f 200; trap '' XFSZ" })
      assert.equals(8, res.code, res.err)
      assert.matches("File too large", res.err, 1, true)
      assert.equals(102400, size_of(path .. ".part"))
      assert.equals(pattern(102400), helpers.read_file(path .. ".part"))
    end)

    it("on a read-only directory, before anything is downloaded, or submitted by generate", function()
      local ro = dir .. "/ro"
      if not mounted(ro, "ro,size=64k") then
        pending("cannot mount a read-only tmpfs here (needs root): not tested")
        return
      end
      finally(function() os.execute("umount " .. q(ro)) end)
      local id = completed("read-only @emu:bytes=1000")
      local before = emu:stats()
      for _, args in ipairs {
        { "download", id, "--out-dir", ro }, { "download", id, "-o", ro .. "/x.mp4" }, { "download", id, "-o", ro },
        { "wait", id, "-o", ro .. "/x.mp4" }, { "generate", "never paid for", "-o", ro .. "/x.mp4" },
        { "generate", "never paid for", "--out-dir", ro },
      } do
        local res = kling(args)
        assert.equals(8, res.code, res.err)
        assert.matches("cannot write in " .. ro .. ": Read-only file system", res.err, 1, true)
        assert.is_nil(res.err:find("--help", 1, true))
      end
      local after = emu:stats()
      assert.equals(before.files.requests, after.files.requests)
      assert.equals(before.jobs_created, after.jobs_created) -- generate sent nothing
    end)

    it("on a missing directory for -o, before anything is sent", function()
      local id = completed("no dir @emu:bytes=1000")
      local before = emu:stats()
      local res = kling { "download", id, "-o", dir .. "/no/such/x.mp4" }
      assert.equals(8, res.code, res.err)
      assert.matches("its directory " .. dir .. "/no/such does not exist", res.err, 1, true)
      res = kling { "generate", "never paid for", "-o", dir .. "/no/such/x.mp4" }
      assert.equals(8, res.code, res.err)
      local after = emu:stats()
      assert.equals(before.files.requests, after.files.requests)
      assert.equals(before.jobs_created, after.jobs_created)
    end)
  end)

  describe("download flags", function()
    it("--download-deadline ends a download that trickles: exit 6, the .part kept", function()
      local id = completed("deadline @emu:bytes=100000")
      local path = dir .. "/deadline.mp4"
      emu:set_faults { "download:trickle:1:2" }
      local t0 = os.time()
      local res = kling { "download", id, "-o", path, "--download-deadline", "2" }
      assert.equals(6, res.code, res.err)
      assert.matches("deadline", res.err, 1, true)
      assert.is_true(os.time() - t0 < 20)
      assert.truthy(size_of(path .. ".part"))
    end)

    it("are taken by generate, wait, download, resume and batch, and refused when wrong", function()
      local flags = { "--stall-timeout", "5", "--min-rate", "10", "--download-deadline", "60" }
      local function with(args)
        for _, f in ipairs(flags) do args[#args + 1] = f end
        return args
      end
      local res = kling(with { "generate", "flags @emu:bytes=2000 @emu:queue=0 @emu:run=0", "-o", dir .. "/f1.mp4" })
      assert.equals(0, res.code, res.err)
      local id = completed("flags two @emu:bytes=2000")
      res = kling(with { "wait", id, "-o", dir .. "/f2.mp4" })
      assert.equals(0, res.code, res.err)
      res = kling(with { "download", id, "-o", dir .. "/f3.mp4" })
      assert.equals(0, res.code, res.err)
      helpers.write_file(dir .. "/flags.jsonl", '{"prompt":"batch flags @emu:bytes=2000 @emu:queue=0 @emu:run=0","name":"b"}\n')
      res = kling(with { "batch", dir .. "/flags.jsonl", "--out-dir", dir .. "/fb" })
      assert.equals(0, res.code, res.err)
      assert.equals(pattern(2000), helpers.read_file(dir .. "/fb/b.mp4"))
      res = kling(with { "resume", "--out-dir", dir .. "/fr" })
      assert.equals(0, res.code, res.err)
      for _, bad in ipairs { { "--min-rate", "0" }, { "--min-rate", "1.5" }, { "--stall-timeout", "-1" },
        { "--download-deadline", "0" }, { "--download-deadline", "inf" } } do
        res = kling { "download", id, "-o", dir .. "/never.mp4", bad[1], bad[2] }
        assert.equals(2, res.code, bad[1] .. " " .. bad[2])
      end
      res = kling { "download", "--help" }
      assert.matches("--download-deadline S", res.out, 1, true)
      assert.matches("FILE.part.meta", res.out, 1, true)
    end)
  end)

  describe("download flags beyond the library's bounds", function()
    it("are refused before anything is sent, by every command that downloads, with the real bounds (exit 2)", function()
      local client_lib = require "kling.client"
      local id = completed("bounds @emu:bytes=2000")
      helpers.write_file(dir .. "/bounds.jsonl", '{"prompt":"never paid for","name":"b"}\n')
      local commands = {
        { "generate", "never paid for", "-o", dir .. "/bounds1.mp4" }, { "wait", id, "-o", dir .. "/bounds2.mp4" },
        { "download", id, "-o", dir .. "/bounds3.mp4" }, { "resume", "--out-dir", dir .. "/bounds-r" },
        { "batch", dir .. "/bounds.jsonl", "--out-dir", dir .. "/bounds-b" },
      }
      local cases = {
        { "--stall-timeout", "2e7", "stall_timeout" }, { "--stall-timeout", "0", "stall_timeout" },
        { "--download-deadline", "1e300", "deadline" }, { "--download-deadline", "-1", "deadline" },
        { "--min-rate", "2000000000000", "min_rate" }, { "--min-rate", "1.5", "min_rate" },
        { "--min-rate", "nan", "min_rate" },
      }
      local before = emu:stats()
      for _, args in ipairs(commands) do
        for _, case in ipairs(cases) do
          local argv = { table.unpack(args) }
          argv[#argv + 1], argv[#argv + 2] = case[1], case[2]
          local res = kling(argv)
          local what = table.concat(argv, " ")
          assert.equals(2, res.code, what .. ": " .. res.err)
          -- the library's own rule, bounds included
          assert.matches(case[1] .. " must be " .. client_lib.download_option_rule(case[3]) .. ", got '" .. case[2] .. "'",
            res.err, 1, true)
          assert.is_nil(res.err:find("internal error", 1, true), what)
        end
      end
      local after = emu:stats()
      assert.equals(before.jobs_created, after.jobs_created) -- nothing paid for
      assert.equals(before.files.requests, after.files.requests)
      assert.matches("at most 10000000", client_lib.download_option_rule("stall_timeout"), 1, true)
      assert.matches("at most 1000000000000", client_lib.download_option_rule("min_rate"), 1, true)
      -- the bounds themselves are taken
      local res = kling { "download", id, "-o", dir .. "/bounds-ok.mp4", "--stall-timeout", "10000000",
        "--download-deadline", "1e7", "--min-rate", "1" }
      assert.equals(0, res.code, res.err)
      assert.equals(pattern(2000), helpers.read_file(dir .. "/bounds-ok.mp4"))
      res = kling { "download", "--help" }
      assert.matches("at most 10000000", res.out, 1, true)
    end)
  end)

  describe("signals during a download", function()
    for _, case in ipairs { { "HUP", 129, "download" }, { "TERM", 143, "download" }, { "INT", 130, "download" },
      { "TERM", 143, "generate" } } do
      local sig, code, cmd = case[1], case[2], case[3]
      it("SIG" .. sig .. " during kling " .. cmd .. " keeps the bytes that arrived in the .part (exit " .. code
        .. "); the next run goes on from them", function()
        local path = dir .. "/sig-" .. sig .. "-" .. cmd .. ".mp4"
        local id, p
        if cmd == "download" then
          id = completed("signal " .. sig .. " @emu:bytes=400000")
          emu:set_faults { "download:trickle:1:20000" }
          p = runner.spawn { "download", id, "-o", path }
        else
          emu:set_faults { "download:trickle:1:20000" }
          p = runner.spawn { "generate", "signal gen " .. sig .. " @emu:bytes=400000 @emu:queue=0 @emu:run=0", "-o", path }
        end
        -- the .part is made when the first verified bytes arrive: they are in memory now
        cli_run.eventually(function() return size_of(path .. ".part") ~= nil end, 30, "the .part")
        p.signal(sig)
        local res = p.wait(30)
        emu:set_faults {}
        assert.equals(code, res.code, res.err)
        assert.matches("was interrupted; collect it with", res.err, 1, true)
        local part = assert(helpers.read_file(path .. ".part"))
        assert.is_true(#part > 0, "the .part is empty: the bytes held in memory were dropped")
        assert.equals(pattern(#part), part)
        assert.truthy(size_of(path .. ".part.meta"))
        assert.is_nil(size_of(path .. ".part.lock"))
        id = id or res.err:match("kling download (%S+) %-o")
        res = kling { "download", id, "-o", path }
        assert.equals(0, res.code, res.err)
        assert.equals(pattern(400000), helpers.read_file(path))
        local reqs = emu:job_record(id).file_requests
        assert.equals("bytes=" .. #part .. "-", reqs[#reqs].range)
      end)
    end
  end)

  describe("one download per path", function()
    it("a second kling download or generate to a path another download writes exits 8 at once, naming it; "
      .. "the first saves its own video", function()
      local a = completed("lock A @emu:bytes=300000 @emu:pattern=5")
      local b = completed("lock B @emu:bytes=300000")
      local path = dir .. "/same.mp4"
      emu:set_faults { "download:trickle:1:50000" } -- 6 s (the emulator's trickle sends wrong bytes above its 64 KiB chunk)
      local p = runner.spawn { "download", a, "-o", path, "--force" }
      cli_run.eventually(function() return size_of(path .. ".part") ~= nil end, 30, "A's .part")
      emu:set_faults {}
      local before = emu:stats()
      for _, args in ipairs { { "download", b, "-o", path, "--force" }, { "wait", b, "-o", path, "--force" },
        { "generate", "never paid for", "-o", path, "--force" } } do
        local res = kling(args)
        assert.equals(8, res.code, res.err)
        assert.matches("cannot write '" .. path .. "': another download is writing it", res.err, 1, true)
      end
      local after = emu:stats()
      assert.equals(before.jobs_created, after.jobs_created)
      assert.equals(0, #emu:job_record(b).file_requests) -- B's file never asked for
      local res = p.wait(60)
      assert.equals(0, res.code, res.err)
      local got = helpers.read_file(path)
      assert.is_true(got == pattern(300000, 5), "A's file is not A's video (" .. tostring(got and #got) .. " bytes; B's: "
        .. tostring(got == pattern(300000)) .. ")") -- A, every byte
      assert.is_nil(size_of(path .. ".part.lock"))
      assert.is_nil(size_of(path .. ".part.meta"))
    end)
  end)

  describe("two jobs of one command whose URLs end with the same name", function()
    it("get two files (NAME.mp4, NAME-1.mp4), never two downloads to one path", function()
      local host = require("file_host").start(dir)
      finally(host.stop)
      -- an API and a file host in one: req1's video is /a/clip.mp4 ("a" bytes), req2's /b/clip.mp4
      host.serve [[
return function(req)
  local h = { { "Content-Type", "application/json" } }
  local id, what = req.path:match("^/v1/requests/([%w-]+)/(%a+)$")
  if what == "status" then return { status = 200, headers = h, body = '{"request_id":"' .. id .. '","status":"completed"}' } end
  if what == "result" then
    local dir = id == "req1" and "a" or "b"
    return { status = 200, headers = h, body = '{"request_id":"' .. id .. '","status":"completed","output":{"video":"http://'
      .. req.headers.host .. '/' .. dir .. '/clip.mp4"}}' }
  end
  local d = req.path:match("^/(%a)/clip%.mp4$")
  if d then return { status = 200, headers = { { "ETag", '"' .. d .. '"' } }, body = d:rep(200000) } end
  return { status = 404, headers = h, body = '{"error_code":404001,"error_message":"no"}' }
end]]
      local out = dir .. "/samename"
      local res = kling { "download", "req1", "req2", "--out-dir", out, "--base-url", host.base .. "/v1" }
      assert.equals(0, res.code, res.err)
      local a, b = helpers.read_file(out .. "/clip.mp4"), helpers.read_file(out .. "/clip-1.mp4")
      assert.is_truthy(a and b, res.err)
      local files = { [a:sub(1, 1)] = a, [b:sub(1, 1)] = b }
      assert.is_true(files.a == ("a"):rep(200000), "req1's video")
      assert.is_true(files.b == ("b"):rep(200000), "req2's video")
    end)
  end)

  describe("the files of a download are checked before anything is sent", function()
    for i, suffix in ipairs { ".part.meta", ".part.meta.tmp", ".part.lock", ".part" } do
      it("refuses FILE" .. suffix .. " being a directory: generate pays for nothing, download asks for nothing (exit 8)", function()
        local id = completed("sidecar dir " .. i .. " @emu:bytes=2000")
        local path = dir .. "/sd" .. i .. ".mp4"
        assert(os.execute("mkdir " .. q(path .. suffix)))
        helpers.write_file(dir .. "/sd" .. i .. ".jsonl", '{"prompt":"never paid for","name":"k"}\n')
        os.execute("mkdir -p " .. q(dir .. "/sdb" .. i .. "/k.mp4" .. suffix))
        local before = emu:stats()
        for _, args in ipairs { { "generate", "never paid for", "-o", path }, { "download", id, "-o", path },
          { "wait", id, "-o", path }, { "batch", dir .. "/sd" .. i .. ".jsonl", "--out-dir", dir .. "/sdb" .. i } } do
          local res = kling(args)
          assert.equals(8, res.code, table.concat(args, " ") .. ": " .. res.err)
          assert.matches(suffix .. "': Is a directory", res.err, 1, true)
        end
        local after = emu:stats()
        assert.equals(before.jobs_created, after.jobs_created)
        assert.equals(before.files.requests, after.files.requests)
      end)
    end
  end)

  describe("--json of a failed download", function()
    it("has no path of a file that was never written; part names the .part kept for the next run", function()
      local id = completed("json empty @emu:bytes=0")
      local res = kling { "download", id, "-o", dir .. "/je.mp4", "--json" }
      assert.equals(7, res.code, res.err)
      local o = cjson.decode(res.out)
      assert.is_nil(o.path)
      assert.is_nil(o.part)
      local id2 = completed("json cut @emu:bytes=300000")
      for _, args in ipairs { { "download", id2, "-o", dir .. "/jc.mp4", "--json" },
        { "wait", id2, "-o", dir .. "/jc2.mp4", "--json" },
        { "generate", "json cut gen @emu:bytes=300000 @emu:queue=0 @emu:run=0", "-o", dir .. "/jc3.mp4", "--json" } } do
        emu:set_faults { "download:cut:1" }
        res = kling(args)
        emu:set_faults {}
        assert.equals(7, res.code, res.err)
        o = cjson.decode(res.out)
        assert.is_nil(o.path, table.concat(args, " "))
        assert.equals(args[4] .. ".part", o.part)
        assert.truthy(size_of(o.part))
      end
      -- a batch line
      helpers.write_file(dir .. "/jb.jsonl", '{"prompt":"json batch @emu:bytes=300000 @emu:queue=0 @emu:run=0","name":"k"}\n')
      emu:set_faults { "download:cut:1" }
      res = kling { "batch", dir .. "/jb.jsonl", "--out-dir", dir .. "/jb", "--json" }
      emu:set_faults {}
      assert.equals(7, res.code, res.err)
      o = cjson.decode(res.out)
      assert.equals("k", o.key)
      assert.is_nil(o.path)
      assert.equals(dir .. "/jb/k.mp4.part", o.part)
    end)

    it("has no path when the job's output has no video URL", function()
      local host = require("file_host").start(dir)
      finally(host.stop)
      host.serve [[
return function(req)
  local h = { { "Content-Type", "application/json" } }
  if req.path:match("/status$") then return { status = 200, headers = h, body = '{"request_id":"req1","status":"completed"}' } end
  if req.path:match("/result$") then
    return { status = 200, headers = h, body = '{"request_id":"req1","status":"completed","output":{}}' }
  end
  return { status = 404, headers = h, body = '{"error_code":404001,"error_message":"no"}' }
end]]
      local res = kling { "download", "req1", "-o", dir .. "/novideo.mp4", "--json", "--base-url", host.base .. "/v1" }
      assert.equals(7, res.code, res.err)
      local o = cjson.decode(res.out)
      assert.matches("without a usable output", o.error.message, 1, true)
      assert.is_nil(o.path)
    end)
  end)

  describe("a batch whose out-dir cannot take the videos", function()
    for _, conc in ipairs { 1, 2 } do
      it("stops submitting after a video fails with kind io (--concurrency " .. conc .. "); the same command "
        .. "collects every line later, none submitted twice", function()
        local out = dir .. "/fullbatch" .. conc
        if not mounted(out, "size=64k") then
          pending("cannot mount a tmpfs here (needs root): not tested")
          return
        end
        finally(function() os.execute("umount " .. q(out)) end)
        local lines, n = {}, 6
        for i = 1, n do
          lines[i] = string.format('{"prompt":"full %d-%d @emu:bytes=30000 @emu:pattern=%d @emu:queue=0 @emu:run=0","name":"k%d"}',
            conc, i, i, i)
        end
        local file = dir .. "/fullbatch" .. conc .. ".jsonl"
        helpers.write_file(file, table.concat(lines, "\n") .. "\n")
        local before = emu:stats().jobs_created
        local res = kling { "batch", file, "--out-dir", out, "--concurrency", tostring(conc), "--json" }
        assert.equals(8, res.code, res.err)
        local created = emu:stats().jobs_created - before
        assert.is_true(created < n, "every line was submitted (" .. created .. ") although the out-dir was full")
        assert.matches("no more submits", res.err, 1, true)
        local not_submitted = 0
        for line in res.out:gmatch("[^\n]+") do
          local o = cjson.decode(line)
          if o.status == "not_submitted" then not_submitted = not_submitted + 1 end
        end
        assert.equals(n - created, not_submitted)
        -- room again: the same command collects what was submitted and submits the rest
        assert(os.execute("mount -o remount,size=4m tmpfs " .. q(out)))
        res = kling { "batch", file, "--out-dir", out, "--concurrency", tostring(conc) }
        assert.equals(0, res.code, res.err)
        for i = 1, n do
          assert.equals(pattern(30000, i), helpers.read_file(out .. "/k" .. i .. ".mp4"), "k" .. i)
        end
        assert.equals(n, emu:stats().jobs_created - before) -- none twice
      end)
    end
  end)

  describe("numbers printed", function()
    it("prints the rate of a 45-byte file that takes a second (a float rate under 1 KiB/s)", function()
      local id = completed("tiny @emu:bytes=45")
      emu:set_faults { "download:trickle:1:40" }
      local res = kling { "download", id, "-o", dir .. "/tiny.mp4" }
      assert.equals(0, res.code, res.err)
      assert.matches("saved " .. dir:gsub("%p", "%%%0") .. "/tiny%.mp4 %(45 B, %d+ B/s%) after %d:%d%d", res.err)
      assert.equals(dir .. "/tiny.mp4\n", res.out)
    end)

    it("draws the live display of such a download without failing", function()
      local id = completed("tiny live @emu:bytes=45")
      emu:set_faults { "download:trickle:1:40" }
      local res = kling({ "download", id, "-o", dir .. "/tiny-live.mp4" }, { env = { KLING_TTY = "1", COLUMNS = "120" } })
      assert.equals(0, res.code, res.err)
      assert.matches("downloading", res.out, 1, true)
      assert.matches("saved " .. dir .. "/tiny-live.mp4 (45 B", res.out, 1, true)
    end)

    it("formats sizes, rates, times and ETAs of any number", function()
      assert.equals("150 B", cli.human_bytes(45 / 0.3))
      assert.equals("0 B", cli.human_bytes(0))
      assert.equals("0 B", cli.human_bytes(0.4))
      assert.equals("1023 B", cli.human_bytes(1023.99))
      assert.equals("1.0 KiB", cli.human_bytes(1024))
      assert.equals("4.0 MiB", cli.human_bytes(4194304))
      assert.equals("8.0 EiB", cli.human_bytes(2 ^ 63))
      assert.equals("8.0 EiB", cli.human_bytes(math.maxinteger))
      for _, bad in ipairs { 0 / 0, 1 / 0, -1 / 0, -1, "12" } do assert.equals("?", cli.human_bytes(bad)) end
      assert.equals("?", cli.human_bytes(nil))
      assert.equals("0:00", cli.human_time(0))
      assert.equals("0:00", cli.human_time(0.3))
      assert.equals("0:01", cli.human_time(0.5))
      assert.equals("0:00", cli.human_time(-3))
      assert.equals("1:00", cli.human_time(59.6))
      assert.equals("1:00:00", cli.human_time(3600))
      assert.equals("277777:46:40", cli.human_time(1e9))
      for _, bad in ipairs { 0 / 0, 1 / 0, -1 / 0, 1e300 } do assert.equals("?", cli.human_time(bad)) end
      assert.equals("150 B/s", cli.human_rate(45, 0.3))
      assert.is_nil(cli.human_rate(45, 0))
      assert.is_nil(cli.human_rate(45, -1))
      assert.is_nil(cli.human_rate(0 / 0, 1))
      assert.is_nil(cli.human_rate(45, 1e-320)) -- inf
      for _, dl in ipairs {
        { t0 = 0, got = 40, got0 = 0, total = 45 }, { t0 = 0, got = 40, got0 = 0, total = 0 },
        { t0 = 0, got = 40, got0 = 0 }, { t0 = 0, got = 0, got0 = 0, total = 45 },
        { t0 = 0.3, got = 40, got0 = 0, total = 45 }, { t0 = 0, got = 50, got0 = 0, total = 45 },
        { t0 = 0, got = 0 / 0, got0 = 0, total = 45 }, { t0 = 0, got = 40, got0 = 0, total = 1 / 0 },
      } do
        local ok, text = pcall(cli.download_text, dl, 0.3)
        assert.is_true(ok, tostring(text))
        assert.matches("^downloading", text)
      end
      assert.matches("ETA 0:00", cli.download_text({ t0 = 0, got = 40, got0 = 0, total = 45 }, 0.3), 1, true)
    end)
  end)
end)
