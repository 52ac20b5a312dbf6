#!/usr/bin/env bash
# Throughput and CPU per query on one pinned core: healthdns beside gdnsd, Knot and NSD, and
# the bare echo floor (the kernel's cost per packet here).
#
# One generated zone (10,000 names, 1,000 delegations, `www` a healthdns pool over two live
# HTTP backends, a static name in the others) is served by each server pinned to CPU 0, one
# thread each; the batched generator (examples/loadgen.rs: sendmmsg/recvmmsg, 256
# outstanding) is pinned to CPU 1. Servers are interleaved (A B C D A B C D ...) and each
# figure is the median of ROUNDS runs of SECONDS; each round starts with the next server. Reports answered QPS, server CPU µs/query
# (from /proc; its user-space part apart, the server's own code without the kernel's per-packet
# work), p50/p99 latency, RSS, and healthdns' ratio to the best anchor; then the same
# CPU ratio taken within each round (the two measured seconds apart) and its median and range.
# Mixes: the pool answer, random static names, NXDOMAIN, NODATA, a referral, EDNS with DO,
# TCP (16 connections pipelining 16 queries each; compared with NSD), and `nxrandom`:
# 200,000 distinct NXDOMAIN names, more than any per-name answer cache holds (healthdns answers
# them from the zone's shared NXDOMAIN, so they neither reach its general path nor evict).
# Then two more measurements:
# - latency at 80% of gdnsd's saturation rate on the static mix (paced generator): p50 to
#   p99.9 of healthdns beside gdnsd's, over many short alternating slices;
# - swaps: the pool mix with every answer parsed (--check), steady and while the pool's
#   healthy set is changed 10 times a second through the API (force down / auto): errors,
#   torn or empty answers, and CPU per query beside the steady state.
# MODE=two: every server runs two threads over both cores, and two generators share them
# (the second mode of issue 12: both cores driven); the extra measurements are skipped.
# Needs (nothing is installed by this script): nsd, knot, gdnsd, dig, curl, python3, taskset
#   apt-get install -y nsd knot gdnsd bind9-dnsutils curl util-linux
# BASELINE=path/to/healthdns: also runs that build (an earlier commit's, say) as `baseline`, in
# the same rounds, and prints healthdns' CPU per query against it: a change measured side by
# side, not against another day's figures.
# Usage: [MODE=two] [MIXES="static ..."] [ONLY="healthdns gdnsd"] [BASELINE=binary] bench/speed.sh [SECONDS] [ROUNDS]   (default 3 s, 3 rounds;
#   the latency and swap measurements need the static mix)
set -euo pipefail
SECONDS_PER_RUN=${1:-3}
ROUNDS=${2:-3}
MODE=${MODE:-one}
if [ "$MODE" = two ]; then THREADS=2; SERVER_CPUS=0,1; GEN_CPUS=0,1; GENERATORS=2
else THREADS=1; SERVER_CPUS=0; GEN_CPUS=1; GENERATORS=1; fi
cd "$(dirname "$0")/.."
for tool in nsd knotd gdnsd dig curl python3 taskset; do
  command -v "$tool" >/dev/null || { echo "bench/speed.sh needs $tool (apt-get install -y nsd knot gdnsd bind9-dnsutils curl util-linux)" >&2; exit 1; }
done
source bench/common.sh
HTTP_PORT=$(free_port)
start_backend 1; start_backend 2
P_API=$(free_port); P_HD=$(free_port); P_NSD=$(free_port); P_KNOT=$(free_port); P_GD=$(free_port); P_FLOOR=$(free_port)

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
cp "$work/q_static" "$work/q_tcp"
python3 -c "import random; random.seed(7); print('\n'.join(f'r{random.getrandbits(40):x}.bench.test A' for _ in range(200000)))" > "$work/q_nxrandom"
MIXES=${MIXES:-"pool static nxdomain nodata referral edns_do tcp nxrandom"}

