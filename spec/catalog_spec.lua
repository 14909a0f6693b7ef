-- The model catalog against the emulator's (three models of the Kling 3.0 family;
-- doc/EMULATOR.md, "The model catalog"): client:models, client:model, the schemas fetched
-- from it compiled and used to validate any catalog model before a byte is sent, their
-- cache on disk, and the commands kling models and kling schema.
local helpers = require "helpers"
local kling = require "kling"
local cli_run = require "cli_run"

local TOKEN = "catalog-spec-token-7e2"
local I2V = "kling/kling-3.0/pro/image-to-video"
local STD = "kling/kling-3.0/standard/text-to-video"
local q = helpers.quote

describe("the model catalog", function()
  local emu, dir, cli, n = nil, nil, nil, 0

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
  before_each(function() emu:set_faults {} end)

  -- a client with a cache directory of its own (fresh unless given), and its warnings
  local function client(extra)
    n = n + 1
    local warnings = {}
    local opts = { base_url = emu.api, token = TOKEN, cache_dir = dir .. "/cache" .. n,
      on_warning = function(m) warnings[#warnings + 1] = m end }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return kling.new(opts), warnings
  end

  local function catalog_requests() return emu:stats().requests.catalog end
  local function submits() return emu:stats().requests.submit end

  describe("client:models", function()
    it("lists the catalog's models with their names, categories and prices, and the total", function()
      local c = client()
      local list, total = assert(c:models())
      assert.equals(3, total)
      assert.equals(3, #list)
      local by = {}
      for _, m in ipairs(list) do by[m.model_id] = m end
      assert.equals("Kling 3.0 Pro Text to Video", by[kling.DEFAULT_MODEL].display_name)
      assert.equals(0.112, by[kling.DEFAULT_MODEL].price)
      assert.equals("second", by[kling.DEFAULT_MODEL].price_unit)
      assert.equals(0.07, by[STD].price)
      assert.same({ "image-to-video" }, by[I2V].categories)
      assert.is_string(by[I2V].pricing_note)
      assert.is_nil(by[I2V].input_schema)
    end)

    it("passes search, category, limit and offset to the catalog", function()
      local c = client()
      local list, total = assert(c:models { category = "text-to-video" })
      assert.equals(2, total)
      for _, m in ipairs(list) do assert.matches("text%-to%-video", m.model_id) end
      list, total = assert(c:models { search = "Standard Text" })
      assert.equals(1, total)
      assert.equals(STD, list[1].model_id)
      list, total = assert(c:models { limit = 1, offset = 1 })
      assert.equals(1, #list)
      assert.equals(3, total)
    end)

    it("raises on options of the wrong type or range, before sending anything", function()
      local c = client()
      local before = catalog_requests()
      assert.has_error(function() c:models { limit = 0 } end)
      assert.has_error(function() c:models { limit = 501 } end)
      assert.has_error(function() c:models { offset = -1 } end)
      assert.has_error(function() c:models { search = 5 } end)
      assert.equals(before, catalog_requests())
    end)
  end)

  describe("client:model", function()
    it("gives one model with its input schema, and validates its inputs from then on", function()
      local c = client()
      local m = assert(c:model(I2V))
      assert.equals(I2V, m.model_id)
      assert.equals("Kling 3.0 Pro Image to Video", m.display_name)
      assert.equals(0.112, m.price)
      assert.same({ "prompt", "image_url" }, m.input_schema.required)
      local ok, err = kling.validate({ prompt = "a cat" }, I2V)
      assert.is_nil(ok)
      assert.equals("/image_url", err.errors[1].path)
    end)

    it("gives kind not_found for a model the catalog does not have, and validation for a bad id", function()
      local c = client()
      local _, err = c:model("kling/kling-3.0/4k/text-to-video")
      assert.equals("not_found", err.kind)
      local before = catalog_requests()
      _, err = c:model("../etc")
      assert.equals("validation", err.kind)
      assert.equals(before, catalog_requests())
    end)
  end)

  describe("submits to a catalog model", function()
    it("are validated by the fetched schema before a byte is sent", function()
      local c = client()
      local before = submits()
      local job, err = c:submit(STD, { prompt = "a cat", duration = 14 })
      assert.is_nil(job)
      assert.equals("validation", err.kind)
      assert.equals("/duration", err.errors[1].path)
      job, err = c:submit(I2V, { prompt = "a cat" })
      assert.is_nil(job)
      assert.equals("validation", err.kind)
      assert.equals("/image_url", err.errors[1].path)
      assert.equals(before, submits())
      assert(c:submit(STD, { prompt = "a cat", duration = 10 }))
      assert.equals(before + 1, submits())
    end)

    it("ask the catalog once per client and model, and never for the shipped default model", function()
      local c = client { cache_dir = false }
      local before = catalog_requests()
      assert(c:generate { prompt = "a cat" })
      assert.equals(before, catalog_requests())
      assert(c:submit("acme/outside-the-catalog", { prompt = "x" }))
      assert(c:submit("acme/outside-the-catalog", { prompt = "y" }))
      assert.equals(before + 1, catalog_requests())
    end)

    it("go unvalidated with a warning when the catalog cannot be asked; a model it lacks, quietly", function()
      -- (a process of its own: this one has the catalog's schemas registered by now)
      emu:set_faults { "catalog:503:1" }
      local res = cli.run { "submit", "a cat", "--model", STD, "--duration", "14", "--json" }
      assert.equals(0, res.code, res.err)
      assert.matches("sent as given, unvalidated", res.err, 1, true)
      assert.equals(14, emu:job_record(helpers.json(res.out).id).input.duration)
      emu:set_faults {}
      local c2, w2 = client()
      assert(c2:submit("acme/outside-the-catalog", { prompt = "x" }))
      assert.equals(0, #w2)
    end)

    it("are refused with catalog = false only by a registered schema (the catalog is never asked)", function()
      local c = client { catalog = false }
      local before = catalog_requests()
      assert(c:submit("acme/other", { prompt = "x" }))
      assert.equals(before, catalog_requests())
    end)
  end)

  describe("the schema cache", function()
    it("keeps a fetched schema on disk, per API, and uses it without asking again", function()
      local cache = dir .. "/shared-cache"
      local c1 = client { cache_dir = cache }
      assert(c1:model(I2V))
      local files = io.popen("find " .. q(cache) .. " -name '*.json'"):read("*a")
      assert.matches("/models/%x+/kling%%2Fkling%-3%.0%%2Fpro%%2Fimage%-to%-video%.json", files)
      local before = catalog_requests()
      local c2 = client { cache_dir = cache }
      local m = assert(c2:model(I2V))
      assert.equals(before, catalog_requests())
      assert.is_number(m.cached_at)
      assert.same({ "prompt", "image_url" }, m.input_schema.required)
      m = assert(c2:model(I2V, { refresh = true }))
      assert.equals(before + 1, catalog_requests())
      assert.is_nil(m.cached_at)
    end)

    it("asks again past its age, and uses an old one with a warning when the catalog cannot be asked", function()
      local cache = dir .. "/old-cache"
      local c1 = client { cache_dir = cache }
      assert(c1:model(STD))
      local path = io.popen("find " .. q(cache) .. " -name '*.json'"):read("*l")
      local text = helpers.read_file(path)
      helpers.write_file(path, (text:gsub('^{"fetched_at":%d+', '{"fetched_at":1000')))
      local before = catalog_requests()
      local c2 = client { cache_dir = cache }
      assert(c2:model(STD))
      assert.equals(before + 1, catalog_requests())
      helpers.write_file(path, (helpers.read_file(path):gsub('^{"fetched_at":%d+', '{"fetched_at":1000')))
      emu:set_faults { "catalog:503:1" }
      local c3, warnings = client { cache_dir = cache, retries = false }
      local m = assert(c3:model(STD))
      assert.equals(1000, m.cached_at)
      assert.matches("cached", warnings[1], 1, true)
    end)

    for _, at in ipairs { "1000.5", "-1e400", "1e400", '"1000"' } do
      it("reads one whose fetched_at is " .. at .. " as unreadable, with a warning, never raising", function()
        local cache = dir .. "/odd-cache-" .. n
        local c1 = client { cache_dir = cache }
        assert(c1:model(STD))
        local path = io.popen("find " .. q(cache) .. " -name '*.json'"):read("*l")
        helpers.write_file(path, (helpers.read_file(path):gsub('^{"fetched_at":%d+', '{"fetched_at":' .. at)))
        emu:set_faults { "catalog:503:1" }
        local c2, warnings = client { cache_dir = cache, retries = false }
        local ok, m, err = pcall(c2.model, c2, STD)
        assert.is_true(ok, tostring(m))
        assert.is_nil(m)
        assert.equals("server", err.kind)
        assert.matches("cannot be read", warnings[1], 1, true)
        emu:set_faults {}
        m = assert(c2:model(STD)) -- and fetched again once the catalog answers
        assert.is_nil(m.cached_at)
        local text = helpers.read_file(path)
        assert.matches('^{"fetched_at":%d+,', text)
      end)
    end

    it("that cannot be written is a warning, never a failed call or submit", function()
      local c, warnings = client { cache_dir = "/proc/kling-cache" }
      assert(c:model(I2V))
      assert.matches("could not be cached", warnings[1], 1, true)
      local _, err = c:submit(I2V, { prompt = "x" })
      assert.equals("validation", err.kind)
    end)
  end)

  describe("the command line", function()
    it("kling models lists the live catalog with prices; --category, --search, --json", function()
      local res = cli.run { "models" }
      assert.equals(0, res.code, res.err)
      assert.matches(STD:gsub("%p", "%%%0") .. "%s+%$0%.07/second%s+text%-to%-video%s+Kling 3%.0 Standard Text to Video", res.out)
      assert.matches(kling.DEFAULT_MODEL .. " *", res.out, 1, true)
      assert.matches("3 models", res.err, 1, true)
      res = cli.run { "models", "--category", "image-to-video", "--json" }
      assert.equals(0, res.code, res.err)
      local v = helpers.json(res.out)
      assert.equals(I2V, v.model_id)
      assert.equals(0.112, v.price)
      res = cli.run { "models", "--search", "standard" }
      assert.equals(0, res.code, res.err)
      assert.is_nil(res.out:find(I2V, 1, true))
    end)

    it("kling models --refresh fetches every listed model's schema again", function()
      local before = catalog_requests()
      local res = cli.run { "models", "--refresh" }
      assert.equals(0, res.code, res.err)
      assert.equals(before + 4, catalog_requests())
    end)

    it("kling models lists the schemas known here and exits 7 when the catalog cannot be asked", function()
      emu:set_faults { "catalog:500:1" }
      local res = cli.run { "models" }
      assert.equals(7, res.code, res.err)
      assert.matches(kling.DEFAULT_MODEL, res.out, 1, true)
    end)

    it("kling schema MODEL shows any catalog model's fields; an unknown one exits 2", function()
      local res = cli.run { "schema", I2V }
      assert.equals(0, res.code, res.err)
      assert.matches("image_url  string, required", res.out, 1, true)
      assert.matches("(schema from the catalog", res.out, 1, true)
      assert.is_nil(res.out:find("userdata", 1, true))
      res = cli.run { "schema", "kling/kling-3.0/4k/text-to-video" }
      assert.equals(2, res.code, res.err)
      assert.matches("the catalog has no model", res.err, 1, true)
    end)

    it("kling submit refuses an input the fetched schema refuses, exit 3, nothing sent", function()
      local before = submits()
      local res = cli.run { "submit", "a cat", "--model", I2V }
      assert.equals(3, res.code, res.err)
      assert.matches("image_url is required", res.err, 1, true)
      assert.equals(before, submits())
    end)
  end)
end)

describe("a hostile catalog (a scripted API)", function()
  local scripted = require "scripted_api"
  local TOK = "hostile-catalog-token-91f"
  local dir, api, cli

  setup(function()
    dir = helpers.tmpdir()
    api = scripted.start(dir)
    cli = cli_run.new { api = api.api, token = TOK, dir = dir }
  end)
  teardown(function()
    if api then api.stop() end
    if cli then cli.cleanup() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  it("compiles a schema of thousands of properties in time linear in its size (no field x text searches)", function()
    local props = {}
    for i = 1, 6000 do
      props[i] = string.format('"field_%05d":{"type":"string","description":"%s"}', 6001 - i, string.rep("d", 100))
    end
    api.serve { { "GET", "^/v1/models/acme/wide$", { { 200, '{"model_id":"acme/wide","display_name":"Wide",'
      .. '"input_schema":{"type":"object","properties":{' .. table.concat(props, ",") .. "}}}" } } } }
    local c = kling.new { base_url = api.api, token = TOK, cache_dir = false }
    local t0 = os.clock()
    local m = assert(c:model("acme/wide"))
    local spent = os.clock() - t0 -- the process's CPU seconds: the old searches took 10+ s here
    assert.equals("Wide", m.display_name)
    assert.is_true(spent < 3, "compiling took " .. spent .. " s of CPU")
    -- the order of the text still rules the fields' order (here the alphabet's backwards)
    local fields = require("kling.models").describe("acme/wide").fields
    assert.equals(6000, #fields)
    assert.equals("field_06000", fields[1].name)
    assert.equals("field_00001", fields[6000].name)
  end)

  it("kling models lists a model id of 200 bytes and a dozen categories (columns wider than string.format pads)", function()
    local long_id = "acme/" .. string.rep("l", 195)
    local cats = {}
    for i = 1, 12 do cats[i] = '"category-number-' .. i .. '"' end
    api.serve { { "GET", "^/v1/models", { { 200, '{"total":2,"models":[{"model_id":"' .. long_id .. '","display_name":"Long",'
      .. '"categories":[' .. table.concat(cats, ",") .. '],"base_price_usd":0.5,"price_unit":"run"},'
      .. '{"model_id":"acme/short","display_name":"Short","categories":["x"]}]}' } } } }
    local res = cli.run { "models" }
    assert.equals(0, res.code, res.err)
    assert.matches(long_id .. "  $0.5/run  category-number-1,", res.out, 1, true)
    assert.matches("acme/short" .. string.rep(" ", #long_id - #"acme/short") .. "  -", res.out, 1, true)
    assert.matches("2 models", res.err, 1, true)
  end)

  it("kling models escapes control characters of the catalog's text and masks the token it echoes", function()
    api.serve { { "GET", "^/v1/models", { { 200, '{"total":1,"models":[{"model_id":"acme/evil",'
      .. '"display_name":"Evil \\u001b]0;owned\\u0007 name ' .. TOK .. '","categories":["x\\u001b[2Jy"],'
      .. '"base_price_usd":0.5,"price_unit":"run\\r"}]}' } } } }
    local res = cli.run { "models" }
    assert.equals(0, res.code, res.err)
    assert.matches("acme/evil", res.out, 1, true)
    assert.is_nil(res.out:find("\27", 1, true))
    assert.is_nil(res.out:find("\7", 1, true))
    assert.is_nil(res.out:find("\r", 1, true))
    assert.is_nil(res.out:find(TOK, 1, true))
    res = cli.run { "models", "--json" }
    assert.equals(0, res.code, res.err)
    assert.is_nil(res.out:find(TOK, 1, true))
    assert.is_nil(res.out:find("\27", 1, true))
  end)
end)
