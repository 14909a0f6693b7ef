--- kling.catalog: RunComfy's model catalog (observed: RunComfy's own CLI
-- reads it; doc/PROTOCOL.md, "The model catalog"): GET /v1/models (the list,
-- with search, category and paging) and GET /v1/models/{model_id} (one model
-- with its input schema). A schema fetched here is compiled into the model
-- registry (kling.models), so the input of any catalog model is validated
-- before a byte is sent, and cached on disk (one file per API and model, under
-- $XDG_CACHE_HOME/kling/models/, default ~/.cache/kling/models/) for
-- DEFAULTS.catalog_max_age seconds (24 h).
--
-- The cache follows the journal's file rules where they matter for a cache:
-- a file is written whole to a temporary name, checked, and renamed over the
-- old one; a cache that cannot be read or written is a warning (on_warning),
-- never a failed call. It is not fsynced: a lost cache file is fetched again.
--
-- Calls go one way: kling.client -> kling.catalog -> kling.models,
-- kling.protocol, kling.errors (client methods are called back only through
-- the client object handed in).
local core = require "kling.core"
local errors = require "kling.errors"
local json = require "kling.json"
local models = require "kling.models"
local protocol = require "kling.protocol"
local math = require("kling.compat").math -- math.type, math.tointeger on 5.1 and LuaJIT

local M = {}

--- Seconds a cached schema is used without asking the catalog again.
M.MAX_AGE = core.DEFAULTS.catalog_max_age

--- The bounds of client:models' paging (the service's: limit 1 to 500).
M.LIMIT_MAX = 500

--- The default cache directory: $XDG_CACHE_HOME/kling, else ~/.cache/kling
-- (an XDG_CACHE_HOME that is not an absolute path is ignored, as the XDG
-- rules say); nil when neither can be told.
function M.default_dir()
  local base = os.getenv("XDG_CACHE_HOME")
  if base == nil or base:sub(1, 1) ~= "/" then
    local home = os.getenv("HOME")
    if home == nil or home == "" then return nil end
    base = home .. "/.cache"
  end
  return (base:gsub("/+$", "")) .. "/kling"
end

