-- The command-line tool's parts, in process (no subprocess, no terminal, no network):
-- the parser (lua-argparse, with the tool's additions), the generated help, the exit codes
-- by name, the escaping streams and JSON lines, the display drawn into memory sinks with
-- a clock of the spec's own, the terminal decisions (NO_COLOR, TERM=dumb, KLING_TTY), the
-- prompt from stdin or a file, and the checks that keep the docs, the manual page and the
-- rockspec true to the definitions.
local helpers = require "helpers"
local cjson = require "cjson"
local cli = require "kling.cli"
local parser = require "kling.cli.parser"
local commands = require "kling.cli.commands"
local options = require "kling.cli.options"
local help = require "kling.cli.help"
local exit = require "kling.cli.exit"
local env = require "kling.cli.env"
local term = require "kling.cli.term"
local output = require "kling.cli.output"
local display = require "kling.cli.display"
local files = require "kling.cli.files"

local q = helpers.quote
local root = helpers.root

-- Runs the tool in this process: { code, out, err }. opts: env (table), stdin (text).
local function kling(args, opts)
  opts = opts or {}
  local out, err = output.memory_sink(), output.memory_sink()
  local stdin
  if opts.stdin then
    local path = os.tmpname()
    helpers.write_file(path, opts.stdin)
    stdin = assert(io.open(path, "rb"))
    os.remove(path) -- (the handle stays readable)
  end
  local code = cli.main(args, { stdout = out, stderr = err, stdin = stdin,
    env = opts.env or { HOME = "/nonexistent-home", RUNCOMFY_MODEL_API_BASE = "http://127.0.0.1:1/v1" } })
  if stdin then stdin:close() end
  return { code = code, out = out.text(), err = err.text() }
end

-- The parse of argv, or the usage error it raises: parsed | nil, error.
local function parse(argv)
  local ok, r = pcall(parser.parse, argv)
  if ok then return r end
  assert(exit.is_stop(r), tostring(r))
  return nil, r
end

local function source_files()
  local list = { root .. "/lua/kling/cli.lua" }
  for _, name in ipairs(helpers.files(root .. "/lua/kling/cli")) do
    if name:match("%.lua$") then list[#list + 1] = root .. "/lua/kling/cli/" .. name end
  end
  return list
end

describe("the command line's parts (in process)", function()
  describe("the parser", function()
    it("takes options in any order around the words, --name=value and --name value alike", function()
      local r = parse { "generate", "a red", "--duration", "5", "kite", "--aspect-ratio=9:16", "-o", "k.mp4", "-q" }
      assert.equals("generate", r.command.name)
      assert.same({ "a red", "kite" }, r.pos)
      assert.equals(5, r.o.duration)
      assert.equals(math.type(5), math.type(r.o.duration)) -- an integer, as the schema wants
      assert.equals("9:16", r.o.aspect_ratio)
      assert.equals("k.mp4", r.o.output)
      assert.is_true(r.o.quiet)
    end)

    it("gives nil for a flag or a repeatable option not given, and a list for --shot", function()
      local r = parse { "generate", "x" }
      assert.is_nil(r.o.json)
      assert.is_nil(r.o.no_sound)
      assert.is_nil(r.o.shot)
      r = parse { "generate", "x", "--shot", "a:3", "--shot=b:4" }
      assert.same({ "a:3", "b:4" }, r.o.shot)
    end)

    it("moves the connection options given before the command after it", function()
      local r = parse { "--base-url", "http://h/v1", "--journal", "/tmp/j.jsonl", "--no-journal", "status", "id1" }
      assert.equals("status", r.command.name)
      assert.equals("http://h/v1", r.o.base_url)
      assert.equals("/tmp/j.jsonl", r.o.journal)
      assert.is_true(r.o.no_journal)
      assert.same({ "id1" }, r.pos)
    end)

    it("takes the word after an option as its value even when it starts with '-'", function()
      local _, err = parse { "generate", "x", "--timeout", "-1" }
      assert.equals("--timeout wants a number of seconds > 0, got '-1'", err.message)
      _, err = parse { "download", "x", "--download-deadline", "-1" }
      assert.matches("^%-%-download%-deadline must be a number of seconds > 0", err.message)
      local r = parse { "submit", "--negative-prompt", "-blur", "x" }
      assert.equals("-blur", r.o.negative_prompt)
      r = parse { "generate", "x", "-o", "-odd.mp4" }
      assert.equals("-odd.mp4", r.o.output)
    end)

    it("ends the options at --, and takes - as a word", function()
      local r = parse { "submit", "--", "--json", "-5" }
      assert.same({ "--json", "-5" }, r.pos)
      assert.is_nil(r.o.json)
      r = parse { "generate", "-" }
      assert.same({ "-" }, r.pos)
    end)

    it("refuses --token anywhere before --, naming the variables to use instead", function()
      for _, argv in ipairs { { "generate", "x", "--token", "s" }, { "--token=s", "submit" }, { "status", "--token=s", "i" } } do
        local _, err = parse(argv)
        assert.equals(exit.EXIT.usage, err.code)
        assert.matches("never taken from a flag value", err.message, 1, true)
        assert.matches("RUNCOMFY_TOKEN", err.message, 1, true)
      end
      assert.same({ "--token" }, parse({ "submit", "--", "--token" }).pos)
    end)

    it("words argparse's errors as the tool's: needs a value, takes no value, a value after --", function()
      local cases = {
        { { "generate", "x", "--duration" }, "--duration needs a value" },
        { { "generate", "x", "--json=1" }, "--json takes no value" },
        { { "generate", "x", "--duration", "five" }, "--duration wants a number, got 'five'" },
        { { "generate", "-5" }, "unknown option '-5' (a value starting with '-' goes after '--')" },
        { { "batch", "f", "--concurrency", "0" }, "--concurrency wants a whole number >= 1, got '0'" },
        { { "validate", "--base-url", "u" }, "unknown option '--base-url'" },
      }
      for _, c in ipairs(cases) do
        local r, err = parse(c[1])
        assert.is_nil(r, table.concat(c[1], " "))
        assert.equals(c[2], err.message)
        assert.equals(exit.EXIT.usage, err.code)
      end
    end)

    it("says 'did you mean' for a mistyped command or option, and not for a letter", function()
      local _, err = parse { "genrate", "x" }
      assert.is_nil(err.cmd)
      assert.equals("unknown command 'genrate'", err.message)
      assert.equals("Did you mean 'generate'?", err.tip)
      _, err = parse { "stauts", "x" }
      assert.equals("Did you mean 'status'?", err.tip)
      _, err = parse { "generate", "x", "--duraton", "5" }
      assert.equals("generate", err.cmd)
      assert.equals("unknown option '--duraton'", err.message)
      assert.equals("Did you mean '--duration'?", err.tip)
      _, err = parse { "download", "x", "--out-dri", "d" }
      assert.equals("Did you mean '--out-dir'?", err.tip)
      _, err = parse { "generate", "-x" }
      assert.is_nil(err.tip)
      _, err = parse { "frobnicate" }
      assert.is_nil(err.tip)
    end)

    it("knows --help, -h, --version, -V, no arguments, and --help of every command", function()
      assert.is_true(parse({ "--help" }).help)
      assert.is_true(parse({ "-h" }).help)
      assert.is_true(parse({ "--version" }).version)
      assert.is_true(parse({ "-V" }).version)
      assert.is_true(parse({}).usage)
      for _, name in ipairs(commands.NAMES) do
        if name ~= "emulator" then
          for _, flag in ipairs { "--help", "-h" } do
            local r = parse { name, flag }
            assert.equals(name, r.command.name)
            assert.is_true(r.o.help, name)
          end
        end
      end
    end)

    it("passes every word after emulator to the emulator as it is", function()
      local r = parse { "--quiet", "emulator", "--port", "0", "--help", "--bogus" }
      assert.equals("emulator", r.command.name)
      assert.same({ "--quiet", "--port", "0", "--help", "--bogus" }, r.pos)
    end)

    it("states each option once, and every command's options exist", function()
      local seen = {}
      for _, opt in ipairs(options.LIST) do
        assert.is_nil(seen[opt.name], opt.name)
        seen[opt.name] = true
        assert.is_string(opt.help)
        assert.truthy(opt.kind == "flag" or opt.arg, opt.name .. " takes a value but has no value name")
      end
      for _, def in ipairs(commands.all()) do
        assert.is_string(def.summary, def.name)
        assert.is_function(def.run, def.name)
        assert.has_no.errors(function() options.resolve(def.options or {}) end)
      end
    end)
  end)

  describe("the help", function()
    it("is generated for every command: its usage, its options, the exit codes; help CMD says the same", function()
      for _, def in ipairs(commands.all()) do
        local text = help.command_help(def)
        if def.passthrough then
          assert.matches("--port", text, 1, true)
        else
          assert.matches("^Usage: kling " .. def.name:gsub("%p", "%%%0"), text)
          for _, opt in ipairs(options.resolve(def.options or {})) do
            assert.matches("--" .. opt.name, text, 1, true)
          end
          assert.matches("130  interrupted", text, 1, true)
          assert.matches("6    timeout", text, 1, true)
        end
        if not def.passthrough then -- (the emulator writes its help itself)
          local a, b = kling { "help", def.name }, kling { def.name, "--help" }
          assert.equals(0, a.code, def.name .. ": " .. a.err)
          assert.equals(text, a.out)
          assert.equals(a.out, b.out)
        end
      end
    end)

    it("lists every command, every variable (each KLING_* among them) and every exit code", function()
      local res = kling { "--help" }
      assert.equals(0, res.code)
      for _, name in ipairs(commands.NAMES) do assert.matches("\n  " .. name .. " ", res.out, 1, true) end
      for _, v in ipairs(env.VARS) do
        for _, name in ipairs(v.names) do assert.matches(name, res.out, 1, true) end
      end
      for _, name in ipairs { "KLING_POLL", "KLING_TTY", "KLING_DEBUG", "NO_COLOR", "TERM" } do
        assert.matches("\n  " .. name .. " ", res.out, 1, true)
      end
      for _, c in ipairs(exit.CODES) do assert.matches(string.format("\n  %-4d %s", c.code, c.help[1]), res.out, 1, true) end
    end)

    it("lists every variable the tool reads (every env.get in its sources)", function()
      local listed = {}
      for _, v in ipairs(env.VARS) do
        for _, name in ipairs(v.names) do listed[name] = true end
      end
      local read = 0
      for _, path in ipairs(source_files()) do
        local text = helpers.read_file(path)
        for name in text:gmatch('env%.get%("([%w_]+)"%)') do
          read = read + 1
          assert.is_true(listed[name] == true, name .. " (read in " .. path .. ") is not in kling.cli.env.VARS")
        end
        for var in text:gmatch('{ ?"(CURL_CA_BUNDLE)"') do assert.is_true(listed[var]) end
        if not path:match("/env%.lua$") then
          assert.is_nil(text:find("os%.getenv"), path .. " reads the environment without kling.cli.env")
        end
      end
      assert.is_true(read >= 8)
    end)

    it("prints the version with --version and -V", function()
      for _, flag in ipairs { "--version", "-V" } do
        local res = kling { flag }
        assert.equals(0, res.code)
        assert.equals("kling " .. require("kling").VERSION .. " (libcurl ", res.out:sub(1, #require("kling").VERSION + 16))
        assert.equals("", res.err)
      end
    end)

    it("prints the usage error, the 'did you mean' line and where to look, and exits 2", function()
      local res = kling { "genrate", "a fox" }
      assert.equals(2, res.code)
      assert.equals("kling: unknown command 'genrate'\nDid you mean 'generate'?\nTry 'kling --help'.\n", res.err)
      res = kling { "generate", "a fox", "--duraton", "5" }
      assert.equals(2, res.code)
      assert.equals("kling generate: unknown option '--duraton'\nDid you mean '--duration'?\n"
        .. "Try 'kling generate --help'.\n", res.err)
      res = kling { "help", "stauts" }
      assert.equals(2, res.code)
      assert.matches("Did you mean 'status'?", res.err, 1, true)
      res = kling {}
      assert.equals(2, res.code)
      assert.matches("^Usage: kling COMMAND", res.err)
    end)
  end)

  describe("exit codes", function()
    it("have names, and the most serious wins in the documented order", function()
      local E = exit.EXIT
      assert.same({ 0, 1, 2, 3, 4, 5, 6, 7, 8, 129, 130, 143 }, { E.ok, E.internal, E.usage, E.validation, E.auth,
        E.failed, E.timeout, E.network, E.io, E.hangup, E.interrupted, E.terminated })
      assert.has_error(function() return E.no_such_name end)
      -- 130 (or 143, 129), 1, 8, 4, 7, 6, 5, 3, 2, 0
      local order = { 130, 1, 8, 4, 7, 6, 5, 3, 2, 0 }
      for i = 1, #order - 1 do
        for j = i + 1, #order do
          assert.equals(order[i], exit.worst(order[i], order[j]))
          assert.equals(order[i], exit.worst(order[j], order[i]))
        end
      end
      assert.equals(143, exit.worst(143, 1))
      assert.equals(129, exit.worst(0, 129))
      assert.equals(E.auth, exit.code_for { kind = "payment" })
      assert.equals(E.network, exit.code_for { kind = "submit_unknown" })
      assert.equals(E.io, exit.code_for { kind = "io" })
      assert.equals(E.network, exit.code_for { kind = "something new" })
    end)

    it("are never written as bare numbers in the tool's sources", function()
      for _, path in ipairs(source_files()) do
        if not path:match("/exit%.lua$") then
          local n = 0
          for line in io.lines(path) do
            n = n + 1
            local code = line:gsub("%-%-.*$", "")
            for _, pat in ipairs { "return %d+%f[%D]", "os%.exit%(%s*%d", "note%(%s*%d", "code%s*=%s*%d" } do
              assert.is_nil(code:find(pat), path .. ":" .. n .. ": a bare exit number: " .. line)
            end
          end
        end
      end
    end)

    it("runs no program: no os.execute or io.popen in the tool", function()
      for _, path in ipairs(source_files()) do
        local text = helpers.read_file(path):gsub("%-%-[^\n]*", "")
        assert.is_nil(text:find("os%.execute"), path)
        assert.is_nil(text:find("io%.popen"), path)
      end
    end)
  end)

  describe("output", function()
    it("escapes control characters, C1, bidi controls and bytes that are not UTF-8; keeps lines on request", function()
      local e = output.escape
      assert.equals("\\x1b]0;x\\x07\\r", e("\27]0;x\7\r"))
      assert.equals("a\\nb\\tc", e("a\nb\tc"))
      assert.equals("a\nb\tc", e("a\nb\tc", true))
      assert.equals("\\x7f\\u009b\\u202e clip\\u2066", e("\127\u{9b}\u{202e} clip\u{2066}"))
      assert.equals("caf\\xc3 \\xff é", e("caf\xc3 \xff é"))
      assert.equals("\\x00", e("\0"))
    end)

    it("writes outside text escaped to a stream, the tool's own sequences raw, and JSON as it is", function()
      local sink = output.memory_sink()
      local s = output.stream(sink, true)
      s:write("a\27[2J", "\n")
      s:raw("\27[J")
      output.json_mode = true
      s:write('{"a":"\\u001b"}\n')
      output.json_mode = false
      assert.equals("a\\x1b[2J\n\27[J{\"a\":\"\\u001b\"}\n", sink.text())
    end)

    it("makes a JSON line of any object: numbers JSON cannot hold become null, and say so", function()
      local line = output.json_line { id = "x", output = { big = 1 / 0 }, error = { kind = "failed", message = "\255" } }
      local o = cjson.decode(line)
      assert.equals(cjson.null, o.output.big)
      assert.matches("shown as null", o.output_note, 1, true)
      assert.equals("\u{FFFD}", o.error.message)
      assert.same({ id = "x", status = "ok" }, cjson.decode(output.json_line { id = "x", status = "ok" }))
    end)
  end)

  describe("the display, drawn into memory", function()
    local t
    local function clock() return t end
    local function new(mode, o)
      o = o or {}
      local out, err = output.memory_sink(), output.memory_sink()
      local d = display.new(mode, { out = output.stream(out, true), err = output.stream(err, false), now = clock,
        time = function() return "12:00:00 " end, height = o.height or 10, width = o.width or 60, colour = o.colour })
      return d, out, err
    end
    before_each(function() t = 100 end)

    it("draws rows in place on a terminal, then a permanent line in colour", function()
      local d, out = new("tty", { colour = true })
      local row = d:add("3f0c1c1c")
      d:update(row, { status = "in_queue", queue_position = 2 })
      t = 131
      d:update(row, { status = "in_progress" })
      d:finish(row, "3f0c1c1c  saved kite.mp4 (4.0 MiB) after 0:31", "ok")
      assert.equals("3f0c1c1c  waiting  0:00"
        .. "\r\27[J3f0c1c1c  queued, position 2  0:00"
        .. "\r\27[J3f0c1c1c  running  0:31"
        .. "\r\27[J\27[32m3f0c1c1c  saved kite.mp4 (4.0 MiB) after 0:31\27[0m\n", out.text())
    end)

    it("draws no colour without it (NO_COLOR, TERM=dumb), and a failure's hint plain under its line", function()
      local d, out = new("tty", { colour = false })
      local row = d:add("a")
      d:finish(row, "a  failed: no\n  hint", "fail")
      assert.is_nil(out.text():find("\27[3", 1, true))
      d, out = new("tty", { colour = true })
      row = d:add("a")
      d:finish(row, "a  failed: no\n  hint", "fail")
      assert.matches("\27[31ma  failed: no\27[0m\n  hint\n", out.text(), 1, true)
    end)

    it("escapes a server's status in a row, and cuts rows to the terminal's width", function()
      local d, out = new("tty", { width = 30 })
      local row = d:add("id")
      d:update(row, { status = "\27]0;x\7 busy and a very long status word indeed" })
      local frame = out.text():match("\r\27%[J(.*)$")
      assert.equals("id  \\x1b]0;x\\x07 busy and a v", frame)
      assert.equals(29, #frame)
    end)

    it("keeps to its height: the rows that do not fit are counted, and the summary stays", function()
      local d, out = new("tty", { height = 5 })
      d.summary = function() return "batch f: 0 queued" end
      for i = 1, 6 do d:add("row" .. i) end
      local frame = out.text():match("\27%[J([^\27]*)$")
      assert.equals("row1  waiting  0:00\nrow2  waiting  0:00\n... and 4 more\nbatch f: 0 queued", frame)
    end)

    it("draws a download bar with bytes, rate and ETA", function()
      local d, out = new("tty", { width = 120 })
      local row = d:add("id")
      d:start_download(row, "x.mp4")
      d:progress(row, 0, 4194304)
      t = 102
      d:progress(row, 2097152, 4194304)
      assert.matches("id  downloading  [##########----------]   50%  2.0 MiB/4.0 MiB  1.0 MiB/s  ETA 0:02  0:02",
        out.text(), 1, true)
    end)

    it("writes plain log lines on stderr off a terminal, and nothing with --json", function()
      local d, out, err = new("plain")
      local row = d:add("id-1")
      d:update(row, { status = "in_queue", queue_position = 1 })
      d:update(row, { status = "in_queue", queue_position = 1 }) -- no change: no line
      d:start_download(row, "v.mp4")
      d:finish(row, "id-1  saved v.mp4 (3 B)", "ok")
      assert.equals("", out.text())
      assert.equals("12:00:00 id-1 queued, position 1\n12:00:00 id-1 downloading to v.mp4\n"
        .. "12:00:00 id-1 saved v.mp4 (3 B)\n", err.text())
      d, out, err = new("json")
      row = d:add("x")
      d:update(row, { status = "in_progress" })
      d:finish(row, "x  saved", "ok")
      assert.equals("", out.text() .. err.text())
    end)
  end)

  describe("the terminal", function()
    local real_isatty = term.isatty
    after_each(function()
      term.isatty = real_isatty
      env.set_getenv(nil)
    end)

    local function mode(o, vars, tty)
      env.set_getenv(vars)
      term.isatty = function() return tty end
      return term.display_mode(o), term.colour(term.display_mode(o))
    end

    it("gives the live display on a terminal, in colour unless NO_COLOR is set", function()
      assert.same({ "tty", true }, { mode({}, {}, true) })
      assert.same({ "tty", false }, { mode({}, { NO_COLOR = "1" }, true) })
      assert.same({ "tty", true }, { mode({}, { NO_COLOR = "" }, true) }) -- empty: unset
      assert.same({ "plain", false }, { mode({}, {}, false) })
    end)

    it("gives plain lines for TERM=dumb, --quiet or KLING_TTY=0, and JSON for --json", function()
      assert.same({ "plain", false }, { mode({}, { TERM = "dumb" }, true) })
      assert.same({ "plain", false }, { mode({ quiet = true }, {}, true) })
      assert.same({ "plain", false }, { mode({}, { KLING_TTY = "0" }, true) })
      assert.same({ "json", false }, { mode({ json = true }, { KLING_TTY = "1" }, true) })
      assert.same({ "tty", true }, { mode({}, { KLING_TTY = "1" }, false) })
      assert.same({ "tty", false }, { mode({}, { KLING_TTY = "1", TERM = "dumb" }, false) })
    end)

    it("asks the C core, not a program: isatty and the size of a descriptor that is no terminal", function()
      local core_term = require("kling.core").term
      local f = assert(io.open(os.tmpname(), "rb"))
      f:close()
      assert.is_false(core_term.isatty(99))
      assert.is_nil(core_term.size(99))
      assert.has_error(function() core_term.isatty(-1) end)
      env.set_getenv { COLUMNS = "132", LINES = "50" }
      term.isatty = real_isatty
      if not core_term.isatty(1) then assert.same({ 50, 132 }, { term.size() }) end
    end)
  end)

  describe("the prompt and the input", function()
    it("reads the prompt from stdin for -, without its last line break", function()
      local res = kling({ "submit", "-", "--dry-run" }, { stdin = "a fox in the snow\n" })
      assert.equals(0, res.code, res.err)
      assert.same({ prompt = "a fox in the snow" }, cjson.decode(res.out))
      res = kling({ "submit", "--prompt-file", "-", "--dry-run", "--duration", "5" }, { stdin = "two\nlines\r\n\n" })
      assert.same({ prompt = "two\nlines", duration = 5 }, cjson.decode(res.out))
    end)

    it("reads the prompt from --prompt-file, over --input's", function()
      local dir = helpers.tmpdir()
      finally(function() os.execute("rm -rf " .. q(dir)) end)
      helpers.write_file(dir .. "/p.txt", "a whale at dusk\n")
      helpers.write_file(dir .. "/in.json", '{"prompt":"from input","seed":156680208700286}')
      local res = kling { "submit", "--model", "acme/some-model", "--input", dir .. "/in.json", "--prompt-file",
        dir .. "/p.txt", "--dry-run" }
      assert.equals(0, res.code, res.err)
      assert.equals('{"prompt":"a whale at dusk","seed":156680208700286}\n', res.out)
      res = kling { "submit", "--prompt-file", dir .. "/missing.txt", "--dry-run" }
      assert.equals(2, res.code)
      assert.matches("--prompt-file " .. dir .. "/missing.txt: ", res.err, 1, true)
    end)

    it("refuses the prompt twice, or stdin read twice, before anything", function()
      local res = kling({ "submit", "a", "--prompt-file", "-", "--dry-run" }, { stdin = "x" })
      assert.equals(2, res.code)
      assert.matches("not both", res.err, 1, true)
      for _, text in ipairs { '{"prompt":"x"}', "" } do
        res = kling({ "submit", "-", "--input", "-", "--dry-run" }, { stdin = text })
        assert.equals(2, res.code)
        assert.matches("stdin is read once", res.err, 1, true)
      end
    end)

    it("refuses an empty prompt from stdin as invalid (exit 3), and keeps - among other words", function()
      local res = kling({ "submit", "-", "--dry-run" }, { stdin = "\n" })
      assert.equals(3, res.code)
      assert.matches("/prompt: ", res.err, 1, true)
      res = kling { "submit", "a", "-", "b", "--dry-run" }
      assert.same({ prompt = "a - b" }, cjson.decode(res.out))
    end)
  end)

  describe("files", function()
    it("makes directories as mkdir -p does, and says why it cannot", function()
      local dir = helpers.tmpdir()
      finally(function() os.execute("rm -rf " .. q(dir)) end)
      assert.is_true(files.mkdir_p(dir .. "/a/b/c/"))
      assert.is_true(files.is_dir(dir .. "/a/b/c"))
      assert.is_true(files.mkdir_p(dir .. "/a/b"))
      helpers.write_file(dir .. "/f", "x")
      local ok, err = files.mkdir_p(dir .. "/f/g")
      assert.is_nil(ok)
      assert.is_string(err)
      assert.is_false(files.is_dir(dir .. "/f"))
      assert.equals("a/b", files.join("a", "b"))
      assert.equals("b", files.join(".", "b"))
      assert.equals(".", files.dirname("x.mp4"))
    end)
  end)

  describe("what is generated from the definitions", function()
    it("doc/kling.1 is the manual page the definitions write (make man)", function()
      local page = require("kling.cli.manpage").render()
      assert.equals(page, helpers.read_file(root .. "/doc/kling.1"), "doc/kling.1 is out of date: run make man")
      for _, def in ipairs(commands.all()) do assert.matches('.SS "kling ' .. def.name, page, 1, true) end
      for _, opt in ipairs(options.LIST) do
        assert.matches("\\fB\\-\\-" .. opt.name:gsub("%-", "\\-"), page, 1, true)
      end
    end)

    it("the completion scripts know every command and option", function()
      local completion = require "kling.cli.completion"
      for _, shell in ipairs { "bash", "zsh", "fish" } do
        local script = completion.script(shell)
        for _, def in ipairs(commands.all()) do assert.matches(def.name, script, 1, true) end
        for _, opt in ipairs(options.LIST) do assert.matches(opt.name, script, 1, true) end
      end
      local res = kling { "completion", "bash" }
      assert.equals(0, res.code)
      assert.matches("complete -F _kling", res.out, 1, true)
      res = kling { "completion", "tcsh" }
      assert.equals(2, res.code)
      assert.matches("'bash', 'zsh', 'fish'", res.err, 1, true)
    end)

    it("doc/CLI.md documents every command, option, variable and exit code", function()
      local doc = helpers.read_file(root .. "/doc/CLI.md")
      for _, def in ipairs(commands.all()) do assert.matches("kling " .. def.name, doc, 1, true) end
      for _, opt in ipairs(options.LIST) do assert.matches("--" .. opt.name, doc, 1, true) end
      for _, v in ipairs(env.VARS) do
        for _, name in ipairs(v.names) do assert.matches("`" .. name, doc, 1, true) end
      end
      for _, c in ipairs(exit.CODES) do assert.matches("\n| " .. c.code .. " |", doc, 1, true) end
      for _, flag in ipairs { "--version", "-V", "--prompt-file", "kling completion bash", "man -l", "NO_COLOR",
        "TERM=dumb", "Did you mean" } do
        assert.matches(flag, doc, 1, true)
      end
    end)

    it("the rockspec installs every module of the tool, its dependencies, and doc/ with the manual page", function()
      local spec = {}
      assert(loadfile(root .. "/kling-scm-1.rockspec", "t", spec))()
      for _, path in ipairs(source_files()) do
        local rel = path:sub(#root + 2)
        local mod = rel:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/", ".")
        assert.equals(rel, spec.build.modules[mod], mod .. " is not in the rockspec")
      end
      local deps = table.concat(spec.dependencies, " ")
      assert.matches("argparse", deps, 1, true)
      assert.matches("luafilesystem", deps, 1, true)
      assert.same({ "doc" }, spec.build.copy_directories)
      -- every C file of the core is built by luarocks (the terminal's binding among them),
      -- one event backend of src/event_*.c (chosen per platform)
      local listed = {}
      for _, src in ipairs(spec.build.modules["kling.core"].sources) do listed[src] = true end
      assert.is_true(listed["src/lua_term.c"])
      for _, name in ipairs(helpers.files(root .. "/src")) do
        local src = "src/" .. name
        if src:match("%.c$") and not src:match("^src/event_") then
          assert.is_true(listed[src], src .. " is not built by the rockspec")
        end
      end
    end)
  end)
end)
