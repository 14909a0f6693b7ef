-- The fuzzers' corpora, replayed by the suite on the plain build. The schema fuzzer's: every
-- seed in fuzz/corpus/schema goes through fuzz/schema_harness.lua (the same
-- variants and the same model of the rules as build-fuzz/schema_fuzz), so an
-- input the fuzzer once broke validation with fails `make test` and
-- `make check` too, without clang. The JSON writer's: every seed in
-- fuzz/corpus/jsonw goes through fuzz/jsonw_harness.lua (as build-fuzz/jsonw_fuzz).
local helpers = require "helpers"
local kling = require "kling"

local CORPUS = helpers.root .. "/fuzz/corpus/schema"

-- The seed schema_fuzz.c derives from an input (FNV-1a), so that the harness
-- picks the same variants here.
local function seed_of(data)
  local h = 2166136261
  for i = 1, #data do h = ((h ~ data:byte(i)) * 16777619) & 0xffffffff end
  return h
end

local function corpus_files()
  return helpers.files(CORPUS)
end

describe("the schema fuzz corpus", function()
  local run = dofile(helpers.root .. "/fuzz/schema_harness.lua")
  local names = corpus_files()

  it("is there", function()
    assert.is_true(#names >= 12)
  end)

  for _, name in ipairs(names) do
    it("replays " .. name, function()
      local data = assert(helpers.read_file(CORPUS .. "/" .. name))
      run(data, seed_of(data))
    end)
  end

  it("refuses a field name with a NUL byte (found by schema_fuzz)", function()
    local ok, err = kling.validate { prompt = "a red kite", ["sound\0"] = "no" }
    assert.is_nil(ok)
    assert.equals("validation", err.kind)
    assert.equals("/", err.errors[1].path)
    assert.matches("NUL byte", err.errors[1].message)
    ok, err = kling.validate { prompt = "p", multi_prompt = { { prompt = "a", duration = 3, ["prompt\0x"] = "b" } } }
    assert.is_nil(ok)
    assert.equals("/multi_prompt/1", err.errors[1].path)
  end)
end)

describe("the JSON writer's fuzz corpus", function()
  local run = dofile(helpers.root .. "/fuzz/jsonw_harness.lua")
  local dir = helpers.root .. "/fuzz/corpus/jsonw"
  local names = helpers.files(dir)

  it("is there", function()
    assert.is_true(#names >= 10)
  end)

  for _, name in ipairs(names) do
    it("replays " .. name, function()
      local data = assert(helpers.read_file(dir .. "/" .. name))
      run(data, seed_of(data))
    end)
  end
end)
