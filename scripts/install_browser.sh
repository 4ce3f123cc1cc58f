#!/usr/bin/env bash
# Idempotent: the browser tests drive Debian's chromium (never a downloaded browser build).
# Installs it with apt-get when /usr/bin/chromium is missing and we are root; otherwise says why not.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install_browser: /usr/bin/chromium is missing and apt-get needs root; the browser tests will be skipped" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null 2>&1 \
  || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; }
/usr/bin/chromium --version
