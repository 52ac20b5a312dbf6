#!/usr/bin/env bash
# A zone of 1,000,000 names (`hN IN A 10.x.y.z`, 25 MB), served by NSD, Knot and healthdns,
# one at a time: time from start to answering the last name, and the server's RSS then (the
# largest of its processes: NSD's children share the zone's pages with the main process). healthdns also serves a pool name in that
# zone: its backend is killed and restarted TRIALS times, and each verdict change's swap time
# (verdict to new snapshot, `swap_us` in the log) is reported.
# Needs: nsd, knot, dig, python3, a release build of healthdns.
# Each server loads the zone ROUNDS times (default 3), interleaved; ready time and RSS are the
# medians.
# Usage: [ROUNDS=3] bench/bigzone.sh [TRIALS] [NAMES]   (default 10 trials, 1,000,000 names)
set -euo pipefail
TRIALS=${1:-10}
NAMES=${2:-1000000}
ROUNDS=${ROUNDS:-3}
cd "$(dirname "$0")/.."
for tool in nsd knotd dig python3; do
  command -v "$tool" >/dev/null || { echo "bench/bigzone.sh needs $tool (apt-get install -y nsd knot bind9-dnsutils)" >&2; exit 1; }
done
source bench/common.sh
HTTP_PORT=$(free_port); PORT=$(free_port)
python3 - "$work/bench.test.zone" "$NAMES" <<'PY'
import sys
with open(sys.argv[1], "w") as zone:
    zone.write("$ORIGIN bench.test.\n$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 1209600 60\n@ NS ns1\nns1 A 127.0.0.1\n")
    for index in range(int(sys.argv[2])):
        zone.write(f"h{index} IN A 10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}\n")
PY
LAST="h$((NAMES - 1)).bench.test"
# Seconds from now until $LAST is answered on $PORT.
ready_after() { # $1 = start time (date +%s.%N)
  for _ in $(seq 1 1200); do
    dig @127.0.0.1 -p "$PORT" +time=1 +tries=1 +short "$LAST" A 2>/dev/null | grep -q '^10\.' && break
    sleep 0.05
  done
  python3 -c "import time; print(f'{time.time() - $1:.2f}')"
}
rss_tree_mib() { # the largest RSS of $1 and its children, MiB
  local largest=0 pid rss
  for pid in $1 $(pgrep -P "$1" || true); do
    rss=$(rss_kb "$pid"); [ "$rss" -gt "$largest" ] && largest=$rss
  done
  echo $((largest / 1024))
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

nsd_conf "$PORT" > "$work/nsd.conf"
knot_conf "$PORT" > "$work/knot.conf"
start_backend 1
cat > "$work/hd.toml" <<CONF
[server]
listen = ["127.0.0.1:$PORT"]
state_file = "hd.state"
[[zone]]
origin = "bench.test"
file = "bench.test.zone"
$(pool_toml www.bench.test "127.0.9.1 127.0.9.2" 'interval = "100ms"' 'timeout = "200ms"' 'fall = 2' 'rise = 2')
CONF
# Starts server $1 (healthdns from a cold start, without its state file); its PID in $pid.
launch() {
  case $1 in
    nsd) nsd -d -c "$work/nsd.conf" & pid=$! ;;
    knot) knotd -c "$work/knot.conf" 2>"$work/knotd.err" & pid=$! ;;
    healthdns) rm -f "$work/hd.state"
      RUST_LOG=info target/release/healthdns serve --config "$work/hd.toml" >"$work/hd.log" 2>&1 & pid=$! ;;
  esac
  pids+=("$pid")
}
# Each server loads the zone ROUNDS times, interleaved (each round starts with the next
# server); the medians are reported.
: > "$work/ready"
servers=(nsd knot healthdns)
for round in $(seq 1 "$ROUNDS"); do
  for i in 0 1 2; do
    server=${servers[$(( (i + round - 1) % 3 ))]}
    start=$(date +%s.%N); launch "$server"
    echo "$server $(ready_after "$start") $(rss_tree_mib "$pid")" >> "$work/ready"
    stop "$pid"; sleep 0.5
  done
done
# healthdns once more, for the swaps.
start=$(date +%s.%N); launch healthdns; ready_after "$start" >/dev/null; hd_pid=$pid
for trial in $(seq 1 "$TRIALS"); do
  before=$(grep -c 'swap_us=' "$work/hd.log" || true)
  flip_backend 1
  for _ in $(seq 1 100); do
    [ "$(grep -c 'swap_us=' "$work/hd.log" || true)" -gt "$before" ] && break
    sleep 0.05
  done
done
hd_rss_after=$(rss_tree_mib "$hd_pid"); stop "$hd_pid"
median() { grep "^$1 " "$work/ready" | awk -v c="$2" '{ print $c }' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
nsd_ready=$(median nsd 2); knot_ready=$(median knot 2); hd_ready=$(median healthdns 2)
nsd_rss=$(median nsd 3); knot_rss=$(median knot 3); hd_rss=$(median healthdns 3)
echo "zone of $NAMES names ($(du -m "$work/bench.test.zone" | cut -f1) MB)"
echo "ready (s) in each round: $(for server in "${servers[@]}"; do echo -n "$server $(grep "^$server " "$work/ready" | cut -d' ' -f2 | paste -sd' '); "; done)"
printf '%-10s %10s %9s\n' server ready_s rss_MiB
printf '%-10s %10s %9s\n' nsd "$nsd_ready" "$nsd_rss" knot "$knot_ready" "$knot_rss" healthdns "$hd_ready" "$hd_rss"
python3 -c "print(f'healthdns / knot: ready {$hd_ready / $knot_ready:.2f}x, RSS {$hd_rss / $knot_rss:.2f}x (target <= 1.0 each); RSS after $TRIALS pool changes: $hd_rss_after MiB')"
grep -o 'swap_us=[0-9]*' "$work/hd.log" | cut -d= -f2 | python3 -c "
import sys, statistics
values = [int(line) for line in sys.stdin]
if values: print(f'pool change to swap: median {statistics.median(values)} us, max {max(values)} us, n={len(values)} (target < 1 ms)')
else: print('no swap seen'); sys.exit(1)"
