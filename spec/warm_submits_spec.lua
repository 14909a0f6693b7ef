-- Submits on warm connections, never replayed (issue 13). A submit goes on a
-- kept-alive connection (no TLS handshake per submit), and its body reaches
-- libcurl through a read callback whose seek refuses to rewind: when a reused
-- connection dies before any byte of the answer (the server closed it while
-- kling kept it), libcurl cannot send the paid POST a second time by itself;
-- the submit ends once, as submit_unknown. The emulator's fault reset_reused
-- resets exactly such requests; its stats count every submit that arrived.
local helpers = require "helpers"
local kling = require "kling"

local TOKEN = "warm-token-13"

describe("submits on warm connections", function()
  local emu

  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0", "--run", "0" }
  end)
  teardown(function()
    if emu then emu:stop() end
  end)
  before_each(function()
    emu:set_faults {}
    emu:reset()
  end)

  local function client(opts)
    opts = opts or {}
    opts.base_url, opts.token, opts.on_warning = emu.api, TOKEN, false
    return kling.new(opts)
  end

  local function submit_attempts() return emu:stats().faults.submit_attempts end
  local function injected(route, fault)
    local by_route = emu:stats().faults.injected[route]
    return by_route and by_route[fault] or 0
  end

  it("sends sequential submits on kept-alive connections, not one new connection each", function()
    local c = client()
    for i = 1, 20 do
      local job, err = c:generate { prompt = "warm cat " .. i }
      assert.is_truthy(job, err and tostring(err))
    end
    local s = c._engine:stats()
    assert.is_true(s.sockets_opened <= 2, "connections opened for 20 submits: " .. s.sockets_opened)
    assert.equal(20, emu:stats().jobs_created)
  end)

  it("sends a submit reset on a reused connection once, and reports it submit_unknown", function()
    emu:set_faults { "submit:reset_reused:1" }
    local c = client()
    local before = emu:stats()
    local ok, unknown = 0, 0
    for i = 1, 12 do
      local job, err = c:generate { prompt = "reset cat " .. i }
      if job then
        ok = ok + 1
      else
        assert.equal("submit_unknown", err.kind, tostring(err))
        assert.is_false(err.retryable)
        assert.matches("not sent again", err.message, 1, true)
        unknown = unknown + 1
      end
    end
    local after = emu:stats()
    -- every submit arrived exactly once: attempts == submits (libcurl sent none again)
    assert.equal(12, after.faults.submit_attempts - before.faults.submit_attempts)
    assert.equal(ok, after.jobs_created - before.jobs_created)
    -- the reused connections were reset (each reset submit one of the unknowns), and the next
    -- submit went on a new connection and was answered
    assert.is_true(unknown >= 5, "submit_unknown: " .. unknown)
    assert.equal(unknown, injected("submit", "reset_reused"))
    assert.equal(12, ok + unknown)
  end)

  it("journals a submit reset on a reused connection as submit_unknown, never as sent twice", function()
    emu:set_faults { "submit:reset_reused:1" }
    local dir = helpers.tmpdir()
    local path = dir .. "/jobs.jsonl"
    local c = client { journal = path }
    assert.is_truthy(c:generate { prompt = "first cat" })
    local job, err = c:generate { prompt = "second cat" }
    assert.is_nil(job)
    assert.equal("submit_unknown", err.kind)
    local text = helpers.read_file(path) or ""
    local lines = 0
    for line in text:gmatch("[^\n]+") do
      if line:find('"submit_unknown"', 1, true) then lines = lines + 1 end
    end
    assert.equal(1, lines, text)
    assert.equal(2, submit_attempts())
    os.execute("rm -rf " .. helpers.quote(dir))
  end)

  it("sends a cancel (not a submit) reset on a reused connection again, and reads its answer", function()
    local c = client()
    local job = assert(c:generate { prompt = "a cat to cancel @emu:queue=60" })
    emu:set_faults { "cancel:reset_reused:1" }
    local out, err = job:cancel()
    assert.is_truthy(out, err and tostring(err))
    assert.equal(1, injected("cancel", "reset_reused"))
  end)

  it("sends a status GET reset on a reused connection again, and reads its answer", function()
    local c = client()
    local job = assert(c:generate { prompt = "a cat to look at" })
    emu:set_faults { "status:reset_reused:1" }
    local status, err = job:refresh()
    assert.is_truthy(status, err and tostring(err))
    assert.equal(1, injected("status", "reset_reused"))
  end)

  it("with fresh_submits = true sends every submit on a new connection (none reset)", function()
    emu:set_faults { "submit:reset_reused:1" }
    local c = client { fresh_submits = true }
    for i = 1, 5 do
      local job, err = c:generate { prompt = "fresh cat " .. i }
      assert.is_truthy(job, err and tostring(err))
    end
    assert.equal(0, injected("submit", "reset_reused"))
    assert.equal(5, submit_attempts())
    assert.is_true(c._engine:stats().sockets_opened >= 5)
  end)

  it("refuses fresh_submits that is not a boolean", function()
    assert.has_error(function() client { fresh_submits = "yes" } end,
      "kling.new: option 'fresh_submits' must be a boolean, got string")
  end)
end)
