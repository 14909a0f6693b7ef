--- fuzz/jsonw_harness.lua: the Lua half of fuzz/jsonw_fuzz.c, the JSON writer's fuzzer.
--
-- Returns run(bytes, seed). Two uses of the bytes:
-- 1. As JSON text: what kling.json.decode_input reads is written again with the
--    wire writer (kling.json.encode_wire); it must come back exactly (integers
--    as integers, floats bit for bit, arrays marked, null as null), the second
--    writing must give the same text, and lua-cjson must read the text too.
-- 2. As a program that builds a Lua value (integers and floats from raw bytes,
--    strings of any bytes, marked and unmarked tables, holes, mixed keys, odd
--    keys, functions, userdata, cycles, deep nesting): the writer must accept
--    it exactly when the rules (README "JSON on the wire", modelled here) do,
--    and then it must read back exactly; a refusal must name a path that
--    leads to an offending value. The text and display modes must always give
--    valid UTF-8 that lua-cjson reads, for anything the rules let them write.
-- A disagreement raises an error starting with "ORACLE"; the C side aborts so
-- that libFuzzer keeps the input.
local cjson = require("cjson").new()
cjson.decode_max_depth(5000) -- deeper than the writer's limit
local dkjson = require "dkjson"
local core = require "kling.core"
local json = require "kling.json"

local ARRAY_MT = core.array_mt
local mtype = math.type
local MAX_DEPTH = 4096 -- KJSONW_MAX_DEPTH (src/jsonw.h)

local text_writer = core.json_encoder("text", dkjson.null)
local display_writer = core.json_encoder("display", dkjson.null)

local function oracle(fmt, ...)
  error("ORACLE: " .. string.format(fmt, ...), 0)
end

local function show(v)
  if type(v) == "string" then return string.format("%q", #v > 80 and v:sub(1, 80) .. "..." or v) end
  if type(v) == "number" then return mtype(v) .. ":" .. string.format("%.17g", v) end
  return tostring(v)
end

local function is_null(v)
  return v == json.null or rawequal(v, dkjson.null)
end

------------------------------------------------------------- the rules, as a model

-- What kind of JSON value a table is: "array", n | "object" | "empty" | nil, why.
local function shape(t)
  local marked = getmetatable(t) == ARRAY_MT
  local nstr, nint, max, low, odd = 0, 0, 0, false, nil
  for k in next, t do
    if type(k) == "string" then nstr = nstr + 1
    elseif mtype(k) == "integer" then
      if k < 1 then low = true else nint, max = nint + 1, math.max(max, k) end
    else odd = odd or k end
  end
  if odd ~= nil then return nil, "odd key" end
  if nstr > 0 and marked then return nil, "marked with names" end
  if nstr > 0 and (nint > 0 or low) then return nil, "mixed" end
  if nstr > 0 then return "object" end
  if low or max ~= nint then return nil, "holes" end
  if nint > 0 or marked then return "array", nint end
  return "empty"
end

-- Is a scalar writable? utf8: strings must be UTF-8; finite: numbers must be.
local function scalar_ok(v, utf8_rule, finite_rule)
  local t = type(v)
  if v == nil or t == "boolean" or is_null(v) then return true end
  if t == "number" then return not finite_rule or mtype(v) == "integer" or (v == v and v ~= math.huge and v ~= -math.huge) end
  if t == "string" then return not utf8_rule or utf8.len(v) ~= nil end
  return false
end

-- Does the writer have to accept v (mode: "wire", "text", "display")?
local function writable(v, mode)
  local utf8_rule, finite_rule = mode == "wire", mode ~= "display"
  local on_path = {}
  local function walk(x, depth)
    if type(x) ~= "table" or is_null(x) then return scalar_ok(x, utf8_rule, finite_rule) end
    if depth >= MAX_DEPTH or on_path[x] then return false end
    local kind = shape(x)
    if not kind then return false end
    on_path[x] = true
    for k, y in next, x do
      if type(k) == "string" and utf8_rule and utf8.len(k) == nil then on_path[x] = nil return false end
      if not walk(y, depth + 1) then on_path[x] = nil return false end
    end
    on_path[x] = nil
    return true
  end
  return walk(v, 0)
end

-- The same value, exactly: number subtypes, floats bit for bit (-0.0 is not
-- 0.0), arrays marked as arrays (written [] comes back marked; an unmarked
-- sequence also comes back marked), nulls as null.
local function exact(a, b, depth)
  depth = depth or 0
  if is_null(a) or a == nil then return is_null(b) end
  if type(a) ~= type(b) then return false end
  if type(a) == "number" then
    if mtype(a) ~= mtype(b) then return false end
    return string.pack("<n", a) == string.pack("<n", b)
  end
  if type(a) ~= "table" then return a == b end
  if depth > MAX_DEPTH then return false end
  local kind = shape(a)
  if (kind == "array") ~= (getmetatable(b) == ARRAY_MT) then return false end
  for k, x in next, a do
    if not exact(x, rawget(b, k), depth + 1) then return false end
  end
  for k in next, b do
    if rawget(a, k) == nil then return false end
  end
  return true
end

-- The value a refusal's path leads to (nil when the path cannot be followed:
-- a name shown with '?' or cut short), and the key of its last step.
local function follow(v, path)
  if path:find("?", 1, true) or path:find("...", 1, true) then return nil end
  if path == "/" then
    if type(v) == "table" and rawget(v, "") ~= nil then return nil end -- "/" is also the name ""
    return true, v
  end
  local node, key = v, nil
  for seg in path:gmatch("/([^/]*)") do
    if type(node) ~= "table" then return nil end
    seg = seg:gsub("~1", "/"):gsub("~0", "~")
    local n = tonumber(seg)
    local kind = shape(node)
    if kind == "array" and n and mtype(n) == "integer" then key = n else key = seg end
    node = rawget(node, key)
  end
  return true, node, key
