#!/usr/bin/env bash
# Starts the Socket.IO 4.8 peer on 127.0.0.1:$PORT (default 4500), installing Node.js and the
# npm packages when missing. `exec`s node, so the caller's $! is the server's pid.
set -euo pipefail
cd "$(dirname "$0")/socketio"
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v node >/dev/null; then
  as_root apt-get update -qq && as_root apt-get install -y -qq nodejs npm >/dev/null
fi
[ -d node_modules ] || npm ci --no-audit --no-fund --silent
exec node server.js
