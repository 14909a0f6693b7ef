#!/bin/sh
# make demo: start the emulator on a free port, generate a clip through it
# with examples/generate.lua, download it, print its path and size, stop.
set -eu
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$out"' EXIT INT TERM
lua5.4 bin/kling-emulator --port 0 --queue 2 --run 3 --token demo-token --quiet >"$out/emulator.txt" &
pid=$!
i=0
until [ -s "$out/emulator.txt" ]; do
  i=$((i + 1))
  [ $i -lt 200 ] || { echo "the emulator did not start" >&2; exit 1; }
  sleep 0.05
done
head -n 1 "$out/emulator.txt"
api=$(head -n 1 "$out/emulator.txt" | sed 's/.* api=\([^ ]*\).*/\1/')
mkdir -p demo-out
RUNCOMFY_TOKEN=demo-token RUNCOMFY_MODEL_API_BASE="$api" \
LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/?.so;;" \
  lua5.4 examples/generate.lua "A paper boat drifts down a rain-soaked street, macro lens" "$PWD/demo-out/clip.mp4"
ls -l "$PWD/demo-out/clip.mp4"
