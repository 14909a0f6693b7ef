--- kling validate [FILE|-]: check an input, or a batch file line by line, against the
-- model's schema, as generate would before sending anything.
local kling = require "kling"
local json = require "kling.json"
local exit = require "kling.cli.exit"
local input = require "kling.cli.input"
local format = require "kling.cli.format"
local output = require "kling.cli.output"

local io = output.io -- luacheck: ignore (shadows the global on purpose: escaped streams)
local EXIT = exit.EXIT

local C = {
  name = "validate",
  summary = "check an input (or a batch file) against the model's schema",
  args = "[FILE|-]",
  argname = "FILE",
  args_help = "a JSON object, or a file of JSON lines (default -: stdin)",
  options = { "model", "json" },
  option_help = {
    json = '{"valid": true, "input": {...as it would be sent}} or {"valid": false, "errors": [...]}',
  },
  description = [[
Checks a JSON input (a file, or stdin with - or no argument) against the model's schema,
as generate would before sending anything. A file of JSON lines (a batch file) is
checked line by line. Prints "valid" (exit 0), or every problem with its path (exit 3),
e.g.
  /duration: duration must be an integer from 3 to 15, got 16]],
  examples = { "kling validate jobs.jsonl && kling batch jobs.jsonl --out-dir videos" },
}

-- The inputs of text: one object, or one per line (with its line number): { n, obj, err }.
local function items_of(text)
  local whole = json.decode_input(text)
  if type(whole) == "table" and format.trim(text):match("^{") then return { { obj = whole } } end
  local items = {}
  for _, l in ipairs(input.read_lines(text)) do
    local obj, err = input.decode_object(l.text)
    items[#items + 1] = { n = l.n, obj = obj, err = err }
  end
  return items
end

-- Checks one item: its --json object, and whether it is valid (problems on stderr).
local function check(it, model)
  local prefix = it.n and ("line " .. it.n .. ": ") or ""
  if not it.obj then
    io.stderr:write(prefix, it.err, "\n")
    return { valid = false, line = it.n, errors = { { path = "/", message = it.err } } }
  end
  local sent_input, key, m = it.obj, nil, model
  if it.n then sent_input, key, m = input.line_parts(it.obj, model) end
  local ok, sent = kling.validate(sent_input, m)
  if ok then return { valid = true, line = it.n, key = key, model = m, input = sent } end
  for _, line in ipairs(input.validation_lines(sent, prefix)) do io.stderr:write(line, "\n") end
  return { valid = false, line = it.n, key = key, model = m, errors = output.error_object(sent).errors }
end

function C.run(o, pos)
  if #pos > 1 then exit.usage("validate", "give one file") end
  local model = o.model or kling.DEFAULT_MODEL
  local path = pos[1] or "-"
  local items = items_of(input.read_source("validate", path, path == "-" and "stdin" or path))
  if #items == 0 then
    io.stderr:write("kling validate: ", path == "-" and "stdin" or path, ": no input\n")
    return EXIT.usage
  end
  local bad = 0
  for _, it in ipairs(items) do
    local result = check(it, model)
    if not result.valid then bad = bad + 1 end
    -- valid: the input exactly as it would be sent (the wire's rules)
    if o.json then io.stdout:write(result.valid and json.encode_wire(result) or json.encode(result), "\n") end
  end
  if not o.json then
    if bad == 0 then
      io.stdout:write(#items == 1 and not items[1].n and "valid\n" or string.format("valid: %d inputs\n", #items))
    else
      io.stderr:write(string.format("kling validate: %d of %d input(s) not valid for %s\n", bad, #items, model))
    end
  end
  return bad == 0 and EXIT.ok or EXIT.validation
end

return C
