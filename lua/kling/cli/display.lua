--- kling.cli.display: what a command shows while jobs run.
--
--   "tty"   a live area at the bottom of stdout, one row per job (and a summary line),
--           redrawn in place (\r and ANSI erase); a permanent line above it when a job
--           ends (in colour, unless NO_COLOR or TERM=dumb);
--   "plain" log lines on stderr: "HH:MM:SS ID state", one per change;
--   "json"  nothing (the command writes its JSON objects itself).
--
-- A display writes to two streams (kling.cli.output's: escaping what came from outside)
-- and reads a clock, all given to M.new: a spec gives memory sinks and its own clock, and
-- reads what was drawn without a terminal. The text of a row is made by pure functions
-- (M.state_text, M.download_text) a spec can call alone.
local output = require "kling.cli.output"
local format = require "kling.cli.format"

local M = {}

local Display = {}
Display.__index = Display
M.Display = Display

local finite, fit = format.finite, format.fit

-- SGR sequences of the permanent lines' styles.
local STYLE = { ok = "\27[32m", fail = "\27[31m", warn = "\27[33m" }
local RESET = "\27[0m"

--- A display of mode "tty", "plain" or "json". opts (all optional): out, err (streams
-- with write/raw/flush; default kling.cli.output's stdout and stderr), now (a clock in
-- seconds; default kling.core.now), height, width (default: the terminal's, tty only),
-- colour (default: kling.cli.term's rule), time (os.date-like function for the plain
-- log's "HH:MM:SS").
function M.new(mode, opts)
  opts = opts or {}
  local d = setmetatable({
    mode = mode, rows = {}, drawn = 0, last = nil,
    out = opts.out or output.io.stdout, err = opts.err or output.io.stderr,
    now = opts.now or require("kling.core").now, date = opts.time or os.date,
  }, Display)
  if mode == "tty" then
    local term = require "kling.cli.term"
    if opts.height and opts.width then
      d.height, d.width = opts.height, opts.width
    else
      d.height, d.width = term.size()
    end
    if opts.colour == nil then d.colour = term.colour(mode) else d.colour = opts.colour end
  end
  return d
end

function Display:log(text)
  if self.mode == "plain" then
    self.err:write(self.date("%H:%M:%S "), text, "\n")
    self.err:flush()
  elseif self.mode == "tty" and not self.stopped then
    self:line(text)
  end
end

-- Erases the live area (the cursor ends where it began).
function Display:_erase()
  if self.drawn == 0 then return "" end
  local s = "\r" .. (self.drawn > 1 and ("\27[" .. (self.drawn - 1) .. "A") or "") .. "\27[J"
  self.drawn, self.last = 0, nil
  return s
end

--- A permanent line (tty: above the live area, on stdout). style: "ok", "fail", "warn"
-- or nil: its first line's colour, when the display has colour.
function Display:line(text, style)
  if self.mode ~= "tty" then return end
  self.out:raw(self:_erase())
  local sgr = self.colour and STYLE[style]
  if sgr then
    local first, rest = text:match("^([^\n]*)(.*)$")
    self.out:raw(sgr)
    self.out:write(first)
    self.out:raw(RESET)
    self.out:write(rest, "\n")
  else
    self.out:write(text, "\n")
  end
  self:render()
end

--- A message for stderr, whatever the mode (the live area is set aside meanwhile).
function Display:warn(text)
  if self.mode == "tty" and self.drawn > 0 then
    self.out:raw(self:_erase())
    self.out:flush()
  end
  self.err:write(text, "\n")
  self.err:flush()
  if self.mode == "tty" then self:render() end
end

--- Stops the live display (after Ctrl-C): the area is erased and stays empty.
function Display:stop()
  if self.mode == "tty" then
    self.out:raw(self:_erase())
    self.out:flush()
  end
  self.stopped = true
end

--- A job row: label shown first; state from update().
function Display:add(label)
  local row = { label = label, t0 = self.now(), phase = "waiting" }
  self.rows[#self.rows + 1] = row
  self:render()
  return row
end

local function remove_row(self, row)
  for i, r in ipairs(self.rows) do
    if r == row then
      table.remove(self.rows, i)
      return
    end
  end
end

--- A job's state as words: "queued, position 2", "running", a word of the service's
-- (escaped), "waiting" before the first status.
function M.state_text(status, qp)
  if status == "in_queue" then
    return qp and ("queued, position " .. qp) or "queued"
  elseif status == "in_progress" then
    return "running"
  elseif status == nil then
    return "waiting"
  end
  return output.escape(status) -- a word of the service's
end

--- Takes in a job's status (on_update).
function Display:update(row, job)
  if row.status == job.status and row.qp == job.queue_position then return end
  row.status, row.qp, row.phase = job.status, job.queue_position, "job"
  if self.mode == "plain" and job.status ~= "failed" and job.status ~= "cancelled" then
    self:log(row.label .. " " .. M.state_text(job.status, job.queue_position))
  else
    self:render()
  end
end

function Display:start_download(row, path)
  row.phase, row.path = "download", path
  row.dl = { t0 = self.now() }
  if self.mode == "plain" then self:log(row.label .. " downloading to " .. path) end
  self:render()
end

function Display:progress(row, got, total)
  local dl = row.dl
  if not dl then return end
  if not dl.got0 then dl.got0, dl.t0 = got, self.now() end
  dl.got, dl.total = got, total
  self:render()
end

local function bar(frac, width)
  local full = math.floor(frac * width + 0.5)
  return "[" .. string.rep("#", full) .. string.rep("-", width - full) .. "]"
end

--- The row text of a download: "downloading  [#####---]   45%  1.8 MiB/4.0 MiB  1.2 MiB/s
-- ETA 0:02". dl: { t0, got0, got, total }; at: the time now (default the clock's).
function M.download_text(dl, at)
  if not dl or not finite(dl.got) then return "downloading" end
  local dt = (at or require("kling.core").now()) - dl.t0
  local rate = dt > 0.05 and (dl.got - (dl.got0 or 0)) / dt or nil
  if not finite(rate) then rate = nil end
  local parts = { "downloading" }
  if finite(dl.total) and dl.total > 0 then
    local frac = math.max(0, math.min(1, dl.got / dl.total))
    parts[#parts + 1] = bar(frac, 20)
    parts[#parts + 1] = string.format("%3d%%", math.floor(frac * 100))
    parts[#parts + 1] = format.human_bytes(dl.got) .. "/" .. format.human_bytes(dl.total)
  else
    parts[#parts + 1] = format.human_bytes(dl.got)
  end
  if rate and rate > 0 then
    parts[#parts + 1] = format.human_bytes(rate) .. "/s"
    if finite(dl.total) and dl.total > dl.got then
      parts[#parts + 1] = "ETA " .. format.human_time((dl.total - dl.got) / rate)
    end
  end
  return table.concat(parts, "  ")
end

function Display:row_text(row, width)
  local t = self.now()
  local state
  if row.phase == "download" then
    state = M.download_text(row.dl, t)
  elseif row.phase == "submitting" then
    state = "submitting"
  else
    state = M.state_text(row.status, row.qp)
  end
  local label = row.label .. string.rep(" ", math.max(0, width - #row.label))
  return label .. "  " .. state .. "  " .. format.human_time(t - row.t0)
end

--- Redraws the live area (tty only), when its text changed.
function Display:render()
  if self.mode ~= "tty" or self.stopped then return end
  local lines, width = {}, 0
  for _, r in ipairs(self.rows) do width = math.max(width, #r.label) end
  local room = math.max(1, self.height - 2)
  for i, r in ipairs(self.rows) do
    if i > room - 1 and #self.rows > room then
      lines[#lines + 1] = string.format("... and %d more", #self.rows - i + 1)
      break
    end
    lines[#lines + 1] = fit(output.escape(self:row_text(r, width)), self.width - 1)
  end
  if self.summary then lines[#lines + 1] = fit(output.escape(self.summary()), self.width - 1) end
  local text = table.concat(lines, "\n")
  if text == self.last then return end
  self.out:raw(self:_erase(), text) -- each line escaped above
  self.out:flush()
  self.drawn, self.last = #lines, text
end

--- Ends a row: tty prints `text` as a permanent line (in `style`), plain logs it.
function Display:finish(row, text, style)
  remove_row(self, row)
  if self.mode == "tty" then
    self:line(text, style)
  else
    self:log((text:gsub("^(%S+)%s%s+", "%1 ")))
  end
end

--- Ends the live display; a summary line stays, up to date.
function Display:close()
  if self.mode == "tty" and not self.stopped then
    self.out:raw(self:_erase())
    if self.summary then self.out:write(fit(output.escape(self.summary()), self.width - 1), "\n") end
    self.out:flush()
  end
end

return M
