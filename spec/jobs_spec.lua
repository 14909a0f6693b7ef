-- End to end: the client against the emulator over real HTTP (libcurl).
local helpers = require "helpers"
local kling = require "kling"

local TOKEN = "spec-token-3f9a1c"
local FAST = { initial = 0.05, max = 0.2, factor = 1.5, jitter = 0.1 }

describe("jobs against the emulator", function()
  local emu, client, dir

  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0.3", "--run", "0.3" }
    client = kling.new { base_url = emu.api, token = TOKEN, poll = FAST }
    dir = helpers.tmpdir()
  end)

  teardown(function()
    if client then client:close() end
    if emu then emu:stop() end
    if dir then os.execute("rm -rf '" .. dir .. "'") end
  end)

  it("submits, waits through the queue and returns output.video on the file host", function()
    local seen = {}
    local job = assert(client:generate { prompt = "a red kite over a grey sea" })
    assert.matches("^[A-Za-z0-9_-]+$", job.id)
    assert.equals(kling.DEFAULT_MODEL, job.model)
    local out, err = job:wait { on_update = function(j) seen[#seen + 1] = j.status end }
    assert.is_nil(err)
    assert.equals("completed", job.status)
    assert.is_true(job:done())
    assert.equals(emu.files, out.video:sub(1, #emu.files))
    assert.equals(out.video, job.video_url)
    assert.same("in_queue", seen[1])
    assert.equals("completed", seen[#seen])
    local saw_running = false
    for _, s in ipairs(seen) do saw_running = saw_running or s == "in_progress" end
    assert.is_true(saw_running)
  end)

  it("reports a falling queue position to on_update while queued", function()
    local positions = {}
    local job = assert(client:generate { prompt = "queue watcher @emu:queue=0.8" })
    assert(job:wait { on_update = function(j)
      if j.queue_position then positions[#positions + 1] = j.queue_position end
    end })
    assert.is_true(#positions >= 2)
    for i = 2, #positions do assert.is_true(positions[i] < positions[i - 1]) end
  end)

  it("downloads the video byte for byte as the file host served it, with progress", function()
    local job = assert(client:generate { prompt = "download me" })
    local path = dir .. "/clip.mp4"
    local calls, last = 0, nil
    local got, bytes = job:download(path, { on_progress = function(b, total)
      calls = calls + 1
      last = { b, total }
    end })
    assert.equals(path, got)
    local expected = require "kling.emulator_video"
    assert.equals(#expected, bytes)
    assert.equals(expected, helpers.read_file(path))
    assert.is_true(calls >= 1)
    assert.same({ #expected, #expected }, last)
    assert.is_nil(io.open(path .. ".part", "rb"))
  end)

  it("streams a large download to the file and checks its length", function()
    local job = assert(client:generate { prompt = "big one @emu:bytes=3000000" })
    local path = dir .. "/big.bin"
    local _, bytes = assert(job:download(path))
    assert.equals(3000000, bytes)
    local data = helpers.read_file(path)
    assert.equals(3000000, #data)
    assert.equals(helpers.pattern_bytes(0, 3000000), data)
  end)

  it("never sends an Authorization header to the file host", function()
    local job = assert(client:generate { prompt = "no token for the CDN" })
    assert(job:download(dir .. "/cdn.mp4"))
    local stats = emu:stats()
    assert.is_true(stats.files.requests >= 1)
    assert.equals(0, stats.files.authorization_headers)
  end)

  it("cancels a job while it is queued", function()
    local job = assert(client:generate { prompt = "cancel me @emu:queue=5" })
    assert.is_true(job:cancel())
    assert.equals("cancelled", job.status)
    local out, err = job:wait()
    assert.is_nil(out)
    assert.equals("cancelled", err.kind)
    assert.equals("cancelled", job:refresh())
  end)

  it("refuses to cancel a running job with kind not_cancellable", function()
    -- (a run of 600 s: no loaded machine lets it end before the cancel)
    local job = assert(client:generate { prompt = "running @emu:queue=0 @emu:run=600" })
    helpers.eventually(function() return emu:job_record(job.id).state == "in_progress" end, 10, "the job to run")
    local ok, err = job:cancel()
    assert.is_nil(ok)
    assert.equals("not_cancellable", err.kind)
    assert.equals("in_progress", job.status)
  end)

  it("gives kind failed with the service's message for a failed job", function()
    local job = assert(client:generate { prompt = "doomed @emu:fail=GPU_melted_down" })
    local out, err = job:wait()
    assert.is_nil(out)
    assert.equals("failed", err.kind)
    assert.equals("GPU melted down", err.message)
    assert.equals(job.id, err.request_id)
    assert.equals("failed", job.status)
    assert.equals(err, job.error)
    assert.matches("GPU melted down", tostring(err))
  end)

  it("answers job:result() with not_ready before the job ends, then the output", function()
    -- an emulator on a manual clock: the job cannot end before the first call
    local m = helpers.start_emulator { "--token", TOKEN, "--clock", "manual" }
    finally(function() m:stop() end)
    local c = kling.new { base_url = m.api, token = TOKEN }
    finally(function() c:close() end)
    local job = assert(c:generate { prompt = "patience @emu:queue=0.2 @emu:run=0.2" })
    local out, err = job:result()
    assert.is_nil(out)
    assert.equals("not_ready", err.kind)
    m:advance(0.6)
    out = assert(job:result())
    assert.is_string(out.video)
  end)

  it("builds the request URLs itself when the submit answer has none", function()
    local job = assert(client:generate { prompt = "bare answer @emu:nourls" })
    assert.equals(emu.api .. "/requests/" .. job.id .. "/status", job.urls.status)
    assert(job:wait())
    assert.equals("completed", job.status)
  end)

  it("treats succeeded and canceled as the terminal completed and cancelled", function()
    local a = assert(client:generate { prompt = "alt spelling @emu:spell=alt" })
    assert(a:wait())
    assert.equals("completed", a.status)
    assert.equals("succeeded", a.raw_status)
    local b = assert(client:generate { prompt = "alt cancel @emu:spell=alt @emu:queue=5" })
    assert.is_true(b:cancel())
    assert.equals("cancelled", b:refresh())
    assert.equals("canceled", b.raw_status)
  end)

  it("keeps polling an unknown status with one warning, and times out instead of hanging", function()
    local warnings = {}
    local c = kling.new { base_url = emu.api, token = TOKEN, poll = FAST,
      on_warning = function(msg) warnings[#warnings + 1] = msg end }
    local job = assert(c:generate { prompt = "odd @emu:queue=0 @emu:status=rendering" })
    local t0 = os.time()
    local out, err = job:wait { timeout = 0.8 }
    assert.is_nil(out)
    assert.equals("timeout", err.kind)
    assert.equals("rendering", job.status)
    assert.is_false(job:done())
    assert.equals(1, #warnings)
    assert.matches("rendering", warnings[1])
    assert.is_true(os.time() - t0 <= 3)
    c:close()
  end)

  it("can wait again on a job after a wait timed out", function()
    local job = assert(client:generate { prompt = "slow @emu:run=1" })
    local out, err = job:wait { timeout = 0.2 }
    assert.is_nil(out)
    assert.equals("timeout", err.kind)
    out = assert(job:wait())
    assert.is_string(out.video)
  end)

  it("treats an HTTP 200 answer with an error body as an error (no balance: payment)", function()
    local before = emu:stats().jobs_created
    local job, err = client:generate { prompt = "broke @emu:error200=400002" }
    assert.is_nil(job)
    assert.equals("payment", err.kind)
    assert.equals(200, err.status)
    assert.equals(400002, err.code)
    assert.equals("Insufficient balance", err.message)
    assert.equals(before, emu:stats().jobs_created)
  end)

  it("maps error_code 400004 inside an HTTP 200 to kind auth", function()
    local job, err = client:generate { prompt = "account @emu:error200=400004" }
    assert.is_nil(job)
    assert.equals("auth", err.kind)
  end)

  it("answers an unknown request id with kind not_found", function()
    local job = assert(client:job("no-such-request-0001"))
    local status, err = job:refresh()
    assert.is_nil(status)
    assert.equals("not_found", err.kind)
    assert.equals(404, err.status)
    assert.equals(404001, err.code)
    local out, err2 = job:wait()
    assert.is_nil(out)
    assert.equals("not_found", err2.kind)
  end)

  it("refuses a request id that could change the URL, before sending anything", function()
    local before = emu:stats().requests_total
    for _, bad in ipairs { "../models", "a/b", "id?x=1", "", string.rep("a", 129), "sp ace", "%2e%2e" } do
      local job, err = client:job(bad)
      assert.is_nil(job)
      assert.equals("validation", err.kind)
      assert.equals("/request_id", err.errors[1].path)
    end
    assert.equals(before, emu:stats().requests_total)
  end)

  it("attaches to an existing request by id and waits for it", function()
    local job = assert(client:generate { prompt = "attach later" })
    local again = assert(client:job(job.id, job.model))
    assert(again:wait())
    assert.equals("completed", again.status)
  end)

  it("refuses an input without a prompt and sends nothing", function()
    local before = emu:stats().requests.submit
    for _, input in ipairs { {}, { prompt = "" }, { prompt = "   " }, { prompt = 42 } } do
      local job, err = client:generate(input)
      assert.is_nil(job)
      assert.equals("validation", err.kind)
      assert.equals("/prompt", err.errors[1].path)
    end
    assert.equals(before, emu:stats().requests.submit)
  end)

  it("sends the input as the top-level JSON body", function()
    local job = assert(client:generate { prompt = "wire check", duration = 5 })
    local rec = emu:job_record(job.id)
    assert.equals("wire check", rec.input.prompt)
    assert.equals(5, rec.input.duration)
  end)

  it("submits to a model with no registered schema, that the catalog does not list, as given", function()
    local job = assert(client:submit("acme/outside-the-catalog", { prompt = "std", anything = true }))
    assert.equals("acme/outside-the-catalog", job.model)
    assert.is_true(emu:job_record(job.id).input.anything)
  end)
end)

describe("auth and secrets", function()
  local emu
  local SECRET = "tok-" .. string.format("%08x", math.random(0, 0x7fffffff)) .. "-secret"

  setup(function() emu = helpers.start_emulator { "--token", SECRET, "--queue", "0.1", "--run", "0.1" } end)
  teardown(function() if emu then emu:stop() end end)

  it("gives kind auth for a wrong token and puts the token in no message", function()
    local wrong = "wrong-" .. SECRET
    local c = kling.new { base_url = emu.api, token = wrong }
    local job, err = c:generate { prompt = "hello" }
    assert.is_nil(job)
    assert.equals("auth", err.kind)
    assert.equals(403, err.status)
    for _, s in ipairs { err.message, tostring(err), tostring(c) } do
      assert.is_nil(s:find(wrong, 1, true))
      assert.is_nil(s:find(SECRET, 1, true))
    end
    c:close()
  end)

  it("gives kind auth without sending anything when no token is set", function()
    local before = emu:stats().requests_total
    local c = kling.new { base_url = emu.api, token = "" }
    local job, err = c:generate { prompt = "hello" }
    assert.is_nil(job)
    assert.equals("auth", err.kind)
    assert.matches("RUNCOMFY_TOKEN", err.message)
    assert.equals(before, emu:stats().requests_total)
  end)

  it("masks the token when the server echoes it back in a message", function()
    local c = kling.new { base_url = emu.api, token = SECRET }
    assert.equals("token *** refused", c:scrub("token " .. SECRET .. " refused"))
    c:close()
  end)

  it("never shows the token in tostring of a client, a job or an error", function()
    local c = kling.new { base_url = emu.api, token = SECRET, poll = FAST }
    local job = assert(c:generate { prompt = "fine @emu:fail" })
    local _, err = job:wait()
    for _, s in ipairs { tostring(c), tostring(job), tostring(err), tostring(c._engine) } do
      assert.is_nil(s:find(SECRET, 1, true))
    end
    for k, v in pairs(c) do
      assert.is_false(type(v) == "string" and v:find(SECRET, 1, true) ~= nil, "client field " .. k)
    end
    c:close()
  end)
end)
