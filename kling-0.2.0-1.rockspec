rockspec_format = "3.0"
-- The release 0.2.0: kling-scm-1.rockspec with a version and a tag (spec/rocks_spec.lua
-- checks that the two differ in nothing else).
package = "kling"
version = "0.2.0-1"

source = {
  url = "git+https://github.com/kling-lua/kling.git",
  tag = "v0.2.0",
}

-- POSIX systems: Linux (epoll), macOS and the BSDs (kqueue), others (poll); no Windows
supported_platforms = { "unix" }

description = {
  summary = "Client for RunComfy's Model API (Kling 3.0 video) with a C core on libcurl",
  detailed = [[
Submit, watch, cancel and download RunComfy Model API jobs (Kling 3.0 Pro
text-to-video first) from Lua 5.1 to 5.4 and LuaJIT: input validated before anything is sent,
many jobs on one libcurl multi handle, waits that yield inside coroutines,
streaming downloads, and a local emulator of the API for offline work.
]],
  license = "MIT",
  labels = { "http", "curl", "video", "runcomfy", "kling" },
}

dependencies = {
  "lua >= 5.1, < 5.5", -- the library; the command-line tool and the emulator need 5.4 (README)
  "lua-cjson >= 2.1",
  "dkjson >= 2.5", -- JSON input files and batch lines: integers and empty arrays kept
  "argparse", -- the command lines of kling and kling-emulator
  "luafilesystem", -- the command-line tool's directories (lfs)
}

test_dependencies = {
  "busted",
  "luv",
  "cqueues", -- the emulator (the specs start it), and Ctrl-C in the command-line tool when present
}

external_dependencies = {
  CURL = { header = "curl/curl.h", library = "curl" },
}

