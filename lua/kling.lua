--- kling: a client for RunComfy's Model API (Kling 3.0 Pro text-to-video
-- first), with a C core on libcurl.
--
--   local kling = require "kling"
--   local job = assert(kling.generate{ prompt = "a red kite over the sea" })
--   local output = assert(job:wait())
--   job:download("kite.mp4")
--
-- The names here are the contract of DESIGN.md.
local client = require "kling.client"
local errors = require "kling.errors"
local json = require "kling.json"
local models = require "kling.models"
local sched = require "kling.sched"

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

--- The registered schema of a model, or nil.
function M.schema(model_id)
  return models.schema(model_id or M.DEFAULT_MODEL)
end

--- Marks a table as a JSON array, so that it goes out as [] even when empty
-- (for inputs of models without a schema; validated inputs are marked for you).
M.array = json.array

--- True when v is an error object of kling.
M.is_error = errors.is

M.run = sched.run
M.spawn = sched.spawn
M.set_waiter = sched.set_waiter

-- Runs fn inside the current scheduler, or a new one from the main thread.
local function scheduled(fn)
  if sched.running() then return fn() end
  return sched.run(fn)
end

--- Waits for every job concurrently. Returns outputs (index-aligned, nil
-- where a job failed) and errs (index-aligned, nil where it succeeded).
-- opts are job:wait's options.
function M.wait_all(jobs, opts)
  return scheduled(function()
    local outputs, errs, left = {}, {}, #jobs
    for i, job in ipairs(jobs) do
      sched.spawn(function()
        outputs[i], errs[i] = job:wait(opts)
        left = left - 1
      end)
    end
    sched.wait(nil, function() return left == 0 end)
    return outputs, errs
  end)
end

--- Waits until any one job ends; returns that job (nil, err on timeout).
function M.wait_any(jobs, opts)
  opts = opts or {}
  return scheduled(function()
    local winner, left, last_err = nil, #jobs, nil
    local wopts = {}
    for k, v in pairs(opts) do wopts[k] = v end
    wopts._stop = function() return winner ~= nil end
    for _, job in ipairs(jobs) do
      sched.spawn(function()
        local _, err = job:wait(wopts)
        if not winner and job:done() then
          winner = job
          for _, other in ipairs(jobs) do sched.notify(other) end -- the other waits stop now
        elseif err then
          last_err = err
        end
        left = left - 1
      end)
    end
    sched.wait(nil, function() return winner ~= nil or left == 0 end)
    if winner then return winner end
    return nil, last_err
  end)
end

return M
