-- Learned polling across processes (issue 13): a job's "ended" line keeps `run`, the seconds
-- from its submit to its end; a new client reads the shortest run of each model's completed
-- jobs from the journal, and polls a job it submits of that model once after `initial`, then
-- not before 90 % of that time since the submit (at least every `max`), then every `near`.
local helpers = require "helpers"
local kling = require "kling"
local cjson = require "cjson"

local TOKEN = "learned-token-13"
local MODEL = "kling/kling-3.0/pro/text-to-video"

local function write_lines(path, lines)
  local f = assert(io.open(path, "w"))
  for _, l in ipairs(lines) do f:write(cjson.encode(l), "\n") end
  f:close()
end

describe("learned polling", function()
  local emu, dir

  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0", "--run", "0" }
    dir = helpers.tmpdir()
  end)
  teardown(function()
    if emu then emu:stop() end
    if dir then os.execute("rm -rf " .. helpers.quote(dir)) end
  end)

  local function client(journal, poll)
    return kling.new { base_url = emu.api, token = TOKEN, journal = journal, on_warning = false, poll = poll }
  end

  it("journals how long a job it submitted ran, as `run` on its ended line", function()
    local path = dir .. "/run.jsonl"
    local c = client(path, { initial = 0.05, near = 0.1 })
    local job = assert(c:generate { prompt = "a short cat @emu:run=0.3" })
    assert(job:wait())
    local ended
    for line in helpers.read_file(path):gmatch("[^\n]+") do
      local ev = cjson.decode(line)
      if ev.e == "ended" then ended = ev end
    end
    assert.is_number(ended.run)
    assert.is_true(ended.run >= 0.3 and ended.run < 30, tostring(ended.run))
    -- a job this process did not submit (attached by id) gets no run: nothing to learn from
    local path2 = dir .. "/attached.jsonl"
    local c2 = client(path2, { initial = 0.05, near = 0.1 })
    assert(assert(c2:job(job.id, MODEL)):wait())
    for line in (helpers.read_file(path2) or ""):gmatch("[^\n]+") do
      assert.is_nil(cjson.decode(line).run)
    end
    c:close()
    c2:close()
  end)

  it("learns the shortest run of each model's completed jobs from the journal", function()
    local path = dir .. "/history.jsonl"
    write_lines(path, {
      { e = "submitted", id = "a1", model = "m/a", t = 1000 }, { e = "ended", id = "a1", model = "m/a", status = "completed", run = 5.5, t = 1006 },
      { e = "submitted", id = "a2", model = "m/a", t = 1000 }, { e = "ended", id = "a2", model = "m/a", status = "completed", run = 3.25, t = 1004 },
      { e = "submitted", id = "a3", model = "m/a", t = 1000 }, { e = "ended", id = "a3", model = "m/a", status = "failed", run = 1, t = 1001 },
      { e = "submitted", id = "b1", model = "m/b", t = 2000 }, { e = "ended", id = "b1", model = "m/b", status = "completed", t = 2010 },
      { e = "submitted", id = "c1", model = "m/c", t = 3000 }, { e = "ended", id = "c1", model = "m/c", status = "cancelled", run = 2, t = 3002 },
    })
    local c = client(path)
    assert.equal(3.25, c:_learned_run("m/a"))  -- the shortest completed run; a failure says nothing
    assert.equal(10, c:_learned_run("m/b"))    -- no run kept: the end's time less the submit's
    assert.is_nil(c:_learned_run("m/c"))       -- never completed
    assert.is_nil(c:_learned_run("m/none"))
    assert.is_nil(client(nil):_learned_run("m/a")) -- no journal: nothing learned
  end)

  it("polls a new job of a model that ran before far less, and still notices its end", function()
    local poll = { initial = 0.05, near = 0.2, max = 2 }
    -- history: a completed job of this model that took 1.5 s from submit to end
    local path = dir .. "/warm.jsonl"
    write_lines(path, {
      { e = "submitted", id = "old-1", model = MODEL, t = 1000 },
      { e = "ended", id = "old-1", model = MODEL, status = "completed", run = 1.5, t = 1002 },
    })
    local warm = client(path, poll)
    local job = assert(warm:generate { prompt = "a learned cat @emu:run=1.5" })
    assert(job:wait { timeout = 30 })
    local polls = emu:job_record(job.id).status_polls
    -- one after `initial`, the next not before 1.35 s, then every 0.2 s until the end (1.5 s)
    assert.is_true(polls >= 1 and polls <= 3, "status polls with history: " .. polls)
    warm:close()
  end)

  it("polls a job that runs far less than its history says at least every `max`, jitter included", function()
    -- history: 1000 s; the jobs run far longer than the test (the emulator's 1000 s): every
    -- wait the client schedules between two polls must stay within `max` (README: "never above")
    local poll = { initial = 0.05, near = 0.1, min = 0.01, max = 0.2 }
    local path = dir .. "/long.jsonl"
    write_lines(path, {
      { e = "submitted", id = "old-3", model = MODEL, t = 1000 },
      { e = "ended", id = "old-3", model = MODEL, status = "completed", run = 1000, t = 2000 },
    })
    local c = client(path, poll)
    -- one job: timeout() is then its own next wait (with several, the earliest of theirs
    -- would hide one drawn above max by the jitter)
    local jobs = {}
    for i = 1, 1 do
      jobs[i] = assert(c:generate { prompt = "a slow learned cat " .. i .. " @emu:run=1000" })
      jobs[i]:on_update(function() end) -- polled from now on, no wait call
    end
    local function polls()
      local n = 0
      for _, j in ipairs(jobs) do n = n + emu:job_record(j.id).status_polls end
      return n
    end
    local worst, samples = 0, 0
    while polls() < 10 do
      c:step(0.05)
      -- (while every job's poll is in flight no poll is scheduled, and the engine's timeout
      -- is libcurl's, the requests' deadline: such a moment says nothing of the schedule)
      if c._engine:pending() < #jobs then
        local t = c:timeout()
        assert.is_number(t)
        samples = samples + 1
        if t > worst then worst = t end
      end
    end
    assert.is_true(samples > 0, "no moment with a poll scheduled")
    assert.is_true(worst <= poll.max + 1e-6, "longest wait scheduled: " .. worst .. " s over " .. samples .. " samples")
    for _, j in ipairs(jobs) do j:cancel() end
    c:close()
  end)

  it("polls a job of a model it has no history of as before (no journal, another model's history)", function()
    local poll = { initial = 0.05, near = 0.2, max = 2 }
    local path = dir .. "/other.jsonl"
    write_lines(path, {
      { e = "submitted", id = "old-2", model = "other/model", t = 1000 },
      { e = "ended", id = "old-2", model = "other/model", status = "completed", run = 1.5, t = 1002 },
    })
    for _, journal in ipairs { path, false } do
      local c = client(journal or nil, poll)
      local job = assert(c:generate { prompt = "an unlearned cat @emu:run=1.5" })
      assert(job:wait { timeout = 30 })
      local polls = emu:job_record(job.id).status_polls
      assert.is_true(polls >= 4, "status polls without history: " .. polls)
      c:close()
    end
  end)
end)
