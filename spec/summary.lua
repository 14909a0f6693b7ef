-- busted output handler: the usual terminal output (utfTerminal, or the
-- handler named by $KLING_TEST_OUTPUT), then one closing line
--   N passed, N failed, N skipped
-- where errors (a spec file that does not load, an error outside an `it`)
-- count as failures. .busted selects it, so plain `busted` prints the line.
return function(options)
  local busted = require "busted"
  local inner = require("busted.outputHandlers." .. (os.getenv("KLING_TEST_OUTPUT") or "utfTerminal"))(options)
  local subscribe = inner.subscribe
  inner.subscribe = function(self, opts)
    subscribe(self, opts)
    busted.subscribe({ "suite", "end" }, function()
      io.write(string.format("\n%d passed, %d failed, %d skipped\n", inner.successesCount,
        inner.failuresCount + inner.errorsCount, inner.pendingsCount))
      io.flush()
      return nil, true
    end)
  end
  return inner
end
