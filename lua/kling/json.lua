--- JSON in kling: every text kling writes comes from the C writer
-- (src/lua_jsonw.c); answers from the service and kling's own files are read
-- with lua-cjson; JSON a user gives (--input files, batch lines) is read
-- with dkjson, which keeps integers as Lua integers and marks arrays.
--
-- The writer's rules (README.md, "JSON on the wire"): a Lua integer goes out
-- with all its digits, a float as the shortest text that reads back as the
-- same double (an integral float keeps ".0"); a table marked with
-- M.array (core.json.array_mt), or with dkjson's mark (a metatable whose
-- __jsontype is "array", as dkjson.decode gives), is an array, [] when empty;
-- one with dkjson's "object" mark is an object; another table is an
-- array when its keys are exactly 1..n (n >= 1), an object when they are all
-- strings (written in sorted order), {} when it is empty; nil, cjson.null
-- (= M.null) and dkjson.null are null. NaN, infinities, functions, userdata,
-- mixed or sparse tables and other keys are refused with the path of the
-- value, and so are strings that are not UTF-8 on the wire.
local cjson = require "cjson"
local dkjson = require "dkjson"
local core = require "kling.core"

local M = {}

local ARRAY_MT = core.json.array_mt

--- The value that stands for JSON null (cjson.null, a NULL light userdata).
M.null = cjson.null

-- Three writers over the same code (each a C function with its own buffer).
local wire = core.json.encoder("wire", dkjson.null)
local text = core.json.encoder("text", dkjson.null)
local display = core.json.encoder("display", dkjson.null)

--- Marks t (or a new table) as a JSON array: it is written as an array,
-- `[]` when empty. Returns t.
function M.array(t)
  return setmetatable(t or {}, ARRAY_MT)
end

--- True when t carries the array mark.
function M.is_array(t)
  return type(t) == "table" and getmetatable(t) == ARRAY_MT
end

--- Writes v for the wire (a request body): every string must be UTF-8.
-- Returns the JSON text | nil, reason, path (e.g. "/image_urls/2": field
-- names, and list positions counted from 1).
M.encode_wire = wire

--- Writes v as JSON text for files and output (journal lines, batch state,
-- the CLI): bytes that are not UTF-8 become U+FFFD, so the text is always
-- valid UTF-8 JSON, and an integral float below 2^53 is written as an integer
-- (lua-cjson reads every number as a float: what it read as 3.0 was 3).
-- Returns the text; raises "kling.json: PATH: reason" for a value that has
-- no JSON form (NaN, a function, a sparse table...).
function M.encode(v)
  local s, why, path = text(v)
  if not s then error("kling.json: " .. path .. ": " .. why, 2) end
  return s
end

--- Writes v as M.encode does, for showing values that came from a server
-- (the CLI's --json output): NaN and infinities are written as null.
-- Raises only for values no server answer holds (functions, sparse tables).
function M.encode_display(v)
  local s, why, path = display(v)
  if not s then error("kling.json: " .. path .. ": " .. why, 2) end
  return s
end

local codec = cjson.new()
codec.decode_max_depth(core.json.max_depth) -- as deep as the writer writes (lua-cjson stops at 1000)

--- How deep JSON is written and answers are decoded: 4096 levels (this
-- decoder reads every answer of the service; src/defaults.h).
M.MAX_DEPTH = core.json.max_depth

--- Decodes JSON text (answers, kling's own files), nested up to M.MAX_DEPTH
-- levels. Returns the value, or raises like cjson.decode. Arrays are not
-- marked; null is M.null.
M.decode = codec.decode

local strict = cjson.new()
strict.decode_invalid_numbers(false) -- no NaN, Infinity or hex: JSON only

--- Decodes JSON text a user gave (an input file, a batch line) keeping what
-- it says: integers as Lua integers (64 bits; larger ones as the nearest
-- float), floats as floats, arrays marked with M.array (an empty one stays
-- an array), null as M.null. The text must be strict JSON (lua-cjson
-- checks it: no comments, no trailing commas, at most 1000 levels); dkjson
-- then reads the values. Returns the value | nil, message.
function M.decode_input(s)
  local ok, err = pcall(strict.decode, s)
  if not ok then return nil, tostring(err) end
  local v, _, derr = dkjson.decode(s, 1, M.null, nil, ARRAY_MT)
  if derr then return nil, tostring(derr) end
  return v
end

return M
