--- kling.cli.files: paths and directories for the command-line tool, through
-- lua-filesystem (no shell: no `test -d`, no `mkdir -p`), and where a command's videos
-- go: the checks of -o FILE and --out-dir DIR made before anything is sent or paid for.
local lfs = require "lfs"
local client_lib = require "kling.client"
local exit = require "kling.cli.exit"

local M = {}

--- Can path be opened for reading (a file that exists)?
function M.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

--- Is path a directory (or a symbolic link to one)?
function M.is_dir(path)
  return lfs.attributes(path, "mode") == "directory"
end

--- The directory part of path ("." when it has none).
function M.dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

--- dir/name (name alone when dir is "" or ".").
function M.join(dir, name)
  if dir == "" or dir == "." then return name end
  if dir:sub(-1) == "/" then return dir .. name end
  return dir .. "/" .. name
end

--- Makes directory path and its missing parents (as mkdir -p): true | nil, message.
function M.mkdir_p(path)
  path = path:gsub("(.)/+$", "%1")
  if M.is_dir(path) then return true end
  local parent = path:match("^(.+)/[^/]+$")
  if parent and not M.is_dir(parent) then
    local ok, err = M.mkdir_p(parent)
    if not ok then return nil, err end
  end
  local ok, err = lfs.mkdir(path)
  if ok or M.is_dir(path) then return true end -- (made meanwhile by another process: fine)
  return nil, err
end

--- Can a file be created in dir? Tried with a probe file (removed at once), so that a
-- read-only or full directory is found before a job is paid for. Raises exit 8 when not.
function M.check_writable(cmd, dir)
  local probe = M.join(dir, string.format(".kling-probe-%d-%06d", os.time(), math.random(0, 999999)))
  local f, err = io.open(probe, "wb")
  if not f then
    exit.disk(cmd, "cannot write in " .. dir .. ": " .. tostring(err):gsub("^.-: ([^:]+)$", "%1"))
  end
  f:close()
  os.remove(probe)
end

--- Checks, before anything is sent, that a download to path could start: the library's
-- own check (kling.client.check_download_target: the directory, the path, its .part,
-- .part.meta, .part.meta.tmp and .part.lock, and no other download writing it). Raises
-- exit 8 when not.
function M.check_target_file(cmd, path)
  local ok, err = client_lib.check_download_target(path)
  if not ok then exit.disk(cmd, err.message) end
end

--- Where the videos of a command go, from -o/--output, --out-dir, --no-download and
-- --force (o), checked before anything is sent: { file = path }, { dir = path }, or nil
-- (no download). default_dir: the directory when neither -o nor --out-dir is given (nil:
-- no download). Raises a usage error (contradicting flags, FILE exists without --force)
-- or exit 8 (a directory that is missing, cannot be made or written, a FILE another
-- download writes).
function M.output_target(cmd, o, default_dir)
  if o.no_download and (o.output or o.out_dir) then exit.usage(cmd, "--no-download contradicts -o/--out-dir") end
  if o.output and o.out_dir then exit.usage(cmd, "give -o FILE or --out-dir DIR, not both") end
  if o.no_download then return nil end
  if o.output then
    if M.is_dir(o.output) then
      M.check_writable(cmd, o.output)
      return { dir = o.output }
    end
    if M.exists(o.output) and not o.force then
      exit.usage(cmd, o.output .. " exists; pass --force to overwrite it")
    end
    local dir = M.dirname(o.output)
    if not M.is_dir(dir) then
      exit.disk(cmd, "cannot write " .. o.output .. ": its directory " .. dir .. " does not exist")
    end
    M.check_writable(cmd, dir)
    M.check_target_file(cmd, o.output)
    return { file = o.output }
  end
  local dir = o.out_dir or default_dir
  if not dir then return nil end
  if not M.is_dir(dir) and not M.mkdir_p(dir) then exit.disk(cmd, "cannot create the directory " .. dir) end
  M.check_writable(cmd, dir)
  return { dir = dir }
end

return M
