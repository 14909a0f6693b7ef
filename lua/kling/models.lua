--- The model registry: input schemas, compiled by the C core, and the
-- validation every submit goes through.
--
-- The schema of kling.DEFAULT_MODEL ships with the module
-- (kling/schemas/kling_3_0_pro_text_to_video.json, as RunComfy publishes it,
-- embedded in the module kling.schemas.kling_3_0_pro_text_to_video) and is
-- loaded on first use. kling.register_model adds or replaces others.
-- Models with no schema are sent as given.
local core = require "kling.core"
local errors = require "kling.errors"
local json = require "kling.json"

local M = {}

M.DEFAULT_MODEL = "kling/kling-3.0/pro/text-to-video"

-- Schemas shipped with the module: model id -> the module that returns the
-- schema's JSON text (lua/kling/schemas/<name>.lua, written from <name>.json).
M.SHIPPED = {
  [M.DEFAULT_MODEL] = "kling.schemas.kling_3_0_pro_text_to_video",
}

local registry = {} -- model id -> { schema = table, compiled = userdata }

--- True when a model id has the shape RunComfy uses ("owner/family/.../task"):
-- slash-separated names of letters, digits, '.', '_' and '-' (kling.protocol).
M.valid_model_id = require("kling.protocol").valid_model_id

