-- A clip generated inside a luv (libuv) program: kling's waits yield the
-- coroutine they run in, and a poll handle on the client resumes it.
--   lua5.4 examples/luv.lua
-- Uses $RUNCOMFY_TOKEN and $RUNCOMFY_MODEL_API_BASE (the emulator's URL, say).
local uv = require "luv"
local kling = require "kling"

kling.set_waiter(require("kling.loops").luv(uv))
local client = kling.new()

local ticker = uv.new_timer() -- the program's own work goes on meanwhile
ticker:start(500, 500, function()
  io.write(".")
  io.flush()
end)

coroutine.wrap(function()
  local job = assert(client:generate { prompt = "a paper boat on a rainy street" })
  local out = assert(job:wait())
  print("\nvideo: " .. out.video)
  ticker:stop()
  ticker:close()
end)()

uv.run()
