--- kling status ID...: each job's status now (queue position, video URL, reason of a failure).
local output = require "kling.cli.output"
local exit = require "kling.cli.exit"
local context = require "kling.cli.context"
local display = require "kling.cli.display"
local video_of = require("kling.job").video_of

local io = output.io -- luacheck: ignore (shadows the global on purpose: escaped streams)

local C = {
  name = "status",
  summary = "show a job's status",
  args = "ID...",
  argname = "ID",
  args_help = "request ids",
  options = { "model", "out", "api" },
  option_help = {
    json = 'one {"id", "model", "status", "queue_position", "video", "error"} per job',
    model = "the model, for display (default: from the journal)",
  },
  description = "Asks the service for each job's status now: queued (with the queue position), running, "
    .. "completed (with the video URL), failed (with the reason) or cancelled. Exit code 0 when every status "
    .. "was read.",
  examples = { "kling status 3f0c...     # 3f0c...  queued, position 2" },
}

-- The status line of a job (its result too, once it has ended): the extra text, the error.
local function ended_extra(job)
  if job.status ~= "completed" and job.status ~= "failed" and job.status ~= "cancelled" then return "" end
  local out, rerr = job:result()
  if out then return "  " .. output.escape(job.video_url or video_of(out)) end
  if rerr and rerr.kind ~= "cancelled" then return "  " .. output.escape(rerr.message), rerr end
  return ""
end

function C.run(o, pos)
  if #pos == 0 then exit.usage("status", "give a request id") end
  local ctx = context.new("status", o)
  for _, id in ipairs(pos) do ctx:attach(id) end
  return ctx:run(function()
    for _, job in ipairs(ctx.attached) do
      local status, err = job:refresh()
      if not status then
        ctx:fail(err, job)
      else
        local extra, e = ended_extra(job)
        if ctx.mode == "json" then
          ctx:emit(job, e and { error = e } or nil)
        else
          io.stdout:write(job.id, "  ", display.state_text(job.status, job.queue_position), extra, "\n")
        end
      end
    end
    return ctx.code
  end)
end

return C
