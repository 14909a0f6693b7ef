--- kling.emulator.catalog: the model catalog the emulator serves, and the input checks of
-- its models.
--
-- GET /v1/models (paged, searched, filtered), GET /v1/models/categories and
-- GET /v1/models/{model_id} answer from M.MODELS: Kling 3.0 Pro text-to-video (its schema
-- is the one the library ships, lua/kling/schemas/kling_3_0_pro_text_to_video.json, read
-- through package.path) and two other models of the family whose schemas are the
-- emulator's own, written in the same dialect ("type": "float", "default": null, array
-- items listing their fields directly). The prices are the emulator's, not RunComfy's.
-- Schemas are served as their JSON text, so a client sees their fields in their order.
--
-- M.check_input is what a submit checks beyond its prompt: the required fields of a
-- catalog model's schema, its URL fields (http, https or data: URIs), and every data: URI
-- of the input (any model): well formed, and within the observed limits of its media type.
local reply = require "kling.emulator.reply"

local M = {}

local format, concat = string.format, table.concat
local floor = math.floor
local json, encode, json_reply, error_reply, null = reply.json, reply.encode, reply.json_reply, reply.error_reply, reply.null

M.SHIPPED_SCHEMA = "kling.schemas.kling_3_0_pro_text_to_video" -- module name of the shipped file

-- The emulator's own schema of kling/kling-3.0/pro/image-to-video.
local PRO_I2V_SCHEMA = [[
{
  "$comment": "kling-emulator's own input schema for kling/kling-3.0/pro/image-to-video (not RunComfy's), in the dialect of the published Kling 3.0 Pro text-to-video schema: 'float' for a JSON number, 'default': null, array items listing their fields directly.",
  "type": "object",
  "title": "Input schema",
  "required": ["prompt", "image_url"],
  "properties": {
    "prompt": {
      "title": "Prompt",
      "description": "Text description of the motion, the camera and the mood.",
      "type": "string"
    },
    "image_url": {
      "title": "Image URL",
      "description": "The first frame: a public HTTPS URL, or a data: URI of at most 6 MiB.",
      "type": "string",
      "format": "image_uri"
    },
    "end_image_url": {
      "title": "End image URL",
      "description": "An optional last frame, as image_url.",
      "type": "string",
      "format": "image_uri",
      "default": null
    },
    "negative_prompt": {
      "title": "Negative prompt",
      "description": "Elements to exclude from the video.",
      "type": "string",
      "default": null
    },
    "duration": {
      "title": "Duration",
      "description": "Length of the video in seconds.",
      "type": "integer",
      "minimum": 3,
      "maximum": 15,
      "default": 5
    },
    "aspect_ratio": {
      "title": "Aspect ratio",
      "description": "Aspect ratio of the generated video.",
      "type": "string",
      "enum": ["16:9", "9:16", "1:1"],
      "default": "16:9"
    },
    "cfg_scale": {
      "title": "CFG scale",
      "description": "How strongly the prompt guides generation.",
      "type": "float",
      "minimum": 0,
      "maximum": 1,
      "default": 0.5
    },
    "sound": {
      "title": "Sound",
      "description": "Generate sound synchronised with the video.",
      "type": "boolean",
      "default": false
    },
    "multi_prompt": {
      "title": "Multi-prompt",
      "description": "Prompt segments guiding the scene's progression; their durations add up to the video's.",
      "type": "array",
      "items": {
        "prompt": {
          "title": "Prompt",
          "description": "Prompt segment.",
          "type": "string",
          "format": "str"
        },
        "duration": {
          "title": "Duration",
          "description": "Duration of the segment in seconds.",
          "type": "integer",
          "minimum": 3,
          "maximum": 15,
          "default": 5
        }
      },
      "maxItems": 20,
      "minItems": 0
    }
  }
}
]]

