#!/usr/bin/env bash
# Room fan-out on two Locus nodes over NATS beside the same scenario on one node alone, in one
# run (issue 15). One room of CLIENTS subscribers and one publisher at each rate of RATES:
# - one node: a Locus without NATS, everything on it;
# - cluster: nodes A, B and C on one nats-server, the publisher on A, the subscribers split
#   50/50 over A and B, and no client at all on C.
# For each run: delivered msgs/s, latency p50/p99 (send to receipt), NATS messages in and out per
# publication (deltas of nats-server's /varz over the run, heartbeats included), the
# publications A sent to NATS and B took from it, and those node C received (its /metrics):
# interest routing means 0, since C has no member of the room. Single-node and cluster runs
# alternate, ROUNDS times, so that both see the same machine; each run also says how much CPU
# processes other than this script's took meanwhile (a shared machine's builds show there), and
# any message a node dropped. benches/cluster_figures.py computes the figures. Installs
# nats-server when missing.
#
#   benches/cluster.sh                           # ~2 minutes after the build
#   RATES=2000,5000,10000 ROUNDS=3 benches/cluster.sh
#
# Every figure comes from locus-loadgen and the servers' own counters; the JSON summaries, the
# node logs and the markdown table (also printed) are kept in target/cluster/.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-target/cluster}
CLIENTS=${CLIENTS:-100}
RATES=${RATES:-2000,10000}
PAYLOAD_BYTES=${PAYLOAD_BYTES:-100}
STEP_S=${STEP_S:-10}
ROUNDS=${ROUNDS:-1}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v nats-server >/dev/null; then
  as_root apt-get update -qq && as_root apt-get install -y -qq nats-server >/dev/null
fi
cargo build --release -q -p locus -p locus-loadgen
# Wherever cargo puts its builds (CARGO_TARGET_DIR, .cargo/config, or ./target).
BIN=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release
LOADGEN=$BIN/locus-loadgen

rm -rf "$OUT"
mkdir -p "$OUT/db"
PIDS=()
# Nodes first (last started first), so that they leave while NATS still carries their goodbye.
cleanup() {
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill "${PIDS[i]}" 2>/dev/null || true
    wait "${PIDS[i]}" 2>/dev/null || true
  done
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for WHAT COMMAND...: retries COMMAND for up to 10 s.
wait_for() {
  local what=$1; shift
  for _ in $(seq 1 100); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "cluster.sh: $what not ready (logs in $OUT)" >&2
  return 1
}

# start_node NAME PORT [NATS_URL]: a Locus with per-connection limits off and no durable topic
# (durable topics in a cluster need Postgres), its own SQLite file and log.
start_node() {
  local name=$1 port=$2 nats=${3:-}
  local cluster=()
  [ -n "$nats" ] && cluster=(LOCUS_CLUSTER__NATS_URL="$nats" LOCUS_CLUSTER__NODE_ID="$name")
  env "${cluster[@]}" LOCUS_SERVER__LISTEN="127.0.0.1:$port" \
    LOCUS_STORAGE__URL="sqlite://$PWD/$OUT/db/$name.db" LOCUS_STORAGE__DURABLE_TOPICS='[]' \
    LOCUS_RATE_LIMITS__MESSAGES_PER_S=0 LOCUS_RATE_LIMITS__USER_MESSAGES_PER_S=0 \
    LOCUS_SERVER__CONNECTIONS_PER_IP_MAX=0 \
    "$BIN/locus" >"$OUT/$name.log" 2>&1 &
  PIDS+=($!)
  wait_for "node $name" curl -sf "http://127.0.0.1:$port/api/health"
}

echo "== starting one node alone, nats-server and nodes A, B, C" >&2
SINGLE=$(free_port)
start_node single "$SINGLE"
NODES=("single:$SINGLE:${PIDS[-1]}")
NATS_PORT=$(free_port); NATS_MON=$(free_port)
nats-server -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MON" >"$OUT/nats.log" 2>&1 &
PIDS+=($!)
NODES+=("nats::$!")
wait_for nats-server curl -sf "http://127.0.0.1:$NATS_MON/varz"
A=$(free_port); B=$(free_port); C=$(free_port)
for node in a:$A b:$B c:$C; do
  start_node "${node%%:*}" "${node#*:}" "nats://127.0.0.1:$NATS_PORT"
  NODES+=("$node:${PIDS[-1]}")
done
sees_three() {
  curl -sf "http://127.0.0.1:$1/api/health" \
    | python3 -c 'import json, sys; sys.exit(len(json.load(sys.stdin)["cluster"]["nodes"]) != 3)'
}
for port in $A $B $C; do wait_for "three nodes seen from :$port" sees_three "$port"; done

FIGURES=benches/cluster_figures.py
# snapshot FILE: the counters around a run. `times` (the CPU of the commands this shell waited
# for, the load generator among them) must run in this shell, not in a $(…) subshell.
snapshot() {
  times >"$OUT/times"
  python3 "$FIGURES" snapshot "$1" "$OUT/times" "$NATS_MON" "${NODES[@]}"
}

ws() { echo "ws://127.0.0.1:$1/socket/websocket"; }
# run SETUP RATE ROUND LOADGEN-ARGS...: one fan-out run, its figures appended to rows.jsonl.
run() {
  local setup=$1 rate=$2 round=$3; shift 3
  local name="$OUT/$setup-$rate-$round"
  echo "== $setup: $rate msgs/s, ${STEP_S} s (round $round)" >&2
  snapshot "$name.before.json"
  "$LOADGEN" fanout "$@" --clients "$CLIENTS" --rooms 1 --publishers 1 \
    --payload-bytes "$PAYLOAD_BYTES" --rate "$rate" --duration-s "$STEP_S" >"$name.json"
  snapshot "$name.after.json"
  python3 "$FIGURES" row "$name" "$setup" "$round" >>"$OUT/rows.jsonl"
}

for round in $(seq 1 "$ROUNDS"); do
  for rate in ${RATES//,/ }; do
    run single "$rate" "$round" --url "$(ws "$SINGLE")"
    run cluster "$rate" "$round" --url "$(ws "$A")" --subscriber-url "$(ws "$A"),$(ws "$B")"
  done
done

python3 "$FIGURES" table "$OUT/rows.jsonl" | tee "$OUT/table.md"
echo "cluster.sh: summaries, logs and table.md in $OUT" >&2
