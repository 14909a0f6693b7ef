--- kling models: the models whose schema ships with kling.
local kling = require "kling"
local json = require "kling.json"
local models = require "kling.models"
local exit = require "kling.cli.exit"
local output = require "kling.cli.output"

local io = output.io -- luacheck: ignore (shadows the global on purpose: escaped streams)

local C = {
  name = "models",
  summary = "list the models whose schema is known",
  options = { "json" },
  option_help = { json = 'one {"id", "default", "fields"} per model' },
  description = "Lists the models whose input schema ships with kling (their inputs are validated before "
    .. "sending). Any other RunComfy model can still be used by id (--model ID); its input is then sent as given.",
}

function C.run(o, pos)
  if #pos > 0 then exit.usage("models", "unexpected argument '" .. pos[1] .. "'") end
  for _, id in ipairs(models.list()) do
    if o.json then
      local d = models.describe(id)
      local names = json.array {}
      for _, f in ipairs(d and d.fields or {}) do names[#names + 1] = f.name end
      io.stdout:write(json.encode { id = id, default = id == kling.DEFAULT_MODEL, fields = names }, "\n")
    else
      io.stdout:write(id, id == kling.DEFAULT_MODEL and "  (default)" or "", "\n")
    end
  end
  return exit.EXIT.ok
end

return C
