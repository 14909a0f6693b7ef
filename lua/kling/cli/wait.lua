--- kling wait ID... [-o FILE | --out-dir DIR]: wait until the jobs end; print the URLs, or download.
local exit = require "kling.cli.exit"
local files = require "kling.cli.files"
local context = require "kling.cli.context"

local C = {
  name = "wait",
  summary = "wait for jobs to end (and download with -o/--out-dir)",
  args = "ID...",
  argname = "ID",
  args_help = "request ids",
  options = { "wait", "target", "dl", "model", "out", "api", "cost" },
  option_help = {
    output = "download the video to FILE (one id only)",
    ["out-dir"] = "download into DIR (file name from the URL)",
    timeout = "give up after S seconds (default 1800; exit 6, the job goes on)",
  },
  description = "Waits until each job ends, with the live display, and prints the video URL, or downloads the "
    .. "video with -o FILE (one job) or --out-dir DIR.",
  notes = "Ctrl-C (and SIGTERM, SIGHUP) stops waiting; the jobs are not cancelled.",
  examples = { "kling wait 3f0c... 9a1b...        # prints ID<TAB>URL per job",
    "kling wait 3f0c... -o clip.mp4" },
}

function C.run(o, pos)
  if #pos == 0 then exit.usage("wait", "give a request id") end
  if o.output and #pos > 1 then exit.usage("wait", "-o FILE takes one id; use --out-dir DIR for several") end
  local ctx = context.new("wait", o)
  local target = (o.output or o.out_dir) and files.output_target("wait", o, nil) or nil
  for _, id in ipairs(pos) do ctx:attach(id) end
  return ctx:follow_all(target, #pos > 1 and function(job) return job.id .. "\t" end or nil)
end

return C
