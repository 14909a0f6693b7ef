-- Cheap transfers (issue 13): over HTTP/1.1 the engine lets at most as many
-- API transfers into libcurl at once as it has connections (the others wait
-- in the engine's queue, where they cost libcurl nothing); over HTTP/2 more
-- (spec/tls_spec.lua, "speaks HTTP/2"). The emulator speaks HTTP/1.1.
local helpers = require "helpers"
local kling = require "kling"

local TOKEN = "transfers-token-13"

describe("API transfers in libcurl at once", function()
  local emu

  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0", "--run", "0" }
  end)
  teardown(function()
    if emu then emu:stop() end
  end)

  local function concurrent_refreshes(c, job, n)
    local ok = 0
    kling.run(function()
      for _ = 1, n do
        kling.spawn(function()
          if job:refresh() then ok = ok + 1 end
        end)
      end
    end)
    return ok
  end

  for _, maxc in ipairs { 1, 2, 8 } do
    it("lets at most max_connections = " .. maxc .. " into libcurl over HTTP/1.1, and answers every one", function()
      local c = kling.new { base_url = emu.api, token = TOKEN, max_connections = maxc, on_warning = false }
      local job = assert(c:generate { prompt = "a cat polled at once @emu:queue=600" })
      assert.equal(40, concurrent_refreshes(c, job, 40))
      local s = c._engine:stats()
      assert.equal(maxc, s.active_cap)
      assert.is_true(s.active_peak <= maxc, "in libcurl at once: " .. s.active_peak)
      assert.is_true(s.sockets_peak <= maxc)
      c:close()
    end)
  end

  it("sets again on a reused handle what the last request set: a GET after a submit, no new connection after a fresh one", function()
    local c = kling.new { base_url = emu.api, token = TOKEN, max_connections = 1, fresh_submits = true, on_warning = false }
    local job = assert(c:generate { prompt = "a fresh submit, then polls" })
    local opened = c._engine:stats().sockets_opened
    for _ = 1, 5 do assert(job:refresh()) end -- a POST on that handle would be refused (405)
    assert.equal(opened, c._engine:stats().sockets_opened) -- no FRESH_CONNECT left over
    assert(c:generate { prompt = "the next fresh submit" })
    assert.equal(opened + 1, c._engine:stats().sockets_opened)
    c:close()
  end)

  it("keeps the queued transfers in order and loses none when submits and polls share the cap", function()
    local c = kling.new { base_url = emu.api, token = TOKEN, max_connections = 2, on_warning = false }
    local jobs, errs = {}, 0
    kling.run(function()
      for i = 1, 12 do
        kling.spawn(function()
          local job = c:generate { prompt = "shared cap " .. i }
          if job and job:refresh() then jobs[#jobs + 1] = job else errs = errs + 1 end
        end)
      end
    end)
    assert.equal(12, #jobs)
    assert.equal(0, errs)
    assert.is_true(c._engine:stats().active_peak <= 2)
    c:close()
  end)
end)

-- The scheduler of kling.run (lua/kling/sched.lua) keeps its lists, its timer heap (three
-- arrays) and each task's wait condition, and swaps or refills them: in the steady state
-- (tasks waiting, woken, waiting again) a cycle allocates nothing.
describe("the scheduler", function()
  local sched = require "kling.sched"
  local core = require "kling.core".engine

  it("allocates nothing per cycle in the steady state: plain, timed and keyed waits", function()
    local CYCLES, WARM = 3000, 300
    local kb0, kb1
    local calls = 0
    local keys = {}
    for i = 2, 12, 3 do keys[#keys + 1] = "key " .. i end
    kling.run(function()
      local done = 0
      for i = 1, 12 do
        kling.spawn(function()
          local mine = 0
          -- false, then true when the scheduler looks again: every cycle wakes the task
          local function ready()
            mine = mine + 1
            if i == 1 then
              calls = calls + 1
              if calls == WARM then
                collectgarbage("collect")
                collectgarbage("stop")
                kb0 = collectgarbage("count")
              elseif calls == 2 * CYCLES then
                kb1 = collectgarbage("count")
                collectgarbage("restart")
              end
            end
            if mine > 2 * CYCLES then return true end
            return mine % 2 == 0
          end
          local kind = i % 3
          if kind == 0 then
            sched.wait(nil, ready)
          elseif kind == 1 then
            sched.wait(nil, ready, core.now() + 3600)
          else
            sched.wait(nil, ready, nil, keys[math.floor((i + 1) / 3)])
          end
          done = done + 1
        end)
      end
      -- keyed waits are looked at only when notified: a task woken every cycle notifies their keys
      kling.spawn(function()
        local c = 0
        local function next_cycle() -- false when the wait starts, true when looked at again
          c = c + 1
          return c % 3 ~= 1
        end
        while done < 12 do
          for k = 1, #keys do sched.notify(keys[k]) end
          sched.wait(nil, next_cycle)
        end
      end)
    end)
    assert.is_number(kb0)
    assert.is_number(kb1)
    -- one table per cycle would be at least 32 bytes x 5700 cycles = 178 KiB (the old scheduler:
    -- 18 MiB); under 16 KiB leaves room for what LuaJIT's trace compiler allocates
    assert.is_true(kb1 - kb0 < 16, string.format("%.1f KiB allocated over %d cycles", kb1 - kb0, 2 * CYCLES - WARM))
  end)
end)
