-- The repository's own documents (#unit: files only): README.md's layout table names
-- every file of the code, spec helpers, benchmarks, fuzz targets and docs (by path or by a
-- glob), doc/DESIGN.md is linked from README.md, and nothing points at documents outside
-- the repository.
local helpers = require "helpers"
local lfs = require "lfs"

local root = helpers.root

-- What .gitignore ignores by name anywhere (*.o, *.so ...: what a build leaves in src/).
local IGNORED = {}
for line in (helpers.read_file(root .. "/.gitignore") or ""):gmatch("[^\n]+") do
  if not line:find("/", 1, true) then
    IGNORED[#IGNORED + 1] = "^" .. line:gsub("[%.%-%+%?%%]", "%%%0"):gsub("%*", ".*") .. "$"
  end
end
local function ignored(name)
  for _, p in ipairs(IGNORED) do
    if name:match(p) then return true end
  end
  return false
end

-- Every file under dir (relative to the root), recursively, but those under skip and
-- those .gitignore ignores.
local function files_under(dir, skip, out)
  out = out or {}
  for name in lfs.dir(root .. "/" .. dir) do
    if name ~= "." and name ~= ".." and not ignored(name) then
      local rel = dir .. "/" .. name
      local mode = lfs.attributes(root .. "/" .. rel, "mode")
      if mode == "directory" then
        if not (skip and skip[rel]) then files_under(rel, skip, out) end
      elseif mode == "file" then
        out[#out + 1] = rel
      end
    end
  end
  return out
end

-- The paths and globs of README.md's layout table, as Lua patterns. In a row's first
-- column, a name without a slash is in the directory of the path before it.
local function layout_patterns(readme)
  local section = assert((readme .. "\n\n"):match("\nLayout .-\n(| path | what it owns |\n.-)\n\n"), "README.md has no Layout table")
  local patterns = {}
  for first in section:gmatch("\n| ([^|]+) |") do
    local dir = ""
    for item in first:gmatch("`([^`]+)`") do
      if item:find("/", 1, true) then
        dir = item:match("^(.*/)") or ""
      else
        item = dir .. item
      end
      local p = "^" .. item:gsub("[%.%-%+%?%%]", "%%%0"):gsub("%*", "[^/]*")
      if item:sub(-1) ~= "/" then p = p .. "$" end
      patterns[#patterns + 1] = p
    end
  end
  return patterns
end

describe("the documents", function()
  local readme = assert(helpers.read_file(root .. "/README.md"))

  it("name every file of the code, spec helpers, benchmarks, fuzz and docs in README.md's layout", function()
    local patterns = layout_patterns(readme)
    assert.is_true(#patterns > 20, "the layout table lists too little")
    local missing = {}
    local all = {}
    for _, dir in ipairs { "src", "lua", "bin", "bench", "fuzz", "doc", "examples", ".ci" } do
      files_under(dir, nil, all)
    end
    for _, f in ipairs(files_under("spec")) do
      if not f:match("_spec%.lua$") then all[#all + 1] = f end
    end
    for _, f in ipairs(all) do
      local named = false
      for _, p in ipairs(patterns) do
        if f:match(p) then named = true; break end
      end
      if not named then missing[#missing + 1] = f end
    end
    table.sort(missing)
    assert.are.same({}, missing)
  end)

  it("link doc/DESIGN.md from README.md, and it names the parts and where to add", function()
    assert.truthy(readme:find("(doc/DESIGN.md)", 1, true))
    local design = assert(helpers.read_file(root .. "/doc/DESIGN.md"))
    for _, words in ipairs { "A field of an answer", "A CLI command", "An emulator fault",
      "An event backend", "An error kind", "src/protocol.c", "src/defaults.h" } do
      assert.truthy(design:find(words, 1, true), "doc/DESIGN.md lacks: " .. words)
    end
  end)

  it("never point at documents outside the repository", function()
    local found = {}
    local all = { "README.md", "Makefile", "kling-scm-1.rockspec" }
    for _, dir in ipairs { "src", "lua", "bin", "bench", "fuzz", "doc", "examples", "spec", ".ci" } do
      files_under(dir, { ["fuzz/corpus"] = true }, all)
    end
    for _, f in ipairs(all) do
      local text = assert(helpers.read_file(root .. "/" .. f))
      -- (this file names the patterns it looks for)
      if f ~= "spec/docs_spec.lua" then
        for _, p in ipairs { "%.%./shared", "[^/%w_]DESIGN%.md", "[^%w_]api/[%w_]+%.md", "RUNCOMFY_MODEL_API%.md" } do
          for line in text:gmatch("[^\n]+") do
            local hit = line:find(p)
            if hit and not line:find("doc/DESIGN.md", 1, true) then
              found[#found + 1] = f .. ": " .. line
            end
          end
        end
      end
    end
    assert.are.same({}, found)
  end)
end)
