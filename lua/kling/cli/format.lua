--- kling.cli.format: how the command-line tool writes numbers, sizes, times and names:
-- pure functions of their arguments (no output, no clock, no files).
local M = {}

--- A number that can be printed as one: not nil, NaN or infinite.
function M.finite(n)
  return type(n) == "number" and n == n and n > -math.huge and n < math.huge
end
local finite = M.finite

--- "1.2 MiB", "45 B" (sizes and rates: an integer or a float, "?" for what is not a
-- finite number >= 0).
function M.human_bytes(n)
  if not finite(n) or n < 0 then return "?" end
  local units = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" }
  local i, v = 1, n
  while v >= 1024 and i < #units do v, i = v / 1024, i + 1 end
  if i == 1 then return string.format("%d B", math.floor(v)) end
  return string.format(v >= 100 and "%.0f %s" or "%.1f %s", v, units[i])
end

--- "0:07", "12:03", "1:02:03" (elapsed times and ETAs: seconds as an integer or a
-- float, rounded; "?" for what is not a finite number, 0:00 below zero).
function M.human_time(s)
  if s == nil then s = 0 end
  if not finite(s) then return "?" end
  if s > 1e12 then return "?" end -- past any clock: not worth a number
  s = math.max(0, math.floor(s + 0.5))
  local h, m = s // 3600, (s % 3600) // 60
  if h > 0 then return string.format("%d:%02d:%02d", h, m, s % 60) end
  return string.format("%d:%02d", m, s % 60)
end

--- The rate of `bytes` over `seconds` as text ("1.2 MiB/s"), or nil when it means nothing
-- (no time elapsed, or not finite).
function M.human_rate(bytes, seconds)
  if not finite(bytes) or not finite(seconds) or seconds <= 0 then return nil end
  local rate = bytes / seconds
  if not finite(rate) or rate < 0 then return nil end
  return M.human_bytes(rate) .. "/s"
end

--- Cuts text to at most n characters (UTF-8 aware when the text is valid UTF-8).
function M.fit(text, n)
  if n <= 0 then return "" end
  local len = utf8.len(text)
  if not len then return text:sub(1, n) end
  if len <= n then return text end
  return text:sub(1, utf8.offset(text, n + 1) - 1)
end

--- Wraps text at spaces into lines of at most `width` characters (a word longer than
-- that stands alone); returns the list of lines.
function M.wrap(text, width)
  local lines, line = {}, nil
  for word in text:gmatch("%S+") do
    if not line then
      line = word
    elseif #line + 1 + #word <= width then
      line = line .. " " .. word
    else
      lines[#lines + 1] = line
      line = word
    end
  end
  lines[#lines + 1] = line or ""
  return lines
end

--- s in single quotes for a POSIX shell.
function M.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- A path as a shell word (quoted only when it needs to be).
function M.shell_word(s)
  if s:match("^[%w%._/+,:@%-]+$") then return s end
  return M.quote(s)
end

function M.trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

--- A file name from a URL's last path segment: letters, digits, '.', '_', '-'; fallback
-- when it has none; ".mp4" added when it has no extension.
function M.name_from_url(url, fallback)
  local path = type(url) == "string" and url:gsub("[?#].*$", ""):match("^%a[%w+.-]*://[^/]*(/.*)$") or nil
  local last = path and path:match("([^/]+)$") or nil
  if last then
    last = last:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
    last = last:gsub("[^%w._-]", "_")
    if last:match("^%.") or last == "" then last = nil end
  end
  last = last or fallback
  if not last:match("%.[%w]+$") then last = last .. ".mp4" end
  return last
end

--- A file-name-safe key (a batch line's name): letters, digits, '.', '_', '-' (others
-- become '_'), at most 100 bytes; nil for what cannot be one.
function M.safe_key(s)
  if type(s) == "number" then s = math.tointeger(s) and tostring(math.tointeger(s)) or tostring(s) end
  if type(s) ~= "string" then return nil end
  s = s:gsub("[^%w._-]", "_"):sub(1, 100)
  if s == "" or s:match("^%.") then return nil end
  return s
end

return M
