--- spec/portability_spec.lua: kling on every Lua it supports (5.1, 5.2, 5.3, 5.4, LuaJIT):
-- `make test-all` runs it with each.
local helpers = require "helpers"

describe("kling on " .. (jit and jit.version or _VERSION), function()
  it("loads its C core built for this Lua", function()
    local core = require "kling.core"
    assert.is_table(core.engine)
    assert.is_function(core.engine.new)
  end)

  it("embeds the shipped schema in a module identical to its .json", function()
    local text = require "kling.schemas.kling_3_0_pro_text_to_video"
    assert.equals(helpers.read_file(helpers.root .. "/lua/kling/schemas/kling_3_0_pro_text_to_video.json"), text)
  end)
end)
