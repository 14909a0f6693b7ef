--- kling generate [PROMPT...|-] [options]: validate, submit, show progress, wait, download
-- the video. Also the submitting half of `kling submit` (C.submit_like).
local kling = require "kling"
local models = require "kling.models"
local json = require "kling.json"
local exit = require "kling.cli.exit"
local files = require "kling.cli.files"
local input = require "kling.cli.input"
local output = require "kling.cli.output"
local context = require "kling.cli.context"

local io = output.io -- luacheck: ignore (shadows the global on purpose: escaped streams)
local EXIT = exit.EXIT

local C = {
  name = "generate",
  summary = "submit a job, wait for it and download the video",
  args = "[PROMPT...|-]",
  argname = "PROMPT",
  args_help = "the prompt (several words are joined with spaces; - reads it from stdin)",
  options = { "input", "target", "no-download", "no-wait", "wait", "dl", "out", "api", "submit-timeout", "cost" },
  sections = { Input = "Input (the flags win over --input)" },
  description = "Submits one job (validated first: nothing is sent for an invalid input), shows its progress, "
    .. "waits until it ends and downloads the video.",
  notes = "Ctrl-C (and SIGTERM, SIGHUP) cancels the job while it is queued; once it runs it keeps running "
    .. "and `kling wait ID` collects it. A second one quits at once.",
  examples = {
    'kling generate "a red kite over a grey sea at dawn" --duration 5 -o kite.mp4',
    'kling generate --prompt-file prompt.txt --out-dir videos',
    'echo "a lighthouse in a storm" | kling generate - --no-download',
  },
}

-- Submits the validated input `sent` inside ctx:run, then (unless submit_only or
-- --no-wait) follows the job to target. Returns the exit code.
local function submit_and_follow(ctx, cmd, model, sent, target, submit_only)
  return ctx:run(function()
    local job, err = ctx:submit(model, sent, { tag = input.submit_tag(cmd, sent) })
    if not job then
      -- submit_unknown: the job may exist (never "not_submitted"), with the id the answer named
      -- when it named one; io: nothing was sent
      return ctx:fail(err, nil, nil, { model = model, id = err.request_id,
        status = err.kind == "submit_unknown" and "unknown" or "not_submitted" })
    end
    if job.journal_error then ctx:note(EXIT.io) end -- the id is printed; the journal lacks it
    if ctx.mode == "tty" then
      ctx.display:line("submitted " .. job.id .. "  (" .. model .. ")")
    else
      ctx.display:log(job.id .. " submitted (" .. model .. ")")
    end
    if submit_only or ctx.o.no_wait then
      if ctx.mode ~= "json" then io.stdout:write(job.id, "\n") end
      ctx:emit(job)
      return ctx.code
    end
    ctx:follow(job, target)
    return ctx.code
  end)
end

--- Validates, submits and (unless submit_only or --no-wait) follows one job: the command
-- `cmd` ("generate" or "submit") with options o and prompt words pos. Returns the exit code.
-- Nothing is sent for an invalid input (exit 3), with --dry-run, or when the output target
-- cannot be written (checked first).
function C.submit_like(o, pos, cmd, submit_only)
  local model = o.model or kling.DEFAULT_MODEL
  if not models.valid_model_id(model) then exit.usage(cmd, "invalid model id '" .. model .. "'") end
  local given = input.build(cmd, o, pos)
  local ctx = context.new(cmd, o, { client = false })
  local target
  if not submit_only and not o.no_wait then target = files.output_target(cmd, o, ".") end
  local ok, sent = kling.validate(given, model)
  if not ok then
    ctx.display:warn("kling: the input is not valid for " .. model .. " (nothing was sent):\n  "
      .. table.concat(input.validation_lines(sent), "\n  "))
    if ctx.mode == "json" then
      io.stdout:write(json.encode { model = model, status = "invalid", error = output.error_object(sent) }, "\n")
    end
    return EXIT.validation
  end
  if o.dry_run then
    io.stdout:write(assert(json.encode_wire(sent)), "\n") -- validated: it has a JSON form
    return EXIT.ok
  end
  ctx:make_client()
  ctx.target = target
  return submit_and_follow(ctx, cmd, model, sent, target, submit_only)
end

function C.run(o, pos)
  return C.submit_like(o, pos, "generate", false)
end

return C
