-- A file-size limit (ulimit -f) is a local disk failure like any other: kind io, exit 8,
-- with the request id printed when the submit was sent. bin/kling ignores SIGXFSZ in its own
-- process (kling.core.ignore_sigxfsz) so that a write past the limit fails with EFBIG instead
-- of killing it; the library never changes a signal's disposition (it runs inside other
-- people's processes), and a host that wants kind io under a limit ignores SIGXFSZ itself.
-- Unlike spec/cli_journal_spec.lua, nothing here ignores SIGXFSZ before starting kling.
local helpers = require "helpers"
local cjson = require "cjson"

local q = helpers.quote
local TOKEN = "file-size-token-2b4"

local emu, dir, runs = nil, nil, 0

-- Runs bin/kling under `ulimit -f blocks` (512-byte blocks), SIGXFSZ as the shell leaves it.
local function kling(args, blocks)
  runs = runs + 1
  local base = dir .. "/run" .. runs
  local words = {}
  for _, a in ipairs(args) do words[#words + 1] = q(a) end
  local inner = (blocks and ("ulimit -f " .. blocks .. "; ") or "") .. "exec lua5.4 " .. q(helpers.root .. "/bin/kling")
    .. " " .. table.concat(words, " ")
  local cmd = string.format("cd %s && env -u RUNCOMFY_API_TOKEN -u LUA_PATH -u LUA_CPATH RUNCOMFY_MODEL_API_BASE=%s "
    .. "RUNCOMFY_TOKEN=%s XDG_STATE_HOME=%s KLING_POLL=%s sh -c %s >%s 2>%s </dev/null", q(dir), q(emu.api), q(TOKEN),
    q(dir .. "/state"), "initial=0.05,min=0.05,near=0.2,max=0.3", q(inner), q(base .. ".out"), q(base .. ".err"))
  local ok, how, code = helpers.execute(cmd)
  local res = { out = helpers.read_file(base .. ".out") or "", err = helpers.read_file(base .. ".err") or "" }
  res.code = ok and 0 or (how == "exit" and code or 128 + code)
  return res
end

-- A valid JSON line of exactly n bytes (newline included) of an event kling ignores.
local function pad_line(n)
  local line = cjson.encode { e = "note", pad = string.rep("x", n - 22) } .. "\n"
  assert(#line == n)
  return line
end

local function created() return emu:stats().jobs_created end
local size = helpers.size_of

describe("a file-size limit", function()
  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0.1", "--run", "0.1" }
    dir = helpers.tmpdir()
  end)
  teardown(function()
    if emu then emu:stop() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  it("makes submit exit 8 and send nothing when the journal's intent cannot be written", function()
    local path = dir .. "/big-journal.jsonl"
    helpers.write_file(path, pad_line(5000)) -- past the 4608-byte limit already
    local before = created()
    for _, cmd in ipairs { "submit", "generate" } do
      local res = kling({ cmd, "never sent", "--journal", path }, 9)
      assert.equals(8, res.code, res.err)
      assert.equals("", res.out)
      assert.matches("File too large", res.err, 1, true)
      assert.matches("not sent", res.err, 1, true)
    end
    assert.equals(before, created())
    assert.equals(5000, size(path))
  end)

  it("makes submit print the id and exit 8 when only the answer's line cannot be written", function()
    local probe = dir .. "/probe.jsonl"
    assert.equals(0, kling { "submit", "measured", "--journal", probe }.code)
    local intent_len = #(helpers.read_file(probe):match("^[^\n]*\n"))
    local path = dir .. "/tight.jsonl"
    helpers.write_file(path, pad_line(4608 - intent_len - 20)) -- room for the intent, not for the answer's line
    local before = created()
    local res = kling({ "submit", "measured", "--journal", path }, 9)
    assert.equals(8, res.code, res.err)
    local id = res.out:gsub("%s+$", "")
    assert.matches("^[%w-]+$", id)
    assert.equals(before + 1, created())
    assert.matches("File too large", res.err, 1, true)
    assert.matches(id, res.err, 1, true)
    assert.is_nil(res.err:find("File size limit exceeded", 1, true))
  end)

  it("makes download exit 8, keep the verified bytes in the .part, and a later run finish it", function()
    local res = kling { "submit", "big @emu:bytes=100000", "--no-journal" }
    assert.equals(0, res.code, res.err)
    local id = res.out:gsub("%s+$", "")
    local target = dir .. "/big.mp4"
    res = kling({ "download", id, "-o", target, "--no-journal", "-q" }, 100) -- 51200 bytes
    assert.equals(8, res.code, res.err)
    assert.matches("File too large", res.err, 1, true)
    assert.matches(target, res.err, 1, true)
    assert.is_nil(io.open(target, "rb"))
    local kept = size(target .. ".part")
    assert.is_true(kept ~= nil and kept > 0 and kept <= 51200, tostring(kept))
    res = kling { "download", id, "-o", target, "--no-journal", "-q", "--force" }
    assert.equals(0, res.code, res.err)
    assert.equals(100000, size(target))
  end)

  it("makes batch exit 8 and submit nothing when its state file cannot take a mark", function()
    local file = dir .. "/lines.jsonl"
    helpers.write_file(file, '{"prompt":"one"}\n{"prompt":"two"}\n')
    local out = dir .. "/batch-out"
    os.execute("mkdir -p " .. q(out))
    helpers.write_file(out .. "/.kling-batch.jsonl", pad_line(5000))
    local before = created()
    local res = kling({ "batch", file, "--out-dir", out, "--journal", dir .. "/batch-journal.jsonl", "--json" }, 9)
    assert.equals(8, res.code, res.err)
    assert.matches("File too large", res.err, 1, true)
    assert.equals(before, created())
    local n = 0
    for line in res.out:gmatch("[^\n]+") do
      n = n + 1
      assert.equals("not_submitted", cjson.decode(line).status)
    end
    assert.equals(2, n)
  end)

  describe("the library", function()
    -- the SigIgn mask of /proc/self/status: is SIGXFSZ (25, bit 24) ignored?
    local CHILD = [[
package.path = "lua/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local function xfsz_ignored()
  local text = io.open("/proc/self/status"):read("*a")
  local mask = tonumber(text:match("SigIgn:%s*(%x+)"), 16)
  return (mask >> 24) & 1 == 1
end
local before = xfsz_ignored()
local kling = require "kling"
local c = kling.new { base_url = arg[1], token = arg[2], journal = arg[3] }
local job = c:generate { prompt = "library" }
c:close()
local after = xfsz_ignored()
require("kling.core").ignore_sigxfsz()
print(before, after, job ~= nil, xfsz_ignored())
]]

    it("changes no signal's disposition; core.ignore_sigxfsz() is there for a host that wants it", function()
      local script = dir .. "/child.lua"
      helpers.write_file(script, CHILD)
      local p = assert(io.popen(string.format("cd %s && lua5.4 %s %s %s %s", q(helpers.root), q(script), q(emu.api),
        q(TOKEN), q(dir .. "/lib-journal.jsonl"))))
      local out = p:read("*a")
      p:close()
      assert.equals("false\tfalse\ttrue\ttrue\n", out)
    end)

    it("is killed by SIGXFSZ in a host that does not ignore it, and gets kind io in one that does", function()
      local path = dir .. "/lib-big.jsonl"
      helpers.write_file(path, pad_line(5000))
      local code = [[
package.path = "lua/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
if arg[4] == "ignore" then require("kling.core").ignore_sigxfsz() end
local c = require("kling").new { base_url = arg[1], token = arg[2], journal = arg[3] }
local job, err = c:generate { prompt = "library" }
print(job, err and err.kind)
]]
      local script = dir .. "/child2.lua"
      helpers.write_file(script, code)
      local function run(mode)
        local inner = "ulimit -f 9; exec lua5.4 " .. q(script) .. " " .. q(emu.api) .. " " .. q(TOKEN) .. " " .. q(path)
          .. " " .. mode
        local p = assert(io.popen("cd " .. q(helpers.root) .. " && sh -c " .. q(inner) .. " 2>/dev/null; echo rc=$?"))
        local out = p:read("*a")
        p:close()
        return out
      end
      assert.matches("rc=153", run("keep"), 1, true) -- 128 + SIGXFSZ (25)
      assert.equals("nil\tio\nrc=0\n", run("ignore"))
    end)
  end)
end)
