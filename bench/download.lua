-- Download throughput and memory: one SIZE-byte file from the emulator's
-- file host, fetched by `curl -o` and by job:download (each in its own
-- process, under /usr/bin/time), three times each, alternating.
--   lua5.4 bench/download.lua [SIZE_MB]
local util = dofile("bench/util.lua")
local kling = require "kling"

local MB = tonumber(arg[1]) or 500
local SIZE = MB * 1024 * 1024
local emu = util.start_emulator { "--token", "bench", "--queue", "0", "--run", "0" }
local client = kling.new { base_url = emu.api, token = "bench", poll = { initial = 0.05 } }
local job = assert(client:generate { prompt = "big @emu:bytes=" .. SIZE })
assert(job:wait())
local url = job.output.video
local dir = io.popen("mktemp -d"):read("l")

local function timed(cmd)
  local out = dir .. "/time.txt"
  assert(os.execute(string.format("/usr/bin/time -f '%%e %%M' -o %s %s", out, cmd)))
  local f = assert(io.open(out))
  local wall, rss = f:read("n", "n")
  f:close()
  return wall, rss / 1024
end

local kling_code = string.format([[
  local kling = require "kling"
  local c = kling.new { base_url = %q, token = "bench" }
  local job = assert(c:job(%q))
  assert(job:wait())
  assert(job:download(%q, { resume = false }))
]], emu.api, job.id, dir .. "/kling.bin")
local script = dir .. "/dl.lua"
local f = assert(io.open(script, "w"))
f:write(kling_code)
f:close()
local env = string.format("LUA_PATH='lua/?.lua;;' LUA_CPATH='build/?.so;;'")

local results = { curl = {}, curl_sync = {}, kling = {} }
for _ = 1, 3 do
  local w, r = timed(string.format("curl -s -o %s %s", dir .. "/curl.bin", url))
  table.insert(results.curl, { w, r })
  os.remove(dir .. "/curl.bin")
  -- the same, made durable as job:download makes it (fsync before it counts as done)
  w, r = timed(string.format("sh -c 'curl -s -o %s %s && sync %s'", dir .. "/curl.bin", url, dir .. "/curl.bin"))
  table.insert(results.curl_sync, { w, r })
  os.remove(dir .. "/curl.bin")
  w, r = timed(string.format("env %s lua5.4 %s", env, script))
  table.insert(results.kling, { w, r })
  local size = io.open(dir .. "/kling.bin"):seek("end")
  assert(size == SIZE, "kling downloaded " .. size)
  os.remove(dir .. "/kling.bin")
end
emu:stop()
os.execute("rm -rf " .. dir)

local function best(list)
  local w, r = math.huge, 0
  for _, x in ipairs(list) do
    if x[1] < w then w = x[1] end
    if x[2] > r then r = x[2] end
  end
  return w, r
end
local cw, cr = best(results.curl)
local sw = best(results.curl_sync)
local kw, kr = best(results.kling)
print(string.format("%d MiB: curl -o          %.2f s (%.0f MiB/s), peak RSS %.1f MiB", MB, cw, MB / cw, cr))
print(string.format("%d MiB: curl -o, sync    %.2f s (%.0f MiB/s)", MB, sw, MB / sw))
print(string.format("%d MiB: job:download     %.2f s (%.0f MiB/s), peak RSS %.1f MiB (the whole lua5.4 process, start-up and the job's status and result requests included)",
  MB, kw, MB / kw, kr))
print(string.format("throughput ratio kling / curl -o %.2f; kling / curl -o + sync %.2f (best of 3 each)", cw / kw, sw / kw))
