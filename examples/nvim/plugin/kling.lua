-- examples/nvim/plugin/kling.lua: kling inside Neovim (0.7+, LuaJIT). Put kling's lua/
-- directory and its core built for LuaJIT (`make luajit`: build/luajit/kling/core.so) on
-- package.path and package.cpath, and this file in a plugin/ directory of 'runtimepath'.
--
--   :KlingGenerate a red kite over the sea
--
-- opens a buffer that follows the job (status lines written from job:on_update with
-- vim.api) while the editor stays responsive: the job is waited on in a coroutine whose
-- waiter, kling.loops.nvim(), yields to Neovim's loop and resumes through vim.schedule.
local ok, kling = pcall(require, "kling")
if not ok then return end

kling.set_waiter(require("kling.loops").nvim())

local function generate(prompt)
  local buf = vim.api.nvim_create_buf(true, true)
  vim.api.nvim_buf_set_name(buf, "kling://" .. prompt)
  vim.api.nvim_set_current_buf(buf)
  local function say(line) vim.api.nvim_buf_set_lines(buf, -1, -1, false, { line }) end
  coroutine.wrap(function()
    local job, err = kling.generate { prompt = prompt }
    if not job then return say("error: " .. tostring(err)) end
    say("submitted " .. job.id)
    job:on_update(function(j) say("status " .. tostring(j.status)) end)
    local out, werr = job:wait()
    if not out then return say("error: " .. tostring(werr)) end
    say("video " .. tostring(out.video))
  end)()
end

vim.api.nvim_create_user_command("KlingGenerate", function(o) generate(o.args) end, { nargs = "+" })
