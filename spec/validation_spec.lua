-- Input validation against the published Kling 3.0 Pro schema, in the C core:
-- a corpus of valid and invalid inputs, each invalid one with the exact paths
-- reported, and proof that nothing reaches the service for any of them.
local helpers = require "helpers"
local kling = require "kling"
local json = require "kling.json"

local NaN, INF = 0 / 0, math.huge

local function segs(...)
  local t = {}
  for i, d in ipairs { ... } do t[i] = { prompt = "shot " .. i, duration = d } end
  return t
end

-- { name, input, paths = { ... } } for invalid inputs (exact paths, in order);
-- { name, input, sent = {...} } for valid ones (sent: fields of the normalised input to check).
local CASES = {
  -- valid
  { "a prompt alone", { prompt = "a red kite" }, sent = { prompt = "a red kite" } },
  { "every field at once", { prompt = "p", negative_prompt = "blur", duration = 10, aspect_ratio = "9:16",
    cfg_scale = 0.7, sound = false, multi_prompt = segs(5, 5), shot_type = "customize" }, sent = { duration = 10 } },
  { "duration 3 (minimum)", { prompt = "p", duration = 3 }, sent = { duration = 3 } },
  { "duration 15 (maximum)", { prompt = "p", duration = 15 }, sent = { duration = 15 } },
  { "duration 5.0 sent as the integer 5", { prompt = "p", duration = 5.0 }, sent = { duration = 5 } },
  { "aspect ratio 16:9", { prompt = "p", aspect_ratio = "16:9" } },
  { "aspect ratio 1:1", { prompt = "p", aspect_ratio = "1:1" } },
  { "cfg_scale 0", { prompt = "p", cfg_scale = 0 } },
  { "cfg_scale 1", { prompt = "p", cfg_scale = 1 } },
  { "cfg_scale 0.5 as a float", { prompt = "p", cfg_scale = 0.5 }, sent = { cfg_scale = 0.5 } },
  { "sound true", { prompt = "p", sound = true } },
  { "an empty negative prompt", { prompt = "p", negative_prompt = "" } },
  { "UTF-8 prompt", { prompt = "un cerf-volant rouge, 赤い凧, 🪁" } },
  { "an empty multi_prompt", { prompt = "p", multi_prompt = {} } },
  { "multi_prompt durations add up to duration", { prompt = "p", duration = 12, multi_prompt = segs(3, 4, 5) } },
  { "duration filled in from multi_prompt", { prompt = "p", multi_prompt = segs(3, 4) }, sent = { duration = 7 } },
  { "five segments of 3 s filling duration 15", { prompt = "p", multi_prompt = segs(3, 3, 3, 3, 3) }, sent = { duration = 15 } },
  { "segment duration 4.0 sent as 4", { prompt = "p", duration = 8, multi_prompt = { { prompt = "a", duration = 4.0 }, { prompt = "b", duration = 4 } } } },
  { "a long prompt", { prompt = string.rep("a kite ", 500) } },

  -- invalid: prompt
  { "no prompt", {}, paths = { "/prompt" } },
  { "an empty prompt", { prompt = "" }, paths = { "/prompt" } },
  { "a blank prompt", { prompt = " \t\n " }, paths = { "/prompt" } },
  { "a number as prompt", { prompt = 42 }, paths = { "/prompt" } },
  { "a table as prompt", { prompt = { "a" } }, paths = { "/prompt" } },
  { "a boolean as prompt", { prompt = true }, paths = { "/prompt" } },
  { "a prompt that is not UTF-8", { prompt = "caf\233" }, paths = { "/prompt" } },
  { "an overlong UTF-8 encoding", { prompt = "\192\175" }, paths = { "/prompt" } },
  { "a UTF-16 surrogate in UTF-8", { prompt = "\237\160\128" }, paths = { "/prompt" } },
  { "a NUL byte in the prompt", { prompt = "a\0b" }, paths = { "/prompt" } },
  { "negative_prompt not UTF-8", { prompt = "p", negative_prompt = "\255" }, paths = { "/negative_prompt" } },
  { "negative_prompt a number", { prompt = "p", negative_prompt = 1 }, paths = { "/negative_prompt" } },
  -- duration
  { "duration 16", { prompt = "p", duration = 16 }, paths = { "/duration" } },
  { "duration 2", { prompt = "p", duration = 2 }, paths = { "/duration" } },
  { "duration 0", { prompt = "p", duration = 0 }, paths = { "/duration" } },
  { "duration -5", { prompt = "p", duration = -5 }, paths = { "/duration" } },
  { "duration 5.5", { prompt = "p", duration = 5.5 }, paths = { "/duration" } },
  { "duration NaN", { prompt = "p", duration = NaN }, paths = { "/duration" } },
  { "duration infinity", { prompt = "p", duration = INF }, paths = { "/duration" } },
  { "duration -infinity", { prompt = "p", duration = -INF }, paths = { "/duration" } },
  { "duration as a string", { prompt = "p", duration = "5" }, paths = { "/duration" } },
  { "duration as a boolean", { prompt = "p", duration = true }, paths = { "/duration" } },
  { "duration 1e300", { prompt = "p", duration = 1e300 }, paths = { "/duration" } },
  -- aspect_ratio
  { "aspect ratio 4:3", { prompt = "p", aspect_ratio = "4:3" }, paths = { "/aspect_ratio" } },
  { "aspect ratio 16x9", { prompt = "p", aspect_ratio = "16x9" }, paths = { "/aspect_ratio" } },
  { "aspect ratio with a space", { prompt = "p", aspect_ratio = "16:9 " }, paths = { "/aspect_ratio" } },
  { "aspect ratio as a number", { prompt = "p", aspect_ratio = 1.78 }, paths = { "/aspect_ratio" } },
  -- cfg_scale
  { "cfg_scale 1.5", { prompt = "p", cfg_scale = 1.5 }, paths = { "/cfg_scale" } },
  { "cfg_scale -0.1", { prompt = "p", cfg_scale = -0.1 }, paths = { "/cfg_scale" } },
  { "cfg_scale NaN", { prompt = "p", cfg_scale = NaN }, paths = { "/cfg_scale" } },
  { "cfg_scale as a string", { prompt = "p", cfg_scale = "0.5" }, paths = { "/cfg_scale" } },
  -- sound
  { "sound as the string true", { prompt = "p", sound = "true" }, paths = { "/sound" } },
  { "sound as the string false", { prompt = "p", sound = "false" }, paths = { "/sound" } },
  { "sound as 1", { prompt = "p", sound = 1 }, paths = { "/sound" } },
  -- shot_type
  { "shot_type intelligent", { prompt = "p", shot_type = "intelligent" }, paths = { "/shot_type" } },
  { "shot_type empty", { prompt = "p", shot_type = "" }, paths = { "/shot_type" } },
  -- multi_prompt
  { "multi_prompt not a table", { prompt = "p", multi_prompt = "a; b" }, paths = { "/multi_prompt" } },
  { "multi_prompt with a named key", { prompt = "p", multi_prompt = { { prompt = "a", duration = 3 }, extra = 1 } }, paths = { "/multi_prompt" } },
  { "multi_prompt with a hole", { prompt = "p", multi_prompt = { [1] = { prompt = "a", duration = 3 }, [3] = { prompt = "c", duration = 3 } } }, paths = { "/multi_prompt" } },
  { "multi_prompt of 21 segments", { prompt = "p", multi_prompt = segs(3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3) }, paths = { "/multi_prompt" } },
  { "a segment that is a string", { prompt = "p", multi_prompt = { "a" } }, paths = { "/multi_prompt/1" } },
  { "a segment without prompt", { prompt = "p", multi_prompt = { { duration = 5 } } }, paths = { "/multi_prompt/1/prompt" } },
  { "a segment without duration", { prompt = "p", multi_prompt = { { prompt = "a" } } }, paths = { "/multi_prompt/1/duration" } },
  { "a segment with a blank prompt", { prompt = "p", multi_prompt = { { prompt = " ", duration = 5 } } }, paths = { "/multi_prompt/1/prompt" } },
  { "a segment of 2 s", { prompt = "p", duration = 5, multi_prompt = { { prompt = "a", duration = 3 }, { prompt = "b", duration = 2 } } }, paths = { "/multi_prompt/2/duration" } },
  { "a segment of 16 s", { prompt = "p", multi_prompt = { { prompt = "a", duration = 16 } } }, paths = { "/multi_prompt/1/duration" } },
  { "a segment of 3.5 s", { prompt = "p", multi_prompt = { { prompt = "a", duration = 3.5 } } }, paths = { "/multi_prompt/1/duration" } },
  { "a segment with an extra field", { prompt = "p", multi_prompt = { { prompt = "a", duration = 5, weight = 1 } } }, paths = { "/multi_prompt/1/weight" } },
  { "segments that do not add up to duration", { prompt = "p", duration = 10, multi_prompt = segs(3, 4) }, paths = { "/duration" } },
  { "segments adding up past 15 with duration left out", { prompt = "p", multi_prompt = segs(9, 9) }, paths = { "/duration" } },
  { "segments and a wrong duration type", { prompt = "p", duration = "7", multi_prompt = segs(3, 4) }, paths = { "/duration" } },
  -- unknown fields
  { "aspect for aspect_ratio", { prompt = "p", aspect = "16:9" }, paths = { "/aspect" }, hint = "aspect_ratio" },
  { "negative for negative_prompt", { prompt = "p", negative = "blur" }, paths = { "/negative" }, hint = "negative_prompt" },
  { "cfg for cfg_scale", { prompt = "p", cfg = 0.5 }, paths = { "/cfg" }, hint = "cfg_scale" },
  { "promt for prompt", { promt = "p" }, paths = { "/prompt", "/promt" }, hint = "prompt" },
  { "Duration with a capital", { prompt = "p", Duration = 5 }, paths = { "/Duration" }, hint = "duration" },
  { "a field nothing is like", { prompt = "p", seed = 42 }, paths = { "/seed" } },
  { "a numeric key", { prompt = "p", [1] = "x" }, paths = { "/" } },
  -- the input itself
  { "a string instead of a table", "a red kite", paths = { "/" } },
  { "nil", nil, paths = { "/" } },
  -- everything at once, in schema order
  { "many problems at once", { prompt = "", duration = 16, aspect_ratio = "4:3", cfg_scale = 2, sound = "yes",
    multi_prompt = { { prompt = "a", duration = 2 }, { duration = 5, x = 1 } }, shot_type = "auto", aspect = "1:1" },
    paths = { "/prompt", "/duration", "/aspect_ratio", "/cfg_scale", "/sound", "/multi_prompt/1/duration",
      "/multi_prompt/2/prompt", "/multi_prompt/2/x", "/shot_type", "/aspect" } },
}

