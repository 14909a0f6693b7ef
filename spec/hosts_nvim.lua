-- spec/hosts_nvim.lua: run by spec/embed_spec.lua in `nvim --headless` (LuaJIT): submits a
-- job to the emulator, writes its status changes into a buffer with vim.api from
-- job:on_update, while a vim.loop timer ticks; writes what it saw to KLING_NVIM_OUT and quits.
local out_path = os.getenv("KLING_NVIM_OUT")
local function finish(text)
  local f = io.open(out_path, "w")
  f:write(text)
  f:close()
  vim.cmd("qa!")
end
local ok, err = pcall(function()
  local kling = require "kling"
  local c = kling.new { base_url = os.getenv("KLING_API"), token = os.getenv("KLING_TOKEN"),
    poll = { initial = 0.05, near = 0.1 }, waiter = require("kling.loops").nvim() }
  local buf = vim.api.nvim_create_buf(false, true)
  local ticks, during = 0, nil
  local timer = vim.loop.new_timer()
  timer:start(20, 20, function() ticks = ticks + 1 end)
  coroutine.wrap(function()
    local ok2, res = pcall(function()
      local job = assert(c:generate { prompt = "in neovim" })
      local before = ticks
      job:on_update(function(j) vim.api.nvim_buf_set_lines(buf, -1, -1, false, { "status " .. j.status }) end)
      local out = assert(job:wait())
      during = ticks - before
      return out
    end)
    timer:stop()
    timer:close()
    if not ok2 then return finish("error " .. tostring(res)) end
    local lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
    finish(string.format("ticks %d\nvideo %s\nbuffer %s\nlua %s\n", during, tostring(res.video),
      table.concat(lines, "|"), jit and jit.version or _VERSION))
  end)()
end)
if not ok then finish("error " .. tostring(err)) end
