-- The module as users install it: with luarocks (the rockspec) and with
-- `make install`, then loaded from another directory.
local helpers = require "helpers"

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("*a")
  local ok, _, code = p:close()
  return out, ok and 0 or code
end

local q = helpers.quote

-- Loads kling from `tree` in a fresh lua5.4 started in /tmp (no access to the checkout),
-- runs a job against the emulator and prints where the modules came from.
local function use_installed(lua_dir, lib_dir, emu)
  local code = table.concat({
    "package.path = " .. string.format("%q", lua_dir .. "/?.lua;") .. " .. package.path",
    "package.cpath = " .. string.format("%q", lib_dir .. "/?.so;") .. " .. package.cpath",
    "local kling = require 'kling'",
    "print(package.searchpath('kling', package.path))",
    "print(package.searchpath('kling.core', package.cpath))",
    "assert(not kling.validate{ prompt = 'x', duration = 99 }, 'the shipped schema was not found')",
    "local c = kling.new{ base_url = " .. string.format("%q", emu.api) .. ", token = 'install-token', poll = { initial = 0.05 } }",
    "local job = assert(c:generate{ prompt = 'installed' })",
    "print(assert(job:wait()).video)",
  }, "\n")
  return sh("cd /tmp && env -u LUA_PATH -u LUA_PATH_5_4 -u LUA_CPATH -u LUA_CPATH_5_4 lua5.4 -e " .. q(code))
end

describe("installation", function()
  local emu, tmp

  setup(function()
    emu = helpers.start_emulator { "--token", "install-token", "--queue", "0", "--run", "0.1" }
    tmp = helpers.tmpdir()
  end)
  teardown(function()
    if emu then emu:stop() end
    os.execute("rm -rf " .. q(tmp))
  end)

  it("builds and installs with luarocks make, and loads from another directory", function()
    local tree = tmp .. "/rocks"
    local out, code = sh(string.format(
      "cd %s && luarocks --lua-version=5.4 --tree=%s make --deps-mode=none kling-scm-1.rockspec CURL_INCDIR=%s",
      q(helpers.root), q(tree), q("/usr/include/" .. sh("gcc -print-multiarch"):gsub("%s+$", ""))))
    assert.equals(0, code, out)
    local loaded, rc = use_installed(tree .. "/share/lua/5.4", tree .. "/lib/lua/5.4", emu)
    assert.equals(0, rc, loaded)
    local lines = {}
    for l in loaded:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equals(tree .. "/share/lua/5.4/kling.lua", lines[1])
    assert.equals(tree .. "/lib/lua/5.4/kling/core.so", lines[2])
    assert.matches("^" .. emu.files:gsub("%p", "%%%0"), lines[3])
    -- the wrapper luarocks writes finds the modules through `luarocks path`, as users set it
    local help = sh(string.format("cd /tmp && eval \"$(luarocks --lua-version=5.4 --tree=%s path)\" && %s --help",
      q(tree), q(tree .. "/bin/kling-emulator")))
    assert.matches("%-%-port", help)
  end)

  it("installs with make install DESTDIR= PREFIX= into the Lua 5.4 module paths", function()
    local dest = tmp .. "/dest"
    local out, code = sh(string.format("cd %s && make -s install DESTDIR=%s PREFIX=/usr/local", q(helpers.root), q(dest)))
    assert.equals(0, code, out)
    local loaded, rc = use_installed(dest .. "/usr/local/share/lua/5.4", dest .. "/usr/local/lib/lua/5.4", emu)
    assert.equals(0, rc, loaded)
    assert.matches(dest .. "/usr/local/lib/lua/5.4/kling/core.so", loaded, 1, true)
    assert.is_truthy(io.open(dest .. "/usr/local/bin/kling-emulator", "rb"))
  end)
end)
