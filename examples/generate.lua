-- Generate one clip and download it.
--   lua5.4 examples/generate.lua "a red kite over a grey sea" kite.mp4
-- Uses $RUNCOMFY_TOKEN and, when set, $RUNCOMFY_MODEL_API_BASE (the emulator's URL).
local kling = require "kling"

local prompt = arg[1] or "A red kite dances over a grey sea at dawn, slow dolly shot"
local path = arg[2] or "kling-clip.mp4"

local job, err = kling.generate { prompt = prompt, duration = 5, aspect_ratio = "16:9" }
if not job then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end
print("submitted " .. job.id)

local out
out, err = job:wait {
  on_update = function(j)
    print(string.format("  %-11s%s", j.status, j.queue_position and (" queue position " .. j.queue_position) or ""))
  end,
}
if not out then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end
print("video at " .. out.video)

local saved, bytes = job:download(path)
if not saved then
  io.stderr:write(tostring(bytes), "\n")
  os.exit(1)
end
print(string.format("downloaded %s (%d bytes)", saved, bytes))
