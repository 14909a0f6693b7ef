--- kling resume [--out-dir DIR | --no-download]: wait for and download every unfinished job
-- of the journal.
local journal = require "kling.journal"
local exit = require "kling.cli.exit"
local files = require "kling.cli.files"
local context = require "kling.cli.context"
local display = require "kling.cli.display"

local EXIT = exit.EXIT

local C = {
  name = "resume",
  summary = "wait for (and download) every unfinished job of the journal",
  options = { "out-dir", "no-download", "force", "wait", "dl", "out", "api" },
  option_help = {
    ["out-dir"] = "where the videos go (default .)",
    ["no-download"] = "print each video's URL instead",
    force = "overwrite existing files",
    timeout = "how long to wait (default 1800)",
  },
  description = [[
Picks up every job of the journal that has not ended (a command killed or interrupted
mid-wait leaves them there), waits for them all at once with the live display, and
downloads each video into --out-dir DIR (default: the current directory, named from the
URL) unless --no-download (then prints the URLs). Jobs submitted to another API
(--base-url) are left alone. A submit of unknown outcome whose answer named a request id
is looked up: when the service knows it, it is recorded in the journal and collected with
the others.]],
  notes = "Ctrl-C (and SIGTERM, SIGHUP) stops waiting; nothing is cancelled.",
  examples = { "kling resume --out-dir videos" },
}

-- A submit of unknown outcome whose answer named a request id: looked up; a job the service
-- knows is recorded (a submitted line with its intent) and attached. Returns the unknown
-- submits that stay so.
local function look_up_unknown(ctx, unknown)
  local still = {}
  for _, u in ipairs(unknown) do
    if u.request_id and u.intent then
      local job = ctx.client:job(u.request_id, u.model)
      local status, err = job:refresh()
      if status then
        local ok, jerr = journal.open(ctx.journal_path):append { e = "submitted", id = job.id, intent = u.intent,
          model = u.model, urls = job.urls, tag = u.tag, digest = u.digest,
          note = "looked up by kling resume: the service knows the request id the submit's answer named" }
        if not ok then
          ctx:note(EXIT.io)
          ctx.display:warn(tostring(jerr))
        end
        ctx.display:warn("kling: the submit of unknown outcome " .. u.intent .. " was answered with request id "
          .. job.id .. ", which the service knows (" .. display.state_text(job.status, job.queue_position)
          .. "): collecting it")
        ctx.attached[#ctx.attached + 1] = job
      else
        u.message = (err.kind == "not_found" and "the service does not know its request id (most likely no job was "
          .. "created)" or ("its request id could not be looked up (" .. err.kind .. ": " .. err.message .. ")"))
          .. "; " .. tostring(u.message)
        still[#still + 1] = u
      end
    else
      still[#still + 1] = u
    end
  end
  return still
end

function C.run(o, pos)
  if #pos > 0 then exit.usage("resume", "unexpected argument '" .. pos[1] .. "'") end
  if o.no_journal then exit.usage("resume", "--no-journal: resume reads the journal") end
  local ctx = context.new("resume", o)
  if not ctx.journal_path then exit.usage("resume", "no journal (set HOME or XDG_STATE_HOME, or pass --journal PATH)") end
  local target = files.output_target("resume", o, ".")
  ctx.target = target
  local list, unknown = ctx:journal_jobs()
  if not list then return context.journal_failed(unknown) end
  local other = 0
  for _, j in ipairs(list) do
    if not j.status and context.valid_id(j.id) then
      if ctx:same_api(j) then
        ctx.attached[#ctx.attached + 1] = ctx.client:job(j.id, j.model)
      else
        other = other + 1
      end
    end
  end
  if other > 0 then
    ctx.display:warn(string.format("kling: %d unfinished job(s) in the journal belong to another API; not resumed", other))
  end
  context.report_unknown(look_up_unknown(ctx, unknown), "; they cannot be resumed")
  if #ctx.attached == 0 then
    ctx.display:warn("kling: nothing to resume in " .. ctx.journal_path)
    return EXIT.ok
  end
  return ctx:follow_all(target, function(job) return job.id .. "\t" end)
end

return C
