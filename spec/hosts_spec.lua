--- spec/hosts_spec.lua: hosts that never block: job callbacks driven by client:step(),
-- client:step(0) and client:timeout(), a waiter per client, waits over several clients
-- that yield through the waiters, the clear error of a wait from a main thread, and what
-- core.so exports. Against the emulator; `make test-all` runs it on every Lua.
local helpers = require "helpers"
local kling = require "kling"
local core = require "kling.core"
local uv = require "luv"

local TOKEN = "hosts-token"

describe("hosts that never block", function()
  local emu

  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0.2", "--run", "0.4" }
  end)
  teardown(function()
    kling.set_waiter(nil)
    if emu then emu:stop() end
  end)

  local function client(opts)
    opts = opts or {}
    opts.base_url, opts.token = emu.api, TOKEN
    opts.poll = { initial = 0.05, near = 0.1 }
    return kling.new(opts)
  end

  -- The loop of a host: waits on the client's descriptors at most timeout(), then steps it.
  local function host_loop(c, until_fn, stepping)
    local deadline = core.engine.now() + 20 -- a guard against a hang, not a window
    while not until_fn() and core.engine.now() < deadline do
      local t = c:timeout()
      core.engine.wait_fds(c:pollfds(), math.min(t or 0.1, 0.1))
      stepping.on = true
      c:step(0)
      stepping.on = false
    end
  end

  it("polls a job from the moment on_update and on_done are set, calling them from client:step(), with no wait call", function()
    local c = client()
    local job = assert(c:generate { prompt = "callbacks" })
    local stepping, updates, done = { on = false }, {}, nil
    assert.equals(job, job:on_update(function(j)
      assert.is_true(stepping.on, "on_update outside client:step()")
      updates[#updates + 1] = j.status
    end))
    job:on_done(function(j, out, err)
      assert.is_true(stepping.on, "on_done outside client:step()")
      done = { job = j, out = out, err = err }
    end)
    host_loop(c, function() return done ~= nil end, stepping)
    assert.is_table(done)
    assert.equals(job, done.job)
    assert.is_nil(done.err)
    assert.is_string(done.out.video)
    assert.equals("completed", job.status)
    assert.equals("completed", updates[#updates])
    c:close()
  end)

  it("gives on_done the error of a job that failed, and calls it at once for a job that has ended", function()
    local c = client()
    local job = assert(c:generate { prompt = "fails @emu:fail" })
    local got
    job:on_done(function(_, out, err) got = { out = out, err = err } end)
    host_loop(c, function() return got ~= nil end, {})
    assert.is_nil(got.out)
    assert.equals("failed", got.err.kind)
    local again
    job:on_done(function(_, out, err) again = { out = out, err = err } end)
    assert.equals(got.err, again.err)
    assert.has_error(function() job:on_done("not a function") end)
    c:close()
  end)

  it("never blocks in client:step(0), and says nil from timeout() when nothing is due", function()
    local c = client()
    assert.is_nil(c:timeout())
    local job = assert(c:generate { prompt = "long queue @emu:queue=30" })
    job:on_update(function() end)
    local t = c:timeout()
    assert.is_number(t)
    assert.is_true(t >= 0 and t < math.huge)
    local before = core.engine.now()
    for _ = 1, 20 do c:step(0) end
    assert.is_true(core.engine.now() - before < 1, "20 steps took " .. (core.engine.now() - before) .. " s")
    assert.is_nil(job.output)
    c:close()
  end)

  it("waits through the client's own waiter (kling.new{ waiter = fn }) before kling.set_waiter's", function()
    local own, global = 0, 0
    kling.set_waiter(function(c, s) global = global + 1 c:step(s) end)
    local c = client { waiter = function(cl, s)
      own = own + 1
      core.engine.wait_fds(cl:pollfds(), s)
    end }
    local job = assert(c:generate { prompt = "own waiter" })
    assert(job:wait())
    kling.set_waiter(nil)
    assert.is_true(own >= 1)
    assert.equals(0, global)
    assert.has_error(function() client { waiter = 42 } end)
    c:close()
  end)

  it("waits for jobs of two clients (kling.wait_all, wait_any) through their waiters, letting the host's loop run", function()
    local waiter = require("kling.loops").luv(uv)
    local a, b = client { waiter = waiter }, client { waiter = waiter }
    local ticks, outs, errs, any, during = 0, nil, nil, nil, nil
    local tick = uv.new_timer()
    tick:start(20, 20, function() ticks = ticks + 1 end)
    coroutine.wrap(function()
      local j1 = assert(a:generate { prompt = "first @emu:run=0.6" })
      local j2 = assert(b:generate { prompt = "second @emu:run=0.2" })
      any = kling.wait_any { j1, j2 }
      outs, errs = kling.wait_all { j1, j2 }
      during = ticks
      tick:stop()
      tick:close()
    end)()
    uv.run()
    assert.is_string(outs[1].video)
    assert.is_string(outs[2].video)
    assert.is_nil(errs[1] or errs[2])
    assert.equals(b, any.client)
    assert.is_true(during >= 5, "the host's timer ticked " .. tostring(during) .. " times during the waits")
    a:close()
    b:close()
  end)

  it("refuses a wait from the main thread through a waiter that yields: call this from a coroutine, or use on_done", function()
    local plain = client()
    local job = assert(plain:generate { prompt = "main thread" })
    local c = client { waiter = function() coroutine.yield() end }
    local mine = c:job(job.id)
    local ok, err = pcall(mine.wait, mine)
    assert.is_false(ok)
    assert.matches("call this from a coroutine, or use on_done", err, 1, true)
    assert.is_nil(err:find("attempt to yield", 1, true))
    local l = client { waiter = require("kling.loops").luv(uv) }
    local ok2, err2 = pcall(function() return l:job(job.id):wait() end)
    assert.is_false(ok2)
    assert.matches("call this from a coroutine, or use on_done", err2, 1, true)
    c:close()
    l:close()
    plain:close()
  end)

  it("refuses a submit from the main thread through a waiter that yields before sending it (no job made, none journaled)", function()
    local dir = helpers.tmpdir()
    local path = dir .. "/jobs.jsonl"
    local c = client { waiter = function() coroutine.yield() end, journal = path }
    local before = emu:stats().jobs_created
    local ok, err = pcall(c.generate, c, { prompt = "must not be sent from the main thread" })
    assert.is_false(ok)
    assert.matches("call this from a coroutine, or use on_done", err, 1, true)
    -- the host's loop goes on stepping the client: the submit must not go out then either
    for _ = 1, 20 do
      core.engine.wait_fds(c:pollfds(), 0.02)
      c:step(0)
    end
    assert.equals(before, emu:stats().jobs_created)
    assert.is_nil((helpers.read_file(path) or ""):find('"intent"', 1, true))
    -- the same call from a coroutine goes through the waiter and submits once
    local job
    local co = coroutine.create(function() job = assert(c:generate { prompt = "from a coroutine" }) end)
    local guard = core.engine.now() + 20
    repeat
      assert(coroutine.resume(co))
      core.engine.wait_fds(c:pollfds(), 0.05)
    until coroutine.status(co) == "dead" or core.engine.now() > guard
    assert.is_string(job and job.id)
    assert.equals(before + 1, emu:stats().jobs_created)
    -- a cancel from the main thread is refused before it is sent too
    local ok2, err2 = pcall(job.cancel, job)
    assert.is_false(ok2)
    assert.matches("call this from a coroutine", err2, 1, true)
    for _ = 1, 10 do c:step(0.02) end
    assert.equals(0, emu:job_record(job.id).cancel_requests)
    c:close()
    helpers.rm_rf(dir)
  end)

  it("drives jobs of more clients than 64 descriptors in one kling.run (wait_fds grows past its stack array)", function()
    local clients, jobs = {}, {}
    for i = 1, 70 do clients[i] = client() end
    local outs = kling.run(function()
      for i, c in ipairs(clients) do
        jobs[i] = assert(c:submit(kling.DEFAULT_MODEL, { prompt = "client " .. i }))
      end
      return kling.wait_all(jobs, { timeout = 60 })
    end)
    assert.equals(70, #outs)
    for i = 1, 70 do
      assert.equals("completed", jobs[i].status)
      assert.is_string(jobs[i].video_url)
    end
    -- and the limit is the one the core says, with a clear error beyond it
    local many = {}
    for i = 1, core.LIMITS.wait_fds + 1 do many[i] = -1 end
    local ok, err = pcall(core.engine.wait_fds, many, 0)
    assert.is_false(ok)
    assert.matches("too many descriptors", tostring(err), 1, true)
    for _, c in ipairs(clients) do c:close() end
  end)

  it("exports only luaopen_kling_core from core.so", function()
    local so = package.searchpath("kling.core", package.cpath)
    local p = assert(io.popen("nm -D --defined-only " .. helpers.quote(so) .. " 2>&1"))
    local names = {}
    for line in p:lines() do
      local name = line:match("^%x+ [TDBRVWtdbr] (%S+)$")
      if name then names[#names + 1] = name end
    end
    p:close()
    assert.same({ "luaopen_kling_core" }, names)
  end)

  it("gives the shipped schema to a host that loads kling's Lua files through package.preload", function()
    local saved_path, saved = package.path, {}
    for name in pairs(package.loaded) do
      if name == "kling" or name:find("^kling%.") and name ~= "kling.core" then saved[name] = package.loaded[name] end
    end
    local root = helpers.root .. "/lua/"
    local p = assert(io.popen("cd " .. helpers.quote(root) .. " && find kling.lua kling -name '*.lua'"))
    local preloaded = {}
    for file in p:lines() do
      local name = file:gsub("%.lua$", ""):gsub("/", ".")
      if name:find("^kling") and not name:find("emulator") and not name:find("^kling%.cli%.") and name ~= "kling.cli" then
        package.preload[name] = assert(loadfile(root .. file))
        preloaded[#preloaded + 1] = name
      end
    end
    p:close()
    for name in pairs(saved) do package.loaded[name] = nil end
    package.path = "" -- nothing found by a search
    local ok, res = pcall(function()
      local k = require "kling"
      local valid, input = k.validate { prompt = "from preload", duration = 5 }
      local bad, err = k.validate { prompt = "from preload", duration = 99 }
      return { valid = valid, input = input, bad = bad, err = err }
    end)
    package.path = saved_path
    for _, name in ipairs(preloaded) do package.preload[name], package.loaded[name] = nil, nil end
    for name, m in pairs(saved) do package.loaded[name] = m end
    assert(ok, res)
    assert.is_true(res.valid)
    assert.equals(5, res.input.duration)
    assert.is_nil(res.bad)
    assert.equals("validation", res.err.kind)
  end)
end)
