--- kling submit [PROMPT...|-] [options]: validate, submit once, print the request id.
return {
  name = "submit",
  summary = "submit a job and print its request id",
  args = "[PROMPT...|-]",
  argname = "PROMPT",
  args_help = "the prompt (several words are joined with spaces; - reads it from stdin)",
  options = { "input", "out", "api", "submit-timeout" },
  sections = { Input = "Input (the flags win over --input)" },
  option_help = { json = '{"id", "model", "status"} on stdout' },
  description = "Validates the input, submits it once and prints the request id (stdout).",
  examples = { 'id=$(kling submit "a lighthouse in a storm" --duration 10) && kling wait "$id"' },
  run = function(o, pos) return require("kling.cli.generate").submit_like(o, pos, "submit", true) end,
}
