-- Waiting inside foreign event loops: cqueues (automatic), luv and any loop
-- through kling.set_waiter, against the emulator.
local helpers = require "helpers"
local kling = require "kling"
local cqueues = require "cqueues"
local uv = require "luv"

local TOKEN = "loops-token"

describe("foreign event loops", function()
  local emu, client

  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0.1", "--run", "0.5" }
    client = kling.new { base_url = emu.api, token = TOKEN, poll = { initial = 0.05, near = 0.1 } }
  end)
  teardown(function()
    kling.set_waiter(nil)
    if client then client:close() end
    if emu then emu:stop() end
  end)

  it("is a pollable: pollfd, events, timeout and step", function()
    local backend = require("kling.core").engine.event_backend
    if backend == "poll" then -- no single descriptor: the list of the engine's sockets
      assert.equals(-1, client:pollfd())
    else
      assert.is_true(helpers.math_type(client:pollfd()) == "integer" and client:pollfd() >= 0)
      assert.same({ { fd = client:pollfd(), events = "r" } }, client:pollfds())
    end
    assert.equals("r", client:events())
    local job = assert(client:generate { prompt = "pollable" })
    job:_hold()
    local t = client:timeout()
    assert.is_true(t ~= nil and t >= 0 and t <= 0.1)
    local deadline = require("kling.core").now() + 5
    while not job:done() and require("kling.core").now() < deadline do
      require("kling.core").wait_fds(client:pollfds(), client:timeout() or 0.1)
      client:step(0)
    end
    job:_release()
    assert.equals("completed", job.status)
  end)

  it("waits through cqueues.poll inside a cqueues controller, letting its other coroutines run", function()
    local cq = cqueues.new()
    local ticks, results, done = 0, {}, 0
    cq:wrap(function()
      while done < 2 do
        ticks = ticks + 1
        cqueues.sleep(0.05)
      end
    end)
    for i, run in ipairs { "0.8", "0.2" } do
      cq:wrap(function()
        local job = assert(client:generate { prompt = "cq " .. i .. " @emu:run=" .. run })
        local out = assert(job:wait())
        results[#results + 1] = { i = i, out = out }
        done = done + 1
      end)
    end
    assert(cq:loop())
    assert.equals(2, #results)
    assert.equals(2, results[1].i) -- the shorter job ends first
    assert.is_string(results[1].out.video)
    assert.is_true(ticks >= 10, "ticks " .. ticks)
  end)

  it("waits inside a luv loop with kling.set_waiter(loops.luv(uv))", function()
    kling.set_waiter(require("kling.loops").luv(uv))
    local ticks, result = 0, nil
    local tick = uv.new_timer()
    tick:start(50, 50, function() ticks = ticks + 1 end)
    coroutine.wrap(function()
      local job = assert(client:generate { prompt = "luv" })
      result = assert(job:wait())
      tick:stop()
      tick:close()
    end)()
    uv.run()
    kling.set_waiter(nil)
    assert.is_string(result.video)
    assert.is_true(ticks >= 5, "ticks " .. ticks)
  end)

  it("uses any waiter given to kling.set_waiter", function()
    local calls = 0
    kling.set_waiter(function(c, seconds)
      calls = calls + 1
      require("kling.core").wait_fds(c:pollfds(), math.min(seconds, c:timeout() or seconds))
    end)
    local job = assert(client:generate { prompt = "custom waiter" })
    assert(job:wait())
    kling.set_waiter(nil)
    assert.is_true(calls >= 2)
    assert.has_error(function() kling.set_waiter(42) end)
  end)
end)
