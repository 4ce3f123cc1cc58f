#!/usr/bin/env bash
# Idempotent: build the web viewer (viewer/) into gen3d/server/static/ when its sources are newer than the
# built assets. The built assets are committed, so `gen3d serve` never needs Node.js; this needs npm.
set -euo pipefail
cd "$(dirname "$0")/.."

out=gen3d/server/static
stamp="$out/index.html"
sources=(viewer/package.json viewer/package-lock.json viewer/build.mjs viewer/src)

if [ -f "$stamp" ] && [ -z "$(find "${sources[@]}" -newer "$stamp" -print -quit)" ]; then
  exit 0  # up to date
fi
if ! command -v npm >/dev/null; then
  echo "build_viewer: npm not found; keeping the committed assets in $out" >&2
  exit 0
fi
cd viewer
# npm ci installs exactly the versions pinned in package-lock.json (three.js, esbuild).
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
node build.mjs