-- The emulator's own schema of kling/kling-3.0/standard/text-to-video.
local STD_T2V_SCHEMA = [[
{
  "$comment": "kling-emulator's own input schema for kling/kling-3.0/standard/text-to-video (not RunComfy's), in the dialect of the published Kling 3.0 Pro text-to-video schema: 'float' for a JSON number, 'default': null, array items listing their fields directly.",
  "type": "object",
  "title": "Input schema",
  "required": ["prompt"],
  "properties": {
    "prompt": {
      "title": "Prompt",
      "description": "Text description of the scene, motion, camera style and mood.",
      "type": "string"
    },
    "negative_prompt": {
      "title": "Negative prompt",
      "description": "Elements to exclude from the video.",
      "type": "string",
      "default": null
    },
    "duration": {
      "title": "Duration",
      "description": "Length of the video in seconds.",
      "type": "integer",
      "minimum": 3,
      "maximum": 10,
      "default": 5
    },
    "aspect_ratio": {
      "title": "Aspect ratio",
      "description": "Aspect ratio of the generated video.",
      "type": "string",
      "enum": ["16:9", "9:16", "1:1"],
      "default": "16:9"
    },
    "cfg_scale": {
      "title": "CFG scale",
      "description": "How strongly the prompt guides generation (null: the model's choice).",
      "type": "float",
      "minimum": 0,
      "maximum": 1,
      "default": null
    },
    "seed": {
      "title": "Seed",
      "description": "Seed of the generation (null: random).",
      "type": "integer",
      "minimum": 0,
      "maximum": 2147483647,
      "default": null
    },
    "multi_prompt": {
      "title": "Multi-prompt",
      "description": "Prompt segments guiding the scene's progression; their durations add up to the video's.",
      "type": "array",
      "items": {
        "prompt": {
          "title": "Prompt",
          "description": "Prompt segment.",
          "type": "string",
          "format": "str"
        },
        "duration": {
          "title": "Duration",
          "description": "Duration of the segment in seconds.",
          "type": "integer",
          "minimum": 3,
          "maximum": 10,
          "default": 5
        }
      },
      "maxItems": 6,
      "minItems": 0
    }
  }
}
]]

-- The shipped schema's text, found as the library finds it (package.path, .json for .lua).
local function shipped_schema()
  local path = package.path:gsub("%.lua", ".json")
  local file, err = package.searchpath(M.SHIPPED_SCHEMA, path)
  if not file then error("kling.emulator.catalog: the shipped schema is missing: " .. err, 0) end
  local f = assert(io.open(file, "rb"))
  local text = f:read("a")
  f:close()
  return text
end

M.PRICE_UNIT = "second"

--- The catalog, in the order GET /v1/models lists it: model_id, display_name,
-- description, kind, categories, base_price_usd (per price_unit), pricing_note, and the
-- schema's text (schema_text; the Pro text-to-video one is read on first use).
M.MODELS = {
  {
    model_id = "kling/kling-3.0/pro/text-to-video",
    display_name = "Kling 3.0 Pro Text to Video",
    description = "Cinematic 3 to 15 s clips with sound from a text prompt, Kling 3.0 Pro quality.",
    kind = "model",
    categories = { "text-to-video" },
    base_price_usd = 0.112,
    pricing_note = "Per second of video: a 5 s clip costs $0.56 (kling-emulator's price, not RunComfy's).",
  },
  {
    model_id = "kling/kling-3.0/pro/image-to-video",
    display_name = "Kling 3.0 Pro Image to Video",
    description = "Animates a first frame (and an optional last one) into a 3 to 15 s clip, Kling 3.0 Pro quality.",
    kind = "model",
    categories = { "image-to-video" },
    base_price_usd = 0.112,
    pricing_note = "Per second of video: a 5 s clip costs $0.56 (kling-emulator's price, not RunComfy's).",
    schema_text = PRO_I2V_SCHEMA,
  },
  {
    model_id = "kling/kling-3.0/standard/text-to-video",
    display_name = "Kling 3.0 Standard Text to Video",
    description = "3 to 10 s clips from a text prompt at standard quality, faster and cheaper.",
    kind = "model",
    categories = { "text-to-video" },
    base_price_usd = 0.07,
    pricing_note = "Per second of video: a 5 s clip costs $0.35 (kling-emulator's price, not RunComfy's).",
    schema_text = STD_T2V_SCHEMA,
  },
}

local BY_ID = {}
for _, model in ipairs(M.MODELS) do BY_ID[model.model_id] = model end

-- The model's schema text and what is read from it once: its decoded form, the property
-- names in the text's order (inputs), the required ones, the URL fields (format *_uri).
local function load(model)
  if model.schema then return model end
  model.schema_text = model.schema_text or shipped_schema()
  local schema = json.decode(model.schema_text)
  model.schema = schema
  local names = {}
  for name in pairs(schema.properties) do
    names[#names + 1] = { name, model.schema_text:find('"' .. name:gsub("%p", "%%%0") .. '"%s*:') or math.huge }
  end
  table.sort(names, function(a, b) return a[2] < b[2] end)
  model.inputs = {}
  for i, entry in ipairs(names) do model.inputs[i] = entry[1] end
  model.required = {}
  for i, name in ipairs(schema.required or {}) do model.required[i] = name end
  model.url_fields = {}
  for name, prop in pairs(schema.properties) do
    local kind = type(prop.format) == "string" and prop.format:match("^(%a+)_uri$")
    if kind then model.url_fields[name] = kind end
  end
  return model
end

--- Load every model's schema now (emulator.new does, so that a schema missing from the
-- installation stops the emulator at its start instead of failing a request).
-- @return true | nil, err
function M.load_all()
  for _, model in ipairs(M.MODELS) do
    local ok, err = pcall(load, model)
    if not ok then return nil, tostring(err) end
  end
  return true
