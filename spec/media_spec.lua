-- Local media files as data: URIs (kling.file, --file FIELD=PATH) and generic fields
-- (--set FIELD=VALUE): the MIME type from the file's first bytes, base64 built in C, the
-- observed limits (image 6 MiB, video 32 MiB, audio 16 MiB, the whole body 64 MiB) refused
-- before anything is sent; submitted to the emulator's image-to-video model.
local helpers = require "helpers"
local kling = require "kling"
local cli_run = require "cli_run"

local TOKEN = "media-spec-token-4c8"
local I2V = "kling/kling-3.0/pro/image-to-video"
local MiB = 1024 * 1024
local q = helpers.quote

local HEADS = {
  { "png", "\137PNG\r\n\26\n\0\0\0\rIHDR", "image/png" },
  { "jpeg", "\255\216\255\224\0\16JFIF\0\1", "image/jpeg" },
  { "gif", "GIF89a\1\0\1\0\0\0", "image/gif" },
  { "webp", "RIFF\36\0\0\0WEBPVP8 ", "image/webp" },
  { "mp4", "\0\0\0\24ftypisom\0\0\2\0", "video/mp4" },
  { "mov", "\0\0\0\20ftypqt  \0\0\2\0", "video/quicktime" },
  { "webm", "\26\69\223\163\159\66\134\129\1\66\247\129", "video/webm" },
  { "mp3", "ID3\3\0\0\0\0\0\0\255\251", "audio/mpeg" },
  { "wav", "RIFF\36\0\0\0WAVEfmt ", "audio/wav" },
  { "ogg", "OggS\0\2\0\0\0\0\0\0", "audio/ogg" },
  { "flac", "fLaC\0\0\0\34\16\0\16\0", "audio/flac" },
}

