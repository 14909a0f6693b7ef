-- Every ```lua block of README.md runs, as written, against the emulator
-- (RUNCOMFY_MODEL_API_BASE and RUNCOMFY_TOKEN point at it), each in a fresh
-- lua5.4 in a scratch directory.
local helpers = require "helpers"

local function lua_blocks(text)
  local blocks = {}
  for block in text:gmatch("\n```lua\n(.-)\n```") do blocks[#blocks + 1] = block end
  return blocks
end

describe("README.md", function()
  local emu, dir
  local readme = assert(helpers.read_file(helpers.root .. "/README.md"))
  local blocks = lua_blocks(readme)

  setup(function()
    emu = helpers.start_emulator { "--token", "readme-token", "--queue", "0.3", "--run", "0.4" }
    dir = helpers.tmpdir()
  end)
  teardown(function()
    if emu then emu:stop() end
    os.execute("rm -rf " .. helpers.quote(dir))
  end)

  it("has Lua examples", function()
    assert.is_true(#blocks >= 6)
  end)

  for i, block in ipairs(blocks) do
    local title = block:match("^[^\n]*")
    it("runs example " .. i .. " (" .. title .. ")", function()
      local file = dir .. "/example" .. i .. ".lua"
      helpers.write_file(file, block)
      local cmd = string.format(
        "cd %s && env RUNCOMFY_TOKEN=readme-token RUNCOMFY_MODEL_API_BASE=%s LUA_PATH=%s LUA_CPATH=%s lua5.4 %s 2>&1",
        helpers.quote(dir), helpers.quote(emu.api), helpers.quote(helpers.root .. "/lua/?.lua;;"),
        helpers.quote(helpers.root .. "/build/?.so;;"), helpers.quote(file))
      local p = assert(io.popen(cmd))
      local out = p:read("*a")
      local ok = p:close()
      assert.is_true(ok, "example " .. i .. " failed:\n" .. out)
    end)
  end
end)
