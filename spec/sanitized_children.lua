-- busted --helper for `make check`: the suite runs in a lua5.4 with the
-- AddressSanitizer runtime preloaded (for the sanitized kling.core), but the
-- programs the specs start (the emulator, curl, mktemp...) are not ours to
-- check: they are started without the preload.
local prefix = "unset LD_PRELOAD ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS; "
local execute, popen = os.execute, io.popen
os.execute = function(cmd, ...)
  if cmd == nil then return execute() end
  return execute(prefix .. cmd, ...)
end
io.popen = function(cmd, ...)
  return popen(prefix .. cmd, ...)
end
