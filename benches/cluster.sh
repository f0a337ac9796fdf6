#!/usr/bin/env bash
# Room fan-out on two Locus nodes over NATS beside the same scenario on one node alone, in one
# run (issue 15). One room of CLIENTS subscribers and one publisher at each rate of RATES:
# - one node: a Locus without NATS, everything on it;
# - cluster: nodes A, B and C on one nats-server, the publisher on A, the subscribers split
#   50/50 over A and B, and no client at all on C.
# For each run: delivered msgs/s, latency p50/p99 (send to receipt), NATS messages in and out per
# publication (deltas of nats-server's /varz over the run, heartbeats included), and the
# publications node C received (its /metrics): interest routing means 0, since C has no member
# of the room. Single-node and cluster runs alternate, ROUNDS times, so that both see the same
# machine; each run also says how much CPU processes other than this script's took meanwhile
# (a shared machine's builds show there). Installs nats-server when missing.
#
#   benches/cluster.sh                           # ~2 minutes after the build
#   RATES=2000,5000,10000 ROUNDS=3 benches/cluster.sh
#
# Every figure comes from locus-loadgen and the servers' own counters; the JSON summaries, the
# node logs and the table (table.md, also printed) are kept in target/cluster/.
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

# A counter of a Prometheus text body on stdin, the samples with all the given labels summed
# (0 when absent: a counter appears on its first increment).
PROM_SUM='
import re, sys
name, labels = sys.argv[1], sys.argv[2:]
total = 0.0
for line in sys.stdin:
    m = re.match(r"(\w+)(\{[^}]*\})? (\S+)$", line.strip())
    if m and m.group(1) == name and all(l in (m.group(2) or "") for l in labels):
        total += float(m.group(3))
print(int(total))'
counter() { # PORT NAME LABEL...
  local port=$1; shift
  curl -sf "http://127.0.0.1:$port/metrics" | python3 -c "$PROM_SUM" "$@"
}
varz() { # FIELD
  curl -sf "http://127.0.0.1:$NATS_MON/varz" | python3 -c "import json, sys; print(json.load(sys.stdin)['$1'])"
}

echo "== starting one node alone, nats-server and nodes A, B, C" >&2
SINGLE=$(free_port)
start_node single "$SINGLE"
NATS_PORT=$(free_port); NATS_MON=$(free_port)
nats-server -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MON" >"$OUT/nats.log" 2>&1 &
PIDS+=($!)
wait_for nats-server curl -sf "http://127.0.0.1:$NATS_MON/varz"
A=$(free_port); B=$(free_port); C=$(free_port)
for node in a:$A b:$B c:$C; do start_node "${node%%:*}" "${node#*:}" "nats://127.0.0.1:$NATS_PORT"; done
sees_three() {
  curl -sf "http://127.0.0.1:$1/api/health" \
    | python3 -c 'import json, sys; sys.exit(len(json.load(sys.stdin)["cluster"]["nodes"]) != 3)'
}
for port in $A $B $C; do wait_for "three nodes seen from :$port" sees_three "$port"; done

# CPU seconds: the whole machine's busy time, and the servers this script started.
CPU_NOW='
import os, sys
hz = os.sysconf("SC_CLK_TCK")
f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
busy = sum(f) - f[3] - f[4]  # all but idle and iowait
ours = 0
for pid in sys.argv[1:]:
    try:
        ours += sum(int(x) for x in open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[11:13])
    except OSError:
        pass
print(busy / hz, ours / hz)'
# CPU seconds of the commands this shell ran and waited for (the load generator, curl, python),
# from `times` saved in FILE: `times` must run in this shell, not in a $(…) subshell.
children_cpu() {
  tail -1 "$1" | python3 -c '
import re, sys
print(sum(float(m) * 60 + float(s) for m, s in re.findall(r"(\d+)m([\d.]+)s", sys.stdin.read())))'
}