build = {
  type = "builtin",
  modules = {
    ["kling.core"] = {
      sources = { "src/util.c", "src/protocol.c", "src/event.c", "src/buf.c", "src/sha256.c", "src/net.c",
        "src/http.c", "src/engine.c", "src/poller.c", "src/journal.c", "src/media.c",
        "src/lbind.c", "src/lua_engine.c", "src/lua_poller.c", "src/lua_protocol.c", "src/lua_journal.c",
        "src/lua_schema.c", "src/lua_jsonw.c", "src/lua_term.c", "src/lua_media.c", "src/core.c" },
      -- src/event.c: epoll on Linux, kqueue on macOS and the BSDs, poll(2) elsewhere
      -- (defines = { "KLING_EVENT_POLL" } forces it); on macOS luarocks links a bundle
      -- (its LIBFLAG: -bundle -undefined dynamic_lookup)
      libraries = { "curl" },
      incdirs = { "$(CURL_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)" },
    },
    ["kling"] = "lua/kling.lua",
    ["kling.client"] = "lua/kling/client.lua",
    ["kling.job"] = "lua/kling/job.lua",
    ["kling.errors"] = "lua/kling/errors.lua",
    ["kling.models"] = "lua/kling/models.lua",
    ["kling.catalog"] = "lua/kling/catalog.lua",
    ["kling.sched"] = "lua/kling/sched.lua",
    ["kling.json"] = "lua/kling/json.lua",
    ["kling.loops"] = "lua/kling/loops.lua",
    ["kling.journal"] = "lua/kling/journal.lua",
    ["kling.protocol"] = "lua/kling/protocol.lua",
    ["kling.compat"] = "lua/kling/compat.lua",
    ["kling.schemas.kling_3_0_pro_text_to_video"] = "lua/kling/schemas/kling_3_0_pro_text_to_video.lua",
    ["kling.cli"] = "lua/kling/cli.lua",
    ["kling.cli.batch"] = "lua/kling/cli/batch.lua",
    ["kling.cli.cancel"] = "lua/kling/cli/cancel.lua",
    ["kling.cli.commands"] = "lua/kling/cli/commands.lua",
    ["kling.cli.completion"] = "lua/kling/cli/completion.lua",
    ["kling.cli.context"] = "lua/kling/cli/context.lua",
    ["kling.cli.display"] = "lua/kling/cli/display.lua",
    ["kling.cli.download"] = "lua/kling/cli/download.lua",
    ["kling.cli.emulator"] = "lua/kling/cli/emulator.lua",
    ["kling.cli.env"] = "lua/kling/cli/env.lua",
    ["kling.cli.exit"] = "lua/kling/cli/exit.lua",
    ["kling.cli.files"] = "lua/kling/cli/files.lua",
    ["kling.cli.format"] = "lua/kling/cli/format.lua",
    ["kling.cli.generate"] = "lua/kling/cli/generate.lua",
    ["kling.cli.help"] = "lua/kling/cli/help.lua",
    ["kling.cli.input"] = "lua/kling/cli/input.lua",
    ["kling.cli.jobs"] = "lua/kling/cli/jobs.lua",
    ["kling.cli.manpage"] = "lua/kling/cli/manpage.lua",
    ["kling.cli.models"] = "lua/kling/cli/models.lua",
    ["kling.cli.options"] = "lua/kling/cli/options.lua",
    ["kling.cli.output"] = "lua/kling/cli/output.lua",
    ["kling.cli.parser"] = "lua/kling/cli/parser.lua",
    ["kling.cli.result"] = "lua/kling/cli/result.lua",
    ["kling.cli.resume"] = "lua/kling/cli/resume.lua",
    ["kling.cli.schema"] = "lua/kling/cli/schema.lua",
    ["kling.cli.signals"] = "lua/kling/cli/signals.lua",
    ["kling.cli.status"] = "lua/kling/cli/status.lua",
    ["kling.cli.submit"] = "lua/kling/cli/submit.lua",
    ["kling.cli.term"] = "lua/kling/cli/term.lua",
    ["kling.cli.validate"] = "lua/kling/cli/validate.lua",
    ["kling.cli.wait"] = "lua/kling/cli/wait.lua",
    ["kling.emulator"] = "lua/kling/emulator.lua",
    ["kling.emulator_video"] = "lua/kling/emulator_video.lua",
    ["kling.emulator.api"] = "lua/kling/emulator/api.lua",
    ["kling.emulator.catalog"] = "lua/kling/emulator/catalog.lua",
    ["kling.emulator.cli"] = "lua/kling/emulator/cli.lua",
    ["kling.emulator.clock"] = "lua/kling/emulator/clock.lua",
    ["kling.emulator.control"] = "lua/kling/emulator/control.lua",
    ["kling.emulator.faults"] = "lua/kling/emulator/faults.lua",
    ["kling.emulator.files"] = "lua/kling/emulator/files.lua",
    ["kling.emulator.http"] = "lua/kling/emulator/http.lua",
    ["kling.emulator.jobs"] = "lua/kling/emulator/jobs.lua",
    ["kling.emulator.listener"] = "lua/kling/emulator/listener.lua",
    ["kling.emulator.pattern"] = "lua/kling/emulator/pattern.lua",
    ["kling.emulator.reply"] = "lua/kling/emulator/reply.lua",
    ["kling.emulator.routes"] = "lua/kling/emulator/routes.lua",
    ["kling.emulator.util"] = "lua/kling/emulator/util.lua",
  },
  -- doc/ (the manual page doc/kling.1 among it) is copied into the rock's directory:
  -- luarocks has no place for manual pages; `make install` puts it in share/man/man1
  copy_directories = { "doc" },
  install = {
    bin = { ["kling"] = "bin/kling", ["kling-emulator"] = "bin/kling-emulator" },
    -- the schema as published (the emulator reads it; the library requires the module
    -- kling.schemas.kling_3_0_pro_text_to_video, which holds the same text)
    lua = {
      ["kling.schemas.kling_3_0_pro_text_to_video"] = "lua/kling/schemas/kling_3_0_pro_text_to_video.json",
    },
  },
}

test = {
  type = "busted",
}