end

--- A catalog model by id (its schema loaded), or nil.
function M.model(model_id)
  local model = BY_ID[model_id]
  return model and load(model)
end

--- The price per second of a model (USD), or nil for a model outside the catalog.
function M.price(model_id)
  local model = BY_ID[model_id]
  return model and model.base_price_usd
end

-- ---------------------------------------------------------------------------------------
-- Input checks (submit)
-- ---------------------------------------------------------------------------------------

--- The largest data: URI content of a media type (bytes, decoded), as RunComfy's own
-- clients observe them; a whole body is limited to 64 MiB by the HTTP reader.
M.DATA_LIMITS = { image = 6 * 1024 * 1024, video = 32 * 1024 * 1024, audio = 16 * 1024 * 1024 }

-- A data: URI's media type and decoded size. -> media_type, bytes | nil, why
local function data_uri(text)
  local comma = text:find(",", 6, true)
  if not comma then return nil, "not a valid data URI (no comma)" end
  local head = text:sub(6, comma - 1)
  local media = head:match("^([^;]*)") or ""
  if media == "" then media = "text/plain" end
  local n = #text - comma
  if head:find(";base64$") then
    -- the alphabet's run to the end, then at most "==" (one anchored run: fast on 64 MiB)
    local _, last = text:find("^[A-Za-z0-9+/]*", comma + 1)
    local pad = #text - last
    if n % 4 ~= 0 or pad > 2 or text:sub(last + 1) ~= string.rep("=", pad) then
      return nil, "not a valid data URI (bad base64)"
    end
    return media, n // 4 * 3 - pad
  end
  return media, n
end

