--- fuzz/schema_harness.lua: the Lua half of fuzz/schema_fuzz.c.
--
-- Returns run(bytes, seed). The bytes are decoded as JSON (input that is not
-- JSON is skipped); the value, and variants of it that JSON cannot express
-- (Lua integers, NaN and infinities in odd places, non-string keys, holes,
-- functions, userdata, metatables, cycles...), are validated against the
-- shipped Kling 3.0 Pro schema through kling.models.validate, the path every
-- submit takes; what it accepts is written with the wire writer
-- (kling.json.encode_wire) and read back (kling.json.decode_input): it must
-- come back equal, integers as integers, floats as floats. Each answer is compared with a model of the rules written
-- here from README.md ("Validation"): accepted exactly when the model
-- accepts, sent in the documented form (integral floats as integers, the
-- total filled in from the segments, an empty list marked as an array, the
-- input itself when nothing had to change), rejected with a non-empty list
-- of { path, message }. A disagreement raises an error starting with
-- "ORACLE"; the C side then aborts so that libFuzzer keeps the input.
local cjson = require("cjson").new()
local core = require "kling.core"
local models = require "kling.models"
local json = require "kling.json"

local ARRAY_MT = core.array_mt
local mtype, floor, huge = math.type, math.floor, math.huge

local MAX_DEPTH = 24 -- of the structures the harness itself walks

------------------------------------------------------------------ helpers

