-- Coroutine-friendly waiting: kling.run, kling.spawn, wait_all, wait_any,
-- and a main-thread wait that sleeps instead of spinning.
local helpers = require "helpers"
local kling = require "kling"

local TOKEN = "sched-spec-token"
local FAST = { initial = 0.05, max = 0.2 }

describe("waiting", function()
  local emu, client

  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0.1", "--run", "0.2" }
    client = kling.new { base_url = emu.api, token = TOKEN, poll = FAST }
  end)
  teardown(function()
    if client then client:close() end
    if emu then emu:stop() end
  end)

  it("returns from two coroutines under kling.run in the order their jobs end", function()
    local order = kling.run(function()
      local long = assert(client:generate { prompt = "long @emu:run=1.2" })
      local short = assert(client:generate { prompt = "short @emu:run=0.2" })
      local ended = {}
      kling.spawn(function() assert(long:wait()) ended[#ended + 1] = "long" end)
      kling.spawn(function() assert(short:wait()) ended[#ended + 1] = "short" end)
      return ended
    end)
    assert.same({ "short", "long" }, order)
  end)

  it("passes arguments to kling.run and returns every value of the function", function()
    local a, b = kling.run(function(x, y) return x + 1, y .. "!" end, 41, "hi")
    assert.equals(42, a)
    assert.equals("hi!", b)
  end)

  it("runs any function as a task, a C function too, with and without arguments", function()
    local got = {}
    kling.run(function()
      kling.spawn(function() got[#got + 1] = "lua" end)
      kling.spawn(function(a, b) got[#got + 1] = a .. b end, "x", "y")
      kling.spawn(table.insert, got, "c") -- a C function with arguments
      kling.spawn(collectgarbage) -- a C function without
    end)
    table.sort(got)
    assert.same({ "c", "lua", "xy" }, got)
  end)

  it("runs a callable table as a task, with and without arguments (as it did before tasks without arguments took a shortcut)", function()
    local got = {}
    local callable = setmetatable({}, { __call = function(_, a) got[#got + 1] = a or "none" end })
    kling.run(function()
      kling.spawn(callable)
      kling.spawn(callable, "arg")
    end)
    table.sort(got)
    assert.same({ "arg", "none" }, got)
  end)

  it("lets other coroutines progress while one waits", function()
    local ticks = 0
    kling.run(function()
      local job = assert(client:generate { prompt = "a while @emu:run=0.6" })
      local done = false
      kling.spawn(function()
        while not done do
          ticks = ticks + 1
          client:sleep(0.05)
        end
      end)
      assert(job:wait())
      done = true
    end)
    assert.is_true(ticks >= 5)
  end)

  it("raises an error from a task out of kling.run", function()
    assert.has_error(function()
      kling.run(function() kling.spawn(function() error("boom in task") end) end)
    end)
  end)

  it("refuses kling.spawn outside kling.run", function()
    assert.has_error(function() kling.spawn(function() end) end, "kling.spawn: not inside kling.run")
  end)

  it("waits for all jobs concurrently with kling.wait_all, outputs and errors index-aligned", function()
    local jobs = {}
    for i = 1, 6 do
      local prompt = i == 4 and "bad one @emu:fail" or ("clip " .. i)
      jobs[i] = assert(client:generate { prompt = prompt .. " @emu:run=0.5" })
    end
    local t0 = require("kling.core").now()
    local outs, errs = kling.wait_all(jobs)
    local took = require("kling.core").now() - t0
    for i = 1, 6 do
      if i == 4 then
        assert.is_nil(outs[i])
        assert.equals("failed", errs[i].kind)
      else
        assert.is_string(outs[i].video)
        assert.is_nil(errs[i])
      end
    end
    assert.is_true(took < 2.5, "took " .. took .. " s: not concurrent")
  end)

  it("works inside kling.run too", function()
    local outs = kling.run(function()
      local a = assert(client:generate { prompt = "in run a" })
      local b = assert(client:generate { prompt = "in run b" })
      return (kling.wait_all { a, b })
    end)
    assert.equals(2, #outs)
  end)

  it("returns the first job to end with kling.wait_any, promptly", function()
    local slow = assert(client:generate { prompt = "slow @emu:run=5" })
    local fast = assert(client:generate { prompt = "fast @emu:run=0.2" })
    local t0 = require("kling.core").now()
    local first = kling.wait_any { slow, fast }
    assert.equals(fast, first)
    assert.is_true(require("kling.core").now() - t0 < 2)
    assert.is_false(slow:done())
  end)

  it("blocks the main thread in the kernel during a wait: little CPU for a long wait", function()
    local job = assert(client:generate { prompt = "sleepy @emu:run=1.5" })
    local c0 = os.clock()
    local t0 = require("kling.core").now()
    assert(job:wait())
    local wall, cpu = require("kling.core").now() - t0, os.clock() - c0
    assert.is_true(wall >= 1.4)
    assert.is_true(cpu < 0.1, "CPU " .. cpu .. " s over a " .. wall .. " s wait")
  end)
end)
