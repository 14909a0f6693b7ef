--- kling cancel ID...: cancel jobs that are still queued.
local exit = require "kling.cli.exit"
local output = require "kling.cli.output"
local context = require "kling.cli.context"

local io = output.io -- luacheck: ignore (shadows the global on purpose: escaped streams)

local C = {
  name = "cancel",
  summary = "cancel a queued job",
  args = "ID...",
  argname = "ID",
  args_help = "request ids",
  options = { "model", "out", "api" },
  description = "Cancels each job while it is still queued. A job that already runs cannot be cancelled: exit "
    .. "code 5 (it keeps running; kling wait ID collects it). A cancel the service accepts but has not made "
    .. "final yet (status cancellation_requested) is followed for up to 60 s until the status says cancelled; "
    .. "if it does not by then, the line says \"cancellation requested\" (exit 0).",
  examples = { "kling cancel 3f0c...      # exit 5 if it already runs" },
}

function C.run(o, pos)
  if #pos == 0 then exit.usage("cancel", "give a request id") end
  local ctx = context.new("cancel", o)
  for _, id in ipairs(pos) do ctx:attach(id) end
  return ctx:run(function()
    for _, job in ipairs(ctx.attached) do
      local ok, err = job:cancel()
      if ok then
        -- accepted but not final yet: job.cancel_requested, its status not cancelled
        if ctx.mode == "json" then ctx:emit(job)
        else io.stdout:write(job.id, job.status ~= "cancelled" and "  cancellation requested\n" or "  cancelled\n") end
      else
        ctx:fail(err, job)
      end
    end
    return ctx.code
  end)
end

return C
