--- Disk faults for specs and benchmarks: a small tmpfs that can be filled up
-- (ENOSPC) or mounted read-only (EROFS), and child processes under a
-- file-size limit (EFBIG).
--
--   local disk = require "disk"
--   local ok, why = disk.mount_tmpfs(dir, "64k")      -- needs root; nil, reason otherwise
--   disk.fill(dir); disk.unfill(dir); disk.umount(dir); disk.umount_all() (in a teardown)
--   disk.lua_child(code, { ulimit_blocks = 2 })       -- runs Lua code in a child process
local helpers = require "helpers"

local q = helpers.quote
local M = {}

--- Mounts a tmpfs of `size` (as mount's size=, e.g. "64k") at dir (created
-- when missing); opts.ro mounts it read-only. Returns true | nil, reason (not
-- root, no mount(8)...): a spec then skips, saying why.
function M.mount_tmpfs(dir, size, opts)
  os.execute("mkdir -p " .. q(dir))
  local errfile = os.tmpname()
  local options = "size=" .. size .. ((opts and opts.ro) and ",ro" or "")
  local ok = helpers.execute("mount -t tmpfs -o " .. options .. " tmpfs " .. q(dir) .. " 2>" .. q(errfile))
  local why = (helpers.read_file(errfile) or ""):gsub("%s+$", "")
  os.remove(errfile)
  if not ok then return nil, "cannot mount a tmpfs at " .. dir .. " (" .. (why ~= "" and why or "mount failed") .. ")" end
  M.mounted[dir] = true
  return true
end

--- The mount points of mount_tmpfs not unmounted yet.
M.mounted = {}

--- Unmounts what mount_tmpfs mounted (quietly).
function M.umount(dir)
  os.execute("umount " .. q(dir) .. " 2>/dev/null")
  M.mounted[dir] = nil
end

--- Unmounts every tmpfs still mounted (for a teardown: a failed spec leaves none behind).
function M.umount_all()
  for dir in pairs(M.mounted) do M.umount(dir) end
end

--- Fills the filesystem of dir: writes dir/.fill until no block is left.
function M.fill(dir, name)
  os.execute("dd if=/dev/zero of=" .. q(dir .. "/" .. (name or ".fill")) .. " bs=4096 2>/dev/null")
end

--- Gives the space of fill() back.
function M.unfill(dir, name)
  os.remove(dir .. "/" .. (name or ".fill"))
end

local n = 0
--- Runs Lua code in a child lua5.4 (the repository's lua/ and build/ on its
-- paths), from the repository root. opts.ulimit_blocks: a file-size limit in
-- 512-byte blocks (`ulimit -f`), with SIGXFSZ ignored, so a write past it
-- fails part-way and then with EFBIG. Returns exit_ok, output (stdout and
-- stderr together).
function M.lua_child(code, opts)
  opts = opts or {}
  n = n + 1
  local dir = helpers.tmpdir()
  local script, out = dir .. "/child" .. n .. ".lua", dir .. "/child" .. n .. ".out"
  helpers.write_file(script, code)
  local pre = opts.ulimit_blocks and string.format("trap '' XFSZ; ulimit -f %d; ", opts.ulimit_blocks) or ""
  local cmd = string.format("cd %s && LUA_PATH=%s LUA_CPATH=%s sh -c %s >%s 2>&1", q(helpers.root),
    q(helpers.root .. "/lua/?.lua;;"), q(helpers.root .. "/build/?.so;;"), q(pre .. "exec lua5.4 " .. q(script)), q(out))
  local ok = helpers.execute(cmd)
  local output = helpers.read_file(out) or ""
  os.execute("rm -rf " .. q(dir))
  return ok == true, output
end

return M
