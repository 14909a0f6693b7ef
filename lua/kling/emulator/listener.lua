--- kling.emulator.listener: the two listeners and their connections.
--
-- One coroutine per listener accepts; one coroutine per connection serves it: read a
-- request (kling.emulator.http), route it (server:dispatch, kling.emulator.routes), honour
-- what a fault asks of the connection (a delay on the emulator's clock, a close without an
-- answer, with a TCP RST for the reset fault), write the reply, log a line, and go on
-- while the connection is kept alive. Each listener counts its connections: current, peak
-- and total (/__emulator/stats).
local cqueues = require "cqueues"
local socket = require "cqueues.socket"
local http = require "kling.emulator.http"
local reply = require "kling.emulator.reply"

local M = {}

local format = string.format
local read_request, write_reply = http.read_request, http.write_reply

M.SETTLE_STEPS = 2 -- loop steps an accept that would raise the peak waits (see accept_loop)

-- ---------------------------------------------------------------------------------------
-- The reset fault's close: SO_LINGER 0 before the close, so that it sends a TCP RST
-- ---------------------------------------------------------------------------------------

-- cqueues has no such option; luasocket's setoption does it on any descriptor lent to a
-- (closed) luasocket object with setfd. Without luasocket the socket is simply closed.
local linger_holder
do
  local ok, luasocket = pcall(require, "socket")
  if ok and type(luasocket) == "table" and luasocket.tcp then
    local ok2, holder = pcall(luasocket.tcp)
    if ok2 and holder and holder.setfd and holder.setoption then
      holder:close()            -- its own descriptor goes; it now holds none (-1)
      linger_holder = holder
    end
  end
end
M.RESET_METHOD = linger_holder and "rst" or "close"

--- Make the close of a cqueues socket send a TCP RST. @return true when it could
function M.set_linger_zero(con)
  if not linger_holder then return false end
  local fd = con:pollfd()
  if type(fd) ~= "number" or fd < 0 then return false end
  linger_holder:setfd(fd)
  local ok = linger_holder:setoption("linger", { on = true, timeout = 0 })
  linger_holder:setfd(-1)       -- never let luasocket close the descriptor
  return ok == 1 or ok == true
end

--- A listener record: name ("api" | "files"), its route list, its connection counts.
function M.new(name, routes)
  return { name = name, routes = routes, current = 0, peak = 0, total = 0, conns = {} }
end

--- The host part of a URL for a bound address.
function M.url_host(host)
  if host == "0.0.0.0" or host == "*" then return "127.0.0.1" end
  if host == "::" then return "[::1]" end
  if host:find(":", 1, true) then return "[" .. host .. "]" end
  return host
end

--- Listen on host:port (0: a free port). @return socket, bound port | nil, err
function M.bind(host, port)
  local sock = socket.listen{ host = host, port = port, reuseaddr = true }
  sock:onerror(function(_, _, why) return why end)
  local ok, err = sock:listen()
  if not ok then
    sock:close()
    return nil, format("cannot listen on %s port %s: %s", host, tostring(port), require("cqueues.errno").strerror(err))
  end
  local _, _, bound = sock:localname()
  return sock, bound
end

M.DRAIN_SECONDS = 1          -- how long a refused request's rest is read and dropped
M.DRAIN_BYTES = 1024 * 1024  -- and how much of it

--- Close a connection gently after refusing a request: the peer may still be sending
-- the rest of it, and closing with unread input sends a TCP RST that can destroy the
-- answer before the peer reads it. So: shut the sending side, then read and drop what
-- comes (at most DRAIN_BYTES, for at most DRAIN_SECONDS of silence) until the peer
-- closes.
function M.close_gently(con)
  con:shutdown("w")
  local dropped = 0
  while dropped < M.DRAIN_BYTES do
    local data = con:xread(-65536, "b", M.DRAIN_SECONDS)
    if not data then return end
    dropped = dropped + #data
  end
end

--- Serve one connection until it closes, is not kept alive, or the server stops
-- (server:serve).
function M.serve(self, listener, con)
  local limits = self.http_limits
  local nth = 0 -- requests read on this connection (req.nth: 1 for the first, 2 once reused)
  while not self.stopped do
    local req, err, status = read_request(con, limits)
    if not req then
      if status then
        write_reply(con, nil, reply.error_reply(status, status * 1000 + 1, "Bad request: " .. err))
        M.close_gently(con)
      end
      return
    end
    nth = nth + 1
    req.nth = nth
    local r, kind, fault = self:dispatch(listener, req)
    if r.delay then self.sleep(r.delay) end
    if r.close then
      -- reset / drop_after_create: no answer; a reset closes with a TCP RST when it can
      if r.close == "reset" then M.set_linger_zero(con) end
      if not self.quiet then
        self.log(format("%s %s %s - (fault %s: closed)", listener.name, req.method, req.path, fault))
      end
      return
    end
    local sent, werr = write_reply(con, req, r, self.counters.files, self.sleep)
    if sent and kind == "submit" then
      self.counters.submits_answered = self.counters.submits_answered + 1
    end
    if not self.quiet then
      self.log(format("%s %s %s %d%s%s", listener.name, req.method, req.path, r.status,
        fault and " (fault " .. fault .. ")" or "",
        sent and "" or " (write failed: " .. tostring(werr) .. ")"))
    end
    if not sent or not req.keep_alive or r.cut then return end
  end
end

local function on_error(_, _, why) return why end
M.on_error = on_error

local ACCEPT_OPTIONS = { nodelay = true }

--- Accept connections until the server stops, one coroutine each (server:accept_loop).
function M.accept_loop(self, listener)
  local sock = listener.sock
  while not self.stopped do
    -- TCP_NODELAY: an answer written in pieces (a file's head, then its body; pipelined
    -- answers) must not wait for the peer's delayed acknowledgement of the previous piece
    local ok, con, err = pcall(sock.accept, sock, ACCEPT_OPTIONS)
    if not ok then
      -- stop() closed the listening socket under a pending accept
      if self.stopped then return end
      error(con, 0)
    end
    if con then
      if listener.current >= listener.peak and listener.current > 0 then
        -- This connection would raise the peak. A client that closed a connection just
        -- before opening this one is not over its limit, but the coroutine serving the
        -- closed one may not have read the end of file yet: let the loop run the
        -- coroutines that are ready first, so their closes are counted before this open.
        for _ = 1, M.SETTLE_STEPS do cqueues.sleep(0) end
      end
      listener.current = listener.current + 1
      listener.total = listener.total + 1
      if listener.current > listener.peak then listener.peak = listener.current end
      listener.conns[con] = true
      self.cq:wrap(function()
        http.prepare(con, self.http_limits)
        con:onerror(on_error)
        local ok, perr = pcall(self.serve, self, listener, con)
        if not ok then self.log("emulator: connection error: " .. tostring(perr)) end
        listener.current = listener.current - 1
        listener.conns[con] = nil
        con:close()
      end)
    elseif self.stopped then
      return
    else
      -- out of descriptors or a transient error: back off briefly
      self.log("emulator: accept: " .. tostring(err))
      cqueues.sleep(0.05)
    end
  end
end

return M
