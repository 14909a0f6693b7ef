-- The command-line tool's progress display on a real terminal: bin/kling runs in a
-- detached tmux session of a known size, and the screen is read with capture-pane.
local helpers = require "helpers"

local q = helpers.quote
local TOKEN = "tty-spec-token-51d0"
local POLL = "initial=0.05,min=0.05,near=0.2,max=0.3"

-- A stand-in API whose one job is complete at once and whose file host sends the
-- video slowly (chunk bytes every delay seconds), so a download can be watched.
local SLOW_SERVER = [[
local cqueues = require "cqueues"
local socket = require "cqueues.socket"
local port_file, total, chunk, delay = arg[1], tonumber(arg[2]), tonumber(arg[3]), tonumber(arg[4])
local srv = assert(socket.listen { host = "127.0.0.1", port = 0 })
local _, _, port = srv:localname()
local base = "http://127.0.0.1:" .. port
local f = assert(io.open(port_file, "w")) f:write(port) f:close()
local cq = cqueues.new()
local function answer(con, status, ctype, body)
  con:write(string.format("HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s", status, ctype, #body, body))
  con:flush()
end
local function serve(con)
  con:setmode("b", "b")
  while true do
    local line = con:read("*l")
    if not line then break end
    local method, path = line:match("^(%u+) (%S+)")
    local len = 0
    while true do
      local h = con:read("*l")
      if not h then return con:close() end
      h = h:gsub("\r$", "")
      if h == "" then break end
      len = tonumber(h:lower():match("^content%-length:%s*(%d+)")) or len
    end
    if len > 0 then con:read(len) end
    if method == "POST" and path:match("^/v1/models/") then
      answer(con, "200 OK", "application/json", '{"request_id":"slow-1"}')
    elseif path:match("^/v1/requests/slow%-1/status") then
      answer(con, "200 OK", "application/json", '{"request_id":"slow-1","status":"completed"}')
    elseif path:match("^/v1/requests/slow%-1/result") then
      answer(con, "200 OK", "application/json",
        '{"request_id":"slow-1","status":"completed","output":{"video":"' .. base .. '/v/slow.mp4"}}')
    elseif path == "/v/slow.mp4" then
      con:write(string.format("HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: %d\r\n\r\n", total))
      local sent = 0
      while sent < total do
        local n = math.min(chunk, total - sent)
        con:write(string.rep("v", n))
        con:flush()
        sent = sent + n
        cqueues.sleep(delay)
      end
    else
      answer(con, "404 Not Found", "application/json", '{"error_code":404001,"error_message":"not found"}')
    end
  end
  con:close()
end
cq:wrap(function()
  while true do
    local con = srv:accept()
    if con then cq:wrap(serve, con) end
  end
end)
assert(cq:loop())
]]

describe("kling on a terminal (tmux)", function()
  local emu, dir, sock, sessions, n_sessions
  -- an emulator on a manual clock, for the specs that read a job's states off the screen:
  -- no job moves on before the spec has seen the screen it expects
  local manual

  local function tmux(args)
    local p = assert(io.popen("tmux -L " .. q(sock) .. " -f /dev/null " .. args .. " 2>&1"))
    local out = p:read("*a")
    p:close()
    return out
  end

  -- Starts `kling ARGS` in a new session of w x h cells; the pane stays after it ends.
  local function start(args, opts)
    opts = opts or {}
    n_sessions = n_sessions + 1
    local name = "s" .. n_sessions
    sessions[#sessions + 1] = name
    local words = {}
    for _, a in ipairs(args) do words[#words + 1] = q(a) end
    local vars = {}
    for k, v in pairs(opts.env or {}) do vars[#vars + 1] = k .. "=" .. q(v) end
    local cmd = string.format(
      "cd %s && env -u LUA_PATH -u LUA_CPATH -u NO_COLOR RUNCOMFY_MODEL_API_BASE=%s RUNCOMFY_TOKEN=%s XDG_STATE_HOME=%s "
        .. "KLING_POLL=%s %s lua5.4 %s %s; echo EXIT=$?; sleep 600",
      q(dir), q(opts.base or emu.api), q(TOKEN), q(dir .. "/state"), POLL, table.concat(vars, " "),
      q(helpers.root .. "/bin/kling"), table.concat(words, " "))
    tmux(string.format("new-session -d -s %s -x %d -y %d %s", name, opts.width or 100, opts.height or 20, q(cmd)))
    return name
  end

  local function screen(name)
    return tmux("capture-pane -p -t " .. q(name))
  end

  -- The screen with its colours, as SGR sequences.
  local function screen_sgr(name)
    return tmux("capture-pane -e -p -t " .. q(name))
  end

  -- Polls the screen until it matches pattern (plain text); returns that screen.
  local function wait_for(name, pattern, seconds, plain)
    local limit = os.time() + (seconds or 15)
    local text
    repeat
      text = screen(name)
      if text:find(pattern, 1, plain ~= false) then return text end
      helpers.sleep(0.03)
    until os.time() > limit
    error("the screen never showed '" .. pattern .. "':\n" .. text, 2)
  end

  local function lines(text)
    local list = {}
    for l in text:gmatch("([^\n]*)\n") do
      if l:find("%S") then list[#list + 1] = l end
    end
    return list
  end

  -- Polls the screen until check(its non-blank lines) is true (a whole frame, not one
  -- caught in the middle of a redraw); returns the screen and its lines.
  local function wait_lines(name, check, what, seconds)
    local text, l
    local ok = pcall(helpers.eventually, function()
      text = screen(name)
      l = lines(text)
      return check(l)
    end, seconds or 15)
    if not ok then error("the screen never showed " .. what .. ":\n" .. tostring(text), 2) end
    return text, l
  end

  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "0.2", "--run", "0.2" }
    manual = helpers.start_emulator { "--token", TOKEN, "--queue", "0.2", "--run", "0.2", "--clock", "manual" }
    dir = helpers.tmpdir()
    sock = "kling-spec-" .. tostring(os.time()) .. "-" .. tostring(math.random(1e6))
    sessions, n_sessions = {}, 0
  end)

  teardown(function()
    if sock then tmux("kill-server") end
    if emu then emu:stop() end
    if manual then manual:stop() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  it("shows one live line while queued and running, then the saved file", function()
    local s = start({ "generate", "on a terminal @emu:queue=1.2 @emu:run=1", "-o", "tty.mp4" }, { base = manual.api })
    local text, l = wait_lines(s, function(l) return l[2] and l[2]:find("queued, position ", 1, true) end, "queued")
    assert.equals(2, #l, text)
    assert.matches("^submitted [%w-]+  %(kling/kling%-3%.0/pro/text%-to%-video%)$", l[1])
    local short = l[1]:match("^submitted (%w+)")
    assert.matches("^" .. short .. "  queued, position %d  0:%d%d$", l[2])
    manual:advance(1.3)
    text, l = wait_lines(s, function(l) return l[2] and l[2]:find("  running  ", 1, true) end, "running")
    assert.equals(2, #l, text) -- redrawn in place: no line per state
    assert.matches("^" .. short .. "  running  0:%d%d$", l[2])
    manual:advance(1.1)
    text = wait_for(s, "EXIT=")
    l = lines(text)
    assert.equals(3, #l, text)
    assert.matches("^" .. short .. "  saved tty%.mp4 %(3%.5 KiB, [%d.]+ [KMG]?i?B/s%) after 0:%d%d$", l[2])
    assert.equals("EXIT=0", l[3])
    assert.equals(require "kling.emulator_video", helpers.read_file(dir .. "/tty.mp4"))
  end)

  it("draws a download bar with bytes, rate and ETA", function()
    local port_file = dir .. "/slow.port"
    helpers.write_file(dir .. "/slow.lua", SLOW_SERVER)
    local p = assert(io.popen("exec lua5.4 " .. q(dir .. "/slow.lua") .. " " .. q(port_file)
      .. " 4194304 65536 0.04 >/dev/null 2>&1 & echo $!"))
    local pid = tonumber(p:read("*l"))
    p:close()
    local port
    local limit = os.time() + 5
    repeat
      port = tonumber(helpers.read_file(port_file) or "")
      if not port then helpers.sleep(0.02) end
    until port or os.time() > limit
    assert.truthy(port, "the slow server did not start")
    local s = start({ "generate", "slow download", "-o", "slow.mp4" }, { base = "http://127.0.0.1:" .. port .. "/v1" })
    local text = wait_for(s, "%%  [%d.]+ [KM]iB/4%.0 MiB  [%d.]+ [KM]iB/s  ETA %d:%d%d", 20, false)
    local bar = text:match("downloading  (%[[#%-]+%])")
    assert.truthy(bar, text)
    assert.equals(22, #bar)
    text = wait_for(s, "EXIT=", 20)
    os.execute("kill " .. pid)
    local l = lines(text)
    assert.matches("  saved slow%.mp4 %(4%.0 MiB, [%d.]+ [KM]iB/s%) after 0:0%d$", l[#l - 1])
    assert.equals("EXIT=0", l[#l])
    assert.equals(4194304, #helpers.read_file(dir .. "/slow.mp4"))
  end)

  it("shows a row per job and a summary line for a batch", function()
    local file = dir .. "/tty.jsonl"
    helpers.write_file(file, table.concat({
      '{"prompt":"one @emu:queue=1.5 @emu:run=0.5","name":"one"}',
      '{"prompt":"two @emu:queue=1.5 @emu:run=0.5","name":"two"}',
      '{"prompt":"three @emu:fail","name":"three"}',
      '{"prompt":"four","name":"four"}',
    }, "\n") .. "\n")
    local s = start({ "batch", file, "--out-dir", dir .. "/batch", "--concurrency", "2" }, { base = manual.api })
    local text, l = wait_lines(s, function(l)
      return #l >= 3 and l[#l]:find("2 queued, 0 running, 0 done, 0 failed, 2 to submit", 1, true)
        and l[#l - 2]:match("^one  +queued") and l[#l - 1]:match("^two  +queued")
    end, "two rows queued and the summary")
    assert.matches("^one  +queued", l[#l - 2])
    assert.matches("^two  +queued", l[#l - 1])
    assert.matches("^batch .*tty%.jsonl: 2 queued", l[#l])
    -- the clock moves on in steps until the batch has ended (three and four are submitted
    -- once one and two have)
    helpers.eventually(function()
      manual:advance(0.5)
      text = screen(s)
      return text:find("EXIT=", 1, true)
    end, 30, "the batch to end")
    l = lines(text)
    assert.equals("EXIT=5", l[#l])
    assert.matches("0 queued, 0 running, 3 done, 1 failed, 0 to submit", l[#l - 1], 1, true)
    assert.matches("three  failed: ", text, 1, true)
    for _, name in ipairs { "one", "two", "four" } do
      assert.matches(name .. "  saved " .. dir .. "/batch/" .. name .. ".mp4", text, 1, true)
    end
  end)

  it("colours the line of a saved video, and not with NO_COLOR (the live display stays)", function()
    local s = start { "generate", "in colour", "-o", "colour.mp4" }
    wait_for(s, "EXIT=")
    local text = screen_sgr(s)
    local short = text:match("submitted (%w+)")
    assert.matches("\27[32m" .. short .. "  saved colour.mp4 (", text, 1, true)
    s = start({ "generate", "no colour @emu:queue=1", "-o", "plain-colour.mp4" }, { env = { NO_COLOR = "1" } })
    wait_for(s, "queued, position ") -- the live row
    wait_for(s, "EXIT=")
    text = screen_sgr(s)
    assert.matches("  saved plain-colour.mp4 (", text, 1, true)
    assert.is_nil(text:find("\27[3", 1, true), "a colour despite NO_COLOR")
    assert.is_nil(text:find("queued, position", 1, true)) -- redrawn in place, then erased
  end)

  it("writes plain log lines on a TERM=dumb terminal: no live redraw, no colour", function()
    local s = start({ "generate", "dumb terminal @emu:queue=0.5", "-o", "dumb.mp4" }, { env = { TERM = "dumb" } })
    local text = wait_for(s, "EXIT=")
    local l = lines(text)
    assert.matches("^%d%d:%d%d:%d%d [%w-]+ submitted %(kling/kling%-3%.0/pro/text%-to%-video%)$", l[1])
    assert.matches("^%d%d:%d%d:%d%d [%w-]+ queued, position %d$", l[2])
    assert.matches("^%d%d:%d%d:%d%d [%w-]+ saved dumb%.mp4 %(", l[#l - 2])
    assert.equals("dumb.mp4", l[#l - 1]) -- the result on stdout, as off a terminal
    assert.equals("EXIT=0", l[#l])
    assert.is_nil(screen_sgr(s):find("\27[3", 1, true))
  end)

  it("cancels the queued job on Ctrl-C typed at the terminal", function()
    local s = start { "generate", "typed ctrl-c @emu:queue=10", "-o", "never.mp4" }
    wait_for(s, "queued, position ")
    tmux("send-keys -t " .. q(s) .. " C-c")
    local text = wait_for(s, "EXIT=")
    assert.matches("kling: interrupted", text, 1, true)
    assert.matches("kling: cancelled [%w-]+ %(it was still queued%)", text)
    assert.matches("EXIT=130", text, 1, true)
    assert.not_matches("queued, position", text, 1, true) -- the live line was erased
  end)
end)
