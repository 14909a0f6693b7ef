-- Two clips generated inside a cqueues controller, next to the program's own
-- coroutines: kling waits through cqueues.poll on the client, so nothing blocks.
--   lua5.4 examples/cqueues.lua
-- Uses $RUNCOMFY_TOKEN and $RUNCOMFY_MODEL_API_BASE (the emulator's URL, say).
local cqueues = require "cqueues"
local kling = require "kling"

local client = kling.new()
local cq = cqueues.new()
local pending = 2

cq:wrap(function() -- the program's own work goes on meanwhile
  while pending > 0 do
    io.write(".")
    io.flush()
    cqueues.sleep(0.5)
  end
  print()
end)

for _, prompt in ipairs { "a lighthouse in a storm", "a fox in fresh snow" } do
  cq:wrap(function()
    local job = assert(client:generate { prompt = prompt })
    local out = assert(job:wait())
    print("\n" .. prompt .. " -> " .. out.video)
    pending = pending - 1
  end)
end

assert(cq:loop())
