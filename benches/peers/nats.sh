#!/usr/bin/env bash
# Starts nats-server on 127.0.0.1:$PORT (default 4222), installing it from apt when missing.
# `exec`s the server, so the caller's $! is its pid. Debian's nats-server binds 0.0.0.0 unless
# told otherwise; max_pending is raised from 64 MB so that a fan-out burst is measured as
# latency, as with the other peers, rather than cutting subscribers off as slow consumers.
set -euo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v nats-server >/dev/null; then
  as_root apt-get update -qq && as_root apt-get install -y -qq nats-server >/dev/null
fi
conf=$(mktemp --suffix=.conf)
cat >"$conf" <<CONF
listen: 127.0.0.1:${PORT:-4222}
max_pending: 256MB
CONF
exec nats-server -c "$conf"
