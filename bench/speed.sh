#!/usr/bin/env bash
# Throughput and CPU per query on one pinned core: healthdns beside gdnsd, Knot and NSD, and
# the bare echo floor (the kernel's cost per packet here).
#
# One generated zone (10,000 names, 1,000 delegations, `www` a healthdns pool over two live
# HTTP backends, a static name in the others) is served by each server pinned to CPU 0, one
# thread each; the batched generator (examples/loadgen.rs: sendmmsg/recvmmsg, 256
# outstanding) is pinned to CPU 1. Servers are interleaved (A B C D A B C D ...) and each
# figure is the median of ROUNDS runs of SECONDS. Reports answered QPS, server CPU µs/query
# (from /proc), p50/p99 latency, RSS, and healthdns' ratio to the best anchor.
# Needs (nothing is installed by this script): nsd, knot, gdnsd, dig, python3, taskset
#   apt-get install -y nsd knot gdnsd bind9-dnsutils util-linux
# Usage: bench/speed.sh [SECONDS] [ROUNDS]   (default 3 s, 3 rounds)
set -euo pipefail
SECONDS_PER_RUN=${1:-3}
ROUNDS=${2:-3}
cd "$(dirname "$0")/.."
for tool in nsd knotd gdnsd dig python3 taskset; do
  command -v "$tool" >/dev/null || { echo "bench/speed.sh needs $tool (apt-get install -y nsd knot gdnsd bind9-dnsutils util-linux)" >&2; exit 1; }
done
source bench/common.sh
cargo build --release --quiet --examples
HTTP_PORT=$(free_port)
start_backend 1; start_backend 2
P_HD=$(free_port); P_NSD=$(free_port); P_KNOT=$(free_port); P_GD=$(free_port); P_FLOOR=$(free_port)

zone() { # $1 = 1 to leave www out (healthdns: the pool answers it)
  echo '$ORIGIN bench.test.'; echo '$TTL 300'
  echo '@ SOA ns1 hostmaster 1 3600 600 1209600 60'
  echo '@ NS ns1'; echo 'ns1 A 127.0.0.1'
  [ "$1" = 1 ] || { echo 'www A 127.0.9.1'; echo 'www A 127.0.9.2'; }
  for i in $(seq 1 10000); do echo "www$i A 192.0.2.$((i % 250 + 1))"; done
  for i in $(seq 1 1000); do echo "d$i NS ns.d$i"; echo "ns.d$i A 198.51.100.$((i % 250 + 1))"; done
}
zone 1 > "$work/hd.zone"
zone 0 > "$work/bench.test.zone"

# Query mixes.
for i in $(seq 1 100); do echo "www.bench.test A"; done > "$work/q_pool"
shuf -i 1-10000 -n 10000 | sed 's/.*/www&.bench.test A/' > "$work/q_static"
for i in $(seq 1 10000); do echo "nx$i.bench.test A"; done > "$work/q_nxdomain"
for i in $(seq 1 10000); do echo "www$i.bench.test MX"; done > "$work/q_nodata"
for i in $(seq 1 1000); do echo "host.d$i.bench.test A"; done > "$work/q_referral"
shuf -i 1-10000 -n 10000 | sed 's/.*/www&.bench.test A do/' > "$work/q_edns_do"
MIXES="pool static nxdomain nodata referral edns_do"

# healthdns: one UDP thread.
cat > "$work/hd.toml" <<CONF
[server]
listen = ["127.0.0.1:$P_HD"]
udp_sockets = 1
state_file = "hd.state"
[[zone]]
origin = "bench.test"
file = "hd.zone"
[[pool]]
name = "web"
names = ["www.bench.test"]
addresses = ["127.0.9.1", "127.0.9.2"]
[[pool.check]]
kind = "http"
url = "http://{address}:$HTTP_PORT/"
CONF
RUST_LOG=warn taskset -c 0 target/release/healthdns serve --config "$work/hd.toml" & pids+=($!); PID_HD=$!

# NSD: one server process.
nsd_conf "$P_NSD" > "$work/nsd.conf"
taskset -c 0 nsd -d -c "$work/nsd.conf" & pids+=($!); PID_NSD=$!

# Knot: one UDP and one TCP worker.
mkdir -p "$work/knot"
cat > "$work/knot.conf" <<CONF
server:
    listen: 127.0.0.1@$P_KNOT
    rundir: "$work/knot"
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: "$work/knot.log"
    any: error
database:
    storage: "$work/knot"
zone:
  - domain: bench.test
    storage: "$work"
    file: "bench.test.zone"
    zonefile-sync: -1
    journal-content: none
