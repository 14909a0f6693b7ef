--- kling.emulator.routes: the route table, the counters derived from it, and dispatch.
--
-- Each route: pattern (a Lua pattern on the path; its capture goes to the handler), kind
-- (the requests counter it goes to: every kind of the table has one in the stats, plus
-- "other"), auth (needs the bearer token), id (the capture is a request id to check),
-- faults (the route draws for faults; "json" for answers in JSON, "file" for the file
-- host's: which faults fit it, see kling.emulator.faults), methods (method -> handler name;
-- the handlers are kling.emulator.api's, .catalog's, .control's and .files'). A new route
-- is one line here and one handler; its counter, its fault route name and its 405 answers
-- follow. Several lines may share a pattern with other methods (POST /v1/models/{id} is a
-- submit, GET the catalog's model): a request goes to the first line whose pattern and
-- method both fit, and a 405's Allow lists the methods of every line whose pattern fits.
--
-- Dispatch: route one request -> reply, kind, injected fault (name) | nil. The server's
-- faulted method (kling.emulator.faults) runs the handler of a faultable route.
local reply = require "kling.emulator.reply"

local M = {}

local concat = table.concat
local error_reply, not_found = reply.error_reply, reply.not_found

M.API_ROUTES = {
  { pattern = "^/v1/models/(.+)$", kind = "submit", auth = true, faults = "json", methods = { POST = "submit" } },
  { pattern = "^/v1/requests/([^/]*)/status$", kind = "status", auth = true, id = true, faults = "json", methods = { GET = "status" } },
  { pattern = "^/v1/requests/([^/]*)/result$", kind = "result", auth = true, id = true, faults = "json", methods = { GET = "result" } },
  { pattern = "^/v1/requests/([^/]*)/cancel$", kind = "cancel", auth = true, id = true, faults = "json", methods = { POST = "cancel" } },
  { pattern = "^/v1/models$", kind = "catalog", auth = true, faults = "json", methods = { GET = "models" } },
  { pattern = "^/v1/models/categories$", kind = "catalog", auth = true, faults = "json", methods = { GET = "model_categories" } },
  { pattern = "^/v1/models/(.+)$", kind = "catalog", auth = true, faults = "json", methods = { GET = "model" } },
  { pattern = "^/__emulator/stats$", kind = "stats", methods = { GET = "stats" } },
  { pattern = "^/__emulator/reset$", kind = "stats", methods = { POST = "reset" } },
  { pattern = "^/__emulator/jobs/([^/]*)$", kind = "stats", methods = { GET = "job_record" } },
  { pattern = "^/__emulator/jobs/([^/]*)/change$", kind = "stats", methods = { POST = "change_file" } },
  { pattern = "^/__emulator/jobs$", kind = "stats", methods = { GET = "jobs" } },
  { pattern = "^/__emulator/clock$", kind = "stats", methods = { GET = "clock", POST = "clock_set" } },
  { pattern = "^/__emulator/faults$", kind = "stats", methods = { GET = "faults_get", POST = "faults_set" } },
}

M.FILE_ROUTES = {
  { pattern = "^/v/([^/]*)%.mp4$", kind = "download", faults = "file", methods = { GET = "download", HEAD = "download" } },
  { pattern = "^/r/(%d+/[^/]*)%.mp4$", kind = "download", faults = "file", methods = { GET = "redirect", HEAD = "redirect" } },
}

-- Derived from the tables: the counter names, and the routes a fault can name.
M.KINDS = {}               -- every kind, in table order, then "other"
M.FAULT_KINDS = {}         -- the faultable kinds, in table order
M.FAULT_CLASS = {}         -- faultable kind -> "json" | "file"
do
  local seen = {}
  for _, list in ipairs{ M.API_ROUTES, M.FILE_ROUTES } do
    for _, route in ipairs(list) do
      if not seen[route.kind] then
        seen[route.kind] = true
        M.KINDS[#M.KINDS + 1] = route.kind
        if route.faults then
          M.FAULT_KINDS[#M.FAULT_KINDS + 1] = route.kind
          M.FAULT_CLASS[route.kind] = route.faults
        end
      end
    end
  end
  M.KINDS[#M.KINDS + 1] = "other"
end
local FAULT_CLASS = M.FAULT_CLASS

M.MAX_RECORDED_PATHS = 1000 -- paths kept in files.authorization_paths

--- Fresh counters: requests per kind of the route table (and "other"), and the rest of
-- /__emulator/stats's own counts (the connections are counted by the listeners).
function M.new_counters()
  local requests = {}
  for _, kind in ipairs(M.KINDS) do requests[kind] = 0 end
  return {
    requests = requests,
    requests_total = 0,
    jobs_created = 0,
    submits_answered = 0,
    auth_failures = 0,
    files = { requests = 0, bytes_sent = 0, authorization_headers = 0, authorization_paths = {} },
    -- injected = { [route] = { [fault] = n } }; submit_attempts: submits that reached the
    -- fault draw (authenticated POSTs on the submit route); jobs_created_by_attempt: jobs
    -- those submits created (drop_after_create's included)
    faults = { injected = {}, submit_attempts = 0, jobs_created_by_attempt = 0 },
  }
end

--- The refusal for a request without the right bearer token, or nil (server:check_auth).
function M.check_auth(server, req)
  local value = req.headers.authorization
  local token = value and value:match("^%s*[Bb]earer%s+(%S+)%s*$")
  if not token then
    if value and value:find("%S") then
      return error_reply(403, 403001, "Invalid token")
    end
    return error_reply(401, 403001, "Missing bearer token")
  end
  if server.token and server.token ~= "" and token ~= server.token then
    return error_reply(403, 403001, "Invalid token")
  end
  return nil
end

--- Count one request of a kind (server:count); the control routes ("stats") stay out of
-- requests_total.
function M.count(server, kind)
  local c = server.counters
  c.requests[kind] = c.requests[kind] + 1
  if kind ~= "stats" then c.requests_total = c.requests_total + 1 end
end

local ID_PATTERN = "^[A-Za-z0-9_-]+$"

-- The file host's own counts: every request, and those that carried a token.
local function count_file_request(self, req)
  local files = self.counters.files
  files.requests = files.requests + 1
  if req.headers.authorization then
    files.authorization_headers = files.authorization_headers + 1
    local paths = files.authorization_paths
    if #paths < M.MAX_RECORDED_PATHS then paths[#paths + 1] = req.path end
  end
end

-- 405 with the methods of every route whose pattern fits the path in Allow.
local function not_allowed(list, path)
  local allow, seen = {}, {}
  for _, route in ipairs(list) do
    if path:match(route.pattern) then
      for method in pairs(route.methods) do
        if not seen[method] then
          seen[method] = true
          allow[#allow + 1] = method
        end
      end
    end
  end
  table.sort(allow)
  local r = error_reply(405, 405001, "Method not allowed")
  r.headers = { { "Allow", concat(allow, ", ") } }
  return r
end

--- Route one request (server:dispatch). @return reply, kind, injected fault (name) | nil
function M.dispatch(self, listener, req)
  local path = req.path
  if listener == self.files then count_file_request(self, req) end
  local routes = listener.routes
  -- the first route whose pattern and method fit; else the first whose pattern fits (405)
  local route, capture
  local method = req.method
  for _, r in ipairs(routes) do
    if r.methods[method] then
      capture = path:match(r.pattern)
      if capture then
        route = r
        break
      end
    end
  end
  if not route then
    for _, r in ipairs(routes) do
      capture = path:match(r.pattern)
      if capture then
        route = r
        break
      end
    end
  end
  if route then
    local kind = route.kind
    self:count(kind)
    if route.auth then
      local refusal = self:check_auth(req)
      if refusal then
        self.counters.auth_failures = self.counters.auth_failures + 1
        return refusal, kind
      end
    end
    local name = route.methods[req.method]
    if not name then return not_allowed(routes, path), kind end
    if route.id and (#capture > 128 or not capture:match(ID_PATTERN)) then
      return error_reply(400, 400001, "Invalid resource identifier"), kind
    end
    if FAULT_CLASS[kind] then
      local r, fault = self:faulted(kind, name, req, capture)
      return r, kind, fault
    end
    return self.handlers[name](self, req, capture), kind
  end
  local kind = listener == self.files and "download" or "other"
  self:count(kind)
  if listener == self.api and path:match("^/v1/") then
    local refusal = self:check_auth(req)
    if refusal then
      self.counters.auth_failures = self.counters.auth_failures + 1
      return refusal, kind
    end
  end
  return not_found("Not found"), kind
end

return M
