--- RunComfy's Model API for the Lua layer: the protocol statement written
-- once in the C core (src/protocol.c, read here through kling.core.protocol),
-- and the reading of an answer that applies it. doc/PROTOCOL.md says the
-- same in words.
--
-- The rule for decoding: the Lua layer decodes every answer (lua-cjson,
-- kling.json.decode) where it enters and masks it (client.lua); it then reads
-- it with M.judge. For a wait, what judge says is handed to the C poller as an
-- observation (eng:observe), which schedules the next poll from it; for a
-- direct call (refresh, result, cancel, submit) client.lua asks the engine to
-- send it again (x:again(), with the engine's backoff) when judge says so. The
-- C core never decodes JSON and never calls into Lua.
local core = require "kling.core"

local P = core.protocol
local M = {}

--- The status words the service uses, mapped to the ones jobs report
-- (in_queue, in_progress, completed, failed, cancelled).
M.STATUS = P.STATUS
--- The statuses of a job that has ended.
M.TERMINAL = P.TERMINAL
--- A cancel answer's outcome words and what they mean ("cancelled",
-- "not_cancellable", "requested").
M.OUTCOME = P.OUTCOME
--- The answer fields kling reads.
M.FIELDS = P.FIELDS
--- The routes: name -> { method =, path = } (path under the base URL).
M.ROUTES = P.ROUTES
--- 2xx answers without a usable status asked again in a row, at most.
M.UNUSABLE_TRIES = P.UNUSABLE_TRIES
--- A request id: ^[A-Za-z0-9_-]{1,128}$ (M.ID_RULE; M.ID_PATTERN without the length).
M.ID_RULE, M.ID_PATTERN, M.ID_MAX = P.ID_RULE, P.ID_PATTERN, P.ID_MAX

--- True when v is a request id that may go into a URL.
M.valid_id = P.valid_id
--- True when v is a model id: slash-separated names of letters, digits,
-- '.', '_' and '-', each starting with a letter or digit, 1 to 256 bytes.
M.valid_model_id = P.valid_model_id
--- The URL of a route: url(base, "status", id) -> url | nil, message (the id
-- or model id is checked first).
M.url = P.url
--- url_under(url, base) -> true when url (a URL the service gave) starts with
-- base followed by "/" and holds no byte from 0 to 32 nor 127: then kling
-- may use it (the token never goes elsewhere; C reads it whole).
M.url_under = P.url_under
--- RunComfy's error_code of a decoded value as an integer, or nil when it is
-- none: a number without a fraction from 0 to 2^53, or a string of 1 to 15
-- ASCII digits (1.5, "12abc", "", null and booleans are no error code).
M.error_code = P.error_code
--- What an answer with this HTTP status and error_code (an integer, or nil)
-- is: kind, retryable | nil for a success (the one rule: src/protocol.c).
M.answer_kind = P.answer_kind
--- Is a transfer that failed on the way (libcurl's code, a proxy's refusal
-- status) worth another try? retryable, never_sent.
M.transient = P.transient
--- A usable status: a string of at least one byte.
M.usable_status = P.usable_status
--- RunComfy's error_code for "not completed yet" (400005).
M.NOT_READY_CODE = P.NOT_READY_CODE
--- not_ready(route, code) -> true when an answer of route ("result") with this
-- error_code (an integer or nil) means "not ready, poll again", whatever its
-- HTTP status (400005, on the result route only).
M.not_ready = P.not_ready
--- cancel_means(status, outcome) -> "cancelled" | "requested" |
-- "not_cancellable" | nil (an unknown outcome word): what a cancel answer
-- means. The status decides when it says cancelled (cancelled), completed or
-- failed (not_cancellable); then the outcome word; with no outcome, a status
-- "cancellation_requested" was accepted but is not final yet ("requested"),
-- any other status kling knows is "not_cancellable", and none or an unknown
-- word nil.
M.cancel_means = P.cancel_means

-- A URL an output may give: a string with at least one byte that is not
-- whitespace. (What else it holds is the file host's business: a download
-- reports it; a URL the token was masked in stays usable as text.)
local function usable_url(v)
  return type(v) == "string" and v:find("%S") ~= nil
end
M.usable_url = usable_url

--- The video URL of an output: output.video, else the first usable URL
-- (usable_url) of output.videos (an element "" or null before it is passed
-- over, as usable_output passes over it); nil otherwise.
function M.video_of(output)
  if type(output) ~= "table" then return nil end
  if usable_url(output.video) then return output.video end
  if type(output.videos) == "table" then
    for _, u in ipairs(output.videos) do
      if usable_url(u) then return u end
    end
  end
  return nil
end

--- Is an output of a completed job usable? It must give at least one usable
-- URL (a string that is not empty or blank) as video, image, or an element of
-- videos or images.
-- Observed: a completed answer whose video is missing, null, "" or [] has no
-- usable output: an error (kind protocol), never a success.
function M.usable_output(output)
  if type(output) ~= "table" then return false end
  if usable_url(output.video) or usable_url(output.image) then return true end
  for _, k in ipairs { "videos", "images" } do
    if type(output[k]) == "table" then
      for _, u in ipairs(output[k]) do
        if usable_url(u) then return true end
      end
    end
  end
  return false
end

--- The queue position an answer gives: a number without a fraction from 0
-- to 2^53, read while the job is in_queue; nil otherwise.
function M.queue_position(body)
  if M.STATUS[body.status] ~= "in_queue" then return nil end
  return P.queue_position(body.queue_position)
end

--- kling's own words in an answer: the field names it reads and the status
-- and outcome words it knows. They are the protocol's, not text a server made
-- up, and are never masked (a short token must not turn "status" into
-- something kling no longer reads).
M.OWN_WORDS = {}
for _, w in ipairs(M.FIELDS) do M.OWN_WORDS[w] = true end
for w in pairs(M.STATUS) do M.OWN_WORDS[w] = true end
for w in pairs(M.OUTCOME) do M.OWN_WORDS[w] = true end

--- What an answer means, by the protocol. res: the exchange (x:result());
-- body: its decoded body (nil when there is none or it is not JSON); route:
-- the route it answered ("status", "result", ...; may be nil). Returns
--   "status"   a usable status (body.status)
--   "not_ready" the result is not ready yet (400005 on the result route,
--              whatever the HTTP status: M.not_ready): ask again after backoff
--   "retry"    ask again after backoff: a retryable error (408, 429, 5xx, as
--              an HTTP status or an error_code's family), or a transient
--              failure on the way
--   "unusable" a 2xx answer without a usable status (asked again a few
--              times by the routes that need one, M.UNUSABLE_TRIES)
--   "end"      an error that ends the call
function M.judge(res, body, route)
  local e = res.error
  if e then return (M.transient(e.curl_code or 0, e.proxy_status)) and "retry" or "end" end
  local status = res.status
  if status >= 200 and status <= 299 and type(body) == "table" and body.error_code == nil then
    -- (the common answer: a 2xx without error_code is no error, by the one rule, without
    -- asking it for a kind)
    return M.usable_status(body.status) and "status" or "unusable"
  end
  local code = type(body) == "table" and body.error_code ~= nil and M.error_code(body.error_code) or nil
  if route and M.not_ready(route, code) then return "not_ready" end
  local kind, retryable = M.answer_kind(res.status, code)
  if kind then return retryable and "retry" or "end" end
  if type(body) == "table" and M.usable_status(body.status) then return "status" end
  return "unusable"
end

return M