end

-- A refusal must point at something the rules refuse, there.
local function check_refusal(v, mode, why, path, label)
  if type(why) ~= "string" or why == "" or type(path) ~= "string" or path:sub(1, 1) ~= "/" and path:sub(1, 3) ~= "..." then
    oracle("%s: %s refusal without a reason or a path: %s %s", label, mode, show(why), show(path))
  end
  local ok, node, key = follow(v, path)
  if not ok then return end
  if why:find("field name that is not valid UTF-8", 1, true) then
    if not (type(key) == "string" and utf8.len(key) == nil) then oracle("%s: %s: %s, but the name is %s", label, path, why, show(key)) end
    return
  end
  if why:find("nested more than", 1, true) then return end
  if type(node) == "table" and not is_null(node) then
    if shape(node) then oracle("%s: %s refused at %s (%s), but the table there is fine", label, mode, path, why) end
  elseif scalar_ok(node, mode == "wire", mode ~= "display") then
    oracle("%s: %s refused at %s (%s), but the value there is %s", label, mode, path, why, show(node))
  end
end

local function check(v, label)
  for _, mode in ipairs { "wire", "text", "display" } do
    local writer = mode == "wire" and json.encode_wire or mode == "text" and text_writer or display_writer
    local text, why, path = writer(v)
    local want = writable(v, mode)
    if text and not want then oracle("%s: %s wrote %s, but the rules refuse the value", label, mode, show(text)) end
    if not text and want then oracle("%s: %s refused (%s at %s), but the rules accept the value", label, mode, why, path) end
    if text then
      if utf8.len(text) == nil then oracle("%s: %s wrote text that is not UTF-8: %s", label, mode, show(text)) end
      local ok, err = pcall(cjson.decode, text)
      if not ok then oracle("%s: lua-cjson cannot read what %s wrote (%s): %s", label, mode, err, show(text)) end
      if mode == "wire" then
        local back, _, derr = dkjson.decode(text, 1, json.null, nil, ARRAY_MT) -- as decode_input, any depth
        if back == nil and v ~= nil and not is_null(v) then oracle("%s: cannot read back %s: %s", label, show(text), derr) end
        if not exact(v, back) then oracle("%s: %s reads back as another value", label, show(text)) end
        if json.encode_wire(back) ~= text then oracle("%s: writing %s again gives another text", label, show(text)) end
      end
    else
      check_refusal(v, mode, why, path, label)
    end
  end
