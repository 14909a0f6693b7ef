--- kling.cli.input: what the user gives a command as input, read as written.
--
-- The input of generate and submit: --input FILE.json (or - for stdin), then the flags,
-- then the prompt: PROMPT words, `-` (the prompt is stdin's text) or --prompt-file PATH.
-- JSON the user wrote is decoded with kling.json.decode_input (dkjson: integers with all
-- their digits, [] stays an array), so it reaches the service as it was written. Also:
-- the lines of a batch file and their parts (input, key, model), and the lines of a
-- validation error.
local json = require "kling.json"
local models = require "kling.models"
local exit = require "kling.cli.exit"
local format = require "kling.cli.format"
local output = require "kling.cli.output"

local io = output.io -- luacheck: ignore (stdin through kling.cli.output: a spec can give its own)

local M = {}

--- The text of path ("-": stdin). A file that cannot be read is a usage error of cmd
-- naming `what`.
function M.read_source(cmd, path, what)
  local text
  if path == "-" then
    text = io.stdin:read("a")
  else
    local f, err = io.open(path, "rb")
    if not f then exit.usage(cmd, what .. ": " .. tostring(err)) end
    text = f:read("a")
    f:close()
    if text == nil then exit.usage(cmd, what .. ": cannot read " .. path) end
  end
  return text or ""
end

--- JSON the user gave, read as it is written (integers stay integers, [] stays an
-- array): the object | nil, why ("not valid JSON: ...", "not a JSON object").
function M.decode_object(text)
  local v, err = json.decode_input(text)
  if v == nil then return nil, "not valid JSON: " .. tostring(err):gsub("^.-: ", "") end
  if type(v) ~= "table" or not format.trim(text):match("^{") then return nil, "not a JSON object" end
  return v
end

-- FIELD=VALUE of --set and --file: a top-level field name (not empty, no "=").
local function field_value(cmd, flag, s, shape)
  local field, value = s:match("^([^=]+)=(.*)$")
  if not field or not field:find("^[%w_.-]+$") then
    exit.usage(cmd, flag .. " wants " .. shape .. " (a field name of letters, digits, '_', '.' or '-'), got '" .. s .. "'")
  end
  return field, value
end

-- --shot "PROMPT:SECONDS"
local function parse_shot(cmd, s)
  local prompt, secs = s:match("^(.*):%s*([^:]-)%s*$")
  local n = secs and tonumber(secs)
  if not prompt or not n then exit.usage(cmd, "--shot wants \"PROMPT:SECONDS\", got '" .. s .. "'") end
  return { prompt = prompt, duration = math.tointeger(n) or n }
end

--- The prompt of generate/submit from its positional words (several are joined with
-- spaces; the one word `-` reads stdin) or --prompt-file PATH (`-`: stdin): the text,
-- its trailing line breaks removed, or nil when none was given.
-- Where the prompt comes from: the path to read ("-": stdin), or nil for its words.
-- Raises a usage error for two sources, or stdin asked for twice (before reading any).
local function prompt_source(cmd, o, pos)
  if o.prompt_file and #pos > 0 then
    exit.usage(cmd, "give the prompt as words, as - (stdin) or with --prompt-file, not both")
  end
  local path = o.prompt_file or ((#pos == 1 and pos[1] == "-") and "-") or nil
  if path == "-" and o.input == "-" then
    exit.usage(cmd, "stdin is read once: --input - and a prompt from stdin cannot both be used")
  end
  return path
end

function M.prompt(cmd, o, pos)
  local path = prompt_source(cmd, o, pos)
  if not path then
    if #pos == 0 then return nil end
    return table.concat(pos, " ")
  end
  local what = path == "-" and "the prompt from stdin" or ("--prompt-file " .. path)
  return (M.read_source(cmd, path, what):gsub("[\r\n]+$", ""))
end

--- The input of generate/submit: --input FILE, then the flags and the prompt over it.
-- Raises a usage error for what cannot be read or does not parse.
function M.build(cmd, o, pos)
  prompt_source(cmd, o, pos) -- (its refusals come before anything is read)
  local input = {}
  if o.input then
    local obj, err = M.decode_object(M.read_source(cmd, o.input, "--input"))
    if not obj then exit.usage(cmd, "--input " .. o.input .. ": " .. err) end
    input = obj
  end
  local prompt = M.prompt(cmd, o, pos)
  if prompt then input.prompt = prompt end
  if o.duration ~= nil then input.duration = o.duration end
  if o.aspect_ratio then input.aspect_ratio = o.aspect_ratio end
  if o.negative_prompt then input.negative_prompt = o.negative_prompt end
  if o.cfg_scale ~= nil then input.cfg_scale = o.cfg_scale end
  if o.no_sound and o.sound then exit.usage(cmd, "--sound and --no-sound contradict each other") end
  if o.no_sound then input.sound = false end
  if o.sound then input.sound = true end
  if o.shot then
    local shots = json.array {}
    for _, s in ipairs(o.shot) do shots[#shots + 1] = parse_shot(cmd, s) end
    input.multi_prompt = shots
  end
  -- The fields the prompt and the flags of their own gave: --set and --file may not give them
  -- again, nor one field twice (two values for one field are refused, never one dropped);
  -- a field of --input FILE is the start, which they replace.
  local given = {}
  if prompt then given.prompt = "the prompt" end
  for _, f in ipairs { { "duration", "--duration" }, { "aspect_ratio", "--aspect-ratio" },
    { "negative_prompt", "--negative-prompt" }, { "cfg_scale", "--cfg-scale" }, { "multi_prompt", "--shot" } } do
    if o[f[1]] ~= nil or (f[1] == "multi_prompt" and o.shot) then given[f[1]] = f[2] end
  end
  if o.no_sound or o.sound then given.sound = o.sound and "--sound" or "--no-sound" end
  local function give(field, by)
    if given[field] then exit.usage(cmd, "field " .. field .. " is given twice (by " .. given[field] .. " and by " .. by .. ")") end
    given[field] = by
  end
  for _, s in ipairs(o.set or {}) do
    local field, value = field_value(cmd, "--set", s, "FIELD=VALUE")
    give(field, "--set")
    local v, why = json.decode_input(value)
    if v == nil then
      -- a bare word is a string (JSON null is json.null, sent as null); a value that starts
      -- as JSON text does ([, {, ") but is not JSON is a mistake, never sent as a string
      if value:find('^%s*[%[{"]') then
        exit.usage(cmd, "--set " .. field .. "=VALUE: VALUE is not valid JSON (" .. tostring(why) .. "); a string "
          .. "that starts with [, { or \" is written as JSON: --set '" .. field .. "=\"...\"'")
      end
      v = value
    elseif math.type(v) == "float" and value:find("^%s*%-?%d+%s*$") then
      -- a whole number beyond 64 bits: read as a double, it would be sent as another number
      exit.usage(cmd, "--set " .. field .. "=" .. value .. ": a whole number beyond what kling sends exactly "
        .. "(-2^63 to 2^63-1); write it as a string (--set '" .. field .. "=\"" .. value .. "\"') if it is one")
    end
    input[field] = v
  end
  for _, s in ipairs(o.file or {}) do
    local field, path = field_value(cmd, "--file", s, "FIELD=PATH")
    give(field, "--file")
    local uri, err = require("kling").file(path)
    if not uri then
      if err.kind == "io" then exit.disk(cmd, "--file " .. field .. "=" .. path .. ": " .. err.message) end
      exit.usage(cmd, "--file " .. field .. "=" .. err.message)
    end
    input[field] = uri
  end
  return input
end

--- The tag the journal keeps with a submit of generate/submit (see client:submit's
-- opts.tag): the command and the start of the prompt, so that a submit of unknown outcome
-- can be recognised on the dashboard.
function M.submit_tag(cmd, input)
  local tag = "kling " .. cmd
  if type(input.prompt) == "string" then
    local prompt = format.fit((input.prompt:gsub("[%c]", " ")), 50) -- at most 200 bytes: a tag holds 256
    tag = tag .. ": " .. prompt
  end
  return tag
end

--- The lines of a validation error: "PREFIX/path: message" each.
function M.validation_lines(err, prefix)
  local lines = {}
  for _, item in ipairs(err.errors or {}) do
    lines[#lines + 1] = (prefix or "") .. tostring(item.path) .. ": " .. tostring(item.message)
  end
  if #lines == 0 then lines[1] = (prefix or "") .. tostring(err.message) end
  return lines
end

--- The lines of a batch file worth reading: { n = line number, text } each (blank lines
-- and lines starting with # left out; a CR before the newline dropped).
function M.read_lines(text)
  local lines, n = {}, 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    line = line:gsub("\r$", "")
    if line:find("%S") and not line:match("^%s*#") then lines[#lines + 1] = { n = n, text = line } end
  end
  return lines
end

--- Splits a batch line object into its input, key and model.
-- { "input": {...}, "name"/"id": K, "model": M } or the input itself (with an
-- optional "name"/"id" that is taken out unless the model's schema has such a field).
function M.line_parts(obj, model)
  local schema = models.schema(model)
  local props = type(schema) == "table" and type(schema.properties) == "table" and schema.properties or {}
  if type(obj.input) == "table" and not props.input then
    return obj.input, format.safe_key(obj.name) or format.safe_key(obj.id),
      type(obj.model) == "string" and obj.model or model
  end
  local input, key = {}, nil
  for k, v in pairs(obj) do input[k] = v end
  for _, k in ipairs { "name", "id" } do
    if input[k] ~= nil and not props[k] then
      key = key or format.safe_key(input[k])
      input[k] = nil
    end
  end
  return input, key, model
end

return M