describe("local media files", function()
  local emu, dir, cli

  setup(function()
    emu = helpers.start_emulator { "--token", TOKEN, "--queue", "60" }
    dir = helpers.tmpdir()
    cli = cli_run.new { api = emu.api, token = TOKEN, dir = dir }
  end)
  teardown(function()
    if emu then emu:stop() end
    if cli then cli.cleanup() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  -- a file of `size` bytes starting with head (the rest zeros, sparse)
  local function file(name, head, size)
    local path = dir .. "/" .. name
    helpers.write_file(path, head .. string.rep("x", 37)) -- a tail that is not a multiple of 3
    if size then os.execute("truncate -s " .. size .. " " .. q(path)) end
    return path
  end

  local function base64_of(path)
    return io.popen("base64 -w0 " .. q(path)):read("*a")
  end

  describe("kling.file", function()
    for _, h in ipairs(HEADS) do
      it("gives a data: URI of a " .. h[1] .. " file, typed " .. h[3] .. " by its first bytes, in base64", function()
        local path = file("f." .. h[1], h[2])
        local uri, mime, bytes = kling.file(path)
        assert.equals(h[3], mime)
        assert.equals(#h[2] + 37, bytes)
        assert.equals("data:" .. h[3] .. ";base64," .. base64_of(path), uri)
      end)
    end

    it("takes a file at its kind's limit and refuses one byte more, naming the limit, for each kind", function()
      for _, c in ipairs { { "png", HEADS[1][2], 6 }, { "mp4", HEADS[5][2], 32 }, { "mp3", HEADS[8][2], 16 } } do
        local at = file("at." .. c[1], c[2], c[3] * MiB)
        local uri = assert(kling.file(at))
        assert.equals(math.ceil(c[3] * MiB / 3) * 4, #uri - #uri:match("^data:[^,]+,"))
        local over = file("over." .. c[1], c[2], c[3] * MiB + 1)
        local none, err = kling.file(over)
        assert.is_nil(none)
        assert.equals("validation", err.kind)
        assert.matches("above the " .. c[3] .. " MiB", err.message, 1, true)
      end
    end)

    it("refuses a file of an unknown type, a missing file and a directory, with kinds validation and io", function()
      local _, err = kling.file(file("notes.txt", "just some text"))
      assert.equals("validation", err.kind)
      assert.matches("not a media file", err.message, 1, true)
      _, err = kling.file(dir .. "/missing.png")
      assert.equals("io", err.kind)
      assert.equals(dir .. "/missing.png", err.path)
      _, err = kling.file(dir)
      assert.equals("io", err.kind)
      assert.matches("is a directory", err.message, 1, true)
      _, err = kling.file(file("empty.png", ""))
      assert.equals("validation", err.kind)
    end)

    it("refuses a FIFO without opening it (a FIFO with no writer would block the open)", function()
      local fifo = dir .. "/pipe.png"
      assert(os.execute("mkfifo " .. helpers.quote(fifo)))
      local _, err = kling.file(fifo)
      assert.equals("io", err.kind)
      assert.matches("not a regular file", err.message, 1, true)
      os.remove(fifo)
    end)
  end)

  describe("submits", function()
    it("send the data: URI in the field as it was built", function()
      local c = kling.new { base_url = emu.api, token = TOKEN, cache_dir = false }
      local path = file("first.png", HEADS[1][2])
      local uri = assert(kling.file(path))
      local job = assert(c:submit(I2V, { prompt = "a cat", image_url = uri }))
      assert.equals(uri, emu:job_record(job.id).input.image_url)
      c:close()
    end)

    it("refuse a body above 64 MiB before sending anything", function()
      local c = kling.new { base_url = emu.api, token = TOKEN, cache_dir = false }
      local a = assert(kling.file(file("a.mp4", HEADS[5][2], 25 * MiB)))
      local b = assert(kling.file(file("b.mp4", HEADS[5][2], 25 * MiB)))
      local before = emu:stats().requests.submit
      local job, err = c:submit("acme/two-videos", { prompt = "two", first = a, second = b })
      assert.is_nil(job)
      assert.equals("validation", err.kind)
      assert.matches("above the 64 MiB", err.message, 1, true)
      assert.equals(before, emu:stats().requests.submit)
      c:close()
    end)
  end)

  describe("the command line", function()
    it("takes --file FIELD=PATH and --set FIELD=VALUE (JSON, a bare word a string) for any model", function()
      local path = file("cli.png", HEADS[1][2])
      local res = cli.run { "submit", "a cat", "--model", I2V, "--file", "image_url=" .. path,
        "--set", "duration=7", "--set", "aspect_ratio=9:16", "--set", "sound=true", "--json" }
      assert.equals(0, res.code, res.err)
      local rec = emu:job_record(helpers.json(res.out).id)
      assert.equals("data:image/png;base64," .. base64_of(path), rec.input.image_url)
      assert.equals(7, rec.input.duration)
      assert.equals("9:16", rec.input.aspect_ratio)
      assert.is_true(rec.input.sound)
    end)

    it("refuses a file it cannot type (exit 2), cannot read (exit 8), or a malformed FIELD=..., sending nothing", function()
      local before = emu:stats().requests.submit
      local res = cli.run { "submit", "a cat", "--model", I2V, "--file", "image_url=" .. file("t.txt", "text") }
      assert.equals(2, res.code, res.err)
      res = cli.run { "submit", "a cat", "--model", I2V, "--file", "image_url=" .. dir .. "/nope.png" }
      assert.equals(8, res.code, res.err)
      res = cli.run { "submit", "a cat", "--set", "=5" }
      assert.equals(2, res.code, res.err)
      assert.matches("--set wants FIELD=VALUE", res.err, 1, true)
      res = cli.run { "submit", "a cat", "--model", I2V, "--file", "image_url=" .. file("big.png", HEADS[1][2], 6 * MiB + 1) }
      assert.equals(2, res.code, res.err)
      assert.matches("above the 6 MiB", res.err, 1, true)
      assert.equals(before, emu:stats().requests.submit)
    end)

    it("refuses a field given twice (a flag or the prompt and --set, --set twice, --set and --file), exit 2, nothing sent", function()
      local before = emu:stats().requests.submit
      local png = file("twice.png", HEADS[1][2])
      for _, args in ipairs {
        { "submit", "a cat", "--duration", "5", "--set", "duration=10", "--dry-run" },
        { "submit", "a cat", "--set", "prompt=a dog", "--dry-run" },
        { "submit", "a cat", "--no-sound", "--set", "sound=true", "--dry-run" },
        { "submit", "a cat", "--model", "acme/free", "--set", "seed=1", "--set", "seed=2", "--dry-run" },
        { "submit", "a cat", "--model", I2V, "--set", "image_url=https://example.com/a.png", "--file", "image_url=" .. png, "--dry-run" },
        { "submit", "a cat", "--model", I2V, "--file", "image_url=" .. png, "--file", "image_url=" .. png },
      } do
        local res = cli.run(args)
        assert.equals(2, res.code, table.concat(args, " ") .. ": " .. res.err)
        assert.matches("given twice", res.err, 1, true)
        assert.equals("", res.out)
      end
      assert.equals(before, emu:stats().requests.submit)
      -- a field of --input FILE is the start: --set replaces it
      helpers.write_file(dir .. "/base.json", '{"prompt":"a cat","seed":1}')
      local res = cli.run { "submit", "--input", dir .. "/base.json", "--model", "acme/free", "--set", "seed=2", "--dry-run" }
      assert.equals(0, res.code, res.err)
      assert.matches('"seed":2', res.out, 1, true)
    end)

    it("refuses a --set value that looks like JSON but is not, or a whole number JSON cannot carry exactly, exit 2", function()
      local before = emu:stats().requests.submit
      for _, v in ipairs { "x=[1,2", 'x={"a":1}garbage', 'x="unclosed', "x={}}", "seed=12345678901234567890",
        "seed=-99999999999999999999" } do
        local res = cli.run { "submit", "a cat", "--model", "acme/free", "--set", v }
        assert.equals(2, res.code, v .. ": " .. res.err)
        assert.matches("--set", res.err, 1, true)
      end
      assert.equals(before, emu:stats().requests.submit)
      -- bare words stay strings, JSON values are read as JSON
      local res = cli.run { "submit", "a cat", "--model", "acme/free", "--set", "ratio=16:9", "--set", "n=9007199254740993",
        "--set", "tags=[1,2]", "--dry-run" }
      assert.equals(0, res.code, res.err)
      assert.matches('"ratio":"16:9"', res.out, 1, true)
      assert.matches('"n":9007199254740993', res.out, 1, true)
      assert.matches('"tags":[1,2]', res.out, 1, true)
    end)

    it("validates a --set value against the model's schema (exit 3)", function()
      local res = cli.run { "submit", "a cat", "--set", "duration=99" }
      assert.equals(3, res.code, res.err)
      assert.matches("duration", res.err, 1, true)
    end)
  end)
end)
