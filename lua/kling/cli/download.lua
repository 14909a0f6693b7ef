--- kling download ID... [-o FILE | --out-dir DIR]: wait if needed, then download.
local exit = require "kling.cli.exit"
local files = require "kling.cli.files"
local context = require "kling.cli.context"

local C = {
  name = "download",
  summary = "download a job's video (waiting for it first)",
  args = "ID...",
  argname = "ID",
  args_help = "request ids",
  options = { "target", "wait", "dl", "model", "out", "api" },
  option_help = {
    output = "the file (one id only)",
    ["out-dir"] = "the directory (default .)",
    force = "overwrite an existing file",
    timeout = "how long to wait for a job that has not ended (default 1800)",
  },
  description = "Waits for the job when it has not ended, then streams its video to FILE.part and renames it "
    .. "FILE when complete. Without -o the file is named from the URL, in --out-dir DIR (default: the current "
    .. "directory); an existing file is never overwritten without --force (another name is chosen in a "
    .. "directory).",
  notes = [[
The bounds of --stall-timeout, --min-rate and --download-deadline are the library's
(kling.client.DOWNLOAD_BOUNDS); a value outside them is refused before anything is
sent (exit 2).

FILE.part is gone on from only when it is known to be the same file and a validator
guards it: its sidecar FILE.part.meta records the URL, the length and the file host's
ETag or Last-Modified, and the request carries If-Range. With a strong ETag the URL's
query string may change (pre-signed URLs); with only a Last-Modified (a second older
than the answer) the whole URL must be the same; with neither, every try starts over
and nothing is kept. A local disk error (full, read-only, too large) exits 8 and keeps
what arrived in FILE.part. Only one download writes FILE at a time (FILE.part.lock): a
second one exits 8 at once, before anything is sent. Ctrl-C, SIGTERM and SIGHUP keep
the bytes that arrived in FILE.part for the next run.]],
  examples = { "kling download 3f0c... --out-dir videos",
    "kling download 3f0c... -o clip.mp4 --download-deadline 600" },
}

function C.run(o, pos)
  if #pos == 0 then exit.usage("download", "give a request id") end
  if o.output and #pos > 1 then exit.usage("download", "-o FILE takes one id; use --out-dir DIR for several") end
  local ctx = context.new("download", o)
  local target = files.output_target("download", o, ".")
  for _, id in ipairs(pos) do ctx:attach(id) end
  return ctx:follow_all(target, #pos > 1 and function(job) return job.id .. "\t" end or nil)
end

return C
