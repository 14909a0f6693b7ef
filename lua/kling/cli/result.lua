--- kling result ID: the result now, without waiting.
local json = require "kling.json"
local exit = require "kling.cli.exit"
local output = require "kling.cli.output"
local context = require "kling.cli.context"
local display = require "kling.cli.display"
local video_of = require("kling.job").video_of

local io = output.io -- luacheck: ignore (shadows the global on purpose: escaped streams)
local EXIT = exit.EXIT

local C = {
  name = "result",
  summary = "fetch a job's result now (no waiting)",
  args = "ID",
  argname = "ID",
  args_help = "a request id",
  options = { "model", "out", "api", "cost" },
  option_help = { json = "the job's object, its whole output included" },
  description = "Fetches the job's result once, without waiting: prints the video URL of a completed job (with "
    .. "--json: the whole output). A job that has not ended gives exit code 6; a failed or cancelled one exit "
    .. "code 5.",
  examples = { "kling result 3f0c...      # the video URL now; exit 6 if the job has not ended" },
}

function C.run(o, pos)
  if #pos == 0 then exit.usage("result", "give a request id") end
  if #pos > 1 then exit.usage("result", "give one request id") end
  local ctx = context.new("result", o)
  local job = ctx:attach(pos[1])
  return ctx:run(function()
    local out, err = job:result()
    if not out then
      if err.kind == "not_ready" then
        ctx.display:warn("kling: " .. job.id .. " has not ended ("
          .. display.state_text(job.status, job.queue_position) .. "); wait for it with: kling wait " .. job.id)
        ctx:emit(job, { error = err })
        return ctx:note(EXIT.timeout)
      end
      return ctx:fail(err, job)
    end
    if ctx.mode == "json" then
      ctx:emit(job)
    else
      io.stdout:write(output.escape(job.video_url or video_of(out) or json.encode_display(out)), "\n")
    end
    return EXIT.ok
  end)
end

return C