# healthdns: one UDP thread (two in MODE=two).
cat > "$work/hd.toml" <<CONF
[server]
listen = ["127.0.0.1:$P_HD"]
udp_sockets = $THREADS
# gdnsd's largest (below); healthdns's default is 4 MiB.
udp_receive_buffer = 1048576
state_file = "hd.state"
[api]
listen = "127.0.0.1:$P_API"
[[zone]]
origin = "bench.test"
file = "hd.zone"
$(pool_toml www.bench.test "127.0.9.1 127.0.9.2")
CONF
RUST_LOG=warn taskset -c $SERVER_CPUS target/release/healthdns serve --config "$work/hd.toml" & pids+=($!); PID_HD=$!
if [ -n "${BASELINE:-}" ]; then
  P_BASE=$(free_port); P_BASE_API=$(free_port)
  sed -e "s/127.0.0.1:$P_HD/127.0.0.1:$P_BASE/" -e "s/127.0.0.1:$P_API/127.0.0.1:$P_BASE_API/" \
    -e 's/hd.state/baseline.state/' "$work/hd.toml" > "$work/baseline.toml"
  RUST_LOG=warn taskset -c $SERVER_CPUS "$BASELINE" serve --config "$work/baseline.toml" & pids+=($!); PID_BASE=$!
fi

# NSD: one server process (two in MODE=two).
nsd_conf "$P_NSD" > "$work/nsd.conf"
sed -i "s/server-count: 1/server-count: $THREADS/" "$work/nsd.conf"
taskset -c $SERVER_CPUS nsd -d -c "$work/nsd.conf" & pids+=($!); PID_NSD=$!

# Knot: one UDP and one TCP worker.
knot_conf "$P_KNOT" "udp-workers: $THREADS" "tcp-workers: $THREADS" "background-workers: 1" > "$work/knot.conf"
taskset -c $SERVER_CPUS knotd -c "$work/knot.conf" 2>"$work/knotd.err" & pids+=($!); PID_KNOT=$!

# gdnsd: one UDP and one TCP thread.
# The same receive buffer as healthdns here, so that both queue the same queries when behind
# (printed below): 1 MiB, the most gdnsd accepts. gdnsd otherwise keeps the kernel's default
# (about 200 KiB), which drops queries a larger buffer answers late.
gdnsd_setup "$P_GD" "udp_threads => $THREADS" "tcp_threads => $THREADS" "udp_rcvbuf => 1048576"
taskset -c $SERVER_CPUS gdnsd -c "$work/gdnsd" start 2>"$work/gdnsd.err" & pids+=($!); PID_GD=$!

taskset -c $SERVER_CPUS target/release/examples/echo_floor "127.0.0.1:$P_FLOOR" & pids+=($!); PID_FLOOR=$!

