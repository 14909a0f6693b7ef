-- Downloads never append bytes they have not verified (issue 9, part 2): the .part's
-- sidecar and If-Range, Content-Range checks, 416 on a complete .part, no empty .part,
-- the low-speed rule and the deadline, redirects judged as URLs, local disk errors as
-- kind io, empty bodies; and the emulator's file host that the specs drive.
local helpers = require "helpers"
local kling = require "kling"
local core = require "kling.core"
local emulator = require "kling.emulator"
local kling_client = require "kling.client"
local cjson = require "cjson"

local q = helpers.quote
local TOKEN = "download-spec-token-91b4"
local null = cjson.null

local size_of = helpers.size_of

local function pattern(n, shift)
  return emulator.pattern_bytes(shift or 0, n)
end

local append_file = helpers.append_file

-- Fails once a download runs past `limit` seconds (so that, on code without the rule
-- under test, the spec fails instead of running for hours).
local function guard(limit)
  local t0 = core.now()
  return function()
    if core.now() - t0 > limit then error("the download still runs after " .. limit .. " s", 0) end
  end
end

describe("downloads", function()
  local emu, dir, n

  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0", "--run", "0", "--seed", "11" }
    dir = helpers.tmpdir()
    n = 0
  end)

  teardown(function()
    if emu then emu:stop() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  after_each(function() emu:set_faults {} end)

  local function client(extra)
    local opts = { base_url = emu.api, token = TOKEN, retries = { max = 3, base = 0.01, cap = 0.05 },
      poll = { initial = 0.02, min = 0.02, near = 0.05, max = 0.1 } }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return kling.new(opts)
  end

  -- A completed job of the emulator (its video's URL known).
  local function done_job(c, prompt)
    local job = assert(c:generate { prompt = prompt })
    assert(job:wait { timeout = 10 })
    return job
  end

  local function fresh_path(name)
    n = n + 1
    return dir .. "/" .. n .. "-" .. name
  end

  local function requests(job)
    return emu:job_record(job.id).file_requests
  end

  local function change(job, bytes)
    local res = helpers.http("POST", emu.root .. "/__emulator/jobs/" .. job.id .. "/change",
      { body = bytes and cjson.encode { bytes = bytes } or "{}" })
    assert.equals(200, res.status, res.body)
    return helpers.json(res.body)
  end

  -- Leaves path.part (and its sidecar) holding about half of the job's file: a download
  -- cut by the file host, with no retry. untrusted: the file host gives no validator, so
  -- the cut download leaves nothing (returns nil).
  local function cut_part(job, path, untrusted)
    emu:set_faults { "download:cut:1" }
    local c = client { retries = false }
    local got, err = c:download_url(job.output.video, path)
    c:close()
    emu:set_faults {}
    assert.is_nil(got)
    assert.equals("network", err.kind)
    if untrusted then
      assert.is_nil(helpers.read_file(path .. ".part"))
      return nil
    end
    local part = assert(helpers.read_file(path .. ".part"))
    assert.is_true(#part > 0)
    return part
  end

  local function no_files(path)
    assert.is_nil(size_of(path), path)
    assert.is_nil(size_of(path .. ".part"), path .. ".part")
    assert.is_nil(size_of(path .. ".part.meta"), path .. ".part.meta")
  end

  describe("a .part of another file", function()
    it("starts over instead of going on from the .part of another video at the same path", function()
      local c = client()
      local a = done_job(c, "video A @emu:bytes=300000 @emu:pattern=1")
      local b = done_job(c, "video B @emu:bytes=300000")
      local path = fresh_path("clip.mp4")
      local part = cut_part(a, path)
      assert.equals(pattern(#part, 1), part) -- A's bytes
      local got, bytes = assert(b:download(path))
      assert.equals(path, got)
      assert.equals(300000, bytes)
      assert.equals(pattern(300000), helpers.read_file(path)) -- B, every byte
      assert.is_nil(size_of(path .. ".part"))
      assert.is_nil(size_of(path .. ".part.meta"))
      local reqs = requests(b)
      assert.equals(1, #reqs)
      assert.equals(null, reqs[1].range) -- from 0: nothing of A was kept
      c:close()
    end)

    it("goes on from a .part of the same file after its pre-signed URL changed (query aside)", function()
      local c = client()
      local job = done_job(c, "signed @emu:bytes=300000 @emu:signed")
      local path = fresh_path("signed.mp4")
      local part = cut_part(job, path)
      local meta = assert(helpers.read_file(path .. ".part.meta"))
      assert.matches("^kling%-part 2\n", meta)
      assert.is_nil(meta:find("?", 1, true)) -- the query string is not part of the identity
      -- a later run: the result again, with another signature
      local again = assert(c:job(job.id))
      local out = assert(again:result())
      assert.are_not.equal(job.output.video, out.video)
      assert.equals(job.output.video:gsub("%?.*", ""), (out.video:gsub("%?.*", "")))
      local sent = emu:stats().files.bytes_sent
      local _, bytes = assert(again:download(path))
      assert.equals(300000, bytes)
      assert.equals(pattern(300000), helpers.read_file(path))
      assert.equals(300000 - #part, emu:stats().files.bytes_sent - sent) -- only the rest
      local reqs = requests(job)
      local last = reqs[#reqs]
      assert.equals("bytes=" .. #part .. "-", last.range)
      assert.equals(emu:job_record(job.id).file_etag, last.if_range) -- the strong ETag
      assert.equals(206, last.status)
      c:close()
    end)

    it("starts over when the file changed at the same URL (If-Range answered with the whole file)", function()
      local c = client()
      local job = done_job(c, "changes @emu:bytes=300000")
      local path = fresh_path("changed.mp4")
      local part = cut_part(job, path)
      local old_etag = emu:job_record(job.id).file_etag
      change(job)
      local _, bytes = assert(job:download(path))
      assert.equals(300000, bytes)
      assert.equals(pattern(300000, 7), helpers.read_file(path)) -- the new file, every byte
      local last = requests(job)[#requests(job)]
      assert.equals("bytes=" .. #part .. "-", last.range)
      assert.equals(old_etag, last.if_range)
      assert.equals(200, last.status)
      c:close()
    end)

    it("starts over when a host that ignores If-Range sends a 206 of the changed file (another ETag)", function()
      local c = client()
      local job = done_job(c, "liar @emu:bytes=300000 @emu:ifrange=ignore")
      local path = fresh_path("liar.mp4")
      local part = cut_part(job, path)
      change(job)
      assert(job:download(path))
      assert.equals(pattern(300000, 7), helpers.read_file(path))
      local reqs = requests(job)
      assert.equals("bytes=" .. #part .. "-", reqs[#reqs - 1].range)
      assert.equals(206, reqs[#reqs - 1].status) -- refused: not appended
      assert.equals(null, reqs[#reqs].range)     -- then from 0
      assert.equals(200, reqs[#reqs].status)
      c:close()
    end)

    it("starts over when the changed file is shorter than the .part (a 416 that does not match)", function()
      local c = client()
      local job = done_job(c, "shrinks @emu:bytes=300000 @emu:ifrange=ignore")
      local path = fresh_path("shorter.mp4")
      cut_part(job, path)
      change(job, 100000)
      local _, bytes = assert(job:download(path))
      assert.equals(100000, bytes)
      assert.equals(pattern(100000, 7), helpers.read_file(path))
      local reqs = requests(job)
      assert.equals(416, reqs[#reqs - 1].status)
      assert.equals(null, reqs[#reqs].range)
      c:close()
    end)

    it("starts over when the changed file is longer (a 206 whose total is not the file's)", function()
      local c = client()
      local job = done_job(c, "grows @emu:bytes=300000 @emu:ifrange=ignore")
      local path = fresh_path("longer.mp4")
      cut_part(job, path)
      change(job, 400000)
      local _, bytes = assert(job:download(path))
      assert.equals(400000, bytes)
      assert.equals(pattern(400000, 7), helpers.read_file(path))
      local reqs = requests(job)
      assert.equals(206, reqs[#reqs - 1].status)
      assert.equals(null, reqs[#reqs].range)
      c:close()
    end)

    it("does not trust a .part without its sidecar, or with one that is torn, foreign or wrong", function()
      local c = client()
      local job = done_job(c, "sidecars @emu:bytes=200000")
      local damage = {
        missing = function(meta) os.remove(meta) end,
        garbage = function(meta) helpers.write_file(meta, "\0\1garbage") end,
        torn = function(meta) helpers.write_file(meta, (helpers.read_file(meta):gsub("\n[^\n]*\n$", "\nlast-mod"))) end,
        other_url = function(meta) helpers.write_file(meta, (helpers.read_file(meta):gsub("/v/[^\n]*", "/v/other.mp4"))) end,
        short_length = function(meta) helpers.write_file(meta, (helpers.read_file(meta):gsub("length %d+", "length 10"))) end,
        no_validator = function(meta)
          helpers.write_file(meta, (helpers.read_file(meta):gsub("etag [^\n]*", "etag "):gsub("last%-modified [^\n]*", "last-modified ")))
        end,
      }
      for name, spoil in pairs(damage) do
        local path = fresh_path(name .. ".bin")
        cut_part(job, path)
        spoil(path .. ".part.meta")
        local sent = emu:stats().files.bytes_sent
        local _, bytes = assert(job:download(path))
        assert.equals(200000, bytes)
        assert.equals(pattern(200000), helpers.read_file(path), name)
        assert.equals(200000, emu:stats().files.bytes_sent - sent, name) -- the whole file again
        assert.equals(null, requests(job)[#requests(job)].range, name)
        assert.is_nil(size_of(path .. ".part.meta"), name)
      end
      c:close()
    end)

    -- (a Last-Modified alone, which must be a second older than the answer's Date: the
    -- specs with a scripted file host below, which controls both)
    it("goes on across runs only with a strong ETag from the emulator; a weak one or none leaves no .part", function()
      local c = client()
      local cases = { { "both", true }, { "etag", true }, { "weak", false }, { "none", false } }
      for _, case in ipairs(cases) do
        local job = done_job(c, "validators @emu:bytes=200000 @emu:validators=" .. case[1])
        local path = fresh_path(case[1] .. ".bin")
        local part = cut_part(job, path, not case[2])
        local record = emu:job_record(job.id)
        if case[2] then
          assert.truthy(size_of(path .. ".part.meta"), case[1])
        else
          no_files(path) -- nothing to tell the file by: nothing kept
        end
        assert(job:download(path))
        assert.equals(pattern(200000), helpers.read_file(path), case[1])
        local last = requests(job)[#requests(job)]
        if case[2] then
          assert.equals("bytes=" .. #part .. "-", last.range)
          assert.equals(record.file_etag, last.if_range)
        else
          assert.equals(null, last.range, case[1])
        end
      end
      c:close()
    end)

    it("starts over from a trusted .part with resume = false", function()
      local c = client()
      local job = done_job(c, "no resume @emu:bytes=200000")
      local path = fresh_path("noresume.bin")
      cut_part(job, path)
      assert(job:download(path, { resume = false }))
      assert.equals(pattern(200000), helpers.read_file(path))
      assert.equals(null, requests(job)[#requests(job)].range)
      c:close()
    end)
  end)

  describe("range answers must match the request", function()
    local cases = {
      { "range_start", "starts one byte off the offset asked for" },
      { "range_total", "gives a total length that is not the file's" },
      { "range_none", "has no Content-Range" },
    }
    for _, case in ipairs(cases) do
      it("starts over from 0 when a 206 " .. case[2] .. ", never appending it", function()
        local c = client()
        local job = done_job(c, "ranges " .. case[1] .. " @emu:bytes=300000")
        local path = fresh_path(case[1] .. ".bin")
        local part = cut_part(job, path)
        emu:set_faults { "download:" .. case[1] .. ":1" }
        local _, bytes = assert(job:download(path))
        assert.equals(300000, bytes)
        assert.equals(pattern(300000), helpers.read_file(path))
        local reqs = requests(job)
        assert.equals("bytes=" .. #part .. "-", reqs[#reqs - 1].range)
        assert.equals(case[1], reqs[#reqs - 1].fault)
        assert.equals(null, reqs[#reqs].range)
        assert.equals(200, reqs[#reqs].status)
        c:close()
      end)
    end

    it("starts over when the file host ignores the Range and sends the whole file (200)", function()
      local c = client()
      local job = done_job(c, "ranges ignored @emu:bytes=300000")
      local path = fresh_path("ignored.bin")
      local part = cut_part(job, path)
      emu:set_faults { "download:range_ignore:1" }
      local sent = emu:stats().files.bytes_sent
      assert(job:download(path))
      assert.equals(pattern(300000), helpers.read_file(path))
      assert.equals(300000, emu:stats().files.bytes_sent - sent)
      local last = requests(job)[#requests(job)]
      assert.equals("bytes=" .. #part .. "-", last.range)
      assert.equals(200, last.status)
      c:close()
    end)

    it("yields exactly the file through cuts and wrong ranges mixed over many tries", function()
      local c = client { retries = { max = 30, base = 0.001, cap = 0.01 } }
      local job = done_job(c, "mixed @emu:bytes=500000")
      local path = fresh_path("mixed.bin")
      emu:set_faults({ "download:cut:0.5", "download:range_start:0.15", "download:range_total:0.15",
        "download:range_none:0.1" }, 3)
      local _, bytes = assert(job:download(path))
      assert.equals(500000, bytes)
      assert.equals(pattern(500000), helpers.read_file(path))
      local injected = emu:stats().faults.injected.download
      assert.is_true((injected.cut or 0) >= 1)
      c:close()
    end)
  end)

  describe("a .part that already holds the whole file", function()
    it("is renamed into place when the 416's bytes */N is its length, with no byte sent", function()
      local c = client()
      local job = done_job(c, "complete @emu:bytes=300000")
      local path = fresh_path("complete.bin")
      local part = cut_part(job, path)
      -- the rest arrived, but the process died before the rename
      append_file(path .. ".part", pattern(300000):sub(#part + 1))
      local sent = emu:stats().files.bytes_sent
      local got, bytes = job:download(path)
      assert.equals(path, got, tostring(bytes))
      assert.equals(300000, bytes)
      assert.equals(pattern(300000), helpers.read_file(path))
      assert.is_nil(size_of(path .. ".part"))
      assert.is_nil(size_of(path .. ".part.meta"))
      assert.equals(0, emu:stats().files.bytes_sent - sent)
      local last = requests(job)[#requests(job)]
      assert.equals("bytes=300000-", last.range)
      assert.equals(emu:job_record(job.id).file_etag, last.if_range)
      assert.equals(416, last.status)
      c:close()
    end)

    it("reports the progress of a complete .part as the whole file", function()
      local c = client()
      local job = done_job(c, "complete progress @emu:bytes=100000")
      local path = fresh_path("complete2.bin")
      local part = cut_part(job, path)
      append_file(path .. ".part", pattern(100000):sub(#part + 1))
      local seen
      assert(job:download(path, { on_progress = function(got, total) seen = { got, total } end }))
      assert.same({ 100000, 100000 }, seen)
      c:close()
    end)
  end)

  describe("nothing received, nothing left", function()
    it("leaves no .part when the connection is refused", function()
      local c = client { retries = false }
      local path = fresh_path("refused.mp4")
      local got, err = c:download_url("http://127.0.0.1:1/v/x.mp4", path)
      assert.is_nil(got)
      assert.equals("network", err.kind)
      no_files(path)
      c:close()
    end)

    it("leaves no .part when the TLS handshake fails", function()
      local c = client { retries = false }
      local path = fresh_path("handshake.mp4")
      local got, err = c:download_url((emu.files:gsub("^http:", "https:")) .. "/v/x.mp4", path)
      assert.is_nil(got)
      assert.equals("network", err.kind)
      no_files(path)
      c:close()
    end)

    it("leaves no .part when the file host answers 503 after the retries, or 404", function()
      local c = client { retries = { max = 1, base = 0.01 } }
      local job = done_job(c, "unavailable @emu:bytes=1000")
      local path = fresh_path("503.mp4")
      emu:set_faults { "download:503:1" }
      local got, err = job:download(path)
      assert.is_nil(got)
      assert.equals("server", err.kind)
      no_files(path)
      emu:set_faults {}
      got, err = c:download_url(emu.files .. "/v/no-such-job.mp4", path)
      assert.is_nil(got)
      assert.equals("not_found", err.kind)
      no_files(path)
      c:close()
    end)

    it("creates the .part only when the first verified byte arrives", function()
      local c = client()
      local job = done_job(c, "lazy @emu:bytes=200000")
      local path = fresh_path("lazy.bin")
      local x = assert(c._engine:request { url = job.output.video, download = path })
      assert.is_nil(size_of(path .. ".part")) -- nothing arrived yet
      while not x:done() do c._engine:step(0.05) end
      assert.equals(path, x:result().path)
      assert.equals(pattern(200000), helpers.read_file(path))
      x:close()
      c:close()
    end)

    it("keeps a trusted .part as it was when a later try receives nothing, and goes on from it after", function()
      local c = client { retries = false }
      local job = done_job(c, "keeps @emu:bytes=300000")
      local path = fresh_path("keeps.bin")
      local part = cut_part(job, path)
      local meta = helpers.read_file(path .. ".part.meta")
      emu:set_faults { "download:503:1" }
      local got, err = job:download(path)
      assert.is_nil(got)
      assert.equals("server", err.kind)
      assert.equals(part, helpers.read_file(path .. ".part"))
      assert.equals(meta, helpers.read_file(path .. ".part.meta"))
      emu:set_faults {}
      local sent = emu:stats().files.bytes_sent
      assert(job:download(path))
      assert.equals(pattern(300000), helpers.read_file(path))
      assert.equals(300000 - #part, emu:stats().files.bytes_sent - sent)
      c:close()
    end)
  end)

  describe("empty bodies", function()
    it("refuses a 200 with an empty body as kind protocol, leaving nothing behind", function()
      local c = client()
      local job = done_job(c, "empty video @emu:bytes=0")
      local path = fresh_path("empty.mp4")
      local got, err = job:download(path)
      assert.is_nil(got)
      assert.equals("protocol", err.kind)
      assert.matches("the file host sent an empty body", err.message, 1, true)
      assert.is_false(err.retryable)
      no_files(path)
      c:close()
    end)

    it("refuses an empty 200 for a file that is not empty (fault empty)", function()
      local c = client()
      local job = done_job(c, "emptied @emu:bytes=5000")
      local path = fresh_path("emptied.mp4")
      emu:set_faults { "download:empty:1" }
      local got, err = job:download(path)
      assert.is_nil(got)
      assert.equals("protocol", err.kind)
      no_files(path)
      c:close()
    end)

    it("leaves a trusted .part as it was when an empty 200 answers the range request", function()
      local c = client()
      local job = done_job(c, "emptied later @emu:bytes=300000")
      local path = fresh_path("emptylater.bin")
      local part = cut_part(job, path)
      emu:set_faults { "download:empty:1" }
      local got, err = job:download(path)
      assert.is_nil(got)
      assert.equals("protocol", err.kind)
      assert.equals(part, helpers.read_file(path .. ".part"))
      emu:set_faults {}
      assert(job:download(path))
      assert.equals(pattern(300000), helpers.read_file(path))
      c:close()
    end)
  end)

  describe("bounded time", function()
    it("ends a try that stays under min_rate for stall_timeout, and keeps what arrived for later", function()
      local c = client { retries = false }
      local job = done_job(c, "trickle @emu:bytes=100000")
      local path = fresh_path("trickle.bin")
      emu:set_faults { "download:trickle:1:2" }
      local t0 = core.now()
      local got, err = job:download(path, { stall_timeout = 1, on_progress = guard(30) })
      local took = core.now() - t0
      assert.is_nil(got)
      assert.equals("timeout", err.kind)
      assert.equals("slow", err.transport)
      assert.matches("too slow: under 1024 bytes/s for 1 s", err.message, 1, true)
      assert.is_true(err.retryable)
      assert.is_true(took < 15, "took " .. took)
      local part = assert(helpers.read_file(path .. ".part"))
      assert.equals(pattern(#part), part)
      emu:set_faults {}
      assert(job:download(path))
      assert.equals(pattern(100000), helpers.read_file(path))
      assert.equals("bytes=" .. #part .. "-", requests(job)[#requests(job)].range)
      c:close()
    end)

    it("goes on from the .part in each retry of a slow download, and still ends", function()
      local c = client { retries = { max = 1, base = 0.01 } }
      local job = done_job(c, "trickle twice @emu:bytes=100000")
      local path = fresh_path("trickle2.bin")
      emu:set_faults { "download:trickle:1:2" }
      local got, err = job:download(path, { stall_timeout = 1, min_rate = 4096, on_progress = guard(30) })
      assert.is_nil(got)
      assert.equals("slow", err.transport)
      assert.matches("under 4096 bytes/s", err.message, 1, true)
      local reqs = requests(job)
      assert.equals(2, #reqs)
      assert.equals(null, reqs[1].range)
      assert.matches("^bytes=%d+%-$", reqs[2].range)
      c:close()
    end)

    it("stops at the deadline, retries included, keeping the .part", function()
      local c = client { retries = { max = 50, base = 0.01, cap = 0.02 } }
      local job = done_job(c, "deadline @emu:bytes=100000")
      local path = fresh_path("deadline.bin")
      emu:set_faults { "download:trickle:1:300" }
      local t0 = core.now()
      local got, err = job:download(path, { deadline = 1.5, min_rate = 1, on_progress = guard(30) })
      local took = core.now() - t0
      assert.is_nil(got)
      assert.equals("timeout", err.kind)
      assert.equals("deadline", err.transport)
      assert.matches("deadline", err.message, 1, true)
      assert.is_true(took >= 1.4, "took " .. took)
      assert.is_true(took < 15, "took " .. took)
      local part = assert(helpers.read_file(path .. ".part"))
      assert.equals(pattern(#part), part)
      assert.truthy(size_of(path .. ".part.meta"))
      c:close()
    end)

    it("refuses bad values of stall_timeout, min_rate and deadline", function()
      local c = client()
      for _, opts in ipairs {
        { stall_timeout = 0 }, { stall_timeout = "3" }, { min_rate = 0 }, { min_rate = 1.5 },
        { deadline = -1 }, { deadline = 0 / 0 }, { max_bytes = "x" },
      } do
        assert.has_error(function() c:download_url(emu.files .. "/v/x.mp4", dir .. "/bad.bin", opts) end)
      end
      local job = assert(c:job("some-id"))
      assert.has_error(function() job:download(dir .. "/bad.bin", { min_rate = -5 }) end)
      c:close()
    end)

    it("refuses values beyond the bounds with a message that states them, before sending anything", function()
      local c = client()
      local before = emu:stats().files.requests
      local cases = {
        { { stall_timeout = 2e7 }, "opts.stall_timeout must be a number of seconds > 0 and at most 10000000" },
        { { deadline = 1e300 }, "opts.deadline must be a number of seconds > 0 and at most 10000000" },
        { { min_rate = 2000000000000 }, "opts.min_rate must be a whole number of bytes per second >= 1 and at most 1000000000000" },
        { { max_bytes = 1e19 }, "opts.max_bytes must be a number of bytes >= 0 and at most 9000000000000000000" },
      }
      for _, case in ipairs(cases) do
        local ok, msg = pcall(c.download_url, c, emu.files .. "/v/x.mp4", dir .. "/bounds.bin", case[1])
        assert.is_false(ok)
        assert.matches("client:download_url: " .. case[2], msg, 1, true)
        local job = assert(c:job("some-id"))
        ok, msg = pcall(job.download, job, dir .. "/bounds.bin", case[1])
        assert.is_false(ok)
        assert.matches("job:download: " .. case[2], msg, 1, true)
      end
      -- the bounds themselves are taken (the same table the command line checks its flags with)
      local bounds = require("kling.client").DOWNLOAD_BOUNDS
      assert.equals(1e7, bounds.stall_timeout.max)
      local job = done_job(c, "at the bounds @emu:bytes=1000")
      assert(job:download(fresh_path("bounds.bin"), { stall_timeout = 1e7, deadline = 1e7, min_rate = 1, max_bytes = 9e18 }))
      assert.equals(before + 1, emu:stats().files.requests)
      c:close()
    end)
  end)

  describe("redirects", function()
    it("follows a redirect from a loopback http file host to another loopback http URL", function()
      local c = client()
      local job = done_job(c, "redirected @emu:bytes=50000 @emu:redirect=1")
      assert.matches("/r/1/", job.output.video)
      local path = fresh_path("redirected.bin")
      local _, bytes = assert(job:download(path))
      assert.equals(50000, bytes)
      assert.equals(pattern(50000), helpers.read_file(path))
      local reqs = requests(job)
      assert.equals(302, reqs[1].status)
      assert.matches("^/r/1/", reqs[1].path)
      assert.equals(200, reqs[2].status)
      assert.matches("^/v/", reqs[2].path)
      c:close()
    end)

    it("follows five hops between loopback hosts, and goes on with Range after cuts", function()
      local c = client { retries = { max = 20, base = 0.001, cap = 0.01 } }
      local job = done_job(c, "hops @emu:bytes=300000 @emu:redirect=5 @emu:redirect_code=307 @emu:signed")
      local path = fresh_path("hops.bin")
      emu:set_faults { "download:cut:0.5" }
      assert(job:download(path))
      assert.equals(pattern(300000), helpers.read_file(path))
      local hops = 0
      for _, r in ipairs(requests(job)) do if r.status == 307 then hops = hops + 1 end end
      assert.is_true(hops >= 5)
      c:close()
    end)

    it("refuses a sixth redirect", function()
      local c = client()
      local job = done_job(c, "too many @emu:bytes=1000 @emu:redirect=6")
      local path = fresh_path("six.bin")
      local got, err = job:download(path)
      assert.is_nil(got)
      assert.equals("network", err.kind)
      assert.matches("more than 5 redirects", err.message, 1, true)
      no_files(path)
      c:close()
    end)

    it("refuses a redirect to plain http on a host that is not loopback, without connecting to it", function()
      local c = client()
      local job = done_job(c, "elsewhere @emu:bytes=1000 @emu:redirect_to=http://192.0.2.1/x.mp4?sig=1")
      local path = fresh_path("elsewhere.bin")
      local t0 = core.now()
      local got, err = job:download(path)
      assert.is_nil(got)
      assert.equals("network", err.kind)
      assert.matches("refusing the redirect to http://192.0.2.1/x.mp4", err.message, 1, true)
      assert.matches("plain http", err.message, 1, true)
      assert.is_nil(err.message:find("sig=1", 1, true)) -- a signed query is not repeated
      assert.is_true(core.now() - t0 < 5)
      no_files(path)
      c:close()
    end)

    it("refuses a redirect to a scheme other than http and https", function()
      local c = client()
      local job = done_job(c, "ftp @emu:bytes=1000 @emu:redirect_to=ftp://127.0.0.1/x.mp4")
      local path = fresh_path("ftp.bin")
      local got, err = job:download(path)
      assert.is_nil(got)
      assert.equals("network", err.kind)
      assert.matches("scheme 'ftp'", err.message, 1, true)
      no_files(path)
      c:close()
    end)

    it("never sends the token on any hop, even one to the API's own origin", function()
      local c = client()
      local job = done_job(c, "to the api @emu:bytes=1000")
      local target = done_job(c, "api hop @emu:bytes=1000 @emu:redirect=2 @emu:redirect_to="
        .. emu.api .. "/requests/" .. job.id .. "/result")
      local before = emu:stats()
      local got, err = target:download(fresh_path("api.bin"))
      assert.is_nil(got)
      assert.equals("auth", err.kind) -- the API refused a request without the token
      local after = emu:stats()
      assert.equals(before.auth_failures + 1, after.auth_failures)
      assert.equals(0, after.files.authorization_headers)
      c:close()
    end)
  end)

  describe("local disk errors", function()
    -- a tmpfs at path (spec/disk.lua): false when it cannot be mounted (not root)
    local function mounted(path, opts)
      return require("disk").mount_tmpfs(path, opts:match("size=(%w+)"), { ro = opts:find("ro") ~= nil }) == true
    end

    it("reports a missing directory as kind io, with the path, before sending anything", function()
      local c = client()
      local job = done_job(c, "no dir @emu:bytes=1000")
      local before = emu:stats().files.requests
      local got, err = job:download(dir .. "/no/such/dir/x.mp4")
      assert.is_nil(got)
      assert.equals("io", err.kind)
      assert.equals(dir .. "/no/such/dir", err.path)
      assert.matches("No such file or directory", err.message, 1, true)
      assert.is_false(err.retryable)
      assert.equals(before, emu:stats().files.requests)
      c:close()
    end)

    it("reports a target that is a directory as kind io, before sending anything", function()
      local c = client()
      local job = done_job(c, "a dir @emu:bytes=1000")
      local target = fresh_path("isdir")
      os.execute("mkdir -p " .. q(target))
      local before = emu:stats().files.requests
      local got, err = job:download(target)
      assert.is_nil(got)
      assert.equals("io", err.kind)
      assert.equals(target, err.path)
      assert.matches("Is a directory", err.message, 1, true)
      assert.equals(before, emu:stats().files.requests)
      assert.is_nil(size_of(target .. ".part"))
      c:close()
    end)

    it("reports a directory where no file can be created as kind io, before sending anything", function()
      local c = client()
      local job = done_job(c, "proc @emu:bytes=1000")
      local before = emu:stats().files.requests
      local got, err = job:download("/proc/kling-download-spec.mp4")
      assert.is_nil(got)
      assert.equals("io", err.kind)
      -- the first file the download makes is its lock, before any request
      assert.equals("/proc/kling-download-spec.mp4.part.lock", err.path)
      assert.matches("cannot write '/proc/kling-download-spec.mp4.part'", err.message, 1, true)
      assert.equals(before, emu:stats().files.requests)
      c:close()
    end)

    it("reports a read-only directory as kind io, before sending anything", function()
      local ro = dir .. "/ro"
      if not mounted(ro, "ro,size=64k") then
        pending("cannot mount a read-only tmpfs here (needs root): not tested")
        return
      end
      finally(function() os.execute("umount " .. q(ro)) end)
      local c = client()
      local job = done_job(c, "read-only @emu:bytes=1000")
      local before = emu:stats().files.requests
      local got, err = job:download(ro .. "/x.mp4")
      assert.is_nil(got)
      assert.equals("io", err.kind)
      assert.equals(ro, err.path)
      assert.matches("Read-only file system", err.message, 1, true)
      assert.equals(before, emu:stats().files.requests)
      c:close()
    end)

    it("reports a full disk as kind io, keeping the verified bytes for a later run to go on", function()
      local full = dir .. "/full"
      if not mounted(full, "size=64k") then
        pending("cannot mount a tmpfs here (needs root): not tested")
        return
      end
      finally(function() os.execute("umount " .. q(full)) end)
      local c = client()
      local job = done_job(c, "full disk @emu:bytes=300000")
      local path = full .. "/clip.bin"
      local got, err = job:download(path)
      assert.is_nil(got)
      assert.equals("io", err.kind)
      assert.equals(path .. ".part", err.path)
      assert.matches("No space left on device", err.message, 1, true)
      assert.is_false(err.retryable)
      local part = assert(helpers.read_file(path .. ".part"))
      assert.is_true(#part > 0)
      assert.equals(pattern(#part), part) -- a verified prefix, nothing else
      assert.truthy(size_of(path .. ".part.meta"))
      assert(os.execute("mount -o remount,size=1m tmpfs " .. q(full)))
      local sent = emu:stats().files.bytes_sent
      assert(job:download(path))
      assert.equals(pattern(300000), helpers.read_file(path))
      assert.equals(300000 - #part, emu:stats().files.bytes_sent - sent)
      c:close()
    end)

    it("ends a cut try whose bytes fill the disk with kind io, without trying again", function()
      -- the bytes of a try the host cut are written when the try ends: a full disk then
      -- must end the download (io), not be retried and then reported as io with the
      -- whole file left behind as a .part
      local full = dir .. "/full-cut"
      if not mounted(full, "size=64k") then
        pending("cannot mount a tmpfs here (needs root): not tested")
        return
      end
      finally(function()
        emu:set_faults {}
        os.execute("umount " .. q(full))
      end)
      local c = kling.new { base_url = emu.api, token = TOKEN, retries = { max = 4, base = 0.01, cap = 0.01 } }
      local job = done_job(c, "cut and full @emu:bytes=300000")
      local path = full .. "/clip.bin"
      emu:set_faults { "download:cut:1" }
      local got, err = job:download(path)
      assert.is_nil(got)
      assert.equals("io", err.kind)
      assert.matches("No space left on device", err.message, 1, true)
      local part = assert(helpers.read_file(path .. ".part"))
      assert.is_true(#part > 0 and #part < 150000) -- what fitted of the half the host sent
      assert.equals(pattern(#part), part)
      assert.equals(1, #emu:job_record(job.id).file_requests) -- not tried again
      emu:set_faults {}
      assert(os.execute("mount -o remount,size=1m tmpfs " .. q(full)))
      assert(job:download(path))
      assert.equals(pattern(300000), helpers.read_file(path))
      local reqs = emu:job_record(job.id).file_requests
      assert.equals("bytes=" .. #part .. "-", reqs[#reqs].range)
      c:close()
    end)

    it("reports a file size limit (EFBIG) as kind io, keeping the bytes written", function()
      local c = client()
      local job = done_job(c, "too big for ulimit @emu:bytes=300000")
      local path = fresh_path("efbig.bin")
      local script = dir .. "/efbig.lua"
      helpers.write_file(script, string.format([[
        package.path = %q .. "/lua/?.lua;" .. package.path
        package.cpath = %q .. "/build/?.so;" .. package.cpath
        local kling = require "kling"
        local c = kling.new { base_url = %q, token = %q }
        local got, err = c:download_url(%q, %q)
        io.write(tostring(got), "|", err and err.kind or "", "|", err and tostring(err.path) or "", "|",
          err and err.message or "", "\n")
      ]], helpers.root, helpers.root, emu.api, TOKEN, job.output.video, path))
      -- dash counts ulimit -f in 512-byte blocks: 102400 bytes
      local p = io.popen("sh -c " .. q("ulimit -f 200; trap '' XFSZ; exec lua5.4 " .. q(script)) .. " 2>&1")
      local out = p:read("*a")
      p:close()
      local got, kind, epath, msg = out:match("^([^|]*)|([^|]*)|([^|]*)|([^\n]*)")
      assert.equals("nil", got, out)
      assert.equals("io", kind, out)
      assert.equals(path .. ".part", epath)
      assert.matches("File too large", msg, 1, true)
      local part = assert(helpers.read_file(path .. ".part"))
      assert.equals(102400, #part)
      assert.equals(pattern(#part), part)
      assert(job:download(path))
      assert.equals(pattern(300000), helpers.read_file(path))
      c:close()
    end)
  end)
end)

-- Downloads against a file host whose every answer a spec chooses (spec/file_host.lua): the
-- validators that must guard a resume (review of issue 9, findings 1 and 2), range answers
-- whose validators are not the file's, one download per path (finding 10), the files of a
-- download checked before anything is sent (finding 14), and the bytes in memory kept
-- however a transfer ends (finding 13).
describe("downloads from a scripted file host", function()
  local file_host = require "file_host"
  local http_date = emulator.http_date
  local dir, host, n
  local SIZE = 100000
  local A, B = ("a"):rep(SIZE), ("b"):rep(SIZE)

  setup(function()
    dir = helpers.tmpdir()
    host = file_host.start(dir)
    n = 0
  end)
  teardown(function()
    if host then host.stop() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  -- big strings compared without printing them whole on a failure
  local function same(expected, got, what)
    if expected == got then return end
    local i = 1
    while got and i <= #expected and expected:sub(i, i) == got:sub(i, i) do i = i + 1 end
    error(string.format("%s: expected %d bytes, got %s (first difference at byte %d: %q)", what or "file", #expected,
      got and (#got .. " bytes") or "no file", i, got and got:sub(i, i + 9) or ""), 2)
  end

  local function client(extra)
    local opts = { base_url = "http://127.0.0.1:1/v1", token = TOKEN, retries = { max = 3, base = 0.01, cap = 0.02 } }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return kling.new(opts)
  end

  local function fresh(name)
    n = n + 1
    return dir .. "/" .. n .. "-" .. name
  end

  -- Lua text of a list of headers { { name, value }, ... }.
  local function lua_headers(list)
    local parts = {}
    for _, h in ipairs(list or {}) do parts[#parts + 1] = string.format("{ %q, %q }", h[1], h[2]) end
    return "{ " .. table.concat(parts, ", ") .. " }"
  end

  -- A file host script: the first answer is file `first` (a or b) with headers h1, cut after
  -- `cut` bytes (nil: whole); every later one is file `later` with headers h2: 206 for a
  -- "Range: bytes=N-" (whatever If-Range says: a host that lies), 416 past the end, else 200.
  -- opts.range416: the Content-Range of that 416 (default "bytes */SIZE").
  local function serve(o)
    host.serve(string.format([[
local files = { a = (%q):rep(%d), b = (%q):rep(%d) }
local h1, h2, cut, first, later = %s, %s, %s, %q, %q
return function(req, n)
  local file = files[n == 1 and first or later]
  local headers = n == 1 and h1 or h2
  local from = tonumber((req.headers.range or ""):match("^bytes=(%%d+)%%-$"))
  local h = {}
  for _, x in ipairs(headers) do h[#h + 1] = x end
  if n > 1 and from and from >= #file then
    h[#h + 1] = { "Content-Range", "bytes */" .. #file }
    return { status = 416, headers = h }
  elseif n > 1 and from then
    h[#h + 1] = { "Content-Range", string.format("bytes %%d-%%d/%%d", from, #file - 1, #file) }
    return { status = 206, headers = h, body = file:sub(from + 1) }
  end
  return { status = 200, headers = headers, body = file, send = n == 1 and cut or nil }
end]], "a", SIZE, "b", SIZE, lua_headers(o.h1), lua_headers(o.h2 or o.h1), tostring(o.cut), o.first or "a",
      o.later or "b"))
  end

  local function since(before)
    local all, list = host.requests(), {}
    for i = before + 1, #all do list[#list + 1] = all[i] end
    return list
  end

  local now = os.time()
  local OLD = http_date(now - 86400) -- a day old: a Last-Modified that validates
  local DATE = { "Date", http_date(now) }

  describe("a validator guards every resume within one call", function()
    local lying = {
      { "no validator", {} },
      { "a weak ETag", { { "ETag", 'W/"v1"' } } },
      { "a weak ETag beside an old Last-Modified", { { "ETag", 'W/"v1"' }, { "Last-Modified", OLD }, DATE } },
      { "a Last-Modified in the future (after the Date)", { { "Last-Modified", http_date(now + 3600) }, DATE } },
      { "a Last-Modified in the same second as the Date", { { "Last-Modified", http_date(now) }, { "Date", http_date(now) } } },
      { "a Last-Modified in the future (no Date)", { { "Last-Modified", http_date(now + 3600) } } },
      { "an ETag that is not a valid strong one", { { "ETag", '"v"1"' } } },
    }
    for _, case in ipairs(lying) do
      it("starts a cut try over from 0 with " .. case[1] .. ", never appending another file's tail", function()
        serve { h1 = case[2], cut = SIZE // 2 }
        local before = #host.requests()
        local c = client()
        local path = fresh("within.mp4")
        local got, bytes = c:download_url(host.base .. "/nov/x.mp4", path)
        assert.equals(path, got, tostring(bytes))
        assert.equals(SIZE, bytes)
        same(B, helpers.read_file(path)) -- one file, whole: never A's head and B's tail
        local reqs = since(before)
        assert.equals(2, #reqs)
        assert.is_nil(reqs[2].range) -- from 0
        assert.is_nil(helpers.read_file(path .. ".part"))
        assert.is_nil(helpers.read_file(path .. ".part.meta"))
        c:close()
      end)
    end

    local guarded = {
      { "a strong ETag", { { "ETag", '"v1"' } }, '"v1"' },
      { "a Last-Modified a day older than the Date", { { "Last-Modified", OLD }, DATE }, OLD },
      { "a Last-Modified a day old (no Date: the time it came)", { { "Last-Modified", OLD } }, OLD },
    }
    for _, case in ipairs(guarded) do
      it("goes on from the .part of a cut try with " .. case[1] .. " in If-Range", function()
        serve { h1 = case[2], cut = SIZE // 2, later = "a" }
        local before = #host.requests()
        local c = client()
        local path = fresh("guarded.mp4")
        assert(c:download_url(host.base .. "/ok/x.mp4", path))
        same(A, helpers.read_file(path))
        local reqs = since(before)
        assert.equals(2, #reqs)
        assert.equals("bytes=" .. SIZE // 2 .. "-", reqs[2].range)
        assert.equals(case[3], reqs[2].if_range)
        c:close()
      end)
    end
  end)

  describe("the identity of a .part across calls", function()
    -- /q?f=a serves A, /q?f=b serves B, with the same headers; a range request gets a 206
    -- of the file its URL names (the host honours If-Range by comparing the date only)
    local function serve_by_query(headers, cut)
      host.serve(string.format([[
local files = { a = (%q):rep(%d), b = (%q):rep(%d) }
local headers, cut = %s, %s
return function(req, n)
  local file = files[req.query:match("f=(%%a)")]
  local from = tonumber((req.headers.range or ""):match("^bytes=(%%d+)%%-$"))
  if from then
    local h = { { "Content-Range", string.format("bytes %%d-%%d/%%d", from, #file - 1, #file) } }
    for _, x in ipairs(headers) do h[#h + 1] = x end
    return { status = 206, headers = h, body = file:sub(from + 1) }
  end
  return { status = 200, headers = headers, body = file, send = req.query:find("cut", 1, true) and cut or nil }
end]], "a", SIZE, "b", SIZE, lua_headers(headers), tostring(cut)))
    end

    local function cut_first(url, path)
      local c = client { retries = false }
      local got, err = c:download_url(url, path)
      c:close()
      assert.is_nil(got)
      assert.equals("network", err.kind)
      assert.equals(SIZE // 2, #assert(helpers.read_file(path .. ".part")))
      assert.truthy(helpers.read_file(path .. ".part.meta"))
    end

    it("never goes on from the .part of a URL that differs only by its query when only a Last-Modified guards it", function()
      serve_by_query({ { "Last-Modified", OLD }, DATE }, SIZE // 2)
      local path = fresh("q2.mp4")
      cut_first(host.base .. "/q2?f=a&cut=2", path)
      local meta = helpers.read_file(path .. ".part.meta")
      assert.is_nil(meta:find("f=a", 1, true)) -- the query is kept as a digest, never as text
      assert.matches("\nurl%-sha256 %x+\n", meta)
      local before = #host.requests()
      local c = client()
      local got, bytes = c:download_url(host.base .. "/q2?f=b", path)
      assert.equals(path, got, tostring(bytes))
      same(B, helpers.read_file(path))
      local reqs = since(before)
      assert.equals(1, #reqs)
      assert.is_nil(reqs[1].range)
      c:close()
    end)

    it("goes on from it at the same whole URL when a Last-Modified guards it", function()
      serve_by_query({ { "Last-Modified", OLD }, DATE }, SIZE // 2)
      local path = fresh("q2same.mp4")
      local url = host.base .. "/q2?f=a&cut=2"
      cut_first(url, path)
      local before = #host.requests()
      local c = client()
      -- the same URL, cut no more: the host sends the rest
      serve_by_query({ { "Last-Modified", OLD }, DATE }, nil)
      assert(c:download_url(url, path))
      same(A, helpers.read_file(path))
      local reqs = since(before)
      assert.equals("bytes=" .. SIZE // 2 .. "-", reqs[1].range)
      assert.equals(OLD, reqs[1].if_range)
      c:close()
    end)

    it("goes on from it after the query changed when a strong ETag guards it (a pre-signed URL)", function()
      serve_by_query({ { "ETag", '"same-file"' } }, SIZE // 2)
      local path = fresh("q3.mp4")
      cut_first(host.base .. "/q3?f=a&sig=1&cut=2", path)
      local before = #host.requests()
      local c = client()
      assert(c:download_url(host.base .. "/q3?f=a&sig=2", path))
      same(A, helpers.read_file(path))
      local reqs = since(before)
      assert.equals("bytes=" .. SIZE // 2 .. "-", reqs[1].range)
      assert.equals('"same-file"', reqs[1].if_range)
      c:close()
    end)

    it("does not trust a sidecar of the old format, which kept no query", function()
      serve_by_query({ { "Last-Modified", OLD }, DATE }, SIZE // 2)
      local path = fresh("oldmeta.mp4")
      helpers.write_file(path .. ".part", A:sub(1, SIZE // 2))
      helpers.write_file(path .. ".part.meta", "kling-part 1\nurl " .. host.base .. "/q2\nlength " .. SIZE
        .. "\netag \nlast-modified " .. OLD .. "\n")
      local before = #host.requests()
      local c = client()
      assert(c:download_url(host.base .. "/q2?f=b", path))
      same(B, helpers.read_file(path))
      assert.is_nil(since(before)[1].range)
      c:close()
    end)
  end)

  describe("a range answer whose validators are not the file's", function()
    local cases = {
      { "carries no ETag when the file had a strong one", { { "ETag", '"v1"' } }, {} },
      { "carries an ETag when the file had none", { { "Last-Modified", OLD }, DATE },
        { { "Last-Modified", OLD }, DATE, { "ETag", '"v2"' } } },
      { "carries another Last-Modified beside the same ETag", { { "ETag", '"v1"' }, { "Last-Modified", OLD } },
        { { "ETag", '"v1"' }, { "Last-Modified", http_date(now - 3600) } } },
      { "carries a weak ETag of the same tag", { { "ETag", '"v1"' } }, { { "ETag", 'W/"v1"' } } },
    }
    for _, case in ipairs(cases) do
      it("is never appended when a 206 " .. case[1] .. ": the download starts over", function()
        serve { h1 = case[2], h2 = case[3], cut = SIZE // 2 }
        local before = #host.requests()
        local c = client()
        local path = fresh("other.mp4")
        assert(c:download_url(host.base .. "/other/x.mp4", path))
        same(B, helpers.read_file(path))
        local reqs = since(before)
        assert.equals(3, #reqs)
        assert.equals("bytes=" .. SIZE // 2 .. "-", reqs[2].range) -- refused: not appended
        assert.is_nil(reqs[3].range)                              -- then from 0
        c:close()
      end)
    end

    it("does not finish a complete .part on a 416 that carries another ETag: it starts over", function()
      serve { h1 = { { "ETag", '"v1"' } }, h2 = { { "ETag", '"v2"' } }, cut = SIZE // 2 }
      local path = fresh("complete.mp4")
      local c = client { retries = false }
      assert.is_nil(c:download_url(host.base .. "/c/x.mp4", path))
      append_file(path .. ".part", A:sub(SIZE // 2 + 1)) -- all of A: a run killed before its rename
      local before = #host.requests()
      c = client()
      assert(c:download_url(host.base .. "/c/x.mp4", path))
      same(B, helpers.read_file(path))
      local reqs = since(before)
      assert.equals("bytes=" .. SIZE .. "-", reqs[1].range)
      assert.is_nil(reqs[2].range)
      c:close()
    end)
  end)

  describe("one download at a time per path", function()
    local function lock_of(path) return path .. ".part.lock" end

    -- A file host that sends the first 30000 bytes of A (strong ETag) and the rest once
    -- the file `go` exists; the transfer started on c's engine, driven until those bytes
    -- are in.
    local function started(c, path, go)
      host.serve(string.format([[
return function(req, n)
  return { status = 200, headers = { { "ETag", '"held"' } }, body = (%q):rep(%d), send = 30000, wait_for = %q }
end]], "a", SIZE, go))
      local x = assert(c._engine:request { url = host.base .. "/held/x.mp4", download = path, retry = "safe" })
      local limit = core.now() + 20
      while x:progress() < 30000 do
        assert(core.now() < limit, "the first 30000 bytes never came")
        c._engine:step(0.05)
      end
      return x
    end

    it("refuses a second download of a path another download writes: at once, kind io, naming the path", function()
      local c = client()
      local path, go = fresh("same.mp4"), fresh("go")
      local x = started(c, path, go)
      local part, meta = helpers.read_file(path .. ".part"), helpers.read_file(path .. ".part.meta")
      assert.truthy(helpers.read_file(lock_of(path)))
      local before = #host.requests()
      for _, other in ipairs { client(), c } do -- another client, and the same one
        local t0 = core.now()
        -- (a deadline: without the lock this download would wait for `go` with the first)
        local got, err = other:download_url(host.base .. "/other/y.mp4", path, { deadline = 5 })
        assert.is_nil(got)
        assert.equals("io", err.kind)
        assert.equals(path, err.path)
        assert.matches("cannot write '" .. path .. "': another download is writing it", err.message, 1, true)
        assert.is_false(err.retryable)
        assert.is_true(core.now() - t0 < 2) -- at once
        local ok, cerr = kling_client.check_download_target(path)
        assert.is_nil(ok)
        assert.equals("io", cerr.kind)
      end
      assert.equals(before, #host.requests()) -- nothing sent
      assert.equals(part, helpers.read_file(path .. ".part")) -- the first's files untouched
      assert.equals(meta, helpers.read_file(path .. ".part.meta"))
      helpers.write_file(go, "")
      while not x:done() do c._engine:step(0.05) end
      assert.equals(path, x:result().path)
      same(A, helpers.read_file(path))
      assert.is_nil(helpers.read_file(lock_of(path)))
      x:close()
      -- the path is free again
      assert.is_true(kling_client.check_download_target(path))
      c:close()
    end)

    it("leaves no lock file when a download ends, whatever its end", function()
      local c = client { retries = false }
      local path = fresh("ends.mp4")
      serve { h1 = { { "ETag", '"e"' } } } -- whole
      assert(c:download_url(host.base .. "/e/1.mp4", path))
      assert.is_nil(helpers.read_file(lock_of(path)))
      serve { h1 = { { "ETag", '"e"' } }, cut = 1000 } -- cut: failed, .part kept
      local path2 = fresh("ends.mp4")
      assert.is_nil(c:download_url(host.base .. "/e/2.mp4", path2))
      assert.truthy(helpers.read_file(path2 .. ".part"))
      assert.is_nil(helpers.read_file(lock_of(path2)))
      host.serve "return function() return { status = 404, body = 'gone' } end"
      assert.is_nil(c:download_url(host.base .. "/e/3.mp4", path2))
      assert.is_nil(helpers.read_file(lock_of(path2)))
      assert.is_nil(c:download_url("http://127.0.0.1:1/refused.mp4", path2)) -- nothing sent
      assert.is_nil(helpers.read_file(lock_of(path2)))
      local go = fresh("go")
      local x = started(c, path2, go) -- aborted while it runs
      x:abort()
      assert.is_nil(helpers.read_file(lock_of(path2)))
      x:close()
      -- a check alone leaves none either
      assert.is_true(kling_client.check_download_target(path2))
      assert.is_nil(helpers.read_file(lock_of(path2)))
      c:close()
    end)

    it("takes over a lock file left by a killed process, and removes it when done", function()
      local c = client()
      local path = fresh("stale.mp4")
      helpers.write_file(lock_of(path), "")
      serve { h1 = { { "ETag", '"s"' } } }
      assert(c:download_url(host.base .. "/s/x.mp4", path))
      same(A, helpers.read_file(path))
      assert.is_nil(helpers.read_file(lock_of(path)))
      c:close()
    end)

    it("refuses while another process holds the lock, and checks after locking that the path still names it", function()
      local path = fresh("flock.mp4")
      local ready = fresh("ready")
      local pidfile = fresh("pid")
      -- flock(1) holds the lock file as a download would
      os.execute(string.format("flock %s sh -c 'touch %s; exec sleep 60' >/dev/null 2>&1 & echo $! >%s",
        q(lock_of(path)), q(ready), q(pidfile)))
      local limit = core.now() + 10
      while not helpers.read_file(ready) do
        assert(core.now() < limit, "flock(1) did not take the lock")
        helpers.sleep(0.02)
      end
      finally(function() os.execute("pkill -P " .. helpers.read_file(pidfile):match("%d+") .. " 2>/dev/null; kill "
        .. helpers.read_file(pidfile):match("%d+") .. " 2>/dev/null") end)
      serve { h1 = { { "ETag", '"f"' } } }
      local c = client()
      local before = #host.requests()
      local got, err = c:download_url(host.base .. "/f/x.mp4", path)
      assert.is_nil(got)
      assert.equals("io", err.kind)
      assert.equals(before, #host.requests())
      -- the held file is removed (as a download that ends removes its own): the next
      -- download locks the new file the path names, not the old one still held
      os.remove(lock_of(path))
      assert(c:download_url(host.base .. "/f/x.mp4", path))
      same(A, helpers.read_file(path))
      c:close()
    end)
  end)

  describe("the files of a download are checked before anything is sent", function()
    for _, suffix in ipairs { ".part.meta", ".part.meta.tmp", ".part.lock", ".part" } do
      it("refuses a directory at PATH" .. suffix .. " with kind io, sending nothing", function()
        serve { h1 = { { "ETag", '"d"' } } }
        local path = fresh("dirs.mp4")
        assert(os.execute("mkdir " .. q(path .. suffix)))
        local c = client()
        local before = #host.requests()
        local got, err = c:download_url(host.base .. "/d/x.mp4", path)
        assert.is_nil(got)
        assert.equals("io", err.kind)
        assert.equals(path .. suffix, err.path)
        assert.matches("Is a directory", err.message, 1, true)
        assert.equals(before, #host.requests())
        local ok, cerr = kling_client.check_download_target(path)
        assert.is_nil(ok)
        assert.equals(path .. suffix, cerr.path)
        assert.matches("Is a directory", cerr.message, 1, true)
        c:close()
      end)
    end
  end)

  describe("the bytes in memory are kept however a transfer ends", function()
    -- 30000 bytes of A (strong ETag) arrive, then nothing: they are in memory (under the
    -- 256 KiB write buffer), the .part on disk is still empty
    local function running(c, path)
      host.serve(string.format([[
return function(req, n)
  local file = (%q):rep(%d)
  local from = tonumber((req.headers.range or ""):match("^bytes=(%%d+)%%-$"))
  if from then
    return { status = 206, headers = { { "ETag", '"mem"' }, { "Content-Range", ("bytes %%d-%%d/%%d"):format(from, #file - 1, #file) } },
      body = file:sub(from + 1) }
  end
  return { status = 200, headers = { { "ETag", '"mem"' } }, body = file, send = 30000, hold = true }
end]], "a", SIZE))
      local x = assert(c._engine:request { url = host.base .. "/mem/x.mp4", download = path, retry = "safe" })
      local limit = core.now() + 20
      while x:progress() < 30000 do
        assert(core.now() < limit, "the first 30000 bytes never came")
        c._engine:step(0.05)
      end
      assert.equals(0, #helpers.read_file(path .. ".part")) -- still in memory
      return x
    end

    local ends = {
      { "x:abort()", function(_, x) x:abort() end },
      { "x:close()", function(_, x) x:close() end },
      { "the client's close", function(c) c:close() end },
      { "garbage collection of the transfer", function() collectgarbage() collectgarbage() end },
    }
    for _, case in ipairs(ends) do
      it("writes them to the .part on " .. case[1] .. ", and a later download goes on from them", function()
        local c = client()
        local path = fresh("mem.mp4")
        do
          local x = running(c, path)
          case[2](c, x)
        end
        collectgarbage()
        collectgarbage()
        same(A:sub(1, 30000), helpers.read_file(path .. ".part"))
        assert.truthy(helpers.read_file(path .. ".part.meta"))
        assert.is_nil(helpers.read_file(path .. ".part.lock"))
        local before = #host.requests()
        local c2 = client()
        assert(c2:download_url(host.base .. "/mem/x.mp4", path))
        same(A, helpers.read_file(path))
        assert.equals("bytes=30000-", since(before)[1].range)
        c2:close()
        c:close()
      end)
    end
  end)
end)

describe("the emulator's file host", function()
  local emu

  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0", "--run", "0" }
  end)
  teardown(function() if emu then emu:stop() end end)
  after_each(function() emu:set_faults {} end)

  local function submit(prompt)
    local res = emu:call("POST", "/models/kling/kling-3.0/pro/text-to-video", { body = cjson.encode { prompt = prompt } })
    assert.equals(200, res.status, res.body)
    local id = helpers.json(res.body).request_id
    local r
    repeat
      r = emu:call("GET", "/requests/" .. id .. "/result")
    until helpers.json(r.body).status == "completed"
    return id, helpers.json(r.body).output.video
  end

  local function get(url, headers, args)
    return helpers.http("GET", url, { headers = headers, args = args })
  end

  it("sends a strong ETag and Last-Modified, and honours a Range only while If-Range holds", function()
    local id, url = submit("validators @emu:bytes=1000")
    local res = get(url)
    assert.equals(200, res.status)
    local etag, lastmod = res.headers.etag, res.headers["last-modified"]
    assert.matches('^"[%w]+%-0%-1000"$', etag)
    assert.matches("^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$", lastmod)
    local record = emu:job_record(id)
    assert.equals(etag, record.file_etag)
    assert.equals(lastmod, record.file_last_modified)
    for _, case in ipairs {
      { etag, 206 }, { lastmod, 206 }, { '"other"', 200 }, { "W/" .. etag, 200 }, { "Mon, 01 Jan 2001 00:00:00 GMT", 200 },
    } do
      res = get(url, { "Range: bytes=600-", "If-Range: " .. case[1] })
      assert.equals(case[2], res.status, case[1])
      if case[2] == 206 then
        assert.equals("bytes 600-999/1000", res.headers["content-range"])
        assert.equals(pattern(400, 600), res.body)
      else
        assert.equals(pattern(1000), res.body)
      end
    end
    res = get(url, { "Range: bytes=1000-", "If-Range: " .. etag })
    assert.equals(416, res.status)
    assert.equals("bytes */1000", res.headers["content-range"])
  end)

  it("changes a job's file on POST /__emulator/jobs/ID/change: other bytes, ETag and Last-Modified", function()
    local id, url = submit("change me @emu:bytes=1000")
    local before = get(url)
    local res = helpers.http("POST", emu.root .. "/__emulator/jobs/" .. id .. "/change", { body = '{"bytes":800}' })
    assert.equals(200, res.status, res.body)
    local o = helpers.json(res.body)
    assert.equals(1, o.file_version)
    assert.equals(800, o.video_bytes)
    local after = get(url)
    assert.equals(pattern(800, 7), after.body)
    assert.are_not.equal(before.headers.etag, after.headers.etag)
    assert.are_not.equal(before.headers["last-modified"], after.headers["last-modified"])
    assert.equals(o.etag, after.headers.etag)
    res = get(url, { "Range: bytes=500-", "If-Range: " .. before.headers.etag })
    assert.equals(200, res.status) -- the old validator no longer holds
    res = helpers.http("POST", emu.root .. "/__emulator/jobs/" .. id .. "/change", { body = '{"bytes":-1}' })
    assert.equals(400, res.status)
    res = helpers.http("POST", emu.root .. "/__emulator/jobs/no-such-job/change", { body = "{}" })
    assert.equals(404, res.status)
  end)

  it("gives the validators @emu:validators asks for, and ignores If-Range with @emu:ifrange=ignore", function()
    local expect = {
      both = { true, true }, etag = { true, false }, lastmod = { false, true }, weak = { "weak", false }, none = { false, false },
    }
    for which, want in pairs(expect) do
      local _, url = submit("v @emu:bytes=100 @emu:validators=" .. which)
      local res = get(url)
      if want[1] == "weak" then
        assert.matches('^W/"', res.headers.etag, nil, false)
      else
        assert.equals(want[1], res.headers.etag ~= nil, which)
      end
      assert.equals(want[2], res.headers["last-modified"] ~= nil, which)
    end
    local _, url = submit("liar @emu:bytes=100 @emu:ifrange=ignore")
    local res = get(url, { "Range: bytes=50-", 'If-Range: "not-this-file"' })
    assert.equals(206, res.status)
  end)

  it("shapes only 206 answers with the range faults; trickles; sends empty bodies", function()
    local _, url = submit("faults @emu:bytes=1000")
    local cases = {
      range_start = function(res)
        assert.equals(206, res.status)
        assert.equals("bytes 599-999/1000", res.headers["content-range"])
        assert.equals(pattern(401, 599), res.body)
      end,
      range_total = function(res)
        assert.equals("bytes 600-999/2000", res.headers["content-range"])
        assert.equals(pattern(400, 600), res.body)
      end,
      range_none = function(res)
        assert.equals(206, res.status)
        assert.is_nil(res.headers["content-range"])
      end,
      range_ignore = function(res)
        assert.equals(200, res.status)
        assert.equals(pattern(1000), res.body)
      end,
    }
    for fault, check in pairs(cases) do
      emu:set_faults { "download:" .. fault .. ":1" }
      check(get(url, { "Range: bytes=600-" }))
      local whole = get(url) -- no Range: nothing to shape
      assert.equals(200, whole.status, fault)
      assert.equals(pattern(1000), whole.body, fault)
    end
    emu:set_faults { "download:empty:1" }
    local res = get(url)
    assert.equals(200, res.status)
    assert.equals("0", res.headers["content-length"])
    assert.equals("", res.body)
    emu:set_faults { "download:trickle:1:2" }
    res = get(url, nil, { "--max-time", "2.5" })
    assert.is_true(#res.body >= 2 and #res.body <= 6, "got " .. #res.body .. " bytes")
    assert.equals(pattern(#res.body), res.body)
  end)

  it("redirects @emu:redirect=N times between 127.0.0.1 and localhost, and signs URLs with @emu:signed", function()
    local id, url = submit("hops @emu:bytes=100 @emu:redirect=2 @emu:signed")
    assert.matches("/r/2/" .. id:gsub("%-", "%%-") .. "%.mp4%?X%-Expires=3600&X%-Signature=%x+$", url)
    local _, url2 = submit("x") -- another job's answer does not sign
    assert.is_nil(url2:find("?", 1, true))
    local again = helpers.json(emu:call("GET", "/requests/" .. id .. "/result").body).output.video
    assert.are_not.equal(url, again)
    local res = get(url)
    assert.equals(302, res.status)
    assert.equals(emu.files .. "/r/1/" .. id .. ".mp4" .. url:match("%?.*$"), res.headers.location)
    res = get(res.headers.location)
    assert.equals(302, res.status)
    assert.matches("^http://localhost:%d+/v/" .. id:gsub("%-", "%%-") .. "%.mp4%?", res.headers.location)
    res = get(url, nil, { "-L" })
    assert.equals(200, res.status)
    assert.equals(pattern(100), res.body)
    local _, to = submit("away @emu:bytes=100 @emu:redirect_to=http://192.0.2.1/x.mp4 @emu:redirect_code=308")
    res = get(to)
    assert.equals(308, res.status)
    assert.equals("http://192.0.2.1/x.mp4", res.headers.location)
  end)

  it("records each request of a job's file in its record", function()
    local id, url = submit("recorded @emu:bytes=100")
    get(url, { "Range: bytes=10-", "If-Range: \"x\"" })
    emu:set_faults { "download:range_none:1" }
    get(url, { "Range: bytes=20-" })
    local reqs = emu:job_record(id).file_requests
    assert.equals(2, #reqs)
    assert.same({ method = "GET", path = "/v/" .. id .. ".mp4", range = "bytes=10-", if_range = '"x"', status = 200,
      fault = null }, reqs[1])
    assert.equals(206, reqs[2].status)
    assert.equals("range_none", reqs[2].fault)
  end)

  it("parses the new faults, only for downloads, and trickle's ARG as whole bytes a second", function()
    for _, f in ipairs { "range_start", "range_total", "range_none", "range_ignore", "empty", "trickle" } do
      assert.truthy(emulator.parse_fault("download:" .. f .. ":1"))
      local none, err = emulator.parse_fault("status:" .. f .. ":1")
      assert.is_nil(none)
      assert.matches("does not apply to status", err, 1, true)
    end
    assert.equals("download:trickle:1:300", emulator.parse_fault("download:trickle:1:300").spec)
    assert.is_nil((emulator.parse_fault("download:trickle:1:0.5")))
    assert.is_nil((emulator.parse_fault("download:trickle:1:0")))
    assert.is_nil((emulator.parse_fault("download:empty:1:3")))
  end)
end)
