--- spec/portability_spec.lua: kling on every Lua it supports (5.1, 5.2, 5.3, 5.4, LuaJIT):
-- `make test-all` runs it with each.
local helpers = require "helpers"

describe("kling on " .. (jit and jit.version or _VERSION), function()
  it("loads its C core built for this Lua", function()
    local core = require "kling.core"
    assert.is_table(core.engine)
    assert.is_function(core.engine.new)
  end)

  it("writes an integral number below 2^53 as an integer, and says which integers beyond it stay exact", function()
    local json = require "kling.json"
    assert.equals('{"seed":9007199254740991}', json.encode_wire { seed = 9007199254740991 })
    assert.equals('{"seed":5}', json.encode_wire { seed = 5 })
    if math.type then -- 5.3+: a 64-bit integer keeps all its digits
      assert.equals('{"seed":1152921504606846977}', json.encode_wire { seed = math.tointeger(1152921504606846977) })
    else -- 5.1, 5.2, LuaJIT: a number beyond 2^53 is a double, written as one (README, "Lua versions")
      assert.equals('{"seed":1.152921504606847e+18}', json.encode_wire { seed = 2 ^ 60 })
    end
  end)

  it("embeds the shipped schema in a module identical to its .json", function()
    local text = require "kling.schemas.kling_3_0_pro_text_to_video"
    assert.equals(helpers.read_file(helpers.root .. "/lua/kling/schemas/kling_3_0_pro_text_to_video.json"), text)
  end)
end)