ws() { echo "ws://127.0.0.1:$1/socket/websocket"; }
PUB=publication
ROWS=$OUT/rows.jsonl
# run SETUP RATE ROUND LOADGEN-ARGS...: one fan-out run, its figures appended to $ROWS.
run() {
  local setup=$1 rate=$2 round=$3; shift 3
  local json="$OUT/$setup-$rate-$round.json"
  local in0=0 out0=0 c0=0 in1=0 out1=0 c1=0
  if [ "$setup" = cluster ]; then
    in0=$(varz in_msgs); out0=$(varz out_msgs)
    c0=$(counter "$C" locus_cluster_messages_total 'direction="in"' "kind=\"$PUB\"")
  fi
  echo "== $setup: $rate msgs/s, ${STEP_S} s (round $round)" >&2
  local busy0 ours0 busy1 ours1 kids0 kids1 t0 t1
  read -r busy0 ours0 < <(python3 -c "$CPU_NOW" "${PIDS[@]}")
  times >"$OUT/times.0"; kids0=$(children_cpu "$OUT/times.0"); t0=$(date +%s.%N)
  "$LOADGEN" fanout "$@" --clients "$CLIENTS" --rooms 1 --publishers 1 \
    --payload-bytes "$PAYLOAD_BYTES" --rate "$rate" --duration-s "$STEP_S" >"$json"
  read -r busy1 ours1 < <(python3 -c "$CPU_NOW" "${PIDS[@]}")
  times >"$OUT/times.1"; kids1=$(children_cpu "$OUT/times.1"); t1=$(date +%s.%N)
  local other
  other=$(python3 -c "print(max(0.0, (($busy1 - $busy0) - ($ours1 - $ours0) - ($kids1 - $kids0)) \
    / (($t1 - $t0) * $(nproc))))")
  if [ "$setup" = cluster ]; then
    in1=$(varz in_msgs); out1=$(varz out_msgs)
    c1=$(counter "$C" locus_cluster_messages_total 'direction="in"' "kind=\"$PUB\"")
  fi
  python3 - "$json" "$setup" "$round" $((in1 - in0)) $((out1 - out0)) $((c1 - c0)) "$other" \
    >>"$ROWS" <<'EOF'
import json, sys
path, setup, rnd, nats_in, nats_out, c_in, other = sys.argv[1:]
s = json.load(open(path))["steps"][0]
sent = s["sent"] or 1
cluster = setup == "cluster"
print(json.dumps({
    "setup": setup, "round": int(rnd), "rate": s["rate_per_publisher"], "sent": s["sent"],
    "delivered": s["delivered"], "expected": s["expected"],
    "delivered_per_s": s["delivered_per_s"], "p50": s["latency_ms"]["p50"],
    "p99": s["latency_ms"]["p99"],
    "by_server": [(b["delivered"], b["expected"]) for b in s["by_server"]],
    "nats_in_per_pub": int(nats_in) / sent if cluster else None,
    "nats_out_per_pub": int(nats_out) / sent if cluster else None,
    "c_publications_in": int(c_in) if cluster else None,
    "other_cpu": float(other),
}))
EOF
}

for round in $(seq 1 "$ROUNDS"); do
  for rate in ${RATES//,/ }; do
    run single "$rate" "$round" --url "$(ws "$SINGLE")"
    run cluster "$rate" "$round" --url "$(ws "$A")" --subscriber-url "$(ws "$A"),$(ws "$B")"
  done
done

# Drops on any node (slow members, a full NATS queue) would explain missing deliveries.
for node in single:$SINGLE a:$A b:$B c:$C; do
  echo "${node%%:*}: $(counter "${node#*:}" locus_messages_dropped_total) messages dropped" \
    "($(counter "${node#*:}" locus_messages_dropped_total 'reason="cluster_disconnected"') before NATS answered)"
done >"$OUT/drops.txt"

python3 - "$ROWS" >"$OUT/table.md" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
n = lambda v: f"{v:,.0f}"
f = lambda v, d=1: "—" if v is None else f"{v:.{d}f}"
print("| setup | rate in (msg/s) | sent | delivered / expected | on A / on B | delivered/s "
      "| p50 ms | p99 ms | NATS in / publication | NATS out / publication "
      "| node C publications in | CPU taken by others |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in sorted(rows, key=lambda r: (r["rate"], r["round"], r["setup"] != "single")):
    cluster = r["setup"] == "cluster"
    split = " / ".join(n(d) for d, _ in r["by_server"]) if cluster else "—"
    print(f"| {'A + B, C idle' if cluster else 'one node'} | {n(r['rate'])} | {n(r['sent'])} "
          f"| {n(r['delivered'])} / {n(r['expected'])} | {split} | {n(r['delivered_per_s'])} "
          f"| {f(r['p50'])} | {f(r['p99'])} | {f(r['nats_in_per_pub'], 3)} "
          f"| {f(r['nats_out_per_pub'], 3)} "
          f"| {'—' if r['c_publications_in'] is None else n(r['c_publications_in'])} "
          f"| {r['other_cpu']:.0%} |")
EOF
cat "$OUT/table.md" "$OUT/drops.txt"
echo "cluster.sh: summaries, logs and table.md in $OUT" >&2
