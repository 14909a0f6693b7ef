--- kling models: the live model catalog (search, category, prices), and the models whose
-- schema is known here when the catalog cannot be asked.
local kling = require "kling"
local json = require "kling.json"
local models = require "kling.models"
local exit = require "kling.cli.exit"
local output = require "kling.cli.output"
local context = require "kling.cli.context"

local io = output.io -- luacheck: ignore (shadows the global on purpose: escaped streams)
local EXIT = exit.EXIT

local C = {
  name = "models",
  summary = "list RunComfy's model catalog, with prices",
  options = { "search", "category", "refresh", "out", "api" },
  option_help = { json = 'one {"model_id", "display_name", "categories", "price", "price_unit", "pricing_note", '
    .. '"default"} per model',
    refresh = "fetch the input schema of every model listed again, and cache it (they are cached for 24 h)" },
  description = "Lists the models of RunComfy's catalog (GET /v1/models), with their price and categories. "
    .. "The input of any of them is validated before it is sent: its schema is fetched from the catalog on "
    .. "first use and cached for 24 h under $XDG_CACHE_HOME/kling (--refresh fetches them all again now). When "
    .. "the catalog cannot be asked, the models whose schema ships with kling are listed instead (exit 7).",
  examples = { "kling models --category image-to-video", "kling models --search standard --json",
    "kling models --refresh" },
}

local function price_text(m)
  if not m.price then return "-" end
  return string.format("$%.4g", m.price) .. (m.price_unit and ("/" .. m.price_unit) or "")
end

-- The models whose schema ships with kling or is registered (the catalog could not be asked).
local function known_here(ctx)
  for _, id in ipairs(models.list()) do
    if ctx.o.json then
      io.stdout:write(json.encode { model_id = id, default = id == kling.DEFAULT_MODEL, known = true }, "\n")
    else
      io.stdout:write(id, id == kling.DEFAULT_MODEL and "  (default)" or "", "\n")
    end
  end
end

function C.run(o, pos)
  if #pos > 0 then exit.usage("models", "unexpected argument '" .. pos[1] .. "'") end
  local ctx = context.new("models", o)
  local client = ctx.client
  local list, total = client:models { search = o.search, category = o.category, limit = 500 }
  if not list then
    ctx:fail(total)
    ctx.display:warn("kling: the catalog could not be asked; the models whose schema is known here:")
    known_here(ctx)
    return ctx.code
  end
  local rows = {}
  for _, m in ipairs(list) do
    if o.refresh then
      local _, err = client:model(m.model_id, { refresh = true })
      if err then ctx:fail(err) end
    end
    if o.json then
      io.stdout:write(json.encode { model_id = m.model_id, display_name = m.display_name, categories = m.categories,
        price = m.price, price_unit = m.price_unit, pricing_note = m.pricing_note,
        default = m.model_id == kling.DEFAULT_MODEL }, "\n")
    else
      rows[#rows + 1] = { m.model_id .. (m.model_id == kling.DEFAULT_MODEL and " *" or ""), price_text(m),
        table.concat(m.categories, ","), m.display_name or "" }
    end
  end
  if not o.json then
    local w = { 0, 0, 0 }
    for _, r in ipairs(rows) do
      for i = 1, 3 do w[i] = math.max(w[i], #r[i]) end
    end
    -- padded by hand: string.format takes widths of two digits at most, and a model id may
    -- have 256 bytes
    local function pad(s, n) return s .. string.rep(" ", n - #s) end
    for _, r in ipairs(rows) do
      io.stdout:write((pad(r[1], w[1]) .. "  " .. pad(r[2], w[2]) .. "  " .. pad(r[3], w[3]) .. "  " .. r[4])
        :gsub("%s+$", ""), "\n")
    end
    local shown = #list < total and string.format("%d of %d models", #list, total) or string.format("%d models", total)
    ctx.display:warn(shown .. " (* the default model)" .. (o.refresh and "; their schemas were fetched again" or ""))
  end
  return ctx.code
end

return C