end

------------------------------------------------------------- a value from bytes

local ODD = {
  function() return print end, function() return io.stdout end, function() return coroutine.create(print) end,
  function() return 0 / 0 end, function() return math.huge end, function() return -math.huge end,
  function() return json.null end, function() return dkjson.null end, function() return -0.0 end,
  function() return "\xed\xa0\x80" end, function() return "\xc0\x80" end, function() return "\xf4\x90\x80\x80" end,
  function() return "\u{2028}\0\x7f\"\\/" end, function() return math.maxinteger end, function() return math.mininteger end,
  function() return 2.0 ^ 53 end, function() return 2 ^ 53 + 1 end, function() return 5e-324 end,
}

local function build(bytes)
  local pos, stack, made = 1, {}, 0
  local function byte()
    local b = bytes:byte(pos) or 0
    pos = pos + 1
    return b
  end
  local function take(n)
    local s = bytes:sub(pos, pos + n - 1)
    pos = pos + n
    return s .. string.rep("\0", n - #s)
  end
  local function pop()
    local v = stack[#stack]
    stack[#stack] = nil
    return v
  end
  while pos <= #bytes and made < 400 do
    made = made + 1
    local op = byte() % 12
    if op == 0 then stack[#stack + 1] = string.unpack("<i8", take(8))
    elseif op == 1 then stack[#stack + 1] = string.unpack("<d", take(8))
    elseif op == 2 then stack[#stack + 1] = math.tointeger((byte() - 128) * (byte() + 1))
    elseif op == 3 then stack[#stack + 1] = take(byte() % 24)
    elseif op == 4 then stack[#stack + 1] = byte() % 2 == 0
    elseif op == 5 then stack[#stack + 1] = ODD[byte() % #ODD + 1]()
    elseif op == 6 or op == 7 then -- an array (or a plain sequence) of the top items
      local n, t = byte() % 6, {}
      for i = n, 1, -1 do t[i] = pop() end
      if op == 6 then setmetatable(t, ARRAY_MT) end
      stack[#stack + 1] = t
    elseif op == 8 then -- an object: names from the bytes
      local n, t = byte() % 5, {}
      for _ = 1, n do t[take(byte() % 6)] = pop() end
      stack[#stack + 1] = t
    elseif op == 9 then -- an odd key, a hole, or a cycle, in the top table
      local t = stack[#stack]
      if type(t) == "table" and not is_null(t) then
        local what = byte() % 6
        if what == 0 then rawset(t, byte() % 4 - 1, "k")
        elseif what == 1 then rawset(t, 1.5, 1)
        elseif what == 2 then rawset(t, true, 1)
        elseif what == 3 then rawset(t, #t + 2, 1)
        elseif what == 4 then rawset(t, "name", t)
        else rawset(t, #t + 1, "more") end
      end
    elseif op == 10 then -- nesting: a few levels, or (rarely) right at the writer's limit
      local b = byte()
      local n = b == 255 and MAX_DEPTH - 2 + byte() % 4 or b % 8 + 1
      local v = pop()
      for _ = 1, n do v = { v } end
      stack[#stack + 1] = v
    else
      stack[#stack + 1] = {}
    end
  end
  return stack[#stack]
end

---------------------------------------------------------------------------- run

return function(bytes, _)
  local v = json.decode_input(bytes)
  if v ~= nil then check(v, "as JSON") end
  check(build(bytes), "built")
end
