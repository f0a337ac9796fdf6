"""The figures of benches/cluster.sh from the counters around each run (standard library only).

    cluster_figures.py snapshot FILE TIMES NATS_MON NAME:PORT:PID...   counters now, as JSON
                                   (an empty PORT: a process without /metrics, nats-server)
    cluster_figures.py row RUN SETUP ROUND                             one run's figures, a JSON line
    cluster_figures.py table ROWS                                      the Markdown table

A snapshot holds nats-server's messages in and out (/varz), each node's cluster messages and
drops by label set (/metrics) and CPU seconds: the whole machine's busy time, each node's, and
the commands the script waited for (the load generator, from bash's `times` in TIMES). A row is
the deltas between RUN.before.json and RUN.after.json beside the load generator's RUN.json;
its server CPU is that of the processes serving the run: the one node, or A, B, C and NATS.
"""

import json
import os
import re
import sys
import time
import urllib.request

SERIES = re.compile(r"(locus_cluster_messages_total|locus_messages_dropped_total)(\{[^}]*\}) (\S+)$")
HTTP_TIMEOUT_S = 5


def get(url):
    return urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S).read().decode()


def snapshot(out, times_file, nats_mon, *nodes):
    hz = os.sysconf("SC_CLK_TCK")
    varz = json.loads(get(f"http://127.0.0.1:{nats_mon}/varz"))
    snap = {"time": time.time(), "nats_in": varz["in_msgs"], "nats_out": varz["out_msgs"], "nodes": {}}
    for node in nodes:
        name, port, pid = node.split(":")
        series = {}
        for line in get(f"http://127.0.0.1:{port}/metrics").splitlines() if port else []:
            m = SERIES.match(line)
            if m:
                series[m.group(1) + m.group(2)] = float(m.group(3))
        stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        snap["nodes"][name] = {"series": series, "cpu": (int(stat[11]) + int(stat[12])) / hz}
    cpu = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    snap["busy_cpu"] = (sum(cpu) - cpu[3] - cpu[4]) / hz  # all but idle and iowait
    children = open(times_file).read().splitlines()[-1]  # "0m1.2s 0m0.3s": user, system
    snap["children_cpu"] = sum(float(m) * 60 + float(s) for m, s in re.findall(r"(\d+)m([\d.]+)s", children))
    json.dump(snap, open(out, "w"))


def row(run, setup, rnd):
    step = json.load(open(f"{run}.json"))["steps"][0]
    before, after = (json.load(open(f"{run}.{w}.json")) for w in ("before", "after"))

    def delta(node, series):
        return int(after["nodes"][node]["series"].get(series, 0) - before["nodes"][node]["series"].get(series, 0))

    def publications(node, direction):
        return delta(node, f'locus_cluster_messages_total{{direction="{direction}",kind="publication"}}')

    dropped = {}
    for node, figures in after["nodes"].items():
        for series in figures["series"]:
            if series.startswith("locus_messages_dropped_total") and delta(node, series):
                dropped.setdefault(node, {})[series[series.index("{"):]] = delta(node, series)
    ours = sum(after["nodes"][n]["cpu"] - before["nodes"][n]["cpu"] for n in after["nodes"])
    ours += after["children_cpu"] - before["children_cpu"]
    machine = (after["time"] - before["time"]) * os.cpu_count()
    cluster = setup == "cluster"
    servers = ["a", "b", "c", "nats"] if cluster else ["single"]
    sent = step["sent"] or 1
    per_pub = lambda k: (after[k] - before[k]) / sent if cluster else None
    print(json.dumps({
        "setup": setup, "round": int(rnd), "rate": step["rate_per_publisher"], "sent": step["sent"],
        "delivered": step["delivered"], "expected": step["expected"],
        "delivered_per_s": step["delivered_per_s"],
        "p50": step["latency_ms"]["p50"], "p99": step["latency_ms"]["p99"],
        "by_server": [(b["delivered"], b["expected"]) for b in step["by_server"]],
        "nats_in_per_pub": per_pub("nats_in"), "nats_out_per_pub": per_pub("nats_out"),
        "publications": {n: {"out": publications(n, "out"), "in": publications(n, "in")} for n in "abc"},
        "dropped": dropped,
        "server_cpu_s": sum(after["nodes"][n]["cpu"] - before["nodes"][n]["cpu"] for n in servers),
        "other_cpu": max(0.0, (after["busy_cpu"] - before["busy_cpu"] - ours) / machine),
    }))


def table(rows_file):
    rows = [json.loads(line) for line in open(rows_file)]
    n = lambda v: f"{v:,.0f}"
    f = lambda v, d=1: "—" if v is None else f"{v:.{d}f}"
    print("| setup | rate in (msg/s) | sent | delivered / expected | on A / on B | delivered/s "
          "| p50 ms | p99 ms | NATS in / publication | NATS out / publication "
          "| publications A → B | node C publications in | server CPU s | CPU taken by others |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["rate"], r["round"], r["setup"] != "single")):
        cluster = r["setup"] == "cluster"
        pubs = r["publications"]
        dash = lambda text: text if cluster else "—"
        print(f"| {'A + B, C idle' if cluster else 'one node'} | {n(r['rate'])} | {n(r['sent'])} "
              f"| {n(r['delivered'])} / {n(r['expected'])} "
              f"| {dash(' / '.join(n(d) for d, _ in r['by_server']))} | {n(r['delivered_per_s'])} "
              f"| {f(r['p50'])} | {f(r['p99'])} "
              f"| {f(r['nats_in_per_pub'], 3)} | {f(r['nats_out_per_pub'], 3)} "
              f"| {dash(n(pubs['a']['out']) + ' → ' + n(pubs['b']['in']))} "
              f"| {dash(n(pubs['c']['in']))} | {f(r['server_cpu_s'])} | {r['other_cpu']:.0%} |")
    drops = [(r, node, d) for r in rows for node, d in r["dropped"].items()]
    if drops:
        print()
        for r, node, d in drops:
            print(f"- dropped on {node} during {r['setup']} at {n(r['rate'])}/s (round {r['round']}): {d}")


if __name__ == "__main__":
    {"snapshot": snapshot, "row": row, "table": table}[sys.argv[1]](*sys.argv[2:])
