-- The event engine: polling in C, request-rate and connection caps, one
-- result fetch per job, and what a waiting client costs.
local helpers = require "helpers"
local kling = require "kling"
local core = require "kling.core"

local TOKEN = "engine-token"

describe("the engine", function()
  local emu

  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0.2", "--run", "0.4" }
  end)
  teardown(function()
    if emu then emu:stop() end
  end)

  local function client(opts)
    opts = opts or {}
    opts.base_url, opts.token = emu.api, TOKEN
    opts.poll = opts.poll or { initial = 0.05, near = 0.1 }
    return kling.new(opts)
  end

  it("fetches each job's result once, and polls a short job a few times only", function()
    local c = client()
    local jobs = {}
    for i = 1, 5 do jobs[i] = assert(c:generate { prompt = "once " .. i }) end
    local outs = kling.wait_all(jobs)
    for i = 1, 5 do
      assert.is_string(outs[i].video)
      local rec = emu:job_record(jobs[i].id)
      assert.equals(1, rec.result_fetches)
      assert.is_true(rec.status_polls >= 1 and rec.status_polls <= 15, "polls " .. rec.status_polls)
    end
    local ps = c._engine:poll_stats()
    assert.equals(5, ps.fetches)
    assert.equals(0, ps.watched) -- nothing is polled once the waits are over
    c:close()
  end)

  it("never sends more API requests per second than max_rps", function()
    local c = client { max_rps = 10 }
    local job = assert(c:generate { prompt = "rate" })
    local t0 = core.now()
    kling.run(function()
      for _ = 1, 25 do kling.spawn(function() assert(job:refresh()) end) end
    end)
    -- the bucket holds 10 (one spent on the submit): 16 more wait for tokens at 10/s
    assert.is_true(core.now() - t0 >= 1.4, "took " .. (core.now() - t0))
    c:close()
  end)

  it("opens no more connections at once than max_connections", function()
    local c = client { max_connections = 2 }
    local job = assert(c:generate { prompt = "connections" })
    kling.run(function()
      for _ = 1, 30 do kling.spawn(function() assert(job:refresh()) end) end
    end)
    local st = c._engine:stats()
    assert.is_true(st.sockets_peak <= 2, "peak " .. st.sockets_peak)
    assert.is_true(st.requests >= 31)
    c:close()
  end)

  it("stops polling a job when its wait times out, and polls again on the next wait", function()
    local c = client()
    -- (a run of 600 s: no loaded machine lets it end inside the waits)
    local job = assert(c:generate { prompt = "long @emu:run=600" })
    local out, err = job:wait { timeout = 0.3 }
    assert.is_nil(out)
    assert.equals("timeout", err.kind)
    assert.equals(0, c._engine:poll_stats().watched)
    local polls = emu:job_record(job.id).status_polls
    helpers.sleep(0.3) -- (nothing may happen meanwhile: a slow machine only polls less)
    assert.equals(polls, emu:job_record(job.id).status_polls)
    out, err = job:wait { timeout = 1.5 } -- (its first poll goes out at once)
    assert.is_nil(out)
    assert.equals("timeout", err and err.kind)
    assert.is_true(emu:job_record(job.id).status_polls > polls)
    c:close()
  end)

  it("calls on_update on every change of status or queue position, and only then", function()
    local c = client()
    local seen = {}
    local job = assert(c:generate { prompt = "updates @emu:queue=0.6" })
    assert(job:wait { on_update = function(j) seen[#seen + 1] = j.status .. ":" .. tostring(j.queue_position) end })
    for i = 2, #seen do assert.are_not.equal(seen[i - 1], seen[i]) end
    assert.equals("completed:nil", seen[#seen])
    c:close()
  end)

  it("waits in the kernel: little CPU for a second of waiting on many jobs", function()
    local c = client { poll = { initial = 0.2, near = 0.5 } }
    local jobs = {}
    for i = 1, 50 do jobs[i] = assert(c:generate { prompt = "idle " .. i .. " @emu:run=1.2" }) end
    local c0 = os.clock()
    local outs = kling.wait_all(jobs)
    assert.is_true(os.clock() - c0 < 0.25, "CPU " .. (os.clock() - c0))
    assert.equals(50, #outs)
    c:close()
  end)
end)

-- A transfer the engine holds (behind the rate cap) that cannot start when its
-- turn comes ends like any other: reported, so that its waiter wakes. libcurl
-- refuses any option string over 8 MB, so a ca_file name that long (set on
-- every transfer) makes every start fail; nothing is ever sent (port 9 on
-- loopback: nothing listens).
describe("a request that cannot start", function()
  local HUGE_NAME = "/" .. ("c"):rep(8 * 1000 * 1000 + 1)

  local function client()
    return kling.new { base_url = "http://127.0.0.1:9/v1", token = "t", ca_file = HUGE_NAME, max_rps = 1,
      retries = false, on_warning = false }
  end

  it("reports a call queued behind max_rps that cannot start, so its waiter inside kling.run wakes", function()
    local c = client()
    local errs, finished = {}, 0
    local t0 = core.now()
    kling.run(function()
      for i = 1, 2 do -- the first takes the one token and fails at once; the second waits for the next
        kling.spawn(function()
          local _, err = assert(c:job("q-" .. i)):refresh()
          errs[i] = err
          finished = finished + 1
        end)
      end
      c:sleep(15, function() return finished == 2 end) -- a watchdog: the run must not hang
      assert(finished == 2, "a refresh queued behind max_rps never returned")
    end)
    for i = 1, 2 do
      assert.equals("network", errs[i].kind)
      assert.matches("cannot configure the transfer", errs[i].message)
    end
    assert.is_true(core.now() - t0 < 10)
    c:close()
  end)

  it("ends the waits whose polls cannot start, queued behind max_rps too, at once and not at their deadline", function()
    local c = client()
    local jobs = { assert(c:job("w-1")), assert(c:job("w-2")), assert(c:job("w-3")) }
    local t0 = core.now()
    local outs, errs = kling.wait_all(jobs, { timeout = 8 })
    for i = 1, 3 do
      assert.is_nil(outs[i])
      assert.equals("network", errs[i].kind, tostring(errs[i]))
    end
    assert.is_true(core.now() - t0 < 6, "took " .. (core.now() - t0))
    assert.equals(0, c._engine:poll_stats().watched)
    c:close()
  end)
end)

-- Each call checks the class of its object (src/lua_engine.c check_class:
-- the metatables are upvalues of every method); a wrong object is refused
-- with the class it needed, and nothing runs (port 9 on loopback: nothing
-- listens, nothing is sent).
describe("the engine's and the transfer's methods", function()
  it("refuse an object of another class, naming the class they need", function()
    local eng = core.engine.new { base_url = "http://127.0.0.1:9/v1", token = "t" }
    local x = assert(eng:request { method = "GET", url = "http://127.0.0.1:9/v1/requests/a/status" })
    local others = { {}, io.stdout, "x", 1, true, print, coroutine.create(function() end), x:key() }
    -- every function of each class: its methods (the poller's too: src/lua_poller.c) and
    -- the metamethods that take the object
    local function each(obj, class, wrong)
      local mt = getmetatable(obj)
      local names = {}
      for name, f in pairs(mt.__index) do names[#names + 1] = name; assert.is_function(f) end
      for _, m in ipairs { "__gc", "__close", "__tostring" } do
        if mt[m] then names[#names + 1] = m end
      end
      table.sort(names)
      assert.is_true(#names >= 7, class .. ": " .. table.concat(names, " "))
      for _, name in ipairs(names) do
        local f = mt.__index[name] or mt[name]
        for _, other in ipairs { wrong, (table.unpack or unpack)(others) } do
          local ok, err = pcall(f, other)
          assert.is_false(ok, class .. "." .. name .. " took a " .. type(other))
          assert.matches(class .. " expected", err, 1, true)
        end
        local ok, err = pcall(f) -- no object at all
        assert.is_false(ok)
        assert.matches(class .. " expected", err, 1, true)
      end
    end
    each(eng, "kling.core.engine", x)
    each(x, "kling.core.transfer", eng)
    assert.equals(1, eng:pending()) -- the right objects still pass, and nothing was closed
    assert.is_false(x:done())
    assert.matches("running", tostring(x))
    x:close()
    eng:close()
    assert.has_error(function() eng:pending() end)
  end)
end)

-- More requests than connections: the engine holds the rest (queued) and starts
-- them as places free up. A caller's own loop (the documented host loop: wait up
-- to timeout() on pollfd(), then step(0)) must be told when a queued request may
-- start, and must not be told "now" while every place is taken (a spinning loop).
describe("a caller's loop with more requests than connections", function()
  local emu
  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0", "--run", "0" }
  end)
  teardown(function()
    if emu then emu:stop() end
  end)

  it("is never left waiting on nothing while requests are queued", function()
    local c = kling.new { base_url = emu.api, token = TOKEN, on_warning = false }
    local job = assert(c:generate { prompt = "asked after six times at once" })
    c:close()
    local eng = core.engine.new { base_url = emu.api, token = TOKEN, max_connections = 1 }
    local xs = {}
    for i = 1, 6 do xs[i] = assert(eng:request { method = "GET", url = job.urls.status }) end
    local stalls, iterations = 0, 0
    local function all_done()
      for i = 1, 6 do if not xs[i]:done() then return false end end
      return true
    end
    while not all_done() and iterations < 200 do
      iterations = iterations + 1
      local t = eng:timeout()
      local st = eng:stats()
      -- (no timeout and nothing in flight: no socket and no timer would ever wake the loop)
      if t == nil and st.queued > 0 and st.inflight == 0 then stalls = stalls + 1 end
      core.engine.wait_fds({ eng:pollfd() }, t or 2)
      eng:step(0)
    end
    assert.is_true(all_done(), "not all done after " .. iterations .. " turns")
    assert.equals(0, stalls)
    for i = 1, 6 do assert.equals(200, xs[i]:result().status) end
    eng:close()
  end)

  it("does not spin while every connection is taken and max_rps holds queued requests", function()
    local eng = core.engine.new { base_url = emu.api, token = TOKEN, max_connections = 1, max_rps = 100 }
    local xs = {}
    for i = 1, 6 do
      -- each submit is answered after 0.3 s of the emulator's clock: the one connection stays taken
      xs[i] = assert(eng:request { method = "POST", url = emu.api .. "/models/kling/kling-3.0/pro/text-to-video",
        body = '{"prompt":"held ' .. i .. ' @emu:submit_delay=0.3"}' })
    end
    local turns, done = 0, 0
    while done < 6 and turns < 100000 do
      turns = turns + 1
      local t = eng:timeout()
      core.engine.wait_fds({ eng:pollfd() }, t or 2)
      eng:step(0)
      done = 0
      for i = 1, 6 do if xs[i]:done() then done = done + 1 end end
    end
    assert.equals(6, done)
    -- each turn is an event (an answer, a timer of libcurl's): a few dozen at most; a loop
    -- told "now" while it must wait turns hundreds of thousands of times
    assert.is_true(turns < 500, "turns of the loop: " .. turns)
    for i = 1, 6 do xs[i]:close() end
    eng:close()
  end)

  it("lets kling.run drive two clients of one connection each to the end of their jobs", function()
    local opts = { base_url = emu.api, token = TOKEN, max_connections = 1, on_warning = false,
      poll = { initial = 0.05, near = 0.1, min = 0.01, max = 0.2 } }
    local a, b = kling.new(opts), kling.new(opts)
    local ja, jb = {}, {}
    for i = 1, 8 do ja[i] = assert(a:generate { prompt = "a" .. i .. " @emu:run=0.5" }) end
    for i = 1, 8 do jb[i] = assert(b:generate { prompt = "b" .. i .. " @emu:run=0.5" }) end
    local outs = {}
    kling.run(function()
      -- (kling.run drives both clients: each wait's client may have polls queued behind its one
      -- connection; before the fix such a wait slept until the scheduler's 60 s)
      kling.spawn(function() outs.a = { kling.wait_all(ja, { timeout = 20 }) } end)
      kling.spawn(function() outs.b = { kling.wait_all(jb, { timeout = 20 }) } end)
    end)
    for _, side in ipairs { { outs.a, ja }, { outs.b, jb } } do
      local res, jobs = side[1], side[2]
      local _, first_err = next(res[2]) -- (wait_all: outputs, errors by index)
      assert.is_nil(first_err, tostring(first_err))
      for i = 1, 8 do
        assert.equals("completed", jobs[i].status)
        assert.is_string(res[1][i].video)
      end
    end
    a:close()
    b:close()
  end)
end)