-- The cache file of a model of the API at base_url: DIR/models/API/ID.json,
-- API the first 16 hex digits of the SHA-256 of the base URL (the emulator's
-- schemas never stand in for the service's), ID the model id with each "/"
-- written %2F (a model id holds no "%", and no name of it starts with ".").
local function cache_path(dir, base_url, model_id)
  local api = core.journal.sha256(base_url):sub(1, 16)
  return dir .. "/models/" .. api, dir .. "/models/" .. api .. "/" .. (model_id:gsub("/", "%%2F")) .. ".json"
end

local function mkdir_p(path)
  local ok, lfs = pcall(require, "lfs")
  if not ok then return nil, "lua-filesystem (lfs) is not installed" end
  if lfs.attributes(path, "mode") == "directory" then return true end
  local parent = path:match("^(.+)/[^/]+$")
  if parent then
    local pok, perr = mkdir_p(parent)
    if not pok then return nil, perr end
  end
  local made, err = lfs.mkdir(path)
  if made or lfs.attributes(path, "mode") == "directory" then return true end
  return nil, path .. ": " .. tostring(err)
end

-- Writes text to path whole (a temporary file renamed over it): true | nil, message.
local function write_whole(path, text)
  local tmp = path .. ".tmp." .. core.journal.random_key()
  local f, err = io.open(tmp, "wb")
  if not f then return nil, err end
  local ok, werr = f:write(text)
  local cok, cerr = f:close()
  if not ok or not cok then
    os.remove(tmp)
    return nil, tmp .. ": " .. tostring(werr or cerr)
  end
  local rok, rerr = os.rename(tmp, path)
  if not rok then
    os.remove(tmp)
    return nil, rerr
  end
  return true
end

local function read_all(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return text
end

local function str(v)
  return type(v) == "string" and v or nil
end

--- A model of a catalog answer as kling gives it: { model_id, display_name,
-- description, categories (list of strings), price (base_price_usd: a
-- finite number >= 0, or nil), price_unit, pricing_note, input_schema (the
-- decoded schema, or nil) } | nil, message when it has no usable model_id.
function M.entry(m)
  if type(m) ~= "table" or not protocol.valid_model_id(m.model_id) then
    return nil, "a catalog entry without a usable model_id"
  end
  local cats = json.array {}
  if type(m.categories) == "table" then
    for _, c in ipairs(m.categories) do
      if type(c) == "string" then cats[#cats + 1] = c end
    end
  end
  local price = m.base_price_usd
  if type(price) ~= "number" or not (price >= 0 and price < math.huge) then price = nil end
  return {
    model_id = m.model_id, display_name = str(m.display_name), description = str(m.description),
    categories = cats, price = price, price_unit = str(m.price_unit), pricing_note = str(m.pricing_note),
    input_schema = type(m.input_schema) == "table" and m.input_schema or nil,
  }
end

local function encode_query(v)
  return (tostring(v):gsub("[^A-Za-z0-9._~-]", function(c) return string.format("%%%02X", c:byte()) end))
end

local function check_list_opts(opts)
  for _, k in ipairs { "search", "category" } do
    if opts[k] ~= nil and type(opts[k]) ~= "string" then error("client:models: opts." .. k .. " must be a string", 3) end
  end
  if opts.limit ~= nil and not (math.type(opts.limit) == "integer" and opts.limit >= 1 and opts.limit <= M.LIMIT_MAX) then
    error("client:models: opts.limit must be a whole number from 1 to " .. M.LIMIT_MAX, 3)
  end
  if opts.offset ~= nil and not (math.type(opts.offset) == "integer" and opts.offset >= 0) then
    error("client:models: opts.offset must be a whole number >= 0", 3)
  end
end

--- client:models(opts): the catalog's models (see Client:models).
function M.list(client, opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("client:models: opts must be a table", 2) end
  check_list_opts(opts)
  local q = {}
  for _, k in ipairs { "limit", "offset", "search", "category" } do
    if opts[k] ~= nil then q[#q + 1] = k .. "=" .. encode_query(opts[k]) end
  end
  local url = assert(protocol.url(client.base_url, "models")) .. (#q > 0 and ("?" .. table.concat(q, "&")) or "")
  local body, err = client:_api(protocol.ROUTES.models.method, url, nil, {})
  if not body then return nil, err end
  if type(body.models) ~= "table" then
    return nil, errors.new("protocol", "the catalog's answer has no models list", { retryable = false })
  end
  local list = {}
  for _, m in ipairs(body.models) do
    local e = M.entry(m)
    if e then list[#list + 1] = e end
  end
  local total = body.total
  if math.type(total) ~= "integer" and not (type(total) == "number" and total == math.floor(total)) then total = nil end
  return list, total and math.tointeger(total) or #list
end

-- Compiles an entry's schema into the registry: true | nil, err (kind protocol).
local function install(e, text)
  if type(e.input_schema) ~= "table" then
    return nil, errors.new("protocol", "the catalog's answer for " .. e.model_id .. " has no input_schema",
      { retryable = false })
  end
  local ok, why = pcall(models.register, e.model_id, e.input_schema, text)
  if not ok then
    return nil, errors.new("protocol", "the catalog's input schema of " .. e.model_id .. " cannot be used: "
      .. tostring(why):gsub("^[^:]*:%d+: ", ""), { retryable = false })
  end
  return true
end

-- The cached answer for a model: entry, fetched_at, text | nil.
local function read_cache(client, model_id)
  if not client.cache_dir then return nil end
  local _, path = cache_path(client.cache_dir, client.base_url, model_id)
  local text = read_all(path)
  if not text then return nil end
  local ok, v = pcall(json.decode, text)
  -- fetched_at: whole seconds, as write_cache writes them (a fraction, an infinity: a
  -- corrupt file, never a number to do sums with)
  local e = ok and type(v) == "table" and type(v.fetched_at) == "number" and math.tointeger(v.fetched_at)
    and M.entry(v.answer)
  if not e or e.model_id ~= model_id then
    client._warn("the cached schema " .. path .. " cannot be read; it is fetched again")
    return nil
  end
  return e, math.tointeger(v.fetched_at), text
end

local function write_cache(client, model_id, answer_text)
  if not client.cache_dir then return end
  local dir, path = cache_path(client.cache_dir, client.base_url, model_id)
  local ok, err = mkdir_p(dir)
  if ok then
    -- the answer's own JSON text (it was decoded: it is JSON), kept as it came so the
    -- fields' order stays the schema's
    ok, err = write_whole(path, '{"fetched_at":' .. string.format("%d", os.time()) .. ',"answer":' .. answer_text .. "}\n")
  end
  if not ok then
    client._warn("the schema of " .. model_id .. " could not be cached (" .. tostring(err) .. "); it is used, "
      .. "and fetched again next time")
  end
end

--- client:model(model_id, opts): one model with its input schema, compiled
-- into the registry (see Client:model).
function M.model(client, model_id, opts)
  opts = opts or {}
  if type(model_id) ~= "string" or not protocol.valid_model_id(model_id) then
    return nil, errors.new("validation", "invalid model id " .. string.format("%q", tostring(model_id)),
      { errors = { { path = "/model", message = "model id must be slash-separated names of letters, digits, '.', '_' or '-'" } } })
  end
  local cached, at, ctext
  if not opts.refresh then
    cached, at, ctext = read_cache(client, model_id)
    if cached and os.time() - at <= M.MAX_AGE and os.time() >= at then
      local ok, err = install(cached, ctext)
      if ok then
        cached.cached_at = math.tointeger(at) or at
        return cached
      end
      client._warn(err.message .. " (in the cache); it is fetched again")
      cached = nil
    end
  end
  local body, err = client:_api(protocol.ROUTES.model.method,
    assert(protocol.url(client.base_url, "model", model_id)), nil, {})
  local res = body and err -- (a success's second value is the exchange)
  if not body then
    if cached and install(cached, ctext) then
      client._warn("the catalog could not be asked for " .. model_id .. " (" .. err.kind .. ": " .. err.message
        .. "); its schema cached " .. string.format("%d", os.time() - at) .. " s ago is used")
      cached.cached_at = math.tointeger(at) or at
      return cached
    end
    return nil, err
  end
  local e, why = M.entry(body)
  if not e then return nil, errors.new("protocol", "the catalog's answer for " .. model_id .. ": " .. why, { retryable = false }) end
  if e.model_id ~= model_id then
    return nil, errors.new("protocol", "the catalog answered for another model than " .. model_id, { retryable = false })
  end
  local ok, ierr = install(e, res.body)
  if not ok then return nil, ierr end
  write_cache(client, model_id, res.body)
  return e
end

--- Before a submit: makes sure the schema of model_id is known when the
-- catalog has it (shipped, registered, cached or fetched now, once per client
-- and model). A model the catalog does not list (not_found) is sent as given,
-- as before the catalog; a catalog that cannot be asked is a warning, and the
-- input is then sent unvalidated. Never fails the submit.
function M.ensure(client, model_id)
  if models.known(model_id) or not client.has_token or client.catalog == false then return end
  client._catalog_tried = client._catalog_tried or {}
  if client._catalog_tried[model_id] then return end
  client._catalog_tried[model_id] = true
  local e, err = M.model(client, model_id)
  if not e and err.kind ~= "not_found" then
    client._warn("the input schema of " .. model_id .. " could not be had from the catalog (" .. err.kind .. ": "
      .. err.message .. "); its input is sent as given, unvalidated")
  end
end

return M
