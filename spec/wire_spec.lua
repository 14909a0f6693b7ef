-- The wire carries exactly what the user gave: the JSON writer of the C core
-- (src/lua_jsonw.c, through kling.json), the JSON reader for user input
-- (kling.json.decode_input: lua-cjson checks, dkjson reads), and the bytes that
-- reach the service, read back raw from the emulator's job records (and from a
-- small loopback server for answers the emulator does not give).
local helpers = require "helpers"
local cjson = require "cjson"
local dkjson = require "dkjson"
local kling = require "kling"
local json = require "kling.json"
local core = require "kling.core"

local q = helpers.quote
local TOKEN = "wire-spec-token-3e9a"
local POLL = "initial=0.05,min=0.05,near=0.2,max=0.3"
local NO_SCHEMA = "acme/some-model"

local wire = json.encode_wire

-- The text the writer gives, asserting it gives one.
local function text_of(v)
  local s, why, path = wire(v)
  assert(s, tostring(path) .. ": " .. tostring(why))
  return s
end

-- Same bits: 0.0 and -0.0 differ, and so do 5 and 5.0.
local function same_number(a, b)
  return helpers.math_type(a) == helpers.math_type(b) and string.pack("<n", a) == string.pack("<n", b)
end

describe("the JSON writer", function()
  it("writes every Lua integer with all its digits, 64-bit edges included", function()
    local cases = {
      { 0, "0" }, { -1, "-1" }, { 156680208700286, "156680208700286" },
      { 9007199254740993, "9007199254740993" }, { -9007199254740993, "-9007199254740993" },
      { math.maxinteger, "9223372036854775807" }, { math.mininteger, "-9223372036854775808" },
    }
    for _, c in ipairs(cases) do
      assert.equals(c[2], text_of(c[1]))
      assert.equals('{"seed":' .. c[2] .. "}", text_of { seed = c[1] })
      assert.equals("[" .. c[2] .. "]", text_of { c[1] })
    end
  end)

  it("writes floats so that they read back as the same double, and keeps them floats", function()
    local cases = {
      { 0.1, "0.1" }, { 1e300, "1e+300" }, { 2.0 ^ 53, "9007199254740992.0" }, { 5.0, "5.0" },
      { -0.0, "-0.0" }, { 0.0, "0.0" }, { 1 / 3, "0.3333333333333333" }, { 1e21, "1e+21" },
      { 1.7976931348623157e308, "1.7976931348623157e+308" }, { -1.5e-7, "-1.5e-07" },
    }
    for _, c in ipairs(cases) do
      assert.equals(c[2], text_of(c[1]))
    end
    for _, d in ipairs { 5e-324, 2.2250738585072014e-308, 0.1 + 0.2, 123456789.123456789, 2.0 ^ 63, -2.0 ^ 63,
      1e-300, 4.35, 100.0, 3.141592653589793 } do
      local s = text_of(d)
      local back = tonumber(s)
      assert.is_true(same_number(d, back), s)
      assert.truthy(s:find("[.e]"), s) -- read back as a float, not as an integer
      assert.is_true(same_number(d, json.decode_input("[" .. s .. "]")[1]), s)
    end
    -- the shortest of 15, 16 or 17 digits
    assert.equals("0.30000000000000004", text_of(0.1 + 0.2))
  end)

  it("writes [] for a marked table, {} for an empty plain one, and a sequence as an array", function()
    assert.equals("[]", text_of(kling.array {}))
    assert.equals("[]", text_of(setmetatable({}, core.array_mt)))
    assert.equals("{}", text_of {})
    assert.equals("[1,2,3]", text_of { 1, 2, 3 })
    assert.equals("[1,2]", text_of(kling.array { 1, 2 }))
    assert.equals('{"a":[],"b":{},"c":[[],{}],"d":[{"e":[]}]}',
      text_of { a = kling.array {}, b = {}, c = { kling.array {}, {} }, d = { { e = kling.array {} } } })
  end)

  it("writes nil, cjson.null, kling.null and dkjson.null as null", function()
    assert.equals(cjson.null, kling.null)
    assert.equals("null", text_of(nil))
    assert.equals('{"a":null,"b":null}', text_of { a = cjson.null, b = dkjson.null })
    assert.equals("[1,null,3]", text_of { 1, kling.null, 3 })
    assert.equals("[true,false]", text_of { true, false })
  end)

  it("escapes quotes, backslashes and control characters, and nothing else", function()
    assert.equals([["a\"b\\c\/d"]], cjson.encode("a\"b\\c/d")) -- what lua-cjson did with '/'
    assert.equals([["a\"b\\c/d"]], text_of("a\"b\\c/d"))
    assert.equals([["\b\f\n\r\t\u0000\u0001\u001b\u001f\u007f"]], text_of("\b\f\n\r\t\0\1\27\31\127"))
    local utf8_text = "é ü 😀 \u{2028}\u{2029} \u{10FFFF}"
    assert.equals('"' .. utf8_text .. '"', text_of(utf8_text))
    assert.equals('"a\\u0000b"', text_of("a\0b"))
  end)

  it("writes the fields of an object sorted, so that one value always gives one text", function()
    local t = {}
    for i = 50, 1, -1 do t["k" .. i] = i end
    local s = text_of(t)
    local keys = {}
    for k in s:gmatch('"(k%d+)"') do keys[#keys + 1] = k end
    local sorted = { table.unpack(keys) }
    table.sort(sorted)
    assert.same(sorted, keys)
    assert.equals(50, #keys)
    assert.equals('{"":1,"A":2,"a":3,"aa":4,"b":5,"é":6}', text_of { b = 5, ["é"] = 6, aa = 4, a = 3, A = 2, [""] = 1 })
  end)

  it("refuses values without a JSON form, naming the path", function()
    local sparse = { 1, 2 }
    sparse[4] = 4
    local cycle = {}
    cycle.self = cycle
    local cases = {
      { { image_urls = { "a", 0 / 0 } }, "/image_urls/2", "NaN" },
      { { x = { y = math.huge } }, "/x/y", "infinity" },
      { { x = -math.huge }, "/x", "-infinity" },
      { { cb = print }, "/cb", "function" },
      { { co = coroutine.create(print) }, "/co", "thread" },
      { { f = io.stdout }, "/f", "userdata" },
      { { list = sparse }, "/list", "holes" },
      { { list = { [0] = "zero" } }, "/list", "holes" },
      { { mixed = { 1, 2, name = "x" } }, "/mixed", "both field names and integer keys" },
      { { t = { [true] = 1 } }, "/t", "boolean key" },
      { { t = { [1.5] = 1 } }, "/t", "number key (1.5)" },
      { { l = kling.array { name = "x" } }, "/l", "marked as a list" },
      { { s = "caf\233" }, "/s", "not valid UTF-8" },
      { { s = "\237\160\128" }, "/s", "not valid UTF-8" }, -- a surrogate, as CESU-8
      { { s = "\192\128" }, "/s", "not valid UTF-8" }, -- an overlong NUL
      { { ["k\255"] = 1 }, "/k?", "field name that is not valid UTF-8" },
      { { ["a/b~c"] = { 0 / 0 } }, "/a~1b~0c/1", "NaN" },
      { { a = { { b = { { c = print } } } } }, "/a/1/b/1/c", "function" },
      { cycle, "/self/self/", "nested more than 4096" },
    }
    for _, c in ipairs(cases) do
      local s, why, path = wire(c[1])
      assert.is_nil(s)
      assert.matches(c[3], why, 1, true)
      if c[2]:sub(-1) == "/" then
        assert.matches("^%.%.%./self/self", path)
      else
        assert.equals(c[2], path)
      end
    end
  end)

  it("puts U+FFFD for bytes that are not UTF-8 in text mode, and always gives valid UTF-8", function()
    local s = json.encode { msg = "bad \255\254 end \226\130", ["k\192"] = "\027]0;title\007" }
    assert.equals('{"k\u{FFFD}":"\\u001b]0;title\\u0007","msg":"bad \u{FFFD}\u{FFFD} end \u{FFFD}\u{FFFD}"}', s)
    assert.truthy(utf8.len(s))
    assert.is_table(cjson.decode(s))
  end)

  it("writes an integral float below 2^53 as an integer in text and display modes, as lua-cjson read it", function()
    local answer = cjson.decode('{"queue_position":3,"seed":156680208700286,"t":1700000000,"f":2.5,"z":-0.0}')
    assert.equals("float", helpers.math_type(answer.seed))
    local want = '{"f":2.5,"queue_position":3,"seed":156680208700286,"t":1700000000,"z":-0.0}'
    assert.equals(want, json.encode(answer))
    assert.equals(want, json.encode_display(answer))
    assert.equals('{"big":1e+20,"two53":9007199254740992.0}', json.encode { big = 1e20, two53 = 2.0 ^ 53 })
    -- on the wire a float stays a float
    assert.equals('{"f":2.5,"queue_position":3.0,"seed":156680208700286.0,"t":1700000000.0,"z":-0.0}', text_of(answer))
  end)

  it("writes NaN and infinities as null in display mode; text mode refuses them", function()
    assert.equals('{"a":null,"b":null,"c":null,"d":1.5}',
      json.encode_display { a = 0 / 0, b = math.huge, c = -math.huge, d = 1.5 })
    assert.has_error(function() json.encode { a = 0 / 0 } end, "kling.json: /a: NaN has no JSON form (numbers must be finite)")
    assert.has_error(function() json.encode_display { f = print } end, "kling.json: /f: a function has no JSON form")
  end)

  it("writes what lua-cjson decodes at its deepest, also inside a journal line", function()
    local deep = string.rep("[", 1000) .. "true" .. string.rep("]", 1000)
    local v = cjson.decode(deep) -- lua-cjson's own limit: 1000 levels
    assert.equals(deep, text_of(v))
    local line = json.encode { e = "ended", output = { result = v } }
    assert.equals('{"e":"ended","output":{"result":' .. deep .. "}}", line)
    local obj = string.rep('{"a":', 1000) .. "null" .. string.rep("}", 1000)
    assert.equals(obj, json.encode_display(cjson.decode(obj)))
  end)

  it("refuses tables nested more than 4096 deep", function()
    local v = 1
    for _ = 1, 4096 do v = { v } end
    assert.truthy(wire(v))
    local s, why = wire { v }
    assert.is_nil(s)
    assert.matches("nested more than 4096", why, 1, true)
  end)

  it("reads back exactly what it writes, for every kind of value", function()
    local value = {
      ints = { 0, -1, 1, 9007199254740993, math.maxinteger, math.mininteger },
      floats = { 0.1, 1e300, 5e-324, 2.0 ^ 53, -0.0, 1.5 },
      empty_list = kling.array {}, empty_object = {}, nested = { kling.array { kling.array {} }, { a = {} } },
      text = "é \u{2028} 😀 a\0b \"\\/\n", ["é key"] = true, null = kling.null,
    }
    local back = json.decode_input(text_of(value))
    for i, n in ipairs(value.ints) do assert.is_true(same_number(n, back.ints[i]), tostring(n)) end
    for i, n in ipairs(value.floats) do assert.is_true(same_number(n, back.floats[i]), tostring(n)) end
    assert.is_true(json.is_array(back.empty_list))
    assert.is_nil(next(back.empty_list))
    assert.is_false(json.is_array(back.empty_object))
    assert.is_true(json.is_array(back.nested[1]) and json.is_array(back.nested[1][1]))
    assert.is_false(json.is_array(back.nested[2].a))
    assert.equals(value.text, back.text)
    assert.is_true(back["é key"])
    assert.equals(kling.null, back.null)
    assert.equals(text_of(value), text_of(back))
  end)
end)

describe("kling.json.decode_input", function()
  it("keeps integers as integers, floats as floats, and arrays (empty ones too) as arrays", function()
    local v = json.decode_input('{"seed":156680208700286,"big":9223372036854775807,"f":1.0,"e":1e2,'
      .. '"z":-0.0,"image_urls":[],"o":{},"l":[[],{}]}')
    assert.equals("integer", helpers.math_type(v.seed))
    assert.equals(156680208700286, v.seed)
    assert.equals(math.maxinteger, v.big)
    assert.is_true(same_number(1.0, v.f))
    assert.is_true(same_number(100.0, v.e))
    assert.is_true(same_number(-0.0, v.z))
    assert.is_true(json.is_array(v.image_urls))
    assert.is_false(json.is_array(v.o))
    assert.is_true(json.is_array(v.l) and json.is_array(v.l[1]))
    assert.is_false(json.is_array(v.l[2]))
  end)

  it("reads null as kling.null, in arrays and objects", function()
    local v = json.decode_input('{"a":null,"l":[1,null,3]}')
    assert.equals(kling.null, v.a)
    assert.equals(kling.null, v.l[2])
    assert.equals(3, #v.l)
  end)

  it("refuses what is not strict JSON: comments, trailing commas, NaN, hex, trailing text", function()
    for _, text in ipairs { '{"a":1,}', '{"a":1} // c', '/* c */ {"a":1}', '{"a":NaN}', '{"a":Infinity}',
      '{"a":0x10}', '{"a":1} x', '{"a" 1}', "[1 2]", "" } do
      local v, err = json.decode_input(text)
      assert.is_nil(v, text)
      assert.is_string(err)
    end
  end)
end)

describe("the bytes that reach the service", function()
  local emu, client

  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0.1", "--run", "0.1" }
    client = kling.new { base_url = emu.api, token = TOKEN, poll = { initial = 0.05 } }
  end)

  teardown(function()
    if client then client:close() end
    if emu then emu:stop() end
  end)

  -- The body of a job's submit, byte for byte.
  local function body_of(job)
    return emu:job_record(job.id).body
  end

  local function submits()
    local s = emu:stats()
    return s.requests.submit, s.jobs_created
  end

  it("sends seed = 156680208700286 exactly, with or without a schema", function()
    local job = assert(client:submit(NO_SCHEMA, { prompt = "seeded", seed = 156680208700286 }))
    assert.equals('{"prompt":"seeded","seed":156680208700286}', body_of(job))
    kling.register_model("acme/seeded", [[{
      "type": "object", "required": ["prompt"],
      "properties": {
        "prompt": { "type": "string" },
        "seed": { "type": "integer" },
        "scale": { "type": "number" },
        "image_urls": { "type": "array", "items": { "type": "string" } }
      }
    }]])
    job = assert(client:submit("acme/seeded", { prompt = "seeded", seed = 156680208700286, scale = 2,
      image_urls = {} }))
    assert.equals('{"image_urls":[],"prompt":"seeded","scale":2,"seed":156680208700286}', body_of(job))
    -- an integral float for an integer field goes out as that integer, exactly
    job = assert(client:submit("acme/seeded", { prompt = "seeded", seed = 2.0 ^ 53, scale = 0.25 }))
    assert.equals('{"prompt":"seeded","scale":0.25,"seed":9007199254740992}', body_of(job))
  end)

  it("sends every kind of value exactly to a model without a schema", function()
    local job = assert(client:submit(NO_SCHEMA, {
      prompt = "edges",
      ints = { 0, -1, 9007199254740993, math.maxinteger, math.mininteger },
      floats = { 0.1, 1e300, 5e-324, 2.0 ^ 53, -0.0 },
      image_urls = kling.array {}, options = {}, nested = { {}, kling.array { kling.array {} }, { a = kling.array {} } },
      text = "é 😀 \u{2028} a\0b \"q\" \\ /", none = kling.null,
    }))
    local body = body_of(job)
    assert.equals('{"floats":[0.1,1e+300,4.94065645841247e-324,9007199254740992.0,-0.0],'
      .. '"image_urls":[],"ints":[0,-1,9007199254740993,9223372036854775807,-9223372036854775808],'
      .. '"nested":[{},[[]],{"a":[]}],"none":null,"options":{},"prompt":"edges",'
      .. '"text":"é 😀 \u{2028} a\\u0000b \\"q\\" \\\\ /"}', body)
    assert.is_true(same_number(5e-324, json.decode_input(body).floats[3]))
  end)

  it("sends a validated input exactly: integers, floats and an empty multi_prompt as []", function()
    local job = assert(client:generate { prompt = "a harbour", duration = 5, cfg_scale = 0.5, multi_prompt = {} })
    assert.equals('{"cfg_scale":0.5,"duration":5,"multi_prompt":[],"prompt":"a harbour"}', body_of(job))
    job = assert(client:generate { prompt = "two shots", cfg_scale = 1, multi_prompt = {
      { prompt = "dawn", duration = 3.0 }, { prompt = "dusk", duration = 4 } } })
    assert.equals('{"cfg_scale":1,"duration":7,"multi_prompt":[{"duration":3,"prompt":"dawn"},'
      .. '{"duration":4,"prompt":"dusk"}],"prompt":"two shots"}', body_of(job))
  end)

  it("keeps the fields an open schema lets through when validation changes the input", function()
    kling.register_model("acme/open", [[{ "type": "object", "additionalProperties": true,
      "properties": { "prompt": { "type": "string" }, "n": { "type": "integer" } } }]])
    local ok, sent = kling.validate({ prompt = "p", n = 5.0, extra = { seed = 156680208700286, l = kling.array {} } },
      "acme/open")
    assert.is_true(ok)
    assert.equals(156680208700286, sent.extra.seed)
    local job = assert(client:submit("acme/open", { prompt = "open", n = 5.0, extra = { seed = 156680208700286,
      l = kling.array {} } }))
    assert.equals('{"extra":{"l":[],"seed":156680208700286},"n":5,"prompt":"open"}', body_of(job))
  end)

  it("refuses a list (an array from JSON, or kling.array) where the schema wants an object", function()
    kling.register_model("acme/with-options", [[{ "type": "object", "required": ["prompt"],
      "properties": { "prompt": { "type": "string" },
        "options": { "type": "object", "properties": { "steps": { "type": "integer" } } } } }]])
    local before = { submits() }
    for _, make in ipairs { function() return { prompt = "p", options = kling.array {} } end,
      function() return json.decode_input('{"prompt":"p","options":[]}') end } do
      local job, err = client:submit("acme/with-options", make())
      assert.is_nil(job)
      assert.equals("/options", err.errors[1].path)
      assert.matches("got a list", err.errors[1].message, 1, true)
    end
    assert.same(before, { submits() })
    local job = assert(client:submit("acme/with-options", json.decode_input('{"prompt":"p","options":{}}')))
    assert.equals('{"options":{},"prompt":"p"}', body_of(job))
  end)

  it("refuses NaN, a function, a sparse list or invalid UTF-8 before sending anything", function()
    local sparse = { "a" }
    sparse[3] = "c"
    local cases = {
      { NO_SCHEMA, { prompt = "p", image_urls = { "a", 0 / 0 } }, "/image_urls/2" },
      { NO_SCHEMA, { prompt = "p", callback = print }, "/callback" },
      { NO_SCHEMA, { prompt = "p", image_urls = sparse }, "/image_urls" },
      { NO_SCHEMA, { prompt = "caf\233" }, "/prompt" },
      { NO_SCHEMA, { prompt = "p", ["k\255"] = 1 }, "/k?" },
      { NO_SCHEMA, { prompt = "p", list = { 1, name = "x" } }, "/list" },
      { "acme/open", { prompt = "p", extra = { x = math.huge } }, "/extra/x" },
      { "acme/open", { prompt = "p", n = 5.0, extra = { f = print } }, "/extra/f" },
      { "acme/seeded", { prompt = "p", scale = 0 / 0 }, "/scale" },
      { kling.DEFAULT_MODEL, { prompt = "caf\233" }, "/prompt" },
    }
    local before_submits, before_jobs = submits()
    for _, c in ipairs(cases) do
      local job, err = client:submit(c[1], c[2])
      assert.is_nil(job)
      assert.equals("validation", err.kind)
      assert.equals(c[3], err.errors[1].path)
      -- kling.validate says the same without a client
      local ok, verr = kling.validate(c[2], c[1])
      assert.is_nil(ok)
      assert.equals(c[3], verr.errors[1].path)
    end
    assert.same({ before_submits, before_jobs }, { submits() })
  end)
end)

-- A stand-in API whose answers hold bytes that are not UTF-8, control characters and
-- a number out of range (what lua-cjson reads as an infinity).
local ODD_SERVER = [[
local cqueues = require "cqueues"
local socket = require "cqueues.socket"
local port_file = arg[1]
local srv = assert(socket.listen { host = "127.0.0.1", port = 0 })
local _, _, port = srv:localname()
local f = assert(io.open(port_file, "w")) f:write(port) f:close()
local cq = cqueues.new()
local function answer(con, status, body)
  con:write(string.format("HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", status, #body, body))
  con:flush()
end
local function serve(con)
  con:setmode("b", "b")
  while true do
    local line = con:read("*l")
    if not line then break end
    local method, path = line:match("^(%u+) (%S+)")
    local len = 0
    while true do
      local h = con:read("*l")
      if not h then return con:close() end
      h = h:gsub("\r$", "")
      if h == "" then break end
      len = tonumber(h:lower():match("^content%-length:%s*(%d+)")) or len
    end
    local body = len > 0 and con:read(len) or ""
    if method == "POST" and path:match("^/v1/models/") and body:find("@unknown", 1, true) then
      answer(con, "500 Internal Server Error", '{"error_code":500001,"error_message":"boom \255 \27[2J"}')
    elseif method == "POST" and path:match("^/v1/models/") then
      answer(con, "400 Bad Request", '{"error_code":400001,"error_message":"bad \255\254 input \27]0;title\7 and \27[2J end"}')
    elseif path:match("^/v1/requests/odd%-1/") then
      answer(con, "200 OK", '{"request_id":"odd-1","status":"completed","output":{"video":"http://127.0.0.1:'
        .. port .. '/v/odd.mp4","note":"caf\195 \255 \27[2J","big":1e400,"list":[1,2],"seed":156680208700286}}')
    else
      answer(con, "404 Not Found", '{"error_code":404001,"error_message":"not found"}')
    end
  end
  con:close()
end
cq:wrap(function()
  while true do
    local con = srv:accept()
    if con then cq:wrap(serve, con) end
  end
end)
assert(cq:loop())
]]

describe("the command-line tool's JSON in and out", function()
  local emu, dir, n_runs

  local function env_prefix(opts)
    local vars = {
      "RUNCOMFY_MODEL_API_BASE=" .. q(opts.base or emu.api), "XDG_STATE_HOME=" .. q(dir .. "/state"),
      "KLING_POLL=" .. POLL, "RUNCOMFY_TOKEN=" .. q(TOKEN),
    }
    return "env -u RUNCOMFY_API_TOKEN -u LUA_PATH -u LUA_CPATH " .. table.concat(vars, " ")
  end

  -- Runs bin/kling to the end: { code, out, err }.
  local function run(args, opts)
    opts = opts or {}
    n_runs = n_runs + 1
    local base = dir .. "/run" .. n_runs
    local stdin = "/dev/null"
    if opts.stdin then
      stdin = base .. ".in"
      helpers.write_file(stdin, opts.stdin)
    end
    local words = {}
    for _, a in ipairs(args) do words[#words + 1] = q(a) end
    local cmd = string.format("cd %s && %s lua5.4 %s %s >%s 2>%s <%s", q(dir), env_prefix(opts),
      q(helpers.root .. "/bin/kling"), table.concat(words, " "), q(base .. ".out"), q(base .. ".err"), q(stdin))
    local ok, how, code = os.execute(cmd)
    local res = { out = helpers.read_file(base .. ".out") or "", err = helpers.read_file(base .. ".err") or "" }
    res.code = ok and 0 or (how == "exit" and code or 128 + code)
    return res
  end

  local function file(name, text)
    local path = dir .. "/" .. name
    helpers.write_file(path, text)
    return path
  end

  local function submits()
    local s = emu:stats()
    return s.requests.submit, s.jobs_created
  end

  local function trim(s) return (s:gsub("%s+$", "")) end

  -- The JSON a user writes, and the body that must reach the service for it (keys sorted).
  local INPUT = '{"prompt":"from a file","seed":156680208700286,"image_urls":[],"options":{},'
    .. '"big":9007199254740993,"max":9223372036854775807,"min":-9223372036854775808,'
    .. '"f":0.1,"whole":2.0,"neg":-0.0,"tiny":5e-324,"huge":1e300,"nested":[[],{},[{"a":[]}]],'
    .. '"none":null,"text":"\\u00e9 \\ud83d\\ude00 \\u2028 a\\u0000b \\"q\\" \\/"}'
  local BODY = '{"big":9007199254740993,"f":0.1,"huge":1e+300,"image_urls":[],"max":9223372036854775807,'
    .. '"min":-9223372036854775808,"neg":-0.0,"nested":[[],{},[{"a":[]}]],"none":null,"options":{},'
    .. '"prompt":"from a file","seed":156680208700286,'
    .. '"text":"é 😀 \u{2028} a\\u0000b \\"q\\" /","tiny":4.94065645841247e-324,"whole":2.0}'

  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0.1", "--run", "0.1" }
    dir = helpers.tmpdir()
    n_runs = 0
  end)

  teardown(function()
    if emu then emu:stop() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  it("kling submit --input sends integers, floats and [] exactly (model without a schema)", function()
    local res = run { "submit", "--model", NO_SCHEMA, "--input", file("in.json", INPUT) }
    assert.equals(0, res.code, res.err)
    assert.equals(BODY, emu:job_record(trim(res.out)).body)
    -- the issue's own case
    res = run { "submit", "--model", NO_SCHEMA, "--input", file("urls.json", '{"prompt":"x","image_urls":[]}') }
    assert.equals(0, res.code, res.err)
    assert.equals('{"image_urls":[],"prompt":"x"}', emu:job_record(trim(res.out)).body)
    -- from stdin too, and with the flags merged over the file
    res = run({ "submit", "--model", NO_SCHEMA, "--input", "-", "--duration", "5" },
      { stdin = '{"prompt":"stdin","seed":156680208700286,"l":[]}' })
    assert.equals(0, res.code, res.err)
    assert.equals('{"duration":5,"l":[],"prompt":"stdin","seed":156680208700286}', emu:job_record(trim(res.out)).body)
  end)

  it("kling generate --input sends the same bytes", function()
    local res = run { "generate", "--model", NO_SCHEMA, "--input", file("gen.json", INPUT), "--no-wait" }
    assert.equals(0, res.code, res.err)
    assert.equals(BODY, emu:job_record(trim(res.out)).body)
  end)

  it("a kling batch line goes out exactly", function()
    local line = INPUT:gsub("^{", '{"name":"edge",')
    local batch = file("edges.jsonl", line .. "\n" .. '{"name":"urls","prompt":"second","image_urls":[]}\n')
    local out = dir .. "/batch-out"
    local res = run { "batch", batch, "--model", NO_SCHEMA, "--out-dir", out, "--json" }
    assert.equals(0, res.code, res.err)
    local ids = {}
    for l in res.out:gmatch("[^\n]+") do
      local obj = cjson.decode(l)
      ids[obj.key] = obj.id
    end
    assert.equals(BODY, emu:job_record(ids.edge).body)
    assert.equals('{"image_urls":[],"prompt":"second"}', emu:job_record(ids.urls).body)
  end)

  it("--dry-run and kling validate --json print the input as it would be sent", function()
    local res = run { "submit", "--model", NO_SCHEMA, "--input", file("dry.json", INPUT), "--dry-run" }
    assert.equals(0, res.code, res.err)
    assert.equals(BODY .. "\n", res.out)
    res = run { "validate", file("v.json", INPUT), "--model", NO_SCHEMA, "--json" }
    assert.equals(0, res.code, res.err)
    assert.equals('{"input":' .. BODY .. ',"model":"acme/some-model","valid":true}\n', res.out)
    res = run { "submit", "--input", file("k.json", '{"prompt":"p","duration":5.0,"multi_prompt":[]}'), "--dry-run" }
    assert.equals(0, res.code, res.err)
    assert.equals('{"duration":5,"multi_prompt":[],"prompt":"p"}\n', res.out)
  end)

  it("refuses an input that has no exact JSON form, naming the path, and sends nothing", function()
    local before = { submits() }
    local cases = {
      { '{"prompt":"p","image_urls":["a",1e400]}', "/image_urls/2" },
      { '{"prompt":"caf\233"}', "/prompt" },
      { '{"prompt":"p","k\255":1}', "/k?" },
    }
    for i, c in ipairs(cases) do
      local path = file("bad" .. i .. ".json", c[1])
      local res = run { "submit", "--model", NO_SCHEMA, "--input", path }
      assert.equals(3, res.code, res.err)
      assert.matches(c[2] .. ": ", res.err, 1, true)
      assert.matches("nothing was sent", res.err, 1, true)
      res = run { "batch", file("bad" .. i .. ".jsonl", c[1] .. "\n"), "--model", NO_SCHEMA, "--out-dir", dir .. "/bo" .. i }
      assert.equals(3, res.code, res.err)
      assert.matches(c[2] .. ": ", res.err, 1, true)
      res = run { "validate", path, "--model", NO_SCHEMA }
      assert.equals(3, res.code, res.err)
      assert.matches(c[2] .. ": ", res.err, 1, true)
    end
    assert.same(before, { submits() })
  end)

  it("refuses an --input file that is not strict JSON, and sends nothing", function()
    local before = { submits() }
    for i, text in ipairs { '{"prompt":"p",}', '{"prompt":"p"} // note', '{"prompt":"p","x":NaN}' } do
      local res = run { "submit", "--model", NO_SCHEMA, "--input", file("loose" .. i .. ".json", text) }
      assert.equals(2, res.code, res.err)
      assert.matches("not valid JSON", res.err, 1, true)
    end
    assert.same(before, { submits() })
  end)

  describe("with a server whose answers hold odd bytes", function()
    local pid, base

    setup(function()
      local script = file("odd_server.lua", ODD_SERVER)
      local port_file = dir .. "/odd.port"
      local pid_file = dir .. "/odd.pid"
      assert(os.execute(string.format("lua5.4 %s %s >/dev/null 2>&1 & echo $! >%s", q(script), q(port_file),
        q(pid_file))))
      local deadline = os.time() + 10
      local port
      repeat
        port = tonumber((helpers.read_file(port_file) or ""):match("%d+"))
        if not port then helpers.sleep(0.02) end
      until port or os.time() > deadline
      pid = tonumber((helpers.read_file(pid_file) or ""):match("%d+"))
      assert(port, "the stand-in server did not start")
      base = "http://127.0.0.1:" .. port .. "/v1"
    end)

    teardown(function()
      if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
    end)

    -- Every line is JSON that lua-cjson reads, valid UTF-8, without a raw control character.
    local function json_lines(out)
      local list = {}
      for l in out:gmatch("[^\n]+") do
        assert.truthy(utf8.len(l), "not UTF-8: " .. l)
        assert.is_nil(l:find("[%z\1-\31\127]"), "a raw control character: " .. l)
        list[#list + 1] = cjson.decode(l)
      end
      assert.is_true(#list > 0)
      return list
    end

    it("kling submit --json prints valid UTF-8 JSON for an error message with invalid bytes", function()
      local res = run({ "submit", "a prompt", "--json" }, { base = base })
      assert.equals(3, res.code, res.err)
      local obj = json_lines(res.out)[1]
      assert.equals("bad_request", obj.error.kind)
      assert.matches("bad \u{FFFD}\u{FFFD} input \27]0;title\7 and \27[2J end", obj.error.message, 1, true)
    end)

    it("writes journal lines as valid UTF-8 JSON when the server's message holds invalid bytes", function()
      local journal = dir .. "/odd-journal.jsonl"
      local res = run({ "submit", "@unknown outcome", "--journal", journal, "--json" }, { base = base })
      assert.is_not.equals(0, res.code)
      json_lines(res.out)
      local text = assert(helpers.read_file(journal))
      assert.truthy(text:find("boom \u{FFFD}", 1, true), text)
      json_lines(text)
    end)

    it("kling result --json prints valid UTF-8 JSON for an output with invalid bytes and an infinity", function()
      local res = run({ "result", "odd-1", "--json", "--model", NO_SCHEMA, "--no-journal" }, { base = base })
      assert.equals(0, res.code, res.err)
      local obj = json_lines(res.out)[1]
      assert.equals("caf\u{FFFD} \u{FFFD} \27[2J", obj.output.note)
      assert.equals(cjson.null, obj.output.big)
      assert.same({ 1, 2 }, obj.output.list)
      -- numbers as the server wrote them (lua-cjson read them as floats)
      assert.matches('"list":[1,2]', res.out, 1, true)
      assert.matches('"seed":156680208700286', res.out, 1, true)
    end)
  end)
end)