-- Finds pattern in text from init (as string.find), charging the characters
-- it passes over to budget ({ left = n }): nil once the budget is spent, so a
-- hostile schema text costs at most about budget.left + #text.
local function find_within(budget, text, pattern, init)
  if budget.left <= 0 then return nil end
  local s, e, cap = text:find(pattern, init)
  budget.left = budget.left - ((e or #text) - init + 1)
  return s, e, cap
end

-- The keys of tbl sorted by where '"key":' first appears in text after
-- position start (keys not found last, alphabetically); and those positions.
-- One pass over the text's '"name":' from start, until every key is placed
-- (a key per search would cost keys x text: minutes for a large catalog answer).
local function ordered_keys(tbl, text, start, budget)
  local keys, pos, left = {}, {}, 0
  for k in pairs(tbl) do
    if type(k) == "string" then
      keys[#keys + 1] = k
      pos[k] = math.huge
      left = left + 1
    end
  end
  local i = start
  while left > 0 do
    local s, e, name = find_within(budget, text, '"([^"\\]*)"%s*:', i)
    if not s then break end
    if pos[name] == math.huge then pos[name], left = s, left - 1 end
    i = e + 1
  end
  table.sort(keys, function(a, b)
    if pos[a] ~= pos[b] then return pos[a] < pos[b] end
    return a < b
  end)
  return keys, pos
end

-- Writes the properties' order, as the JSON text lists them, into the copy
-- of a schema: "x-order" on objects, "x-items-order" on arrays whose items
-- use the publisher's dialect. The C compiler reads them, so errors come in
-- schema order. `from` is where the node's own text starts.
local function annotate_order(node, text, from, budget)
  if type(node) ~= "table" then return end
  local pstart = type(node.properties) == "table" and find_within(budget, text, '"properties"%s*:', from)
  if pstart then
    local keys, pos = ordered_keys(node.properties, text, pstart, budget)
    node["x-order"] = keys
    for _, k in ipairs(keys) do
      if pos[k] ~= math.huge then annotate_order(node.properties[k], text, pos[k], budget) end
    end
  end
  local istart = type(node.items) == "table" and find_within(budget, text, '"items"%s*:', from)
  if istart then
    if node.items.type == nil and node.items.properties == nil then
      node["x-items-order"] = ordered_keys(node.items, text, istart, budget)
    else
      annotate_order(node.items, text, istart, budget)
    end
  end
end

-- Rules the Kling 3.0 schemas state only in words: the multi_prompt
-- segments' durations add up to the clip's duration.
local function annotate_implicit(model_id, schema)
  if not model_id:match("^kling/kling%-3%.0/") then return end
  local p = schema.properties
  if type(p) ~= "table" then return end
  local mp = p.multi_prompt
  if type(p.duration) == "table" and type(mp) == "table" and type(mp.items) == "table" then
    local items = mp.items.properties or mp.items
    if type(items.duration) == "table" then p.duration["x-sum-of"] = "multi_prompt.duration" end
  end
end

local function deep_copy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = deep_copy(x) end
  return t
end

-- True when a compiled schema (its description) lets some values through
-- unchecked: a field of any type, a list without an items schema, an object
-- that takes unknown fields. Those values may have no JSON form.
local function lets_through(node)
  if node.type == "any" or node.allow_unknown or (node.type == "array" and not node.items) then return true end
  for _, f in ipairs(node.fields or {}) do
    if lets_through(f) then return true end
  end
  return node.items ~= nil and lets_through(node.items)
end

-- Compiles and stores a schema (decoded table; text when it came as JSON).
local function install(model_id, schema, text)
  local annotated = deep_copy(schema)
  -- (past a budget of 16 times the text, the rest of the fields keep alphabetical order)
  if text then annotate_order(annotated, text, 1, { left = 16 * #text + 65536 }) end
  annotate_implicit(model_id, annotated)
  local compiled = core.schema.compile(annotated)
  registry[model_id] = { schema = schema, compiled = compiled, loose = lets_through(compiled:describe()) }
  return registry[model_id]
end

--- Registers (or replaces) a model's input schema: JSON text or a decoded
-- table. Raises on a bad id or a schema the compiler cannot read. When given
-- as text, errors are reported in the order the text lists the fields;
-- from a table, in alphabetical order (or the table's "x-order"), unless
-- order_text (optional) is the JSON text the table was decoded from (the
-- catalog's answer holding it: the fields' order is read from it).
function M.register(model_id, schema, order_text)
  if not M.valid_model_id(model_id) then
    error("kling.register_model: invalid model id " .. string.format("%q", tostring(model_id)), 2)
  end
  local text
  if type(schema) == "string" then
    text = schema
    local ok, decoded = pcall(json.decode, schema)
    if not ok then error("kling.register_model: schema is not valid JSON: " .. tostring(decoded), 2) end
    schema = decoded
  end
  if type(schema) ~= "table" then error("kling.register_model: schema must be a table or JSON text", 2) end
  if text == nil and type(order_text) == "string" then text = order_text end
  local ok, err = pcall(install, model_id, schema, text)
  if not ok then error("kling.register_model(" .. model_id .. "): " .. tostring(err):gsub("^[^:]*:%d+: ", ""), 2) end
  return true
end

-- The text of a shipped schema: its module (generated from the .json by
-- `make schemas`) returns it, found by require like any of kling's modules,
-- so package.preload and bundles work (no search for a data file).
local function shipped_text(modname)
  local ok, text = pcall(require, modname)
  if ok and type(text) == "string" then return text end
  return nil
end

-- The registry entry of a model, loading a shipped schema on first use.
local function entry(model_id)
  local e = registry[model_id]
  if e or not M.SHIPPED[model_id] then return e end
  local text = shipped_text(M.SHIPPED[model_id])
  if not text then error("kling: the schema of " .. model_id .. " is missing from the installation", 0) end
  return install(model_id, json.decode(text), text)
end

--- True when a model's schema is known here (shipped or registered): its
-- input is validated before anything is sent.
function M.known(model_id)
  return registry[model_id] ~= nil or M.SHIPPED[model_id] ~= nil
end

--- The registered schema of a model (as decoded), or nil.
function M.schema(model_id)
  local e = entry(model_id)
  return e and e.schema
end

--- The model ids with a schema (shipped or registered), sorted.
function M.list()
  local ids, seen = {}, {}
  for id in pairs(M.SHIPPED) do ids[#ids + 1], seen[id] = id, true end
  for id in pairs(registry) do
    if not seen[id] then ids[#ids + 1] = id end
  end
  table.sort(ids)
  return ids
end

--- The compiled description of a model's schema (fields, types, ranges), or nil.
function M.describe(model_id)
  local e = entry(model_id)
  return e and e.compiled:describe()
end

--- Checks that an input has an exact JSON form (the writer's rules, README
-- "JSON on the wire"): what a schema does not check is checked here.
-- Returns true, input, text (the JSON text, so that a caller sending it need
-- not write it again) | nil, err (kind "validation", err.errors[1].path).
function M.sendable(input, model_id)
  local text, why, path = json.encode_wire(input)
  if text then return true, input, text end
  return nil, errors.new("validation", path .. ": " .. why,
    { errors = { { path = path, message = why } }, model = model_id })
end

--- Validates an input for a model (default kling.DEFAULT_MODEL).
-- Returns true, input as it would be sent[, its JSON text when it had to be
-- written to be checked] | nil, err (kind "validation", err.errors = { {
-- path =, message = }, ... } in schema order).
function M.validate(input, model_id)
  model_id = model_id or M.DEFAULT_MODEL
  local e = entry(model_id)
  if not e then
    if type(input) ~= "table" then
      return nil, errors.new("validation", "input must be a table, got " .. type(input),
        { errors = { { path = "/", message = "input must be a table, got " .. type(input) } }, model = model_id })
    end
    return M.sendable(input, model_id)
  end
  local ok, result = e.compiled:validate(input)
  if ok and e.loose then return M.sendable(result, model_id) end
  if ok then return true, result end
  local summary = #result == 1 and result[1].message
    or string.format("%d problems in the input for %s", #result, model_id)
  return nil, errors.new("validation", summary, { errors = result, model = model_id })
end

return M
