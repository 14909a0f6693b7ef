--- kling.cli.options: every option of the command-line tool, stated once: its name (and
-- short alias), its value's name, its kind (how the text is converted and checked), the
-- section of --help it is listed in, and its help line. Commands pick options by name or
-- by group (kling.cli.parser builds lua-argparse parsers from them; kling.cli.manpage
-- writes the manual page from them).
--
-- Kinds: "flag" (no value), "string", "number", "positive" (seconds > 0), "count" (a whole
-- number >= 1), "list" (a string, repeatable), "dl:OPTION" (a download option of
-- job:download, checked against the library's own bounds: kling.client.DOWNLOAD_BOUNDS).
local client_lib = require "kling.client"
local models = require "kling.models"

local M = {}

local DEFAULT_MODEL = models.DEFAULT_MODEL

-- The help line of a download option, from the library's bounds (never typed twice).
local function dl_help(option, what, default)
  return what .. " (default " .. default .. "; " .. client_lib.download_option_rule(option) .. ")"
end

--- The options, in the order --help lists them within a section.
M.LIST = {
  -- input of generate and submit
  { name = "prompt-file", arg = "PATH", kind = "string", section = "Input",
    help = "read the prompt from PATH (- for stdin); as the PROMPT - does" },
  { name = "duration", arg = "N", kind = "number", section = "Input", help = "seconds, 3 to 15" },
  { name = "aspect-ratio", arg = "R", kind = "string", section = "Input", help = "16:9, 9:16 or 1:1" },
  { name = "negative-prompt", arg = "T", kind = "string", section = "Input", help = "what to keep out of the video" },
  { name = "cfg-scale", arg = "X", kind = "number", section = "Input", help = "0 to 1" },
  { name = "no-sound", kind = "flag", section = "Input", help = "sound off (sound=false)" },
  { name = "sound", kind = "flag", section = "Input", help = "sound on (sound=true)" },
  { name = "shot", arg = "PROMPT:SECONDS", kind = "list", section = "Input",
    help = "one shot of a multi-shot video (repeatable: multi_prompt; duration is their sum)" },
  { name = "set", arg = "FIELD=VALUE", kind = "list", section = "Input",
    help = "set input field FIELD to VALUE, read as JSON (a bare word is a string; repeatable): for fields "
      .. "without a flag of their own, of any model" },
  { name = "file", arg = "FIELD=PATH", kind = "list", section = "Input",
    help = "a local file as a data: URI in field FIELD (repeatable; e.g. image_url=first.png); type from its "
      .. "first bytes; refused above 6 MiB (image), 32 MiB (video), 16 MiB (audio)" },
  { name = "input", arg = "FILE", kind = "string", section = "Input",
    help = "a JSON object to start from (- reads stdin), sent as it is written" },
  { name = "model", arg = "ID", kind = "string", section = "Input", help = "the model (default " .. DEFAULT_MODEL .. ")" },
  { name = "dry-run", kind = "flag", section = "Input", help = "validate and print the JSON that would be sent; send nothing" },
  -- where videos go
  { name = "output", short = "o", arg = "FILE", kind = "string", section = "Output",
    help = "save the video as FILE (refused if FILE exists, without --force)" },
  { name = "out-dir", arg = "DIR", kind = "string", section = "Output",
    help = "save the video in DIR under the name from its URL (default: .)" },
  { name = "no-download", kind = "flag", section = "Output", help = "wait, then print the video's URL instead" },
  { name = "no-wait", kind = "flag", section = "Output", help = "print the request id once submitted, and exit" },
  { name = "force", kind = "flag", section = "Output", help = "overwrite an existing output file" },
  { name = "timeout", arg = "S", kind = "positive", section = "Output",
    help = "give up waiting after S seconds (default 1800; exit 6, the job goes on)" },
  { name = "stall-timeout", arg = "S", kind = "dl:stall_timeout", section = "Output",
    help = dl_help("stall_timeout", "a download try that stays under --min-rate for S seconds ends; the next goes on "
      .. "from FILE.part", "30") },
  { name = "min-rate", arg = "N", kind = "dl:min_rate", section = "Output",
    help = dl_help("min_rate", "bytes per second below which a try is too slow", "1024") },
  { name = "download-deadline", arg = "S", kind = "dl:deadline", section = "Output",
    help = dl_help("deadline", "give up the download after S seconds, retries included; exit 6, FILE.part is kept",
      "none") },
  -- the journal's commands
  { name = "all", kind = "flag", section = "Options", help = "every job, ended ones too" },
  { name = "refresh", kind = "flag", section = "Options", help = "ask the service for the current status of the jobs "
    .. "that have not ended" },
  { name = "forget", kind = "flag", section = "Options", help = "mark the jobs ID... as ended in the journal (see above)" },
  { name = "compact", kind = "flag", section = "Options", help = "drop the jobs that have ended (and answered submits) "
    .. "from the journal; unreadable lines are kept, and counted" },
  -- batch
  { name = "concurrency", arg = "N", kind = "count", section = "Options", help = "jobs in flight at once (default 4)" },
  { name = "retry-failed", kind = "flag", section = "Options",
    help = "submit again the lines whose job failed or was cancelled" },
  { name = "retry-unknown", kind = "flag", section = "Options", help = "submit again the lines whose earlier submit "
    .. "has an unknown outcome (it may have created a billed job)" },
  -- models (the catalog)
  { name = "search", arg = "TEXT", kind = "string", section = "Options",
    help = "only the models whose id, name or description holds TEXT" },
  { name = "category", arg = "NAME", kind = "string", section = "Options",
    help = "only the models of category NAME (e.g. text-to-video)" },
  -- how results are shown
  { name = "json", kind = "flag", section = "Output", help = "one JSON object per job on stdout, nothing else" },
  { name = "quiet", short = "q", kind = "flag", section = "Output", help = "plain log lines instead of the live display" },
  -- the connection
  { name = "token-file", arg = "PATH", kind = "string", section = "Connection",
    help = "read the token from PATH (default: $RUNCOMFY_TOKEN, then $RUNCOMFY_API_TOKEN, then $RUNCOMFY_API_KEY)" },
  { name = "base-url", arg = "URL", kind = "string", section = "Connection",
    help = "the API (default: $RUNCOMFY_MODEL_API_BASE, or RunComfy's)" },
  { name = "ca-file", arg = "PATH", kind = "string", section = "Connection", help = "CA bundle to verify the server "
    .. "with (default: $CURL_CA_BUNDLE, then $SSL_CERT_FILE, then the system's); verification is never off" },
  { name = "journal", arg = "PATH", kind = "string", section = "Connection",
    help = "the job journal (default: $XDG_STATE_HOME/kling/jobs.jsonl); its directory must exist" },
  { name = "no-journal", kind = "flag", section = "Connection", help = "keep no journal" },
  { name = "submit-timeout", arg = "S", kind = "positive", section = "Connection",
    help = "wait up to S seconds for a submit's answer (default 90, as RunComfy's own clients wait 60-120 s; a "
      .. "submit not answered in time has an unknown outcome and is never sent again)" },
  { name = "cost", kind = "flag", section = "Output", help = "ask the service for each finished job's cost "
    .. "(include_cost): in --json and the journal (kling jobs)" },
}

--- name -> option (also by its short alias).
M.BY_NAME = {}
for _, opt in ipairs(M.LIST) do
  M.BY_NAME[opt.name] = opt
  if opt.short then M.BY_NAME[opt.short] = opt end
end

--- Groups of options several commands take.
M.GROUPS = {
  input = { "prompt-file", "duration", "aspect-ratio", "negative-prompt", "cfg-scale", "no-sound", "sound", "shot",
    "input", "set", "file", "model", "dry-run" },
  target = { "output", "out-dir", "force" },
  wait = { "timeout" },
  dl = { "stall-timeout", "min-rate", "download-deadline" },
  out = { "json", "quiet" },
  api = { "token-file", "base-url", "ca-file", "journal", "no-journal" },
  model = { "model" },
}

--- The options a command takes: its list of group and option names, resolved to
-- options in --help's order (each once).
function M.resolve(names)
  local want = {}
  for _, n in ipairs(names) do
    if M.GROUPS[n] then
      for _, m in ipairs(M.GROUPS[n]) do want[m] = true end
    else
      want[assert(M.BY_NAME[n], "no option named " .. n).name] = true
    end
  end
  local list = {}
  for _, opt in ipairs(M.LIST) do
    if want[opt.name] then list[#list + 1] = opt end
  end
  return list
end

--- The converter of an option: text -> value | nil, message (the message says which
-- option and what it wants).
function M.converter(opt)
  local name, kind = opt.name, opt.kind
  if kind == "string" or kind == "list" then return nil end
  local option = kind:match("^dl:(.+)$")
  return function(text)
    local n = tonumber(text)
    if option then
      local ok, why = client_lib.check_download_option(option, n)
      if not n or not ok then
        return nil, "--" .. name .. " "
          .. (n and why:gsub(", got .*$", "") or ("must be " .. client_lib.download_option_rule(option)))
          .. ", got '" .. text .. "'"
      end
      return math.tointeger(n) or n
    elseif kind == "number" then
      if not n then return nil, "--" .. name .. " wants a number, got '" .. text .. "'" end
      return math.tointeger(n) or n
    elseif kind == "positive" then
      if not n or not (n > 0) or n == math.huge then
        return nil, "--" .. name .. " wants a number of seconds > 0, got '" .. text .. "'"
      end
      return n
    elseif kind == "count" then
      n = n and math.tointeger(n)
      if not n or n < 1 then return nil, "--" .. name .. " wants a whole number >= 1, got '" .. text .. "'" end
      return n
    end
    error("unknown option kind " .. tostring(kind))
  end
end

--- Does the option take a value?
function M.takes_value(opt)
  return opt.kind ~= "flag"
end

return M
