-- The emulator's HTTP/1.1 reader and writer (lua/kling/emulator/http.lua), in-process over a
-- socketpair: what it accepts, what it refuses and with which status; and the same
-- requests through a running emulator (in this process), which answers them and closes.
local cqueues = require "cqueues"
local socket = require "cqueues.socket"
local harness = require "emulator_harness"

local http = require "kling.emulator.http"

local function limits(over)
  local l = {}
  for k, v in pairs(http.LIMITS) do l[k] = v end
  l.timeout = harness.GUARD
  for k, v in pairs(over or {}) do l[k] = v end
  return l
end

-- Feed text (a string, or a list of strings written one after the other, each after the
-- reader has read what came before) to the reader; then the peer closes its side unless
-- keep_open. -> { req, err, status } for each of n reads, and what the reader wrote back.
local function feed(text, opts)
  opts = opts or {}
  local lim = limits(opts.limits)
  local cq = cqueues.new()
  local a, b = socket.pair()
  a:setmode("b", "bn")
  a:onerror(function(_, _, e) return e end)
  b:onerror(function(_, _, e) return e end)
  http.prepare(b, lim)
  local results, back = {}, {}
  cq:wrap(function()
    local pieces = type(text) == "table" and text or { text }
    for _, piece in ipairs(pieces) do
      a:xwrite(piece, "bn", harness.GUARD)
      if opts.between then opts.between(a, back) end
    end
    if not opts.keep_open then a:shutdown("w") end
  end)
  harness.run_on(cq, function()
    for i = 1, opts.reads or 1 do
      results[i] = table.pack(http.read_request(b, lim))
    end
  end)
  b:close()
  local rest = harness.run_on(cq, function() return a:xread("*a", "b", harness.GUARD) end)
  a:close()
  back[#back + 1] = rest or ""
  return results, table.concat(back)
end

local function read_one(text, opts)
  local results, back = feed(text, opts)
  local r = results[1]
  return r[1], r[2], r[3], back
end

describe("the emulator's HTTP/1.1 reader", function()
  describe("accepts", function()
    it("a request line, headers (lowercased, repeated ones joined), path and query", function()
      local req = read_one("GET /v1/requests/abc/result?include_cost=true&x HTTP/1.1\r\nHost: h\r\n"
        .. "X-Thing:  one \r\nx-thing: two\r\nAccept: */*\r\n\r\n")
      assert.equal("GET", req.method)
      assert.equal("/v1/requests/abc/result", req.path)
      assert.equal("true", req.query.include_cost)
      assert.equal("", req.query.x)
      assert.equal("1.1", req.version)
      assert.same({ host = "h", ["x-thing"] = "one, two", accept = "*/*" }, req.headers)
      assert.is_true(req.keep_alive)
      assert.equal("", req.body)
    end)

    it("an absolute-form target, empty lines before the request, and bare LF line ends", function()
      local req = read_one("\r\n\r\nGET http://example.com:99/__emulator/stats HTTP/1.1\nHost: h\n\n")
      assert.equal("/__emulator/stats", req.path)
      assert.equal("h", req.headers.host)
    end)

    it("keeps HTTP/1.1 alive unless Connection: close, and HTTP/1.0 only with keep-alive", function()
      assert.is_false(read_one("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").keep_alive)
      assert.is_false(read_one("GET / HTTP/1.0\r\n\r\n").keep_alive)
      assert.is_true(read_one("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive)
    end)

    it("a body of Content-Length bytes, and none for Content-Length: 0", function()
      local req = read_one("POST /x HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world")
      assert.equal("hello world", req.body)
      assert.equal("", read_one("POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n").body)
    end)

    it("a chunked body: several chunks, hex in either case, leading zeros, extensions, trailers", function()
      local req = read_one("POST /x HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n"
        .. "5\r\nhello\r\n001;name=value\r\n \r\nA\r\n0123456789\r\n00\r\nX-Trailer: t\r\n\r\n")
      assert.equal("hello 0123456789", req.body)
      assert.is_true(req.keep_alive)
    end)

    it("a chunked body in many writes, the reader waiting for each", function()
      local req = read_one({ "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", "3\r\nab", "c\r\n",
        "2\r\nde\r\n", "0\r\n", "\r\n" })
      assert.equal("abcde", req.body)
    end)

    it("chunked with a Content-Length: the chunks frame the body, and the connection closes after", function()
      local req = read_one("POST /x HTTP/1.1\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
        .. "3\r\nabc\r\n0\r\n\r\n")
      assert.equal("abc", req.body)
      assert.is_false(req.keep_alive)
    end)

    it("pipelined requests, one after the other, each with its own body", function()
      local results = feed("POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nonePOST /b HTTP/1.1\r\n"
        .. "Transfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\nGET /c HTTP/1.1\r\n\r\n", { reads = 4 })
      assert.same({ "/a", "one" }, { results[1][1].path, results[1][1].body })
      assert.same({ "/b", "two" }, { results[2][1].path, results[2][1].body })
      assert.same({ "/c", "" }, { results[3][1].path, results[3][1].body })
      assert.is_nil(results[4][1]) -- then the end of file
      assert.is_nil(results[4][3])
    end)

    it("a header line and a header section up to the limits", function()
      local value = string.rep("v", http.LIMITS.line - #"X-Long: " - 2)
      local req = read_one("GET / HTTP/1.1\r\nX-Long: " .. value .. "\r\n\r\n")
      assert.equal(value, req.headers["x-long"])
      local many = {}
      for i = 1, http.LIMITS.headers do many[i] = "X-" .. i .. ": 1\r\n" end
      assert.is_table(read_one("GET / HTTP/1.1\r\n" .. table.concat(many) .. "\r\n"))
    end)
  end)

  describe("Expect: 100-continue", function()
    it("writes 100 Continue before it reads the body", function()
      local seen
      local req, _, _, back = read_one({ "POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n", "body" }, {
        between = function(a, back)
          if not seen then
            seen = a:xread("*l", "b", harness.GUARD) -- before the body is sent: the 100 is there
            back[#back + 1] = seen .. "\n" .. a:xread("*l", "b", harness.GUARD) .. "\n"
          end
        end,
      })
      assert.equal("HTTP/1.1 100 Continue\r", seen)
      assert.equal("body", req.body)
      assert.equal("HTTP/1.1 100 Continue\r\n\r\n", back)
    end)

    it("writes it for a chunked body too, and not for HTTP/1.0, no body, or a body too large", function()
      local _, _, _, back = read_one("POST /x HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
      assert.equal("HTTP/1.1 100 Continue\r\n\r\n", back)
      _, _, _, back = read_one("POST /x HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nab")
      assert.equal("", back)
      _, _, _, back = read_one("POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n")
      assert.equal("", back)
      local req, err, status
      req, err, status, back = read_one("POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 99\r\n\r\n",
        { limits = { body = 10 } })
      assert.same({ nil, "body too large", 413, "" }, { req, err, status, back })
    end)
  end)

  describe("refuses", function()
    local function refusal(text, opts)
      local req, err, status = read_one(text, opts)
      assert.is_nil(req, text)
      return status, err
    end

    it("garbage and malformed request lines with 400, another HTTP version with 505", function()
      for _, text in ipairs{ "\0\1\2\255garbage\r\n\r\n", "GET /\r\n\r\n", "get / HTTP/1.1\r\n\r\n",
          "GET  / HTTP/1.1\r\n\r\n", "GET / HTTP/1.1 extra\r\n\r\n", "GET / HTTP/11\r\n\r\n" } do
        assert.equal(400, refusal(text), text)
      end
      assert.equal(505, refusal("GET / HTTP/2.0\r\n\r\n"))
      assert.equal(505, refusal("GET / HTTP/0.9\r\n\r\n"))
    end)

    it("header lines without a name and colon, with a space before the colon, or folded, with 400", function()
      for _, line in ipairs{ "no colon here", ": no name", "Host : x", "Bad\0Name: x" } do
        assert.equal(400, refusal("GET / HTTP/1.1\r\n" .. line .. "\r\n\r\n"), line)
      end
      local status, err = refusal("GET / HTTP/1.1\r\nX-Long: one\r\n  two\r\n\r\n")
      assert.equal(400, status)
      assert.equal("folded header line", err)
      assert.equal(400, refusal("GET / HTTP/1.1\r\nX-Long: one\r\n\ttwo\r\n\r\n"))
    end)

    it("a request line longer than the limit with 414", function()
      local status, err = refusal("GET /" .. string.rep("a", http.LIMITS.line) .. " HTTP/1.1\r\n\r\n")
      assert.same({ 414, "request line too long" }, { status, err })
    end)

    it("a header line longer than the limit with 431 (not cut into two lines)", function()
      local status, err = refusal("GET / HTTP/1.1\r\nX-Long: " .. string.rep("v", http.LIMITS.line) .. "\r\n\r\n")
      assert.same({ 431, "header line too long" }, { status, err })
      -- a long line whose cut would read as a header of its own
      status = refusal("GET / HTTP/1.1\r\nX-Long: " .. string.rep("v", 5000) .. "Authorization: x"
        .. string.rep("w", 5000) .. "\r\n\r\n", { limits = { line = 4096 } })
      assert.equal(431, status)
    end)

    it("too many header lines, or a header section too large, with 431", function()
      local many = {}
      for i = 1, http.LIMITS.headers + 1 do many[i] = "X-" .. i .. ": 1\r\n" end
      assert.same({ 431, "too many headers" }, { refusal("GET / HTTP/1.1\r\n" .. table.concat(many) .. "\r\n") })
      local big = {}
      for i = 1, 70 do big[i] = "X-" .. i .. ": " .. string.rep("b", 1000) .. "\r\n" end
      assert.same({ 431, "header section too large" }, { refusal("GET / HTTP/1.1\r\n" .. table.concat(big) .. "\r\n") })
    end)

    it("a Content-Length that is not one whole number with 400, one too large with 413", function()
      for _, value in ipairs{ "abc", "-1", "1e3", "0x10", "5, 6", "" } do
        local headers = value == "5, 6" and "Content-Length: 5\r\nContent-Length: 6\r\n"
          or "Content-Length: " .. value .. "\r\n"
        assert.equal(400, refusal("POST /x HTTP/1.1\r\n" .. headers .. "\r\n12345"), value)
      end
      assert.equal(413, refusal("POST /x HTTP/1.1\r\nContent-Length: 17\r\n\r\n", { limits = { body = 16 } }))
      assert.equal(413, refusal("POST /x HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"))
    end)

    it("a transfer coding other than chunked with 501", function()
      for _, coding in ipairs{ "gzip", "gzip, chunked", "chunked, gzip", "identity" } do
        assert.equal(501, refusal("POST /x HTTP/1.1\r\nTransfer-Encoding: " .. coding .. "\r\n\r\n0\r\n\r\n"), coding)
      end
    end)

    it("a chunk size that is not hex, or a chunk not followed by CRLF, with 400", function()
      local head = "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
      for _, body in ipairs{ "zz\r\n", "-5\r\nhello\r\n0\r\n\r\n", "\r\n", " 5\r\nhello\r\n0\r\n\r\n",
          "5\r\nhelloXX\r\n0\r\n\r\n", "5\r\nhello0\r\n\r\n" } do
        assert.equal(400, refusal(head .. body), body)
      end
    end)

    it("a chunk size beyond any body (no overflow) or chunks adding up past the limit with 413", function()
      local head = "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
      assert.equal(413, refusal(head .. "ffffffffffffffffffff\r\nx\r\n0\r\n\r\n"))
      assert.equal(413, refusal(head .. "8000000000000000\r\nx\r\n0\r\n\r\n"))
      assert.equal(413, refusal(head .. "a\r\n0123456789\r\n7\r\n0123456\r\n0\r\n\r\n", { limits = { body = 16 } }))
    end)

    it("a body cut short without an answer (the peer is gone)", function()
      for _, text in ipairs{
        "POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabcd",
        "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n",
        "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: t\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\n",
        "GET / HTTP/1.1\r\nHost: h",
        "GET / HT",
      } do
        local req, err, status = read_one(text)
        assert.is_nil(req, text)
        assert.is_string(err, text)
        assert.is_nil(status, text)
      end
    end)

    it("a peer that goes quiet in the middle of a request, without an answer", function()
      local req, err, status = read_one("POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
        { keep_open = true, limits = { timeout = 0.05 } })
      assert.is_nil(req)
      assert.is_not_nil(err)
      assert.is_nil(status)
    end)
  end)
end)

describe("the emulator's HTTP/1.1 writer", function()
  -- write reply for req on one end of a socketpair; -> what the other end received, the result
  local function written(req, reply, files, sleep)
    local cq = cqueues.new()
    local a, b = socket.pair()
    a:setmode("b", "bn")
    http.prepare(b)
    local sent, err
    cq:wrap(function()
      sent, err = http.write_reply(b, req, reply, files, sleep)
      b:close()
    end)
    local bytes = harness.run_on(cq, function() return a:xread("*a", "b", harness.GUARD) end)
    a:close()
    return bytes, sent, err
  end

  local KEPT = { method = "GET", version = "1.1", keep_alive = true }

  it("writes a JSON answer on a kept-alive HTTP/1.1 connection in one piece", function()
    local bytes, sent = written(KEPT, { status = 200, type = "application/json", body = '{"a":1}' })
    assert.equal("HTTP/1.1 200 OK\r\nServer: kling-emulator\r\nContent-Length: 7\r\n"
      .. "Content-Type: application/json\r\n\r\n{\"a\":1}", bytes)
    assert.equal(7, sent)
  end)

  it("adds its headers, Connection: close when not kept alive, keep-alive for HTTP/1.0", function()
    local bytes = written({ method = "GET", version = "1.1", keep_alive = false },
      { status = 429, type = "application/json", body = "{}", headers = { { "Retry-After", "1" } } })
    assert.equal("HTTP/1.1 429 Too Many Requests\r\nServer: kling-emulator\r\nContent-Length: 2\r\n"
      .. "Content-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{}", bytes)
    bytes = written({ method = "GET", version = "1.0", keep_alive = true }, { status = 200, type = "text/plain", body = "x" })
    assert.matches("\r\nConnection: keep%-alive\r\n\r\nx$", bytes)
    -- an answer to a request that could not be read closes the connection
    bytes = written(nil, { status = 431, type = "application/json", body = "{}" })
    assert.matches("^HTTP/1%.1 431 Request Header Fields Too Large\r\n.*\r\nConnection: close\r\n\r\n{}$", bytes)
  end)

  it("answers HEAD with the head of a GET and no body", function()
    local bytes, sent = written({ method = "HEAD", version = "1.1", keep_alive = true },
      { status = 200, type = "application/json", body = '{"a":1}' })
    assert.equal("HTTP/1.1 200 OK\r\nServer: kling-emulator\r\nContent-Length: 7\r\nContent-Type: application/json\r\n\r\n", bytes)
    assert.equal(0, sent)
  end)

  local function source(data)
    return { size = #data, read = function(offset, n) return data:sub(offset + 1, offset + n) end }
  end

  it("streams a byte source, counting the bytes sent", function()
    local data = string.rep("0123456789", 20000)
    local files = { bytes_sent = 0 }
    local bytes, sent = written(KEPT, { status = 206, type = "video/mp4", source = source(data), offset = 100,
      length = 150000 }, files)
    local head, body = bytes:match("^(.-\r\n\r\n)(.*)$")
    assert.matches("Content%-Length: 150000\r\n", head)
    assert.is_true(body == data:sub(101, 150100))
    assert.same({ 150000, 150000 }, { sent, files.bytes_sent })
  end)

  it("cuts a body to its first half, and trickles one at ARG bytes per pause", function()
    local data = string.rep("x", 1001)
    local bytes, sent = written(KEPT, { status = 200, type = "video/mp4", source = source(data), offset = 0,
      length = 1001, cut = true })
    assert.matches("\r\nContent%-Length: 1001\r\n", bytes)
    assert.matches("\r\n\r\n" .. string.rep("x", 500) .. "$", bytes)
    assert.equal(500, sent)
    local pauses = {}
    bytes, sent = written(KEPT, { status = 200, type = "video/mp4", source = source("abcdefg"), offset = 0,
      length = 7, trickle = 3 }, nil, function(s) pauses[#pauses + 1] = s end)
    assert.matches("\r\n\r\nabcdefg$", bytes)
    assert.equal(7, sent)
    assert.same({ 1, 1 }, pauses) -- abc, pause, def, pause, g
  end)
end)

describe("the emulator's answers to requests it cannot read", function()
  local emu

  setup(function() emu = harness.start{} end)
  teardown(function() emu:stop() end)

  -- the raw answer to text on a new connection, which the emulator closes after it
  local function answer(text)
    local reply = emu:raw(emu.root, text)
    local status = tonumber(reply:match("^HTTP/1%.1 (%d+) "))
    return status, reply
  end

  it("answers each refusal with its status, an error body and Connection: close", function()
    for _, case in ipairs{
      { 400, "\0\1garbage\r\n\r\n" },
      { 400, "GET / HTTP/1.1\r\nX-Long: one\r\n two\r\n\r\n" },
      { 400, "POST /v1/models/m HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n" },
      { 400, "POST /v1/models/m HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" },
      { 414, "GET /" .. string.rep("a", 9000) .. " HTTP/1.1\r\n\r\n" },
      { 431, "GET / HTTP/1.1\r\nX-Long: " .. string.rep("v", 9000) .. "\r\n\r\n" },
      { 413, "POST /v1/models/m HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\nx\r\n0\r\n\r\n" },
      { 501, "POST /v1/models/m HTTP/1.1\r\nTransfer-Encoding: gzip\r\nContent-Length: 1\r\n\r\nx" },
      { 505, "GET / HTTP/2.0\r\n\r\n" },
    } do
      local status, reply = answer(case[2])
      assert.equal(case[1], status, case[2]:sub(1, 60))
      assert.matches("\r\nConnection: close\r\n", reply)
      local body = require("cjson").decode(reply:match("\r\n\r\n(.*)$"))
      assert.equal(case[1] * 1000 + 1, body.error_code)
      assert.matches("^Bad request: ", body.error_message)
    end
  end)

  it("reads no request after a refused one on the same connection", function()
    local status, reply = answer("GET / HTTP/1.1\r\nHost : x\r\n\r\nGET /__emulator/stats HTTP/1.1\r\n\r\n")
    assert.equal(400, status)
    assert.is_nil(reply:find("HTTP/1.1", 2, true))
  end)

  it("closes without an answer a connection whose request body is cut short", function()
    local before = emu:stats().jobs_created
    local reply = emu:raw(emu.root, "POST /v1/models/m HTTP/1.1\r\nAuthorization: Bearer t\r\nContent-Length: 100\r\n\r\n{\"prompt\":")
    assert.equal("", reply)
    assert.equal(before, emu:stats().jobs_created)
  end)
end)
