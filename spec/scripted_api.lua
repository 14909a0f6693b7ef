--- spec/scripted_api.lua: a stand-in for the API (spec/hostile_api.lua) that answers each
-- route from a script: a list of answers served in turn, the last one again and again.
--
--   local scripted = require "scripted_api"
--   local api = scripted.start(dir)                 -- api.base, api.api (".../v1"), api.stop()
--   api.serve {
--     { "GET", "^/v1/requests/r1/status", { { 200, '{"status":"in_queue"}' }, { 200, "{}" } } },
--     { "POST", "^/v1/models/", { { 200, '{"request_id":"r1"}' } } },
--   }
--   api.count("GET", "/v1/requests/r1/status")      -- requests that came for that path so far
--   api.requests()                                  -- each request's line and header lines
--   scripted.header_values(req, "User-Agent")       -- one header's values in such a request
--
-- "{BASE}" in a body is the server's own http://127.0.0.1:PORT. A request no route matches
-- gets HTTP 404 with error_code 404001. serve() starts every script from its first answer.
local helpers = require "helpers"

local q = helpers.quote
local M = {}

local generation = 0

--- The values of header `name` (any case) in one request of api.requests(), in order.
function M.header_values(req, name)
  local out = {}
  for _, h in ipairs(req.headers) do
    local n, v = h:match("^([^:]+):%s*(.-)%s*$")
    if n and n:lower() == name:lower() then out[#out + 1] = v end
  end
  return out
end

--- Starts the server in dir (a scratch directory). Returns the api object.
function M.start(dir)
  local self = { answers = dir .. "/scripted-answers.lua", port_file = dir .. "/scripted.port" }
  function self.serve(routes)
    generation = generation + 1
    local parts = { "local GEN = " .. generation .. " .. '/' .. " .. string.format("%q", dir), "local routes = {" }
    for _, r in ipairs(routes) do
      local answers = {}
      for _, a in ipairs(r[3]) do
        answers[#answers + 1] = string.format("{ %d, %q, %q }", a[1], a[2], a[3] or "application/json")
      end
      parts[#parts + 1] = string.format("{ %q, %q, { %s } },", r[1], r[2], table.concat(answers, ", "))
    end
    parts[#parts + 1] = [[}
if SCRIPT_GEN ~= GEN then SCRIPT_GEN, SCRIPT_SEEN = GEN, {} end
return function(method, path, base)
  for i, r in ipairs(routes) do
    if method == r[1] and path:match(r[2]) then
      local n = (SCRIPT_SEEN[i] or 0) + 1
      SCRIPT_SEEN[i] = n
      local a = r[3][math.min(n, #r[3])]
      return a[1], (a[2]:gsub("{BASE}", base)), a[3]
    end
  end
  return 404, '{"error_code":404001,"error_message":"no such route"}'
end]]
    helpers.write_file(self.answers, table.concat(parts, "\n"))
    helpers.write_file(self.port_file .. ".log", "")
    helpers.write_file(self.port_file .. ".headers", "")
  end
  self.serve {}
  local p = io.popen("exec lua5.4 " .. q(helpers.root .. "/spec/hostile_api.lua") .. " " .. q(self.port_file) .. " "
    .. q(self.answers) .. " >/dev/null 2>&1 & echo $!")
  self.pid = tonumber(p:read("*l"))
  p:close()
  local port
  for _ = 1, 200 do
    port = tonumber(helpers.read_file(self.port_file) or "")
    if port then break end
    helpers.sleep(0.05)
  end
  assert(port, "the scripted API did not start")
  self.base = "http://127.0.0.1:" .. port
  self.api = self.base .. "/v1"
  --- How many requests came for exactly this method and path since the last serve().
  function self.count(method, path)
    local n = 0
    for line in (helpers.read_file(self.port_file .. ".log") or ""):gmatch("[^\n]+") do
      local m, p2 = line:match("^(%u+) (%S+)")
      if m == method and p2 == path then n = n + 1 end
    end
    return n
  end
  --- The requests that came since the last serve(), in order: { line = "GET /v1/...",
  -- headers = { "Name: value", ... } } (header lines as sent).
  function self.requests()
    local list = {}
    for entry in (helpers.read_file(self.port_file .. ".headers") or ""):gmatch("[^\n]+") do
      local fields = {}
      for f in entry:gmatch("[^\t]+") do fields[#fields + 1] = f end
      list[#list + 1] = { line = table.remove(fields, 1), headers = fields }
    end
    return list
  end
  function self.stop() os.execute("kill " .. self.pid .. " 2>/dev/null") end
  return self
end

return M
