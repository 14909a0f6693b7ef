--- Error objects of kling.
-- Every failure the library reports is a table with a `kind` (see KINDS),
-- a `message`, and where they apply `status` (HTTP), `code` (RunComfy's
-- error_code), `request_id`, `retryable`, and for validation `errors`
-- (a list of { path =, message = }). `tostring(err)` gives one readable line
-- (plus one line per validation problem). Messages never hold the token:
-- whatever came from the server passes through the client's scrubber.
local protocol = require "kling.protocol"

local M = {}

--- The kinds (README.md, "Errors"; not_ready for job:result()).
-- io: a local file or disk failure (journal, batch state, download target);
-- its message names the path and the system's reason; never retryable.
M.KINDS = {
  validation = true, bad_request = true, auth = true, payment = true, not_found = true,
  rate_limited = true, server = true, network = true, timeout = true, failed = true,
  cancelled = true, not_cancellable = true, submit_unknown = true, protocol = true,
  not_ready = true, io = true,
}

local Error = {}
Error.__index = Error
Error.__name = "kling.error"

function Error.__tostring(e)
  local extra = {}
  if e.status then extra[#extra + 1] = "HTTP " .. tostring(e.status) end
  if e.code then extra[#extra + 1] = "code " .. tostring(e.code) end
  if e.request_id then extra[#extra + 1] = "request " .. tostring(e.request_id) end
  local s = "kling: " .. tostring(e.kind) .. ": " .. tostring(e.message)
  if #extra > 0 then s = s .. " (" .. table.concat(extra, ", ") .. ")" end
  if e.errors then
    for _, item in ipairs(e.errors) do
      s = s .. "\n  " .. tostring(item.path) .. ": " .. tostring(item.message)
    end
  end
  return s
end

--- Makes an error. `fields` may add status, code, request_id, retryable, errors...
function M.new(kind, message, fields)
  assert(M.KINDS[kind], "unknown error kind " .. tostring(kind))
  local e = { kind = kind, message = message }
  if fields then
    for k, v in pairs(fields) do e[k] = v end
  end
  return setmetatable(e, Error)
end

--- True when v is a kling error.
function M.is(v)
  return getmetatable(v) == Error
end

--- An error_code as an integer, or nil when v is none: the one rule
-- (kling.protocol.error_code; src/protocol.c): a number without a fraction
-- from 0 to 2^53, or a string of 1 to 15 ASCII digits. 1.5, "12abc", "",
-- null and booleans are no error code.
local function numeric_code(v)
  if v == nil then return nil end
  return protocol.error_code(v)
end

M.numeric_code = numeric_code

-- (scrub, optional: masks the token in the text joined from the parts: a
-- token no part holds may span them, as a JWT's dots would)
local function detail_text(detail, scrub)
  if type(detail) == "string" then return detail end
  if type(detail) ~= "table" then return nil end
  local parts = {}
  for _, d in ipairs(detail) do
    if type(d) == "table" then
      local loc = type(d.loc) == "table" and table.concat(d.loc, ".") or nil
      local msg = d.msg or d.message
      if msg then parts[#parts + 1] = loc and (loc .. ": " .. tostring(msg)) or tostring(msg) end
    elseif type(d) == "string" then
      parts[#parts + 1] = d
    end
  end
  if #parts == 0 then return nil end
  local text = table.concat(parts, "; ")
  return scrub and scrub(text) or text
end

--- The message an error answer carries, if any. scrub (optional): masks the
-- token in a message kling joins from a detail's parts (each part was masked
-- where it entered, the joined text was not).
function M.server_message(body, scrub)
  if type(body) ~= "table" then return nil end
  -- (a blank message says nothing: passed over like an empty one)
  for _, k in ipairs { "error_message", "message" } do
    if type(body[k]) == "string" and body[k]:find("%S") then return body[k] end
  end
  local e = body.error
  if type(e) == "string" and e:find("%S") then return e end
  if type(e) == "table" then
    local m = M.server_message(e, scrub)
    if m then return m end
  end
  return detail_text(body.detail, scrub)
end

local function scrub_deep(v, scrub, depth)
  if type(v) == "string" then return scrub(v) end
  if type(v) ~= "table" or depth > 8 then return v end
  local copy = {}
  for k, x in pairs(v) do copy[k] = scrub_deep(x, scrub, depth + 1) end
  return copy
end

--- The error an HTTP answer stands for, or nil when it is a success.
-- status: HTTP status; body: the decoded JSON body (or nil); scrub: masks the token.
-- The kind and whether it is retryable come from the one rule
-- (kling.protocol.answer_kind; src/protocol.c), which every reading of an
-- answer follows: an HTTP 2xx whose body has an `error_code` is an error too
-- (observed), and a retryable one (408, 429, 5xx, as a status or a code's
-- family) is tried again like the same HTTP status.
-- route (optional): the route answered ("result"...): error_code 400005 on the
-- result route is kind not_ready whatever the HTTP status
-- (kling.protocol.not_ready).
function M.from_answer(status, body, scrub, request_id, route)
  local code = type(body) == "table" and numeric_code(body.error_code) or nil
  local kind, retryable = protocol.answer_kind(status, code)
  if route and protocol.not_ready(route, code) then kind, retryable = "not_ready", true end
  if not kind then return nil end
  local msg = M.server_message(body, scrub)
  return M.new(kind, msg and scrub(msg) or ("HTTP " .. status .. " from the service"), {
    status = status,
    code = code,
    request_id = request_id,
    retryable = retryable,
    detail = type(body) == "table" and scrub_deep(body.detail, scrub, 0) or nil,
  })
end

return M
