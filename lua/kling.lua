--- kling: a client for RunComfy's Model API (Kling 3.0 Pro text-to-video
-- first), with a C core on libcurl.
--
--   local kling = require "kling"
--   local job = assert(kling.generate{ prompt = "a red kite over the sea" })
--   local output = assert(job:wait())
--   job:download("kite.mp4")
--
-- The names here are kling's public API (README.md); the library's parts
-- are kling.client (clients and their exchanges), kling.job, kling.protocol,
-- kling.errors, kling.models, kling.journal, kling.json, kling.sched and
-- kling.loops, over the C core kling.core.
local client = require "kling.client"
local errors = require "kling.errors"
local json = require "kling.json"
local models = require "kling.models"
local sched = require "kling.sched"
local core = require "kling.core"
local now = core.engine.now

local M = {}

M.VERSION = client.VERSION
M.DEFAULT_MODEL = models.DEFAULT_MODEL

--- Makes a client (see kling.client.new for the options).
function M.new(opts)
  return client.new(opts)
end

local default_client
--- The client kling.generate uses, built from the environment on first use.
function M.default_client()
  default_client = default_client or client.new()
  return default_client
end

--- Submits input to kling.DEFAULT_MODEL on the default client. Returns job | nil, err.
function M.generate(input)
  return M.default_client():generate(input)
end

--- Validates input for a model (default kling.DEFAULT_MODEL) without sending
-- anything. Returns true, normalized_input | nil, err (kind "validation").
function M.validate(input, model_id)
  return models.validate(input, model_id)
end

--- Registers a model's input schema (JSON text or a decoded table).
function M.register_model(model_id, schema)
  return models.register(model_id, schema)
end

--- A local media file as a data: URI ("data:image/png;base64,..."), to stand
-- in any URL field of an input (image_url, end_image_url...; observed:
-- RunComfy's own ComfyUI nodes send local files so). The MIME type comes from
-- the file's first bytes (PNG, JPEG, GIF, WebP, BMP; MP4, MOV, WebM; MP3,
-- WAV, OGG, FLAC, M4A), the base64 text is built in C in one buffer of its
-- final size. Files above the observed limits are refused before anything is
-- sent: an image 6 MiB, a video 32 MiB, an audio file 16 MiB (of the file's
-- bytes; kling.core.LIMITS.media_*_max); a submit whose whole body is above
-- 64 MiB is refused too (client:submit).
-- Returns uri, mime, bytes | nil, err: kind io (the file cannot be read;
-- err.path) or validation (a type kling does not know, or too large).
function M.file(path)
  if type(path) ~= "string" or path == "" then error("kling.file: path must be a non-empty string", 2) end
  local uri, mime, bytes = core.media.data_uri(path)
  if uri then return uri, mime, bytes end
  local message, why = mime, bytes
  if why == "io" then return nil, errors.new("io", message, { path = path, retryable = false }) end
  return nil, errors.new("validation", message, { path = path, errors = { { path = path, message = message } } })
end

--- The registered schema of a model, or nil.
function M.schema(model_id)
  return models.schema(model_id or M.DEFAULT_MODEL)
end

--- Marks a table as a JSON array, so that it goes out as [] even when empty
-- (for inputs of models without a schema; validated inputs are marked for you).
M.array = json.array

--- The value that stands for JSON null in an input (cjson.null; dkjson.null is also read as null).
M.null = json.null

--- True when v is an error object of kling.
M.is_error = errors.is

M.run = sched.run
M.spawn = sched.spawn
M.set_waiter = sched.set_waiter

-- Waits (yielding inside kling.run) until ready() or the deadline, while
-- the clients of `jobs` make progress.
local function wait_jobs(jobs, ready, deadline)
  local clients, first, n = {}, nil, 0
  for _, job in ipairs(jobs) do
    if not clients[job.client] then
      clients[job.client] = true
      first = first or job.client
      n = n + 1
    end
  end
  -- inside kling.run, or through the clients' waiter from a coroutine of the
  -- host's loop (it yields instead of blocking the process), or for one client
  if n <= 1 or sched.running() or (sched.waiter_of(first) and sched.in_coroutine()) then
    return sched.wait(first, ready, deadline, nil, clients)
  end
  return sched.run(function() return sched.wait(first, ready, deadline, nil, clients) end)
end

--- Waits for every job at once (no coroutine per job: the jobs are polled
-- by their clients' engines). Returns outputs (index-aligned, nil where a
-- job failed) and errs (index-aligned, nil where it succeeded).
-- opts: timeout (default 1800, for the whole set), on_update(job).
function M.wait_all(jobs, opts)
  opts = opts or {}
  local timeout = opts.timeout or core.DEFAULTS.wait_timeout
  local outputs, errs, left = {}, {}, 0
  local function one_ended() left = left - 1 end
  for i, job in ipairs(jobs) do
    if job.output then
      outputs[i] = job.output
    elseif job.error then
      errs[i] = job.error
    else
      left = left + 1
      job:_hold(opts.on_update, one_ended)
    end
  end
  if left > 0 then wait_jobs(jobs, function() return left <= 0 end, now() + timeout) end
  for i, job in ipairs(jobs) do
    if outputs[i] == nil and errs[i] == nil then
      local ended, out, err = job:_release(opts.on_update, one_ended)
      if ended then
        outputs[i], errs[i] = out, err
      else
        errs[i] = job:_timeout_error(timeout)
      end
    end
  end
  return outputs, errs
end

--- Waits until any one job ends; returns that job (nil, err on timeout, or
-- when every job's polling failed: the last such error).
-- opts: timeout (default 1800), on_update(job).
function M.wait_any(jobs, opts)
  opts = opts or {}
  local timeout = opts.timeout or core.DEFAULTS.wait_timeout
  -- a job has ended once its end is known (job.output or job.error), not when its status
  -- says so: a completed job's result may not be ready yet (observed: 400005 for a while)
  local function ended(job) return job.output ~= nil or job.error ~= nil end
  for _, job in ipairs(jobs) do
    if ended(job) then return job end
  end
  local winner, failed, last_err = nil, 0, nil
  local function one_ended(job)
    if ended(job) then winner = winner or job else failed = failed + 1 end
  end
  for _, job in ipairs(jobs) do job:_hold(opts.on_update, one_ended) end
  wait_jobs(jobs, function() return winner ~= nil or failed == #jobs end, now() + timeout)
  for _, job in ipairs(jobs) do
    local over, _, err = job:_release(opts.on_update, one_ended)
    if over and not ended(job) then last_err = err end
  end
  if winner then return winner end
  return nil, last_err or errors.new("timeout", string.format("no job ended within %g s", timeout))
end

return M
