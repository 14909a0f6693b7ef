-- doc/EMULATOR.md against the emulator's own tables: every flag, fault (its routes, whether
-- it acts, its argument), directive, route, counter and reader limit the code has is
-- documented, and nothing documented is missing from the code; --help is generated from the
-- same tables; the rockspec and `make install` ship every part.
local helpers = require "helpers"
local emulator = require "kling.emulator"
local faults = require "kling.emulator.faults"
local jobs = require "kling.emulator.jobs"
local routes = require "kling.emulator.routes"
local http = require "kling.emulator.http"
local cli = require "kling.emulator.cli"

local DOC = assert(helpers.read_file(helpers.root .. "/doc/EMULATOR.md"))

-- The rows of the table whose header line is `header` (cells trimmed).
local function table_rows(header)
  local at = DOC:find(header, 1, true)
  assert(at, "doc/EMULATOR.md has no table " .. header)
  local rows = {}
  local after = DOC:sub(at):match("^[^\n]*\n[^\n]*\n(.-)\n\n") or DOC:sub(at):match("^[^\n]*\n[^\n]*\n(.*)$")
  for line in (after .. "\n"):gmatch("([^\n]*)\n") do
    if line:sub(1, 1) ~= "|" then break end
    local cells = {}
    for cell in line:sub(2):gmatch("([^|]*)|") do cells[#cells + 1] = cell:match("^%s*(.-)%s*$") end
    rows[#rows + 1] = cells
  end
  return rows
end

-- The backticked words of a text, in order.
local function ticked(text)
  local list = {}
  for word in text:gmatch("`([^`]+)`") do list[#list + 1] = word end
  return list
end

local function set(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

describe("doc/EMULATOR.md", function()
  it("lists every flag of the command line, and no other", function()
    local documented = {}
    for _, row in ipairs(table_rows("| flag | default | meaning |")) do
      for flag in row[1]:gmatch("`(%-%-?[%w-]+)") do documented[flag] = true end
    end
    local flags = { ["-h"] = true, ["--help"] = true }
    for _, flag in ipairs(cli.FLAGS) do flags["--" .. flag[1]] = true end
    assert.same(flags, documented)
  end)

  it("names every fault, in the table's order, and every route a fault may name", function()
    local spec = {}
    for _, row in ipairs(table_rows("| part | values |")) do spec[row[1]] = row[2] end
    local names = {}
    for _, fault in ipairs(faults.LIST) do names[#names + 1] = fault.name end
    assert.same(names, ticked(spec["`FAULT`"]))
    assert.same(faults.ROUTES, ticked(spec["`ROUTE`"]:gsub("%b()", "")))
    -- ARG: the faults that take one, and only those
    local with_arg = {}
    for _, fault in ipairs(faults.LIST) do
      if fault.arg then with_arg[fault.name] = true end
    end
    local documented = {}
    for names_text in (spec["`ARG`"] .. ";"):gmatch("([^;:]*):[^;]*;") do
      for name in names_text:gmatch("`([^`]+)`") do documented[name] = true end
    end
    assert.same(with_arg, documented)
  end)

  it("says, for every fault, the routes it fits and whether the request is acted on", function()
    local seen = {}
    local NUMBERS = { "one", "two", "three", "four", "five", "six", "seven", "eight", "nine" }
    for _, row in ipairs(table_rows("| fault | routes | acts | on the wire |")) do
      local kinds
      if row[2]:match("^all ") then
        assert.equal("all " .. NUMBERS[#routes.FAULT_KINDS], row[2])
        kinds = routes.FAULT_KINDS
      else
        kinds = {}
        for kind in row[2]:gmatch("[%w_]+") do kinds[#kinds + 1] = kind end
      end
      for _, name in ipairs(ticked(row[1])) do
        local fault = faults.BY_NAME[name]
        assert.is_table(fault, "documented fault " .. name .. " does not exist")
        assert.is_nil(seen[name], name .. " has two rows")
        seen[name] = true
        assert.same(faults.kinds_of(name), kinds, name)
        assert.equal(fault.acts and "yes" or "no", row[3], name)
      end
    end
    assert.same(set(faults.NAMES), seen)
  end)

  it("lists every directive, and no other", function()
    local documented = {}
    for _, row in ipairs(table_rows("| directive | effect |")) do
      for _, cell in ipairs(row) do
        for name in cell:gmatch("`@emu:([%w_]+)") do documented[name] = true end
      end
    end
    assert.same(set(jobs.DIRECTIVES), documented)
  end)

  it("documents every route of the route table and its methods", function()
    local function template(pattern)
      return (pattern:gsub("^%^", ""):gsub("%$$", ""):gsub("%(%.%+%)", "{model_id}")
        :gsub("%(%%d%+/%[%^/%]%*%)", "N/{id}"):gsub("%(%[%^/%]%*%)", "{id}"):gsub("%%%.", "."))
    end
    for _, route in ipairs(routes.API_ROUTES) do
      for method in pairs(route.methods) do
        local text = "`" .. method .. " " .. template(route.pattern) .. "`"
        assert.is_truthy(DOC:find(text, 1, true), text .. " is not in doc/EMULATOR.md")
      end
    end
    for _, route in ipairs(routes.FILE_ROUTES) do
      local path = template(route.pattern)
      assert.is_truthy(DOC:find(path, 1, true), path .. " is not in doc/EMULATOR.md")
    end
  end)

  it("names the request counter of every kind of route", function()
    local text = DOC:match("`requests` per route (%b())")
    assert.is_string(text)
    local documented = set(ticked(text))
    assert.same(set(routes.KINDS), documented)
  end)

  it("states the HTTP reader's limits as they are", function()
    local rows = table_rows("| request | status |")
    local by_status = {}
    for _, row in ipairs(rows) do by_status[row[2]] = row[1] end
    assert.matches("longer than " .. http.LIMITS.line // 1024 .. " KiB", by_status["414"])
    assert.matches("longer than " .. http.LIMITS.line // 1024 .. " KiB, more than " .. http.LIMITS.headers
      .. " header lines, or more than " .. http.LIMITS.head // 1024 .. " KiB", by_status["431"])
    assert.matches("more than " .. emulator.DEFAULTS.max_body // (1024 * 1024) .. " MiB", by_status["413"])
    for _, status in ipairs{ "400", "501", "505" } do assert.is_string(by_status[status], status) end
  end)
end)

describe("kling-emulator --help", function()
  it("is generated: every flag, every fault with its summary, the routes a fault may name", function()
    local usage = emulator.USAGE
    for _, flag in ipairs(cli.FLAGS) do assert.matches("%-%-" .. flag[1]:gsub("%-", "%%-"), usage) end
    for _, fault in ipairs(faults.LIST) do
      assert.is_truthy(usage:find("\n  " .. fault.name .. (fault.acts and "*" or " "), 1, true), fault.name)
      assert.is_truthy(usage:find(fault.summary, 1, true), fault.name)
    end
    assert.is_truthy(usage:find("ROUTE: " .. table.concat(faults.ROUTES, " "), 1, true))
  end)
end)

describe("the emulator's parts", function()
  it("are all shipped by the rockspec and by make install", function()
    local rockspec = assert(helpers.read_file(helpers.root .. "/kling-scm-1.rockspec"))
    local makefile = assert(helpers.read_file(helpers.root .. "/Makefile"))
    local n = 0
    for _, file in ipairs(helpers.files(helpers.root .. "/lua/kling/emulator")) do
      local name = file:match("^(.+)%.lua$")
      if name then
        n = n + 1
        local line = string.format('["kling.emulator.%s"] = "lua/kling/emulator/%s.lua"', name, name)
        assert.is_truthy(rockspec:find(line, 1, true), line .. " is not in the rockspec")
      end
    end
    assert.is_true(n >= 10)
    assert.is_truthy(makefile:find("install -m 0644 lua/kling/emulator/*.lua", 1, true))
  end)
end)