wait_ready() { # name port
  for _ in $(seq 1 200); do
    dig @127.0.0.1 -p "$2" +time=1 +tries=1 +short www1.bench.test A 2>/dev/null | grep -q 192.0.2 && return 0
    sleep 0.1
  done
  echo "$1 on port $2 did not start" >&2; cat "$work"/*.err >&2 || true; exit 1
}
wait_ready healthdns "$P_HD"; [ -z "${BASELINE:-}" ] || wait_ready baseline "$P_BASE"; wait_ready nsd "$P_NSD"; wait_ready knot "$P_KNOT"; wait_ready gdnsd "$P_GD"
# The UDP receive buffers the kernel keeps (ss's rb), which the latency comparison needs equal.
if command -v ss >/dev/null; then
  echo "UDP receive buffers kept: healthdns $(ss -uamn "sport = :$P_HD" | grep -o 'rb[0-9]*' | sort -u | paste -sd' '), gdnsd $(ss -uamn "sport = :$P_GD" | grep -o 'rb[0-9]*' | sort -u | paste -sd' ')"
fi
# The pool answers both backends before measuring.
for _ in $(seq 1 100); do [ "$(dig @127.0.0.1 -p "$P_HD" +short www.bench.test A | wc -l)" = 2 ] && break; sleep 0.1; done

declare -A PORT=([healthdns]=$P_HD [gdnsd]=$P_GD [knot]=$P_KNOT [nsd]=$P_NSD [floor]=$P_FLOOR)
declare -A PID=([healthdns]=$PID_HD [gdnsd]=$PID_GD [knot]=$PID_KNOT [nsd]=$PID_NSD [floor]=$PID_FLOOR)
# ONLY="healthdns gdnsd": measure just these (healthdns and at least one anchor) each round, so
# the rounds are shorter (healthdns and gdnsd are back to back in every round either way).
SERVERS=${ONLY:-"healthdns gdnsd knot nsd floor"}
[[ " $SERVERS " == *" healthdns "* && " $SERVERS " =~ \ (gdnsd|knot|nsd)\  ]] ||
  { echo "ONLY=\"$SERVERS\" needs healthdns and one of gdnsd, knot, nsd" >&2; exit 1; }
if [ -n "${BASELINE:-}" ]; then
  PORT[baseline]=$P_BASE; PID[baseline]=$PID_BASE; SERVERS="$SERVERS baseline"
  for _ in $(seq 1 100); do [ "$(dig @127.0.0.1 -p "$P_BASE" +short www.bench.test A | wc -l)" = 2 ] && break; sleep 0.1; done
fi

: > "$work/results"
# One measurement: CPU ticks of the server around GENERATORS loadgen runs; prints the
# results line. Arguments: server, query file, then loadgen flags.
measure() {
  local server=$1 queries=$2; shift 2
  local before after user_before user_after lines answered qps
  read -r before user_before < <(cpu_split "${PID[$server]}")
  lines=$(for g in $(seq 1 "$GENERATORS"); do
    taskset -c "$GEN_CPUS" target/release/examples/loadgen "127.0.0.1:${PORT[$server]}" "$queries" 256 "$SECONDS_PER_RUN" "$@" &
  done; wait)
  read -r after user_after < <(cpu_split "${PID[$server]}")
  # Sum the generators' counts; latency from the first.
  answered=$(echo "$lines" | sed 's/.*answered=\([0-9]*\).*/\1/' | paste -sd+ | bc)
  qps=$(echo "$lines" | sed 's/.*qps=\([0-9]*\).*/\1/' | paste -sd+ | bc)
  errors=$(echo "$lines" | sed 's/.*errors=\([0-9]*\).*/\1/' | paste -sd+ | bc)
  local first; first=$(echo "$lines" | head -1)
  us=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$answered" 'BEGIN { printf "%.2f", n ? (t / hz) * 1e6 / n : 0 }')
  user_ns=$(awk -v t=$((user_after - user_before)) -v hz="$HZ" -v n="$answered" 'BEGIN { printf "%d", n ? (t / hz) * 1e9 / n : 0 }')
  echo "$us answered=$answered user_ns=$user_ns qps=$qps $(echo "$first" | grep -o 'p50_us=[0-9]* p99_us=[0-9]*') errors=$errors rss_kb=$(rss_kb "${PID[$server]}")"
}
# The servers in round $1's order: each round starts one server later, so that no server is
# always measured first (or right after the same neighbour). healthdns and gdnsd, whose ratio
# is the target, move as one unit and take turns to go first (flipped every n rounds, n units in
# the rotation, so each place in the order sees both): measured back to back, a drift
# of the machine's speed between them (the noise of the paired ratio) is smallest.
rotated() {
  local list=" $2 " units unit n
  if [[ $list == *" healthdns "* && $list == *" gdnsd "* ]]; then
    list=${list/ gdnsd / }; list=${list/ healthdns / healthdns+gdnsd }
  fi
  units=($list); n=${#units[@]}
  for i in $(seq 0 $((n - 1))); do
    unit=${units[$(( (i + $1 - 1) % n ))]}
    if [ "$unit" != healthdns+gdnsd ]; then echo "$unit"
    elif (( ($1 - 1) / n % 2 == 0 )); then echo healthdns; echo gdnsd
    else echo gdnsd; echo healthdns; fi
  done
}
for mix in $MIXES; do
  flags=(); [ "$mix" = tcp ] && flags=(--tcp 16)
  for round in $(seq 1 "$ROUNDS"); do
    for server in $(rotated "$round" "$SERVERS"); do
      [ "$mix" = tcp ] && [ "$server" = floor ] && continue
      echo "$mix $server $(measure "$server" "$work/q_$mix" "${flags[@]}")" >> "$work/results"
    done
  done
done
python3 - "$work/results" "$ROUNDS" <<'PY'
import sys, statistics, re
from math import comb

def median_interval(values):
    """A distribution-free confidence interval for the median of `values`: the k-th smallest
    and k-th largest, for the largest k whose coverage (from the binomial distribution of how
    many values fall below the true median) is still at least 95%. Needs 6 values or more."""
    n, ordered = len(values), sorted(values)
    for k in range(n // 2, 0, -1):
        coverage = 1 - 2 * sum(comb(n, i) for i in range(k)) / 2 ** n
        if coverage >= 0.95:
            return ordered[k - 1], ordered[n - k], coverage
    return None, None, None
rows = {}
for line in open(sys.argv[1]):
    mix, server, us, rest = line.split(" ", 3)
    fields = dict(re.findall(r"(\w+)=(\d+)", rest))
    rows.setdefault((mix, server), []).append((float(us), float(fields["qps"]), int(fields["p50_us"]), int(fields["p99_us"]), int(fields["errors"]), int(fields["rss_kb"]), int(fields["user_ns"]) / 1000))
mixes = list(dict.fromkeys(m for m, _ in rows))
print(f"{'mix':9} {'server':9} {'qps':>8} {'cpu_us/q':>9} {'p50_us':>7} {'p99_us':>7} {'errors':>6} {'rss_MiB':>8} {'user_us/q':>9}")
for mix in mixes:
    med = {}
    for server in ["healthdns", "gdnsd", "knot", "nsd", "floor", "baseline"]:
        runs = rows.get((mix, server), [])
        if not runs: continue
        m = [statistics.median(column) for column in zip(*runs)]
        med[server] = m
        print(f"{mix:9} {server:9} {m[1]:8.0f} {m[0]:9.2f} {m[2]:7.0f} {m[3]:7.0f} {m[4]:6.0f} {m[5]/1024:8.1f} {m[6]:9.3f}")
    anchors = {s: v for s, v in med.items() if s in ("gdnsd", "knot", "nsd")}
    best_qps = max(anchors, key=lambda s: anchors[s][1])
    best_cpu = min(anchors, key=lambda s: anchors[s][0])
    hd = med["healthdns"]
    floor = f", {hd[0]/med['floor'][0]:.2f}x floor" if "floor" in med else ""
    nsd = f"; qps {hd[1]/anchors['nsd'][1]:.2f}x nsd" if mix == "tcp" and "nsd" in anchors else ""
    base = f"; cpu/q {hd[0]/med['baseline'][0]:.2f}x baseline" if "baseline" in med else ""
    user = f"; user-space cpu/q {hd[6]/anchors[best_cpu][6]:.2f}x {best_cpu}" if anchors[best_cpu][6] else ""
    print(f"{mix:9} ratio     qps {hd[1]/anchors[best_qps][1]:.2f}x {best_qps}; cpu/q {hd[0]/anchors[best_cpu][0]:.2f}x {best_cpu}{floor}{nsd}{base}{user}")
    # Each round's own ratio: the two servers were measured seconds apart, so a drift of the
    # machine's speed over the run (the floor moves by 10% between mixes) cancels out.
    pairs = [h[0] / a[0] for h, a in zip(rows[(mix, "healthdns")], rows[(mix, best_cpu)])]
    print(f"{mix:9} paired    cpu/q per round vs {best_cpu}: median {statistics.median(pairs):.2f}x, "
          f"range {min(pairs):.2f}-{max(pairs):.2f}, healthdns cheaper in {sum(p <= 1 for p in pairs)} of {len(pairs)}")
    low, high, coverage = median_interval(pairs)
    if low is not None:
        verdict = ("cheaper" if high < 1 else "dearer" if low > 1
                   else "no difference this run can resolve")
        print(f"{mix:9} interval  the true paired median lies in {low:.2f}-{high:.2f}x "
              f"({coverage:.0%} confidence, sign-test order statistics): {verdict}")
PY

[ "$MODE" = two ] && exit 0

# Latency at 80% of gdnsd's saturation rate (static mix), paced. Stalls of this shared machine
# (milliseconds, several times a second, hitting any process) set the tail, so one long run per
# server mostly measures which server was unlucky. Instead the servers alternate in 6 x ROUNDS
# short slices of 0.5 s each, every answer's latency is pooled per server (a query never
# answered counts as slower than any answer), and each slice's p99 is set beside the other
# server's slice next to it in time.
if grep -q '^static gdnsd ' "$work/results"; then
  rate=$(awk '$1 == "static" && $2 == "gdnsd" { print $0 }' "$work/results" | sed 's/.*qps=\([0-9]*\).*/\1/' | sort -n | awk '{ v[NR] = $1 } END { print int(v[int((NR + 1) / 2)] * 0.8) }')
  slices=$((ROUNDS * 6))
  mkdir -p "$work/paced"
  for slice in $(seq 1 "$slices"); do
    for server in $(rotated "$slice" "healthdns gdnsd"); do
      taskset -c "$GEN_CPUS" target/release/examples/loadgen "127.0.0.1:${PORT[$server]}" "$work/q_static" 256 0.5 \
        --rate "$rate" --histogram "$work/paced/$server.$slice" >/dev/null
    done
  done
  echo
  echo "latency at $rate q/s (80% of gdnsd's saturation, static mix), $slices slices of 0.5 s each, alternating:"
  python3 - "$work/paced" "$slices" <<'PY'
import sys, collections
folder, slices = sys.argv[1], int(sys.argv[2])
def read(server, slice):
    counts, lost = collections.Counter(), 0
    for line in open(f"{folder}/{server}.{slice}"):
        key, value = line.split()
        if key == "lost": lost = int(value)
        else: counts[int(key)] += int(value)
    return counts, lost
def percentile(counts, lost, p):
    total, seen = sum(counts.values()) + lost, 0
    for us in sorted(counts):
        seen += counts[us]
        if seen >= p * total: return us
    return float("inf")  # among the lost
pooled, p99s = {}, {}
for server in ("healthdns", "gdnsd"):
    counts, lost = collections.Counter(), 0
    p99s[server] = []
    for slice in range(1, slices + 1):
        c, l = read(server, slice)
        counts.update(c); lost += l
        p99s[server].append(percentile(c, l, 0.99))
    pooled[server] = percentile(counts, lost, 0.99)
    n = sum(counts.values()) + lost
    print(f"  {server}: p50 {percentile(counts, lost, 0.5)} us, p90 {percentile(counts, lost, 0.9)} us, "
          f"p99 {pooled[server]} us, p99.9 {percentile(counts, lost, 0.999)} us; {n} queries, {lost} never answered")
ratios = sorted(h / g for h, g in zip(p99s["healthdns"], p99s["gdnsd"]))
wins = sum(r <= 1 for r in ratios)
print(f"  p99 healthdns / gdnsd: {pooled['healthdns'] / pooled['gdnsd']:.2f}x pooled (target <= 1.00); "
      f"in {wins} of {slices} slice pairs healthdns' p99 was no worse; median pair ratio {ratios[slices // 2]:.2f}")
PY
else
  echo; echo "(latency at 80% of gdnsd's rate needs the static mix)"
fi

# Swaps: the pool mix, answers checked, steady and while the healthy set changes 10x/s.
swaps() { curl -s "http://127.0.0.1:$P_API/metrics" | awk '/^healthdns_snapshot_swaps_total/ { sum += $2 } END { print sum + 0 }'; }
# Changes the pool's answer every 100 ms, on a fixed schedule, until killed.
cat > "$work/flipper.py" <<'PY'
import sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/pools/web/addresses/127.0.9.2/force"
start, tick = time.monotonic(), 0
while True:
    state = "down" if tick % 2 == 0 else "auto"
    urllib.request.urlopen(urllib.request.Request(url, data=f'{{"state": "{state}"}}'.encode(), method="POST")).read()
    tick += 1
    time.sleep(max(0.0, start + tick * 0.1 - time.monotonic()))
PY
: > "$work/swaps"
for round in $(seq 1 "$ROUNDS"); do
  echo "steady $(measure healthdns "$work/q_pool" --check)" >> "$work/swaps"
  before=$(swaps)
  taskset -c "$GEN_CPUS" python3 "$work/flipper.py" "$P_API" & flip=$!; pids+=("$flip")
  sleep 0.3
  line=$(measure healthdns "$work/q_pool" --check)
  kill "$flip"; wait "$flip" 2>/dev/null || true
  echo "swapping $line swaps=$(( $(swaps) - before ))" >> "$work/swaps"
  curl -s -o /dev/null -X POST -d '{"state": "auto"}' "http://127.0.0.1:$P_API/pools/web/addresses/127.0.9.2/force"
done
echo
echo "swaps (pool mix, every answer parsed; medians of $ROUNDS):"
python3 - "$work/swaps" "$SECONDS_PER_RUN" <<'PY'
import sys, re, statistics
rows = {}
for line in open(sys.argv[1]):
    kind, us, rest = line.split(" ", 2)
    fields = dict(re.findall(r"(\w+)=(\d+)", rest))
    rows.setdefault(kind, []).append((float(us), int(fields["qps"]), int(fields["errors"]), int(fields.get("swaps", 0))))
steady = statistics.median(r[0] for r in rows["steady"])
swapping = statistics.median(r[0] for r in rows["swapping"])
print(f"  steady:   {steady:.2f} us/query, {statistics.median(r[1] for r in rows['steady'])} q/s, errors {sum(r[2] for r in rows['steady'])}")
print(f"  swapping: {swapping:.2f} us/query, {statistics.median(r[1] for r in rows['swapping'])} q/s, errors {sum(r[2] for r in rows['swapping'])}, "
      f"{statistics.median(r[3] for r in rows['swapping']) / float(sys.argv[2]):.1f} swaps/s")
print(f"  CPU per query while swapping: {swapping / steady:.2f}x steady (target within 1.10)")
PY
