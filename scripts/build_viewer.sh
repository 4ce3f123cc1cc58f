#!/usr/bin/env bash
# Idempotent: build the web viewer (viewer/) into gen3d/server/static/ unless the bundle there was built
# from exactly the current sources (content hash in static/SOURCES.sha256; git keeps no mtimes). The
# bundle is not committed: set-up builds it, so this needs Node.js and npm (`gen3d serve` does not).
set -euo pipefail
cd "$(dirname "$0")/.."

out=gen3d/server/static
if ! command -v npm >/dev/null; then
  echo "build_viewer: npm not found; the web viewer is not built (install Node.js and npm, then run make setup)" >&2
  exit 0
fi
if [ -f "$out/SOURCES.sha256" ] && [ "$(node viewer/build.mjs --hash)" = "$(cat "$out/SOURCES.sha256")" ]; then
  exit 0  # up to date
fi
cd viewer
# npm ci installs exactly the versions pinned in package-lock.json (three.js, esbuild).
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
node build.mjs