-- Checks one string value of the input; notes a data: URI in found. -> nil | msg, type
local function check_value(value, url_kind, found, field, index)
  if value:sub(1, 5) == "data:" then
    local media, bytes = data_uri(value)
    if not media then return bytes, "value_error.data_uri" end
    found[#found + 1] = { field = field, index = index, media_type = media, bytes = bytes }
    local limit = M.DATA_LIMITS[media:match("^(%a+)/")]
    if limit and bytes > limit then
      return format("data URI of %d bytes is over the %d MiB limit for %s", bytes, limit // (1024 * 1024),
        media:match("^(%a+)/")), "value_error.too_large"
    end
    return nil
  end
  if url_kind and not value:match("^[Hh][Tt][Tt][Pp][Ss]?://[^%s]+$") then
    return "expected a URL (http or https) or a data: URI", "value_error.url"
  end
  return nil
end

--- Check a submit's input beyond its prompt: for a catalog model, its schema's required
-- fields and the shape of its URL fields (format image_uri, video_uri, audio_uri: an http
-- or https URL or a data: URI); for any model, every data: URI among the input's values
-- (top level, and the elements of top-level arrays): well formed, and its content within
-- DATA_LIMITS for its media type.
-- @return data_uris (list of { field, index (0-based, in arrays), media_type, bytes }) |
--   nil, loc (list), msg, type (for a 422 answer)
function M.check_input(model_id, input)
  local model = M.model(model_id)
  if model then
    for _, name in ipairs(model.required) do
      if input[name] == nil or input[name] == null then
        return nil, { "body", name }, "field required", "value_error.missing"
      end
    end
    for name, kind in pairs(model.url_fields) do
      local value = input[name]
      if value ~= nil and value ~= null and type(value) ~= "string" then
        return nil, { "body", name }, "expected a URL (http or https) or a data: URI", "type_error.str"
      end
    end
  end
  local found = {}
  local names = {}
  for name in pairs(input) do
    if type(name) == "string" then names[#names + 1] = name end
  end
  table.sort(names)
  for _, name in ipairs(names) do
    local value = input[name]
    local url_kind = model and model.url_fields[name]
    if type(value) == "string" then
      local msg, kind = check_value(value, url_kind, found, name)
      if msg then return nil, { "body", name }, msg, kind end
    elseif type(value) == "table" then
      for i, item in ipairs(value) do
        if type(item) == "string" then
          local msg, kind = check_value(item, nil, found, name, i - 1)
          if msg then return nil, { "body", name, i - 1 }, msg, kind end
        end
      end
    end
  end
  return found
end

-- ---------------------------------------------------------------------------------------
-- Answers (GET routes)
-- ---------------------------------------------------------------------------------------

local SCHEMA_MARK = "\0emu-schema\0"
local SCHEMA_MARK_JSON = json.encode(SCHEMA_MARK)

-- A model's entry as JSON text (with its schema's text when with_schema).
local function entry_text(model, with_schema)
  model = load(model)
  local text = encode({
    model_id = model.model_id,
    display_name = model.display_name,
    description = model.description,
    kind = model.kind,
    categories = model.categories,
    base_price_usd = model.base_price_usd,
    price_unit = M.PRICE_UNIT,
    pricing_note = model.pricing_note,
    inputs = model.inputs,
    required_inputs = reply.array(model.required),
    input_schema = with_schema and SCHEMA_MARK or nil,
  })
  if with_schema then
    local at = text:find(SCHEMA_MARK_JSON, 1, true)
    text = text:sub(1, at - 1) .. model.schema_text:gsub("%s+$", "") .. text:sub(at + #SCHEMA_MARK_JSON)
  end
  return text
end

-- A query parameter's value, percent-decoded ("+" is a space), or nil.
local function query_value(req, name)
  local raw = req.query[name]
  if raw == nil then return nil end
  return (raw:gsub("%+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function query_error(name, msg, kind)
  return json_reply(422, {
    error_message = "Input validation failed: " .. name .. ": " .. msg,
    detail = { { loc = { "query", name }, msg = msg, type = kind } },
  })
end

local BOOLEANS = { ["true"] = true, ["1"] = true, yes = true, on = true,
  ["false"] = false, ["0"] = false, no = false, off = false }

-- A whole number query parameter within [lo, hi], or its default. -> n | nil, reply
local function whole_param(req, name, default, lo, hi)
  local text = query_value(req, name)
  if text == nil or text == "" then return default end
  local n = text:match("^%d+$") and tonumber(text)
  if not n or n < lo or (hi and n > hi) then
    return nil, query_error(name, hi and format("expected a whole number from %d to %d", lo, hi)
      or format("expected a whole number >= %d", lo), "value_error.number")
  end
  return floor(n)
end

M.handlers = {}

--- GET /v1/models?limit=&offset=&search=&category=&kind=&include_schema=: the catalog's
-- models that match (search: a case-insensitive substring of the id, the display name or
-- the description; category: one of its categories; kind: its kind), from offset, at most
-- limit (1 to 500, default 100); total counts every match.
function M.handlers.models(_, req)
  local limit, lerr = whole_param(req, "limit", 100, 1, 500)
  if not limit then return lerr end
  local offset, oerr = whole_param(req, "offset", 0, 0)
  if not offset then return oerr end
  local with_schema = false
  local flag = query_value(req, "include_schema")
  if flag ~= nil and flag ~= "" then
    with_schema = BOOLEANS[flag:lower()]
    if with_schema == nil then return query_error("include_schema", "expected a boolean", "type_error.bool") end
  end
  local search = query_value(req, "search")
  search = search and search ~= "" and search:lower() or nil
  local category = query_value(req, "category")
  category = category ~= "" and category or nil
  local kind = query_value(req, "kind")
  kind = kind ~= "" and kind or nil
  local matches = {}
  for _, model in ipairs(M.MODELS) do
    local ok = true
    if search then
      ok = model.model_id:lower():find(search, 1, true) or model.display_name:lower():find(search, 1, true)
        or model.description:lower():find(search, 1, true)
    end
    if ok and category then
      ok = false
      for _, c in ipairs(model.categories) do
        if c == category then ok = true end
      end
    end
    if ok and kind then ok = model.kind == kind end
    if ok then matches[#matches + 1] = model end
  end
  local parts = {}
  for i = offset + 1, math.min(#matches, offset + limit) do
    parts[#parts + 1] = entry_text(matches[i], with_schema)
  end
  return {
    status = 200, type = "application/json",
    body = format('{"models":[%s],"total":%d,"limit":%d,"offset":%d}', concat(parts, ","), #matches, limit, offset),
  }
end

--- GET /v1/models/categories: every category of the catalog, sorted.
function M.handlers.model_categories()
  local seen, list = {}, {}
  for _, model in ipairs(M.MODELS) do
    for _, c in ipairs(model.categories) do
      if not seen[c] then
        seen[c] = true
        list[#list + 1] = c
      end
    end
  end
  table.sort(list)
  return json_reply(200, { categories = reply.array(list) })
end

--- GET /v1/models/{model_id}: the model with its input schema; 404 (404001) when the
-- catalog has no such model.
function M.handlers.model(_, _, model_id)
  local model = BY_ID[model_id]
  if not model then return error_reply(404, 404001, "Model not found") end
  return { status = 200, type = "application/json", body = entry_text(model, true) }
end

return M
