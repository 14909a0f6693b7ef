-- Lower-severity edges of the journal, the wire and the terminal:
-- * a journal (or batch state) that is a FIFO is refused at once, never waited on (kind io,
--   exit 8), as is anything else that is not a regular file;
-- * dkjson's marks (a metatable whose __jsontype is "array" or "object") are honoured by the
--   writer: dkjson.decode('{"a":[]}') goes out as {"a":[]};
-- * `kling jobs --forget ID` of an id or intent the journal does not hold is refused
--   (exit 2) and appends nothing;
-- * bidi controls reach no terminal raw: they are escaped like control characters;
-- * an explicit --journal PATH whose directory does not exist is an io error (exit 8); the
--   default journal's directory ($XDG_STATE_HOME/kling) is still created.
local helpers = require "helpers"
local kling = require "kling"
local cjson = require "cjson"
local dkjson = require "dkjson"
local json = require "kling.json"
local scripted = require "scripted_api"
local cli_run = require "cli_run"

local q = helpers.quote
local TOKEN = "edges-token-4c1"

describe("edges", function()
  local emu, dir, cli

  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0.1", "--run", "0.1" }
    dir = helpers.tmpdir()
    cli = cli_run.new { api = emu.api, token = TOKEN, dir = dir }
  end)
  teardown(function()
    if emu then emu:stop() end
    os.execute("rm -rf " .. q(dir))
  end)

  local function created() return emu:stats().jobs_created end

  -- bin/kling bounded by timeout(1) (a lua5.4 shim first on PATH): a run that blocks is
  -- killed and reads 124
  local shim
  local function bounded(args, state)
    if not shim then
      shim = dir .. "/bin"
      os.execute("mkdir -p " .. q(shim))
      helpers.write_file(shim .. "/lua5.4", "#!/bin/sh\nexec timeout 10 /usr/bin/lua5.4 \"$@\"\n")
      os.execute("chmod +x " .. q(shim .. "/lua5.4"))
    end
    return cli.run(args, { state = state, env = { PATH = shim .. ":" .. os.getenv("PATH") } })
  end

  describe("a FIFO as the journal", function()
    local fifo

    setup(function()
      fifo = dir .. "/journal.fifo"
      assert(os.execute("mkfifo " .. q(fifo)))
    end)

    for _, args in ipairs { { "jobs" }, { "jobs", "--all", "--json" }, { "resume" }, { "jobs", "--compact" } } do
      it("is refused at once by kling " .. table.concat(args, " ") .. " (exit 8, not a regular file)", function()
        local all = { (table.unpack or unpack)(args) }
        all[#all + 1] = "--journal"
        all[#all + 1] = fifo
        local res = bounded(all)
        assert.equals(8, res.code, res.err)
        assert.matches("not a regular file", res.err, 1, true)
        assert.matches(fifo, res.err, 1, true)
      end)
    end

    it("makes submit exit 8 and send nothing", function()
      local before = created()
      local res = bounded { "submit", "never", "--journal", fifo }
      assert.equals(8, res.code, res.err)
      assert.matches("not a regular file", res.err, 1, true)
      assert.equals(before, created())
    end)

    it("is refused by the library: resume() and submit return kind io (in a child bounded by timeout)", function()
      local script = dir .. "/fifo-lib.lua"
      helpers.write_file(script, [[
package.path = "lua/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local c = require("kling").new { base_url = arg[1], token = arg[2], journal = arg[3] }
local list, err = c:resume()
local job, serr = c:generate { prompt = "never" }
print(list, err.kind, err.path == arg[3], job, serr.kind)
]])
      local before = created()
      local p = assert(io.popen(string.format("cd %s && timeout 10 lua5.4 %s %s %s %s 2>&1; echo rc=$?", q(helpers.root),
        q(script), q(emu.api), q(TOKEN), q(fifo))))
      local out = p:read("*a")
      p:close()
      assert.equals("nil\tio\ttrue\tnil\tio\nrc=0\n", out)
      assert.equals(before, created())
    end)

    it("is refused as a batch state file too (exit 8, nothing sent)", function()
      local out = dir .. "/fifo-batch"
      os.execute("mkdir -p " .. q(out) .. " && mkfifo " .. q(out .. "/.kling-batch.jsonl"))
      local file = dir .. "/one.jsonl"
      helpers.write_file(file, '{"prompt":"one"}\n')
      local before = created()
      local res = bounded { "batch", file, "--out-dir", out }
      assert.equals(8, res.code, res.err)
      assert.matches("not a regular file", res.err, 1, true)
      assert.equals(before, created())
    end)
  end)

  describe("dkjson's arrays in library input", function()
    it("go out as arrays, empty ones too, and dkjson's objects as objects", function()
      local c = kling.new { base_url = emu.api, token = TOKEN }
      local input = dkjson.decode('{"prompt":"dk","a":[],"b":{},"c":[[],[1,[]]],"d":{"e":[]}}')
      local job = assert(c:submit("acme/some-model", input))
      local body = emu:job_record(job.id).body
      assert.matches('"a":[]', body, 1, true)
      assert.matches('"b":{}', body, 1, true)
      assert.matches('"c":[[],[1,[]]]', body, 1, true)
      assert.matches('"d":{"e":[]}', body, 1, true)
      c:close()
    end)

    it("are honoured by the writer in every mode; an object-marked table with list keys is refused", function()
      local v = dkjson.decode('{"a":[],"o":{}}')
      assert.equals('{"a":[],"o":{}}', json.encode_wire(v))
      assert.equals('{"a":[],"o":{}}', json.encode(v))
      local s, why, path = json.encode_wire { x = setmetatable({ 1 }, { __jsontype = "object" }) }
      assert.is_nil(s)
      assert.equals("/x", path)
      assert.matches("__jsontype", why, 1, true)
      -- a mark of another value means nothing: an empty table is {}
      assert.equals('{"z":{}}', json.encode_wire { z = setmetatable({}, { __jsontype = "list" }) })
    end)
  end)

  describe("kling jobs --forget", function()
    local st, jpath

    setup(function()
      st = dir .. "/forget"
      local res = cli.run({ "submit", "to forget" }, { state = st })
      assert.equals(0, res.code, res.err)
      jpath = st .. "/kling/jobs.jsonl"
    end)

    it("refuses an id that is not in the journal: exit 2, nothing appended", function()
      local before = helpers.read_file(jpath)
      local res = cli.run({ "jobs", "--forget", "no-such-id" }, { state = st })
      assert.equals(2, res.code, res.err)
      assert.matches("no-such-id", res.err, 1, true)
      assert.equals(before, helpers.read_file(jpath))
    end)

    it("refuses the whole call when one of several ids is a typo", function()
      local id = cjson.decode(helpers.read_file(jpath):match("[^\n]*\"submitted\"[^\n]*")).id
      local before = helpers.read_file(jpath)
      local res = cli.run({ "jobs", "--forget", id, "typo-" .. id }, { state = st })
      assert.equals(2, res.code, res.err)
      assert.equals(before, helpers.read_file(jpath))
      res = cli.run({ "jobs", "--forget", id }, { state = st })
      assert.equals(0, res.code, res.err)
      assert.matches('"forgotten"', helpers.read_file(jpath), 1, true)
    end)

    it("refuses an intent key that is not in the journal, and escapes what it quotes", function()
      local res = cli.run({ "jobs", "--forget", "0123456789abcdef0123456789abcdef\27[2J" }, { state = st })
      assert.equals(2, res.code, res.err)
      assert.is_nil(res.err:find("\27", 1, true))
    end)
  end)

  describe("bidi controls", function()
    local api, sdir

    setup(function()
      sdir = helpers.tmpdir()
      api = scripted.start(sdir)
    end)
    teardown(function()
      if api then api.stop() end
      os.execute("rm -rf " .. q(sdir))
    end)

    local BIDI = { "\226\128\170", "\226\128\171", "\226\128\172", "\226\128\173", "\226\128\174", "\226\129\166", "\226\129\167", "\226\129\168",
      "\226\129\169", "\226\128\142", "\226\128\143" }

    local function raw_bidi(s)
      for _, b in ipairs(BIDI) do
        if s:find(b, 1, true) then return true end
      end
      return false
    end

    it("are escaped in a failure message, a status word and a video URL on the terminal", function()
      local evil = "gpj." .. table.concat(BIDI, "x") .. "exe"
      api.serve {
        { "GET", "^/v1/requests/b%-1/status$", { { 200, cjson.encode { status = "odd" .. evil } } } },
        { "GET", "^/v1/requests/b%-2/status$", { { 200, '{"status":"failed"}' } } },
        { "GET", "^/v1/requests/b%-2/result$",
          { { 200, cjson.encode { status = "failed", error = { error_message = "boom " .. evil } } } } },
        { "GET", "^/v1/requests/b%-3/status$", { { 200, '{"status":"completed"}' } } },
        { "GET", "^/v1/requests/b%-3/result$",
          { { 200, cjson.encode { status = "completed", output = { video = "https://x.invalid/" .. evil } } } } },
      }
      local c2 = cli_run.new { api = api.api, token = TOKEN, dir = sdir }
      local res = c2.run { "status", "b-1" }
      assert.is_false(raw_bidi(res.out .. res.err))
      assert.matches("oddgpj.\\u202ax\\u202bx", res.out, 1, true)
      res = c2.run { "wait", "b-2" }
      assert.equals(5, res.code, res.err)
      assert.is_false(raw_bidi(res.out .. res.err))
      assert.matches("\\u202ex\\u2066", res.err, 1, true)
      res = c2.run { "result", "b-3" }
      assert.is_false(raw_bidi(res.out .. res.err))
      assert.matches("\\u200ex\\u200fexe", res.out, 1, true)
      -- --json carries the same text, escaped as JSON (the same string once read)
      res = c2.run { "result", "b-3", "--json" }
      assert.is_false(raw_bidi(res.out))
      assert.equals("https://x.invalid/" .. evil, cjson.decode(res.out).video)
      -- and the journal listing
      res = c2.run { "jobs", "--all" }
      assert.is_false(raw_bidi(res.out .. res.err))
    end)
  end)

  describe("an explicit --journal whose directory does not exist", function()
    for _, args in ipairs { { "submit", "x" }, { "generate", "x" }, { "jobs" }, { "resume" }, { "status", "abc" },
      { "wait", "abc" } } do
      it("is an io error for kling " .. args[1] .. " (exit 8), and nothing is created or sent", function()
        local missing = dir .. "/no-such-dir-" .. args[1]
        local all = { (table.unpack or unpack)(args) }
        all[#all + 1] = "--journal"
        all[#all + 1] = missing .. "/j.jsonl"
        local before = created()
        local res = cli.run(all)
        assert.equals(8, res.code, res.err)
        assert.matches(missing, res.err, 1, true)
        assert.matches("No such file or directory", res.err, 1, true)
        if args[1] == "submit" or args[1] == "generate" then
          assert.matches("not sent", res.err, 1, true)
          res = cli.run { args[1], "x", "--journal", missing .. "/j.jsonl", "--json" }
          assert.equals(8, res.code, res.err)
          local o = cjson.decode(res.out)
          assert.equals("not_submitted", o.status)
          assert.equals("io", o.error.kind)
        else
          assert.matches("does not exist", res.err, 1, true)
        end
        assert.is_false(helpers.read_file(missing .. "/j.jsonl") ~= nil)
        assert.is_false(helpers.execute("test -d " .. q(missing)) == true)
        assert.equals(before, created())
      end)
    end

    it("does not stop the default journal's directory from being created", function()
      local st = dir .. "/fresh-state"
      local res = cli.run({ "submit", "default journal" }, { state = st })
      assert.equals(0, res.code, res.err)
      assert.matches('"submitted"', helpers.read_file(st .. "/kling/jobs.jsonl"), 1, true)
    end)
  end)
end)