describe("validation", function()
  it("has a corpus of at least 60 cases", function()
    assert.is_true(#CASES >= 60, #CASES .. " cases")
  end)

  for _, case in ipairs(CASES) do
    local name, input = case[1], case[2]
    if case.paths then
      it("refuses " .. name .. " (" .. table.concat(case.paths, ", ") .. ")", function()
        local ok, err = kling.validate(input)
        assert.is_nil(ok)
        assert.equals("validation", err.kind)
        local got = {}
        for i, e in ipairs(err.errors) do
          got[i] = e.path
          assert.is_string(e.message)
          assert.is_truthy(tostring(err):find(e.message, 1, true))
        end
        assert.same(case.paths, got)
        if case.hint then assert.matches("did you mean '" .. case.hint .. "'", err.errors[#err.errors].message) end
      end)
    else
      it("accepts " .. name, function()
        local ok, sent = kling.validate(input)
        assert.is_true(ok, sent and tostring(sent))
        for k, v in pairs(case.sent or {}) do
          assert.equals(v, sent[k])
          assert.equals(helpers.math_type(v), helpers.math_type(sent[k]))
        end
      end)
    end
  end

  it("names the field, the rule and the value in each message", function()
    local _, err = kling.validate { prompt = "p", duration = 16, sound = "true", multi_prompt = segs(3, 2) }
    assert.equals("duration must be an integer from 3 to 15, got 16", err.errors[1].message)
    assert.equals('sound must be a boolean (true or false), got the string "true"', err.errors[2].message)
    assert.equals("multi_prompt[2].duration must be an integer from 3 to 15, got 2", err.errors[3].message)
  end)

  it("explains a duration that does not match its segments", function()
    local _, err = kling.validate { prompt = "p", duration = 10, multi_prompt = segs(3, 4) }
    assert.matches("sum of the multi_prompt duration values %(3 %+ 4 = 7%), got 10", err.errors[1].message)
    local _, err2 = kling.validate { prompt = "p", multi_prompt = segs(9, 9) }
    assert.matches("left out.*add up to 18.*from 3 to 15", err2.errors[1].message)
  end)

  it("returns the input as it would be sent, with integers and [] for an empty list", function()
    local ok, sent = kling.validate { prompt = "p", duration = 5.0, multi_prompt = {} }
    assert.is_true(ok)
    local wire = json.encode(sent)
    assert.matches('"multi_prompt":%[%]', wire)
    assert.matches('"duration":5[,}]', wire)
    assert.equals(5, sent.duration)
    assert.equals("integer", helpers.math_type(sent.duration))
  end)

  it("does not change the caller's table", function()
    local input = { prompt = "p", multi_prompt = segs(3, 4) }
    assert(kling.validate(input))
    assert.is_nil(input.duration)
  end)

  it("reads the publisher's dialect from the shipped schema", function()
    local schema = kling.schema(kling.DEFAULT_MODEL)
    assert.equals("float", schema.properties.cfg_scale.type)
    assert.is_nil(schema.properties.multi_prompt.items.type)
    local d = require("kling.models").describe(kling.DEFAULT_MODEL)
    local names = {}
    for i, f in ipairs(d.fields) do names[i] = f.name end
    assert.same({ "prompt", "negative_prompt", "duration", "aspect_ratio", "cfg_scale", "sound", "multi_prompt", "shot_type" }, names)
    assert.equals("number", d.fields[5].type)
    assert.equals("object", d.fields[7].items.type)
    assert.equals(20, d.fields[7].max_items)
    assert.equals("multi_prompt.duration", d.fields[3].sum_of)
  end)

  it("registers another model from JSON text and from a table", function()
    kling.register_model("acme/test/one", [[{"type":"object","required":["text"],
      "properties":{"text":{"type":"string"},"steps":{"type":"integer","minimum":1,"maximum":50},
      "mode":{"type":"string","enum":["fast","best"]}}}]])
    assert.is_true((kling.validate({ text = "x", steps = 10, mode = "fast" }, "acme/test/one")))
    local _, err = kling.validate({ steps = 99, mode = "slow", extra = 1 }, "acme/test/one")
    local paths = {}
    for i, e in ipairs(err.errors) do paths[i] = e.path end
    assert.same({ "/text", "/steps", "/mode", "/extra" }, paths)
    kling.register_model("acme/test/two", { type = "object", properties = { b = { type = "boolean" }, a = { type = "number" } } })
    local _, err2 = kling.validate({ a = "1", b = "2" }, "acme/test/two")
    assert.equals("/a", err2.errors[1].path) -- alphabetical for a table
    assert.equals("number", kling.schema("acme/test/two").properties.a.type)
  end)

  it("raises on a schema it cannot read, naming where", function()
    assert.has_error(function() kling.register_model("acme/bad", '{"type":"object","properties":{"x":{"type":"decimal"}}}') end,
      "kling.register_model(acme/bad): schema at '/x': unknown type 'decimal'")
    assert.has_error(function() kling.register_model("acme/bad", "{not json") end)
    assert.has_error(function() kling.register_model("bad id!", {}) end)
  end)

  it("sends input for a model without a schema as given", function()
    assert.is_true((kling.validate({ anything = { 1, 2 } }, "kling/kling-3.0/4k/text-to-video")))
    local ok, err = kling.validate("text", "kling/kling-3.0/4k/text-to-video")
    assert.is_nil(ok)
    assert.equals("validation", err.kind)
  end)
end)

describe("validation before sending", function()
  local emu, client

  setup(function()
    emu = helpers.start_emulator { "--token", "val-token", "--queue", "0", "--run", "0.1" }
    client = kling.new { base_url = emu.api, token = "val-token", poll = { initial = 0.05 } }
  end)
  teardown(function()
    if client then client:close() end
    if emu then emu:stop() end
  end)

  it("sends nothing for any invalid input of the corpus", function()
    local before = emu:stats()
    local refused = 0
    for _, case in ipairs(CASES) do
      if case.paths then
        local job, err = client:generate(case[2])
        assert.is_nil(job, case[1])
        assert.equals("validation", err.kind, case[1])
        refused = refused + 1
      end
    end
    local after = emu:stats()
    assert.is_true(refused >= 50)
    assert.equals(before.requests_total, after.requests_total)
    assert.equals(before.jobs_created, after.jobs_created)
  end)

  it("sends the normalised input: 5.0 as 5, [] for an empty list, the filled-in duration", function()
    local a = assert(client:generate { prompt = "p", duration = 5.0, multi_prompt = {} })
    local rec = emu:job_record(a.id)
    assert.matches('"duration":5[,}]', rec.body)
    assert.matches('"multi_prompt":%[%]', rec.body)
    local b = assert(client:generate { prompt = "p", multi_prompt = segs(3, 4) })
    assert.equals(7, emu:job_record(b.id).input.duration)
  end)
end)
