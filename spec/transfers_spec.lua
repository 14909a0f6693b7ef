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

-- The headers of a request, as a server reads them. An API request's User-Agent is a line
-- of the client's header list (src/net.c), so libcurl does not format one again for every
-- request; it must still go out once, with the value the caller gave.
describe("the headers of a request", function()
  local scripted = require "scripted_api"
  local api, dir

  setup(function()
    dir = helpers.tmpdir()
    api = scripted.start(dir)
  end)
  teardown(function()
    if api then api.stop() end
    if dir then helpers.rm_rf(dir) end
  end)

  local values = scripted.header_values

  local function serve()
    api.serve {
      { "POST", "^/v1/models/", { { 200, '{"request_id":"r1","status":"in_queue"}' } } },
      { "GET", "^/v1/requests/r1/status", { { 200, '{"request_id":"r1","status":"in_queue"}' } } },
      { "GET", "^/files/clip.mp4", { { 200, "MP4 bytes", "video/mp4" } } },
    }
  end

  for _, case in ipairs {
    { what = "the default", ua = nil },
    { what = "the caller's", ua = "my-app/1.2 (render farm)" },
  } do
    it("sends " .. case.what .. " User-Agent once on a submit, on status polls and on a download", function()
      serve()
      local c = kling.new { base_url = api.api, token = "hdr-token", on_warning = false, user_agent = case.ua,
        retries = false }
      local job = assert(c:submit("kling/kling-3.0/pro/text-to-video", { prompt = "a cat" }, { catalog = false }))
      assert(job:refresh())
      assert(job:refresh()) -- on the warm handle of the first poll
      local path = dir .. "/clip.mp4"
      assert(c:download_url(api.base .. "/files/clip.mp4", path))
      c:close()
      local want = case.ua or ("kling-lua/" .. kling.VERSION .. " libcurl/" .. require("kling.core").engine.curl_version)
      local reqs = api.requests()
      assert.equal(4, #reqs)
      for i, req in ipairs(reqs) do
        assert.same({ want }, values(req, "User-Agent"), "request " .. i .. ": " .. req.line)
      end
      -- the API's own headers, once each, on the API requests only
      for i = 1, 3 do
        assert.same({ "Bearer hdr-token" }, values(reqs[i], "Authorization"), reqs[i].line)
        assert.same({ "application/json" }, values(reqs[i], "Accept"), reqs[i].line)
      end
      assert.same({ "application/json" }, values(reqs[1], "Content-Type"))
      assert.same({}, values(reqs[4], "Authorization"))
    end)
  end

  it("sends the User-Agent once on a result, a cancel, a retried poll, a download's redirect hop and an API request after a download", function()
    api.serve {
      { "GET", "^/v1/requests/r1/status", { { 503, '{"error_code":503001,"error_message":"busy"}' },
        { 200, '{"request_id":"r1","status":"completed"}' } } },
      { "GET", "^/v1/requests/r1/result", { { 200, '{"request_id":"r1","status":"completed","output":{"video":"{BASE}/files/hop.mp4"}}' } } },
      { "POST", "^/v1/requests/r1/cancel", { { 200, '{"request_id":"r1","status":"cancelled"}' } } },
      { "GET", "^/files/hop.mp4", { { 302, "", "text/plain\r\nLocation: /files/clip.mp4" } } },
      { "GET", "^/files/clip.mp4", { { 200, "MP4 bytes", "video/mp4" } } },
    }
    local c = kling.new { base_url = api.api, token = "hdr-token", on_warning = false, user_agent = "ua/1",
      retries = { max = 2, base = 0.01, cap = 0.02 } }
    local job = assert(c:job("r1"))
    assert(job:refresh()) -- a 503, then the same request again
    local out = assert(job:result())
    assert(c:download_url(out.video, dir .. "/clip2.mp4")) -- a 302, then the file
    job:cancel() -- an API request on a handle that may have made a download
    c:close()
    local reqs = api.requests()
    local lines = {}
    for i, req in ipairs(reqs) do
      lines[i] = req.line
      assert.same({ "ua/1" }, values(req, "User-Agent"), "request " .. i .. ": " .. req.line)
    end
    assert.same({ "GET /v1/requests/r1/status HTTP/1.1", "GET /v1/requests/r1/status HTTP/1.1",
      "GET /v1/requests/r1/result HTTP/1.1", "GET /files/hop.mp4 HTTP/1.1", "GET /files/clip.mp4 HTTP/1.1",
      "POST /v1/requests/r1/cancel HTTP/1.1" }, lines)
  end)

  it("sends no User-Agent at all for an empty user_agent, on API requests and downloads alike", function()
    serve()
    local c = kling.new { base_url = api.api, token = "hdr-token", on_warning = false, user_agent = "", retries = false }
    local job = assert(c:submit("kling/kling-3.0/pro/text-to-video", { prompt = "a cat" }, { catalog = false }))
    assert(job:refresh())
    assert(c:download_url(api.base .. "/files/clip.mp4", dir .. "/clip3.mp4"))
    c:close()
    local reqs = api.requests()
    assert.equal(3, #reqs)
    for i, req in ipairs(reqs) do
      assert.same({}, values(req, "User-Agent"), "request " .. i .. ": " .. req.line)
    end
  end)

  for _, bad in ipairs { "app\r\nX-Injected: 1", "app\nX-Injected: 1", "app\r" } do
    it("refuses a user_agent holding a line break (" .. bad:gsub("[\r\n]", { ["\r"] = "\\r", ["\n"] = "\\n" }) .. ") before sending anything", function()
      serve()
      local ok, err = pcall(kling.new, { base_url = api.api, token = "hdr-token", user_agent = bad })
      assert.is_false(ok)
      assert.matches("user_agent", tostring(err))
      assert.matches("line break", tostring(err))
      assert.equal(0, #api.requests())
    end)
  end
end)
