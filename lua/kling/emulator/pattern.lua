--- kling.emulator.pattern: the bytes a job's file is made of.
--
-- Either the sample MP4 (kling.emulator_video, loaded on first use) or N bytes of the test
-- pattern, byte i = (i * 31 + 7) % 251, starting at an offset of the job's own
-- (@emu:pattern=K, moved on by 7 for each change of the file).
local M = {}

local concat, min = table.concat, math.min

M.CHUNK = 64 * 1024 -- the largest piece read from a source at once (the writer's unit)
local CHUNK = M.CHUNK

local PERIOD = 251
local pattern_block
do
  local cycle = {}
  for i = 0, PERIOD - 1 do cycle[i + 1] = string.char((i * 31 + 7) % PERIOD) end
  cycle = concat(cycle)
  -- long enough that any CHUNK-sized window starting inside the first period fits
  pattern_block = cycle:rep((CHUNK + PERIOD) // PERIOD + 1)
end

--- The pattern bytes [offset, offset + n) for n <= CHUNK.
local function chunk(offset, n)
  local start = offset % PERIOD
  return pattern_block:sub(start + 1, start + n)
end
M.chunk = chunk

--- The pattern bytes [offset, offset + n) as a string.
-- @param offset integer >= 0
-- @param n integer >= 0
-- @return string of n bytes
function M.bytes(offset, n)
  local parts = {}
  while n > 0 do
    local take = min(n, CHUNK)
    parts[#parts + 1] = chunk(offset, take)
    offset, n = offset + take, n - take
  end
  return concat(parts)
end

local sample -- loaded on first use
--- The bytes of the sample MP4 every job serves by default.
function M.sample()
  sample = sample or require "kling.emulator_video"
  return sample
end

--- The byte source of a job's file: { size = n, read = function(offset, n) -> string }.
-- Pattern bytes start at the job's shift, moved on by 7 for each version of the file, so
-- that every version differs at every byte.
function M.source(job)
  if job.bytes then
    local shift = job.shift + 7 * job.version
    if shift == 0 then return { size = job.bytes, read = chunk } end
    return { size = job.bytes, read = function(offset, n) return chunk(offset + shift, n) end }
  end
  local data = M.sample()
  return { size = #data, read = function(offset, n) return data:sub(offset + 1, offset + n) end }
end

--- The size of a job's file now (bytes).
function M.size(job)
  return job.bytes or #M.sample()
end

return M
