#!/usr/bin/env bash
# Acknowledged durable publications per second on Postgres: batched writes against row-by-row
# (one transaction per publication, storage.batch_rows_max = 1), same machine, same run.
# Starts a throwaway PostgreSQL cluster; prints one JSON summary per mode.
# Usage: benches/durable.sh [duration_s]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
cargo build --release -q -p locus -p locus-loadgen

PGBIN=$(dirname "$(command -v initdb 2>/dev/null || ls /usr/lib/postgresql/*/bin/initdb | sort | tail -1)")
PGD=$(mktemp -d)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres:postgres "$PGD"
PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$PGBIN/initdb" -D "$PGD/data" -U postgres -A trust --no-sync -E UTF8 >/dev/null
# fsync stays on: acknowledged means committed to disk, as in production.
as_pg "$PGBIN/pg_ctl" -D "$PGD/data" -l "$PGD/log" -w start -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGD" >/dev/null
cleanup() { kill "${LOCUS_PID:-}" 2>/dev/null || true; as_pg "$PGBIN/pg_ctl" -D "$PGD/data" -w stop -m immediate >/dev/null 2>&1 || true; rm -rf "$PGD"; }
trap cleanup EXIT

run_mode() {
  local rows=$1 port=4310
  LOCUS_SERVER__LISTEN=127.0.0.1:$port LOCUS_STORAGE__URL="postgres://postgres@127.0.0.1:$PGPORT/postgres" \
    LOCUS_STORAGE__BATCH_ROWS_MAX=$rows LOCUS_STORAGE__INFLIGHT_PUBLICATIONS_MAX=20000 RUST_LOG=warn \
    LOCUS_RATE_LIMITS__MESSAGES_PER_S=0 LOCUS_RATE_LIMITS__USER_MESSAGES_PER_S=0 LOCUS_SERVER__CONNECTIONS_PER_IP_MAX=0 \
    ./target/release/locus & LOCUS_PID=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/api/health" >/dev/null && break; sleep 0.1; done
  ./target/release/locus-loadgen durable --url "ws://127.0.0.1:$port/socket/websocket" \
    --publishers 4 --topics 4 --window 1024 --duration-s "$DURATION" \
    | python3 -c "import json,sys; d=json.load(sys.stdin); d['batch_rows_max']=$rows; print(json.dumps(d))"
  kill "$LOCUS_PID"; wait "$LOCUS_PID" 2>/dev/null || true
}
run_mode 1000
run_mode 1
