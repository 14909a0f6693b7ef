-- Retries against an emulator that injects faults (see doc/EMULATOR.md):
-- safe requests are tried again, a paid submit never is unless it provably
-- never arrived or was refused with 429, and nothing is lost or doubled.
local helpers = require "helpers"
local kling = require "kling"
local core = require "kling.core"
local json = require "kling.json"

local TOKEN = "retry-token"

describe("retries under faults", function()
  local emu, dir

  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0", "--run", "0.3", "--seed", "9" }
    dir = helpers.tmpdir()
  end)
  teardown(function()
    if emu then emu:stop() end
    os.execute("rm -rf " .. helpers.quote(dir))
  end)

  local function faults(list)
    local res = helpers.http("POST", emu.root .. "/__emulator/faults", { body = json.encode { faults = list, seed = 1 } })
    assert.equals(200, res.status, res.body)
  end

  local function client(extra)
    local opts = { base_url = emu.api, token = TOKEN, timeout = 1, retries = { max = 3, base = 0.01, cap = 0.05 },
      poll = { initial = 0.05, near = 0.1 } }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return kling.new(opts)
  end

  after_each(function() faults {} end)

  it("tries a status request again on 503, then gives kind server with every try counted", function()
    local c = client()
    local job = assert(c:generate { prompt = "s" })
    faults { "status:503:1" }
    local before = emu:stats().requests.status
    local st, err = job:refresh()
    assert.is_nil(st)
    assert.equals("server", err.kind)
    assert.equals(503, err.status)
    assert.equals(4, emu:stats().requests.status - before) -- 1 + retries.max
    faults {}
    assert(job:refresh())
    c:close()
  end)

  it("honours Retry-After on a 429", function()
    local c = client { retries = { max = 1, base = 0.01 } }
    local job = assert(c:generate { prompt = "ra" })
    faults { "status:429:1:1" }
    local t0 = core.now()
    local st, err = job:refresh()
    assert.is_nil(st)
    assert.equals("rate_limited", err.kind)
    assert.is_true(core.now() - t0 >= 0.95, "waited " .. (core.now() - t0))
    c:close()
  end)

  it("never sends a submit again after a 503, a reset, a slow answer or a drop: kind submit_unknown", function()
    local path = dir .. "/unknown.jsonl"
    local c = client { journal = path, submit_timeout = 1 } -- (a submit waits 90 s by default)
    for _, f in ipairs { "submit:503:1", "submit:reset:1", "submit:slow:1:2", "submit:drop_after_create:1" } do
      faults { f }
      local before = emu:stats().faults.submit_attempts
      local job, err = c:generate { prompt = "paid " .. f }
      assert.is_nil(job, f)
      assert.equals("submit_unknown", err.kind, f)
      assert.equals(1, emu:stats().faults.submit_attempts - before, f)
    end
    local _, unknown = c:resume()
    assert.equals(4, #unknown)
    c:close()
  end)

  it("sends a submit refused with 429 again, and creates one job", function()
    local c = client()
    faults { "submit:429:0.5:0" }
    local before = emu:stats()
    local jobs = {}
    for i = 1, 10 do jobs[i] = assert(c:generate { prompt = "retried " .. i }) end
    local after = emu:stats()
    assert.equals(10, after.jobs_created - before.jobs_created)
    assert.is_true(after.faults.submit_attempts - before.faults.submit_attempts > 10)
    c:close()
  end)

  it("waits through broken status answers and resets until the job ends", function()
    local c = client()
    local job = assert(c:generate { prompt = "through faults @emu:run=0.5" })
    faults { "status:truncated_json:0.3", "status:reset:0.2", "result:502:0.3" }
    local out = assert(job:wait())
    assert.is_string(out.video)
    c:close()
  end)

  it("finishes a download that is cut in the middle, going on with Range", function()
    local c = client { retries = { max = 10, base = 0.01, cap = 0.05 } }
    local job = assert(c:generate { prompt = "cut @emu:bytes=400000" })
    assert(job:wait())
    faults { "download:cut:0.6" }
    local path = dir .. "/cut.bin"
    local _, bytes = assert(job:download(path))
    assert.equals(400000, bytes)
    assert.equals(helpers.pattern_bytes(0, 400000), helpers.read_file(path))
    assert.is_true(emu:stats().faults.injected.download.cut >= 1)
    c:close()
  end)

  it("keeps the .part of a download that keeps failing, and goes on from it later", function()
    local c = client { retries = { max = 1, base = 0.01 } }
    local job = assert(c:generate { prompt = "cut twice @emu:bytes=300000" })
    assert(job:wait())
    faults { "download:cut:1" }
    local path = dir .. "/later.bin"
    local got, err = job:download(path)
    assert.is_nil(got)
    assert.equals("network", err.kind)
    assert.is_truthy(io.open(path .. ".part", "rb"))
    faults {}
    local _, bytes = assert(job:download(path))
    assert.equals(300000, bytes)
    assert.equals(helpers.pattern_bytes(0, 300000), helpers.read_file(path))
    c:close()
  end)
end)