-- A key order that does not depend on Lua's per-state hash seed, so that a
-- crashing input replays the same way: by type, then by value.
local TYPE_RANK = { number = 1, string = 2, boolean = 3, table = 4 }
local function key_less(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return (TYPE_RANK[ta] or 9) < (TYPE_RANK[tb] or 9) end
  if ta == "number" or ta == "string" then return a < b end
  if ta == "boolean" then return (a and 1 or 0) < (b and 1 or 0) end
  return false
end

local function sorted_keys(t)
  local keys = {}
  for k in next, t do keys[#keys + 1] = k end
  table.sort(keys, key_less)
  return keys
end

-- A short text of a value for reports (depth- and cycle-safe).
local function show(v, depth, seen)
  depth, seen = depth or 0, seen or {}
  local tv = type(v)
  if tv == "string" then return string.format("%q", #v > 60 and v:sub(1, 60) .. "..." or v) end
  if tv == "number" then return mtype(v) .. ":" .. tostring(v) end
  if tv ~= "table" then return tostring(v) end
  if seen[v] then return "<cycle>" end
  if depth > 6 then return "{...}" end
  seen[v] = true
  local parts = {}
  for _, k in ipairs(sorted_keys(v)) do
    parts[#parts + 1] = "[" .. show(k, depth + 1, seen) .. "]=" .. show(rawget(v, k), depth + 1, seen)
  end
  seen[v] = nil
  return (getmetatable(v) == ARRAY_MT and "array" or "") .. "{" .. table.concat(parts, ", ") .. "}"
end

local function oracle(fmt, ...)
  error("ORACLE: " .. string.format(fmt, ...), 0)
end

-- Deep copy that keeps shared tables shared and cycles cycles (a mutated
-- value may have both: copying it as a tree could take exponential time).
local function copy(v, done)
  if type(v) ~= "table" then return v end
  done = done or {}
  if done[v] then return done[v] end
  local t = {}
  done[v] = t
  for k, x in next, v do t[copy(k, done)] = copy(x, done) end
  return setmetatable(t, getmetatable(v))
end

-- Equal values, numbers of the same subtype (5 is not 5.0), cycle-safe.
local function same(a, b, depth)
  depth = depth or 0
  if type(a) ~= type(b) then return false end
  if type(a) == "number" then return mtype(a) == mtype(b) and (a == b or (a ~= a and b ~= b)) end
  if type(a) ~= "table" then return rawequal(a, b) end
  if rawequal(a, b) then return true end
  if depth > MAX_DEPTH then return false end
  for k, x in next, a do
    if not same(x, rawget(b, k), depth + 1) then return false end
  end
  for k in next, b do
    if rawget(a, k) == nil then return false end
  end
  return true
end

------------------------------------------------------- the rules, as a model

local FIELDS = {
  prompt = true, negative_prompt = true, duration = true, aspect_ratio = true,
  cfg_scale = true, sound = true, multi_prompt = true, shot_type = true,
}
local ASPECT = { ["16:9"] = true, ["9:16"] = true, ["1:1"] = true }

-- Every string: valid UTF-8 (Lua's strict decoder: no overlongs, no
-- surrogates, nothing above U+10FFFF) without NUL bytes.
local function text_ok(s)
  return type(s) == "string" and utf8.len(s) ~= nil and not s:find("\0", 1, true)
end

-- A required string must not be blank.
local function nonblank(s)
  return text_ok(s) and s:find("%S") ~= nil
end

-- An integer, or an integral float, within [lo, hi].
local function int_ok(v, lo, hi)
  return type(v) == "number" and v == v and v ~= huge and v ~= -huge and v == floor(v) and v >= lo and v <= hi
end

-- The length of t when it is a Lua sequence (keys exactly 1..n), else nil.
local function sequence_len(t)
  local n = 0
  for k in next, t do
    if mtype(k) ~= "integer" or k < 1 then return nil end
    n = n + 1
  end
  for i = 1, n do
    if rawget(t, i) == nil then return nil end
  end
  return n
end

local function item_ok(it)
  if type(it) ~= "table" or getmetatable(it) == ARRAY_MT then return false end
  for k in next, it do
    if k ~= "prompt" and k ~= "duration" then return false end
  end
  return nonblank(rawget(it, "prompt")) and int_ok(rawget(it, "duration"), 3, 15)
end

-- Does the model accept v? Returns true, or false and the rule it breaks.
local function accepts(v)
  if type(v) ~= "table" then return false, "input is not a table" end
  if getmetatable(v) == ARRAY_MT then return false, "input is marked as a list" end
  for k in next, v do
    if type(k) ~= "string" or not FIELDS[k] then return false, "unknown key " .. show(k) end
  end
  local g = function(k) return rawget(v, k) end
  if not nonblank(g "prompt") then return false, "prompt" end
  if g "negative_prompt" ~= nil and not text_ok(g "negative_prompt") then return false, "negative_prompt" end
  local dur = g "duration"
  if dur ~= nil and not int_ok(dur, 3, 15) then return false, "duration" end
  local ar = g "aspect_ratio"
  if ar ~= nil and not (type(ar) == "string" and ASPECT[ar]) then return false, "aspect_ratio" end
  local cfg = g "cfg_scale"
  if cfg ~= nil and not (type(cfg) == "number" and cfg >= 0 and cfg <= 1) then return false, "cfg_scale" end
  if g "sound" ~= nil and type(g "sound") ~= "boolean" then return false, "sound" end
  if g "shot_type" ~= nil and g "shot_type" ~= "customize" then return false, "shot_type" end
  local mp = g "multi_prompt"
  if mp ~= nil then
    if type(mp) ~= "table" then return false, "multi_prompt type" end
    local n = sequence_len(mp)
    if not n then return false, "multi_prompt not a sequence" end
    if n > 20 then return false, "multi_prompt too long" end
    local sum = 0
    for i = 1, n do
      if not item_ok(rawget(mp, i)) then return false, "multi_prompt item " .. i end
      sum = sum + rawget(rawget(mp, i), "duration")
    end
    if n > 0 then
      if dur ~= nil and dur ~= sum then return false, "duration is not the sum" end
      if dur == nil and not (sum >= 3 and sum <= 15) then return false, "sum out of range" end
    end
  end
  return true
end

-- What an accepted v must go out as, and whether that differs from v.
local function expected_output(v)
  local changed = false
  local function as_int(d)
    if mtype(d) == "float" then changed = true end
    return math.tointeger(d)
  end
  local out = {}
  for k, x in next, v do out[k] = x end
  if out.duration ~= nil then out.duration = as_int(out.duration) end
  local mp = rawget(v, "multi_prompt")
  if mp ~= nil then
    local n = sequence_len(mp)
    local arr, sum = {}, 0
    for i = 1, n do
      local it = rawget(mp, i)
      arr[i] = { prompt = rawget(it, "prompt"), duration = as_int(rawget(it, "duration")) }
      sum = sum + arr[i].duration
    end
    if n == 0 then changed = true end
    if n > 0 and out.duration == nil then
      out.duration = sum
      changed = true
    end
    out.multi_prompt = arr
  end
  return out, changed
end

local function check_errors(err, label)
  if type(err) ~= "table" or err.kind ~= "validation" then
    oracle("%s: a refusal that is not a validation error: %s", label, show(err))
  end
  if type(err.message) ~= "string" or err.message == "" then oracle("%s: refusal without a message", label) end
  local list = err.errors
  if type(list) ~= "table" or #list == 0 then oracle("%s: refusal with no errors listed", label) end
  for i = 1, #list do
    local e = list[i]
    if type(e) ~= "table" or type(e.path) ~= "string" or e.path:sub(1, 1) ~= "/"
      or type(e.message) ~= "string" or e.message == "" then
      oracle("%s: malformed error %d: %s", label, i, show(e))
    end
  end
end

local function check(v, label)
  local ok, res = models.validate(v)
  local want, why = accepts(v)
  if ok and not want then
    oracle("%s: accepted, but the rules refuse it (%s): %s", label, why, show(v))
  elseif not ok and want then
    oracle("%s: refused, but the rules accept it: %s -> %s", label, show(v), show(res and res.errors))
  end
  if not ok then
    check_errors(res, label)
    return
  end
  local out, changed = expected_output(v)
  if not changed and not rawequal(res, v) then
    oracle("%s: nothing to change, yet the input was not returned as it is: %s", label, show(v))
  end
  if not same(out, res) then
    oracle("%s: sent %s, expected %s", label, show(res), show(out))
  end
  local mp = rawget(res, "multi_prompt")
  if mp ~= nil and next(mp) == nil and getmetatable(mp) ~= ARRAY_MT then
    oracle("%s: an empty multi_prompt is not marked to go out as []", label)
  end
  local ok2, res2 = models.validate(res) -- what goes out validates again, unchanged
  if not ok2 then oracle("%s: the normalised input is refused: %s", label, show(res2 and res2.errors)) end
  if not same(res, res2) then oracle("%s: normalising twice changed %s into %s", label, show(res), show(res2)) end
  -- what goes out has a JSON form, and reads back as exactly what was sent
  local text, why, path = json.encode_wire(res)
  if not text then oracle("%s: an accepted input cannot be written: %s: %s: %s", label, path, why, show(res)) end
  local back = json.decode_input(text)
  if not same(res, back) or (mp ~= nil and not json.is_array(rawget(back, "multi_prompt"))) then
    oracle("%s: %s reads back as %s", label, text, show(back))
  end
end

------------------------------------------------------------------ variants

-- Integral floats as Lua integers: what a Lua caller usually writes.
local function to_ints(v, done)
  if type(v) == "number" then return math.tointeger(v) or v end
  if type(v) ~= "table" then return v end
  done = done or {}
  if done[v] then return done[v] end
  local t = {}
  done[v] = t
  for k, x in next, v do t[to_ints(k, done)] = to_ints(x, done) end
  return setmetatable(t, getmetatable(v))
end

local function hostile(_) error("metamethod called", 0) end
local HOSTILE_MT = {
  __index = hostile, __newindex = hostile, __len = hostile, __pairs = hostile,
  __eq = hostile, __lt = hostile, __le = hostile, __call = hostile, __concat = hostile,
}

-- Values JSON cannot produce (or only in some places).
local ODD_VALUES = {
  function() return 0 / 0 end, function() return huge end, function() return -huge end,
  function() return math.maxinteger end, function() return math.mininteger end,
  function() return -0.0 end, function() return 2.0 ^ 63 end, function() return 1e308 end,
  function() return 5 end, function() return 5.0 end, function() return 5.5 end, function() return 3 end,
  function() return 15 end, function() return 16 end, function() return 0 end, function() return 1 end,
  function() return "" end, function() return " \t\n\v\f\r" end, function() return "x\0y" end,
  function() return "\0" end, function() return "\xff" end, function() return "\xed\xa0\x80" end,
  function() return "\xc0\x80" end, function() return "\xf4\x90\x80\x80" end, function() return "\xe2\x82" end,
  function() return "16:9" end, function() return "customize" end, function() return "1:1\0" end,
  function() return true end, function() return false end, function() return {} end,
  function() return setmetatable({}, ARRAY_MT) end, function() return cjson.null end,
  function() return print end, function() return io.stdout end, function() return coroutine.create(print) end,
  function() return { prompt = "p", duration = 3 } end, function() return { prompt = "p", duration = 3.0 } end,
  function() return string.rep("a", 5000) end, function() return nil end,
}

-- Keys JSON cannot produce in an object.
local ODD_KEYS = {
  function() return 1 end, function() return 0 end, function() return -1 end, function() return 1.5 end,
  function() return math.maxinteger end, function() return math.mininteger end, function() return huge end,
  function() return true end, function() return false end, function() return {} end, function() return print end,
  function() return "" end, function() return "prompt\0" end, function() return "duration\0x" end,
  function() return "PROMPT" end, function() return "aspect" end, function() return "sound\0" end,
}

-- Every place of v in a fixed order: { parent, key } pairs (root: parent nil).
local function places(v)
  local list, seen = { { nil, nil } }, {}
  local function walk(t, depth)
    if seen[t] or depth > MAX_DEPTH then return end
    seen[t] = true
    for _, k in ipairs(sorted_keys(t)) do
      list[#list + 1] = { t, k }
      local x = rawget(t, k)
      if type(x) == "table" then walk(x, depth + 1) end
    end
  end
  if type(v) == "table" then walk(v, 0) end
  return list
end

-- One mutation of (a copy of) v chosen by seed; returns the new value.
local function mutate(v, seed)
  v = copy(v)
  local list = places(v)
  local place = list[seed % #list + 1]
  local parent, key = place[1], place[2]
  local target
  if parent == nil then target = v else target = rawget(parent, key) end
  local action = (seed // 4099) % 9
  local pick = (seed // 65537)
  local function set(x)
    if parent == nil then v = x else rawset(parent, key, x) end
  end
  if action <= 2 then -- an odd value in this place
    set(ODD_VALUES[pick % #ODD_VALUES + 1]())
  elseif type(target) ~= "table" then -- the other actions need a table: number subtypes instead
    if type(target) == "number" then
      set(mtype(target) == "integer" and target + 0.0 or (math.tointeger(target) or target))
    else
      set(ODD_VALUES[pick % #ODD_VALUES + 1]())
    end
  elseif action == 3 then -- an odd key
    local k = ODD_KEYS[pick % #ODD_KEYS + 1]()
    if k ~= nil and k == k then rawset(target, k, ODD_VALUES[(pick // 7) % #ODD_VALUES + 1]() or 1) end
  elseif action == 4 then -- a hole in a list, or an item past its end
    local n = rawlen(target)
    if n > 0 and pick % 2 == 0 then rawset(target, (pick // 2) % n + 1, nil) else rawset(target, n + 2, "x") end
  elseif action == 5 then -- a metatable: the array mark, or one whose every metamethod raises
    setmetatable(target, pick % 2 == 0 and ARRAY_MT or HOSTILE_MT)
  elseif action == 6 then -- a cycle
    rawset(target, pick % 2 == 0 and "multi_prompt" or 1, v)
  elseif action == 7 then -- a known field's name with a NUL byte or another case
    local keys = sorted_keys(target)
    local k = keys[pick % math.max(#keys, 1) + 1]
    if type(k) == "string" then
      rawset(target, pick % 3 == 0 and k:upper() or k .. "\0" .. (pick % 3 == 1 and "" or "x"), rawget(target, k))
    end
  else -- the table as the items of a list
    set({ target, target })
  end
  return v
end

---------------------------------------------------------------------- run

return function(bytes, seed)
  local okd, v = pcall(cjson.decode, bytes)
  if not okd then return end
  check(v, "as decoded")
  local ints = to_ints(v)
  check(ints, "integers")
  check(mutate(v, seed), "mutated")
  check(mutate(ints, seed // 3 + 17), "integers, mutated")
  check(mutate(mutate(ints, seed // 5 + 101), seed // 11 + 7), "integers, mutated twice")
end
