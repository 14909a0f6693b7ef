--- kling schema [MODEL]: a model's input fields: types, ranges, defaults, descriptions, and
-- the generate flag that sets each.
local kling = require "kling"
local json = require "kling.json"
local models = require "kling.models"
local exit = require "kling.cli.exit"
local format = require "kling.cli.format"
local output = require "kling.cli.output"
local context = require "kling.cli.context"

local io = output.io -- luacheck: ignore (shadows the global on purpose: escaped streams)
local EXIT = exit.EXIT

local C = {
  name = "schema",
  summary = "show a model's input fields: types, ranges, defaults",
  args = "[MODEL]",
  argname = "MODEL",
  args_help = "a model id (default " .. models.DEFAULT_MODEL .. ")",
  options = { "json", "api" },
  option_help = { json = '{"model", "fields": [{"name", "type", "required", "minimum", "maximum", "enum", '
    .. '"default", "description", "items"}]}' },
  description = "Shows the input fields of a model (default " .. models.DEFAULT_MODEL .. "), read from its "
    .. "schema: type, whether required, range or allowed values, default, description, and the generate flag "
    .. "that sets it. The schema of any model of RunComfy's catalog is fetched from it (and cached for 24 h under "
    .. "$XDG_CACHE_HOME/kling); a model the catalog does not have is a usage error (exit 2).",
  examples = { "kling schema kling/kling-3.0/pro/image-to-video" },
}

-- The generate flag of each field of the default model.
local CLI_FLAG = {
  prompt = "PROMPT", negative_prompt = "--negative-prompt", duration = "--duration",
  aspect_ratio = "--aspect-ratio", cfg_scale = "--cfg-scale", sound = "--sound/--no-sound",
  multi_prompt = "--shot",
}

local function show_value(v)
  if type(v) == "string" then
    if #v > 60 then v = format.fit(v, 57) .. "..." end
    return string.format("%q", v)
  elseif type(v) == "number" then
    if math.tointeger(v) then return tostring(math.tointeger(v)) end
    return string.format("%g", v)
  end
  return tostring(v)
end

local function number_text(v)
  if math.tointeger(v) then return tostring(math.tointeger(v)) end
  return string.format("%g", v)
end

-- What a field is: "integer, required, 3 to 15, default 5".
local function field_bits(f, raw)
  local bits = {}
  local t = f.type
  if f.type == "array" and f.items and f.items.type ~= "object" then t = "array of " .. tostring(f.items.type) end
  bits[#bits + 1] = t
  if f.required then bits[#bits + 1] = "required" end
  if f.minimum and f.maximum then
    bits[#bits + 1] = number_text(f.minimum) .. " to " .. number_text(f.maximum)
  elseif f.minimum then
    bits[#bits + 1] = ">= " .. number_text(f.minimum)
  elseif f.maximum then
    bits[#bits + 1] = "<= " .. number_text(f.maximum)
  end
  if f.enum then
    local vals = {}
    for _, v in ipairs(f.enum) do vals[#vals + 1] = tostring(v) end
    bits[#bits + 1] = "one of " .. table.concat(vals, ", ")
  end
  if f.min_items or f.max_items then
    bits[#bits + 1] = string.format("%s to %s items", f.min_items or 0, f.max_items or "any")
  end
  if raw.default ~= nil and raw.default ~= json.null then bits[#bits + 1] = "default " .. show_value(raw.default) end
  return table.concat(bits, ", ")
end

-- The lines describing fields (and the fields of their items), appended to out.
local function describe_fields(fields, raw_props, prefix, out, default_model)
  for _, f in ipairs(fields or {}) do
    local raw = type(raw_props) == "table" and raw_props[f.name] or {}
    if type(raw) ~= "table" then raw = {} end
    local flag = default_model and prefix == "" and CLI_FLAG[f.name]
    out[#out + 1] = prefix .. f.name .. "  " .. field_bits(f, raw) .. (flag and ("   [" .. flag .. "]") or "")
    if type(raw.description) == "string" then out[#out + 1] = "    " .. raw.description end
    if f.sum_of then
      local of = f.sum_of:gsub("^([^.]+)%.", "%1[].")
      out[#out + 1] = "    must equal the sum of " .. of .. " when that is given (filled in from it when left out)"
    end
    if f.items and f.items.fields then
      local ritems = type(raw.items) == "table" and (raw.items.properties or raw.items) or {}
      describe_fields(f.items.fields, ritems, prefix .. f.name .. "[].", out, default_model)
    end
  end
end

-- The fields as --json gives them: the schema's description with defaults and texts.
local function enrich(fields, raw_props)
  local list = json.array {}
  for _, f in ipairs(fields or {}) do
    local r = type(raw_props) == "table" and type(raw_props[f.name]) == "table" and raw_props[f.name] or {}
    local e = {}
    for k, v in pairs(f) do e[k] = v end
    e.default, e.description = r.default, r.description
    if f.enum then e.enum = json.array(f.enum) end
    if f.items then
      e.items = { type = f.items.type }
      if f.items.fields then
        local ritems = type(r.items) == "table" and (r.items.properties or r.items) or {}
        e.items.fields = enrich(f.items.fields, ritems)
      end
    end
    list[#list + 1] = e
  end
  return list
end

function C.run(o, pos)
  if #pos > 1 then exit.usage("schema", "give one model") end
  local model = pos[1] or kling.DEFAULT_MODEL
  if not models.valid_model_id(model) then exit.usage("schema", "'" .. model .. "' is no model id") end
  local from
  if not models.known(model) then
    local ctx = context.new("schema", o)
    local m, err = ctx.client:model(model)
    if not m then
      if err.kind == "not_found" then
        io.stderr:write("kling schema: the catalog has no model '", model, "' (kling models lists those it has)\n")
        return EXIT.usage
      end
      return ctx:fail(err)
    end
    from = m.cached_at and "the catalog, cached" or "the catalog"
  end
  local d = models.describe(model)
  local raw = kling.schema(model) or {}
  if o.json then
    io.stdout:write(json.encode { model = model, fields = enrich(d.fields, raw.properties) }, "\n")
    return EXIT.ok
  end
  local out = { model .. (model == kling.DEFAULT_MODEL and "  (default model)" or "")
    .. (from and ("  (schema from " .. from .. ")") or ""), "" }
  describe_fields(d.fields, raw.properties, "", out, model == kling.DEFAULT_MODEL)
  io.stdout:write(table.concat(out, "\n"), "\n")
  return EXIT.ok
end

return C
