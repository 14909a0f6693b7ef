--- The model registry and input validation.
-- Models whose schema is known are validated before anything is sent;
-- others are sent as given. (The complete schema validator lives in the C
-- core; this module holds the registry and the rules every model shares.)
local errors = require "kling.errors"

local M = {}

M.DEFAULT_MODEL = "kling/kling-3.0/pro/text-to-video"

local schemas = {} -- model id -> schema table

--- True when a model id has the shape RunComfy uses ("owner/family/.../task").
function M.valid_model_id(id)
  if type(id) ~= "string" or #id == 0 or #id > 256 then return false end
  for seg in (id .. "/"):gmatch("(.-)/") do
    if not seg:match("^[A-Za-z0-9][A-Za-z0-9._-]*$") then return false end
  end
  return true
end

--- Registers (or replaces) a model's input schema: a decoded table or JSON text.
function M.register(model_id, schema)
  if not M.valid_model_id(model_id) then
    error("kling.register_model: invalid model id " .. string.format("%q", tostring(model_id)), 2)
  end
  if type(schema) == "string" then
    local ok, decoded = pcall(require("cjson").decode, schema)
    if not ok then error("kling.register_model: schema is not valid JSON: " .. tostring(decoded), 2) end
    schema = decoded
  end
  if type(schema) ~= "table" then error("kling.register_model: schema must be a table or JSON text", 2) end
  schemas[model_id] = schema
  return true
end

--- The registered schema of a model, or nil.
function M.schema(model_id)
  return schemas[model_id]
end

M.register(M.DEFAULT_MODEL, {
  type = "object",
  required = { "prompt" },
  properties = { prompt = { type = "string" } },
})

--- Validates an input for a model.
-- Returns true, input (as it would be sent) | nil, err (kind "validation").
function M.validate(input, model_id)
  model_id = model_id or M.DEFAULT_MODEL
  local problems = {}
  if type(input) ~= "table" then
    problems[1] = { path = "/", message = "input must be a table, got " .. type(input) }
  elseif schemas[model_id] then
    local p = input.prompt
    if p == nil then
      problems[#problems + 1] = { path = "/prompt", message = "prompt is required" }
    elseif type(p) ~= "string" then
      problems[#problems + 1] = { path = "/prompt", message = "prompt must be a string, got " .. type(p) }
    elseif not p:find("%S") then
      problems[#problems + 1] = { path = "/prompt", message = "prompt must not be empty or blank" }
    end
  end
  if #problems > 0 then
    local summary = #problems == 1 and problems[1].message
      or (#problems .. " problems in the input")
    return nil, errors.new("validation", summary, { errors = problems, model = model_id })
  end
  return true, input
end

return M
