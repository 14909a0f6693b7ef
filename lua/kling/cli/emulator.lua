--- kling emulator [flags]: the local emulator of the API (bin/kling-emulator); every word
-- after the command goes to it as it is.
return {
  name = "emulator",
  summary = "run the local emulator of the API (kling emulator --help)",
  args = "[FLAGS...]",
  args_help = "kling-emulator's flags (kling emulator --help lists them)",
  passthrough = true,
  description = [[
Runs the local emulator of RunComfy's Model API (the same as kling-emulator; see
doc/EMULATOR.md). Its first line gives the URL to point kling at:
  kling emulator --port 0 --queue 2 --run 5 &
  export RUNCOMFY_MODEL_API_BASE=http://127.0.0.1:PORT/v1 RUNCOMFY_TOKEN=anything]],
  run = function(_, argv) return require("kling.emulator").main(argv) end,
}
