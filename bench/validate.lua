-- Validation speed, and the request body writer's, against lua-cjson encoding of
-- the same input, in one process.
--   lua5.4 bench/validate.lua [iterations]
-- Prints validations per second for a typical input and a full five-segment
-- multi_prompt input, beside cjson.encode of the same table, and the ratio
-- (validate time / encode time; below 1 means validating costs less); then the
-- same for the writer that makes the request body (kling.json.encode_wire, the C
-- writer of src/lua_jsonw.c; on a tree from before it, kling.json.encode: lua-cjson
-- plus the walk that marked empty arrays), on the input as validated.
package.path = "lua/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local kling = require "kling"
local cjson = require "cjson"
local json = require "kling.json"

local N = tonumber(arg[1]) or 200000

local typical = {
  prompt = "A red kite dances over a grey sea at dawn, slow dolly shot, cinematic light, 35mm film grain",
  negative_prompt = "blur, watermark, text",
  duration = 10,
  aspect_ratio = "16:9",
  cfg_scale = 0.5,
  sound = true,
}

local multi = {
  prompt = "A day at the harbour, from dawn to night, one continuous camera move",
  negative_prompt = "blur, watermark",
  aspect_ratio = "16:9",
  cfg_scale = 0.6,
  sound = true,
  shot_type = "customize",
  duration = 15,
  multi_prompt = {
    { prompt = "Dawn: fishing boats leave the harbour in mist", duration = 3 },
    { prompt = "Morning: gulls circle over the fish market", duration = 3 },
    { prompt = "Noon: children jump from the pier into green water", duration = 3 },
    { prompt = "Evening: the lighthouse lamp starts to turn", duration = 3 },
    { prompt = "Night: lanterns reflect on the still water", duration = 3 },
  },
}

local function time(fn, input)
  for _ = 1, N // 20 do fn(input) end -- warm up
  collectgarbage()
  local t0 = os.clock()
  for _ = 1, N do fn(input) end
  return os.clock() - t0
end

local function row(name, input)
  assert(kling.validate(input))
  local v = time(kling.validate, input)
  local e = time(cjson.encode, input)
  print(string.format("%-22s validate %9.0f/s   cjson.encode %9.0f/s   ratio %.2f", name, N / v, N / e, v / e))
end

local body_writer, writer_name = json.encode_wire, "encode_wire"
if not body_writer then body_writer, writer_name = json.encode, "json.encode" end

local function writer_row(name, input)
  local _, sent = assert(kling.validate(input))
  assert(body_writer(sent))
  local w = time(body_writer, sent)
  local e = time(cjson.encode, sent)
  print(string.format("%-22s %-11s %9.0f/s   cjson.encode %9.0f/s   ratio %.2f", name, writer_name, N / w, N / e, w / e))
end

print(string.format("%d iterations each, CPU time (os.clock), Lua %s, lua-cjson %s", N, _VERSION, cjson._VERSION))
row("typical input", typical)
row("five-segment input", multi)
writer_row("typical input", typical)
writer_row("five-segment input", multi)
