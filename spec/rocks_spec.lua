--- spec/rocks_spec.lua: kling as luarocks builds it for each Lua (`luarocks --lua-version=X
-- make`, LuaJIT through the 5.1 tree), the release rockspec beside scm-1, and a rock packed
-- from a checkout. `make test-all` runs it once.
local helpers = require "helpers"

local q = helpers.quote

local function sh(cmd)
  local p = assert(io.popen("(" .. cmd .. ") 2>&1; echo \"rc=$?\""))
  local out = p:read("*a")
  p:close()
  local code = tonumber(out:match("rc=(%d+)%s*$"))
  return out:gsub("rc=%d+%s*$", ""), code
end

local function load_rockspec(name)
  local env = {}
  local chunk = assert(loadfile(helpers.root .. "/" .. name))
  if setfenv then setfenv(chunk, env) else chunk = assert(loadfile(helpers.root .. "/" .. name, "t", env)) end
  chunk()
  return env
end

describe("luarocks", function()
  local tmp
  setup(function() tmp = helpers.tmpdir() end)
  teardown(function() if tmp then os.execute("rm -rf " .. q(tmp)) end end)

  local incdir = "/usr/include/" .. sh("gcc -print-multiarch"):gsub("%s+$", "")
  local LUAS = { { "5.1", "lua5.1" }, { "5.2", "lua5.2" }, { "5.3", "lua5.3" }, { "5.4", "lua5.4" }, { "5.1", "luajit" } }
  for _, l in ipairs(LUAS) do
    local v, lua = l[1], l[2]
    it("builds with luarocks --lua-version=" .. v .. " make and loads in " .. lua .. ", validating with the shipped schema", function()
      local tree = tmp .. "/" .. v
      if not io.open(tree .. "/lib/lua/" .. v .. "/kling/core.so") then
        local out, code = sh(string.format("cd %s && luarocks --lua-version=%s --tree=%s make --deps-mode=none "
          .. "kling-scm-1.rockspec CURL_INCDIR=%s", q(helpers.root), v, q(tree), q(incdir)))
        assert.equals(0, code, out)
      end
      local out, code = sh(string.format("cd /tmp && %s -e %s", lua, q(string.format(
        "package.path = '%s/share/lua/%s/?.lua;' .. package.path; package.cpath = '%s/lib/lua/%s/?.so;' .. package.cpath; "
        .. "local k = require 'kling'; local ok, input = k.validate { prompt = 'rock', duration = 5 }; "
        .. "io.write(tostring(ok), ' ', tostring(input.duration), ' ', k.VERSION)", tree, v, tree, v))))
      assert.equals(0, code, out)
      assert.equals("true 5 0.2.0", out)
    end)
  end

  it("packs a rock from a checkout (luarocks make, then luarocks pack)", function()
    local tree = tmp .. "/pack"
    local out, code = sh(string.format("cd %s && luarocks --lua-version=5.4 --tree=%s make --deps-mode=none "
      .. "kling-0.2.0-1.rockspec CURL_INCDIR=%s && cd %s && luarocks --lua-version=5.4 --tree=%s pack kling 0.2.0-1",
      q(helpers.root), q(tree), q(incdir), q(tmp), q(tree)))
    assert.equals(0, code, out)
    assert.is_truthy(io.open(tmp .. "/kling-0.2.0-1." .. sh("luarocks --lua-version=5.4 config arch"):gsub("%s+$", "") .. ".rock"))
  end)

  it("has a release rockspec that differs from scm-1 only in its version and tag, on unix platforms", function()
    local scm, rel = load_rockspec("kling-scm-1.rockspec"), load_rockspec("kling-0.2.0-1.rockspec")
    assert.equals("0.2.0-1", rel.version)
    assert.equals("v0.2.0", rel.source.tag)
    assert.same({ "unix" }, rel.supported_platforms)
    rel.version, rel.source.tag = scm.version, nil
    assert.same(scm, rel)
    assert.equals(require("kling").VERSION, ("0.2.0-1"):match("^(.-)%-"))
    for _, dep in ipairs(rel.dependencies) do assert.is_nil(dep:find("cqueues"), "the library requires cqueues") end
  end)
end)