CONF
taskset -c 0 knotd -c "$work/knot.conf" 2>"$work/knotd.err" & pids+=($!); PID_KNOT=$!

# gdnsd: one UDP and one TCP thread.
mkdir -p "$work/gdnsd/zones" "$work/gdnsd/run" "$work/gdnsd/state"
cp "$work/bench.test.zone" "$work/gdnsd/zones/bench.test"
cat > "$work/gdnsd/config" <<CONF
options => {
  listen => [ 127.0.0.1:$P_GD ]
  run_dir => $work/gdnsd/run
  state_dir => $work/gdnsd/state
  udp_threads => 1
  tcp_threads => 1
}
CONF
taskset -c 0 gdnsd -c "$work/gdnsd" start 2>"$work/gdnsd.err" & pids+=($!); PID_GD=$!

taskset -c 0 target/release/examples/echo_floor "127.0.0.1:$P_FLOOR" & pids+=($!); PID_FLOOR=$!

wait_ready() { # name port
  for _ in $(seq 1 200); do
    dig @127.0.0.1 -p "$2" +time=1 +tries=1 +short www1.bench.test A 2>/dev/null | grep -q 192.0.2 && return 0
    sleep 0.1
  done
  echo "$1 on port $2 did not start" >&2; cat "$work"/*.err >&2 || true; exit 1
}
wait_ready healthdns "$P_HD"; wait_ready nsd "$P_NSD"; wait_ready knot "$P_KNOT"; wait_ready gdnsd "$P_GD"
# The pool answers both backends before measuring.
for _ in $(seq 1 100); do [ "$(dig @127.0.0.1 -p "$P_HD" +short www.bench.test A | wc -l)" = 2 ] && break; sleep 0.1; done

declare -A PORT=([healthdns]=$P_HD [gdnsd]=$P_GD [knot]=$P_KNOT [nsd]=$P_NSD [floor]=$P_FLOOR)
declare -A PID=([healthdns]=$PID_HD [gdnsd]=$PID_GD [knot]=$PID_KNOT [nsd]=$PID_NSD [floor]=$PID_FLOOR)
SERVERS="healthdns gdnsd knot nsd floor"

: > "$work/results"
for mix in $MIXES; do
  for round in $(seq 1 "$ROUNDS"); do
    for server in $SERVERS; do
      before=$(cpu_ticks "${PID[$server]}")
      line=$(taskset -c 1 target/release/examples/loadgen "127.0.0.1:${PORT[$server]}" "$work/q_$mix" 256 "$SECONDS_PER_RUN")
      after=$(cpu_ticks "${PID[$server]}")
      answered=$(echo "$line" | sed 's/.*answered=\([0-9]*\).*/\1/')
      us=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$answered" 'BEGIN { printf "%.2f", n ? (t / hz) * 1e6 / n : 0 }')
      echo "$mix $server $us $line rss_kb=$(rss_kb "${PID[$server]}")" >> "$work/results"
    done
  done
done
python3 - "$work/results" "$ROUNDS" <<'PY'
import sys, statistics, re
rows = {}
for line in open(sys.argv[1]):
    mix, server, us, rest = line.split(" ", 3)
    fields = dict(re.findall(r"(\w+)=(\d+)", rest))
    rows.setdefault((mix, server), []).append((float(us), float(fields["qps"]), int(fields["p50_us"]), int(fields["p99_us"]), int(fields["errors"]), int(fields["rss_kb"])))
mixes = list(dict.fromkeys(m for m, _ in rows))
print(f"{'mix':9} {'server':9} {'qps':>8} {'cpu_us/q':>9} {'p50_us':>7} {'p99_us':>7} {'errors':>6} {'rss_MiB':>8}")
for mix in mixes:
    med = {}
    for server in ["healthdns", "gdnsd", "knot", "nsd", "floor"]:
        runs = rows.get((mix, server), [])
        if not runs: continue
        m = [statistics.median(column) for column in zip(*runs)]
        med[server] = m
        print(f"{mix:9} {server:9} {m[1]:8.0f} {m[0]:9.2f} {m[2]:7.0f} {m[3]:7.0f} {m[4]:6.0f} {m[5]/1024:8.1f}")
    anchors = {s: v for s, v in med.items() if s in ("gdnsd", "knot", "nsd")}
    best_qps = max(anchors, key=lambda s: anchors[s][1])
    best_cpu = min(anchors, key=lambda s: anchors[s][0])
    hd = med["healthdns"]
    print(f"{mix:9} ratio     qps {hd[1]/anchors[best_qps][1]:.2f}x {best_qps}; cpu/q {hd[0]/anchors[best_cpu][0]:.2f}x {best_cpu}, {hd[0]/med['floor'][0]:.2f}x floor")
PY
