--- spec/embed_spec.lua: kling in real hosts that never block (`make test-all` runs it once):
-- Neovim (nvim --headless, LuaJIT, the core of build/luajit) and a C program with its own
-- poll() loop (examples/embed/host.c), both against the emulator.
local helpers = require "helpers"

local TOKEN = "embed-token"
local q = helpers.quote

local function capture(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("*a")
  p:close()
  return out
end

describe("real hosts", function()
  local emu, dir
  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0.3", "--run", "0.6" }
    dir = helpers.tmpdir()
  end)
  teardown(function()
    if emu then emu:stop() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  it("runs a job in nvim --headless (LuaJIT), updating a buffer with vim.api from on_update while a timer ticks", function()
    local core = helpers.root .. "/build/luajit/kling/core.so"
    assert(io.open(core), "no " .. core .. " (make luajit)"):close()
    local out = dir .. "/nvim.out"
    local cmd = string.format("cd %s && KLING_API=%s KLING_TOKEN=%s KLING_NVIM_OUT=%s "
      .. "LUA_PATH=%s LUA_CPATH=%s timeout 60 nvim --headless -u NONE -i NONE -c %s </dev/null",
      q(helpers.root), q(emu.api), q(TOKEN), q(out), q(helpers.root .. "/lua/?.lua;;"),
      q(helpers.root .. "/build/luajit/?.so;;"), q("luafile spec/hosts_nvim.lua"))
    local log = capture(cmd)
    local text = helpers.read_file(out) or ("no output; nvim said: " .. log)
    io.write("\n[nvim] ", text:gsub("\n", "; "), "\n")
    assert.matches("^ticks %d+", text)
    local ticks = tonumber(text:match("^ticks (%d+)"))
    assert.is_true(ticks >= 10, text)
    assert.matches("video http", text, 1, true)
    assert.matches("buffer [^\n]*status completed", text)
    assert.matches("lua LuaJIT", text, 1, true)
  end)

  it("runs a job to its download in a C host with its own poll() loop, never blocked 50 ms", function()
    local exe = dir .. "/host"
    local build = capture(string.format("cc -std=c99 -Wall -Wextra -Werror -pedantic -o %s %s $(pkg-config --cflags --libs lua5.4)",
      q(exe), q(helpers.root .. "/examples/embed/host.c")))
    assert.equals("", build)
    local path = dir .. "/host.mp4"
    local text = capture(string.format("cd %s && LUA_PATH=%s LUA_CPATH=%s %s %s %s %s",
      q(helpers.root), q(helpers.root .. "/lua/?.lua;;"), q(helpers.root .. "/build/?.so;;"),
      q(exe), q(emu.api), q(TOKEN), q(path)))
    io.write("\n[host] ", text:gsub("\n", "; "), "\n")
    assert.matches("done " .. path .. " 300000", text, 1, true)
    assert.matches("status completed", text, 1, true)
    local gap = tonumber(text:match("longest_gap_ms ([%d.]+)"))
    local ticks = tonumber(text:match("ticks (%d+)"))
    assert.is_true(gap ~= nil and gap < 50, "longest gap " .. tostring(gap) .. " ms")
    assert.is_true(ticks >= 20, "ticks " .. tostring(ticks))
    assert.equals(helpers.pattern_bytes(0, 300000), helpers.read_file(path))
  end)
end)
