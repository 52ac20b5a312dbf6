#!/usr/bin/env bash
# Overload: healthdns flooded at twice its measured capacity, beside Knot under the same
# flood, the same rate (issue 13).
#
# Each server is pinned to CPU 0 with one UDP thread, and limited to 30% of that core (a
# cgroup cpu quota of 3 ms per 10 ms): on loopback the sender pays the kernel's delivery
# cost, so one generator core cannot offer twice what a whole server core answers. The
# generators run on CPU 1. First each server's capacity C is measured under that limit
# (batched generator, 256 outstanding, static names). Then in every trial, for SECONDS:
# - a flood from 127.0.0.1: send-only (loadgen --flood) at 2 x C of static names;
# - a legitimate client in another /24 (127.0.2.1) at 2,000 queries a second: the share of
#   its queries answered is reported;
# - healthdns only: 2 s in, one of three pool backends is killed (SIGKILL), and the time
#   until TCP answers from a third address (dig +tcp -b 127.0.3.1, every 20 ms) leave it out
#   is compared with the same measurement without the flood (target: at most 1.5 x);
#   the probes run per second of the window are counted from /metrics
#   (healthdns_probe_seconds_count) and compared with the unloaded rate and the schedule's
#   30 a second (target: none skipped); RSS is sampled (bounded).
# Pool checks: interval 100ms, timeout 200ms, fall 2, rise 2 (as bench/failover.sh).
# Rate limiting is off (the default): this is the server's raw overload behaviour; with
# [rate_limit] on, the flood's answers are dropped, see bench/rrl.sh.
# Needs root (the cgroup), cgroup v1 or v2 cpu control, knot, dig, python3, taskset, curl,
# a release build of healthdns and examples/loadgen.
# RCVBUF=bytes: healthdns' udp_receive_buffer (bench/common.sh's hd_toml; default: healthdns'
# own), to compare how the legitimate share depends on the receive buffer.
# Usage: [RCVBUF=bytes] bench/overload.sh [TRIALS] [SECONDS]   (default 10 trials of 6 s)
set -euo pipefail
TRIALS=${1:-10}
SECONDS_PER_RUN=${2:-6}
cd "$(dirname "$0")/.."
for tool in knotd dig python3 taskset curl; do
  command -v "$tool" >/dev/null || { echo "bench/overload.sh needs $tool (apt-get install -y knot bind9-dnsutils util-linux curl)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "bench/overload.sh needs root: it limits each server to 30% of a core with a cgroup" >&2; exit 1; }
source bench/common.sh
# 30% of a core for process $2, in a cgroup named $1 (removed at exit).
cgroups=()
limit_cpu() { # name pid
  local dir
  if [ -d /sys/fs/cgroup/cpu ] && [ -w /sys/fs/cgroup/cpu ]; then
    dir=/sys/fs/cgroup/cpu/$1; mkdir -p "$dir"
    echo 10000 > "$dir/cpu.cfs_period_us"; echo 3000 > "$dir/cpu.cfs_quota_us"
  else
    dir=/sys/fs/cgroup/$1; mkdir -p "$dir"; echo "3000 10000" > "$dir/cpu.max"
  fi
  echo "$2" > "$dir/cgroup.procs"; cgroups+=("$dir")
}
trap 'cleanup; for dir in "${cgroups[@]}"; do rmdir "$dir" 2>/dev/null || true; done' EXIT
HTTP_PORT=$(free_port)
for host in 1 2 3; do start_backend "$host"; done
P_HD=$(free_port); P_API=$(free_port); P_KNOT=$(free_port)

{
  echo '$ORIGIN bench.test.'; echo '$TTL 300'
  echo '@ SOA ns1 hostmaster 1 3600 600 1209600 60'
  echo '@ NS ns1'; echo 'ns1 A 127.0.0.1'
  for i in $(seq 1 10000); do echo "www$i A 192.0.2.$((i % 250 + 1))"; done
} > "$work/bench.test.zone"
shuf -i 1-10000 -n 10000 | sed 's/.*/www&.bench.test A/' > "$work/q_static"

hd_toml "$P_HD" "$(pool_toml www.bench.test "127.0.9.1 127.0.9.2 127.0.9.3" 'interval = "100ms"' 'timeout = "200ms"' 'fall = 2' 'rise = 2')" \
  "[api]" "listen = \"127.0.0.1:$P_API\"" > "$work/hd.toml"
# A bad RCVBUF (or anything else) is reported here, naming the key and value, not as a
# server that never starts.
target/release/healthdns check --config "$work/hd.toml" >/dev/null
RUST_LOG=warn taskset -c 0 target/release/healthdns serve --config "$work/hd.toml" 2>"$work/hd.log" & PID_HD=$!; pids+=("$PID_HD")
limit_cpu "healthdns-overload-$$" "$PID_HD"
knot_conf "$P_KNOT" "udp-workers: 1" "tcp-workers: 1" "background-workers: 1" > "$work/knot.conf"
taskset -c 0 knotd -c "$work/knot.conf" 2>"$work/knotd.err" & PID_KNOT=$!; pids+=("$PID_KNOT")
limit_cpu "knot-overload-$$" "$PID_KNOT"
wait_answering() { # port
  for _ in $(seq 1 200); do
    dig @127.0.0.1 -p "$1" +time=1 +tries=1 +short www1.bench.test A 2>/dev/null | grep -q 192.0.2 && return
    sleep 0.05
  done
  echo "the server on port $1 never answered" >&2; cat "$work/hd.log" "$work/knotd.err" >&2; exit 1
}
wait_answering "$P_HD"; wait_answering "$P_KNOT"

now() { echo "${EPOCHREALTIME/./}"; }
www() { dig @127.0.0.1 -p "$P_HD" -b 127.0.3.1 +tcp +short +tries=1 +time=1 www.bench.test A 2>/dev/null | sort | tr '\n' ' '; }
all_three() { [ "$(www)" = "127.0.9.1 127.0.9.2 127.0.9.3 " ]; }
probes() { curl -s "http://127.0.0.1:$P_API/metrics" | awk '/^healthdns_probe_seconds_count/ { sum += $2 } END { print sum + 0 }'; }
# Seconds (with microseconds) from $1 (µs since the epoch) until 127.0.9.1 is out of the answer.
detect() {
  local since=$1 started got rest
  while true; do
    started=$(now); got=$(www)
    if [[ $got == *127.0.9.* && $got != *127.0.9.1\ * ]]; then
      printf '%d.%06d\n' $(( ($(now) - since) / 1000000 )) $(( ($(now) - since) % 1000000 )); return
    fi
    (( $(now) - since > 10000000 )) && { echo timeout; return; }
    rest=$(( 20000 - ($(now) - started) )); (( rest > 0 )) && sleep "0.$(printf '%06d' "$rest")"
  done
}
capacity() { # port
  taskset -c 1 target/release/examples/loadgen "127.0.0.1:$1" "$work/q_static" 256 3 | sed 's/.*qps=\([0-9]*\).*/\1/'
}
# One failover measurement of healthdns, flooded or not ($1 = label, $2 = flood rate, 0 =
# none); appends "label failover_s probes_per_s rss_max_kb legit_answered legit_sent
# flood_sent" to the results (not in a subshell: it restarts a backend).
failover_trial() {
  local label=$1 rate=$2 flood="" legit="" t took before after rss=0 sample window_start
  for _ in $(seq 1 250); do all_three && break; sleep 0.02; done
  all_three || { echo "healthdns never answered all three" >&2; exit 1; }
  if [ "$rate" != 0 ]; then
    taskset -c 1 target/release/examples/loadgen "127.0.0.1:$P_HD" "$work/q_static" 1 "$SECONDS_PER_RUN" --rate "$rate" --flood > "$work/flood" & flood=$!
    taskset -c 1 target/release/examples/loadgen "127.0.0.1:$P_HD" "$work/q_static" 60000 "$SECONDS_PER_RUN" --rate 2000 --source 127.0.2.1 > "$work/legit" & legit=$!
  fi
  before=$(probes); window_start=$(now)
  sleep 2
  t=$(now); kill -KILL "${backend_pid[1]}"
  took=$(detect "$t")
  wait "${backend_pid[1]}" 2>/dev/null || true
  # Sample memory until the window ends.
  while (( $(now) - t < (SECONDS_PER_RUN - 2) * 1000000 - 200000 )); do
    sample=$(rss_kb "$PID_HD"); (( sample > rss )) && rss=$sample
    sleep 0.2
  done
  after=$(probes)
  local rate_per_s
  rate_per_s=$(awk -v n=$((after - before)) -v us=$(( $(now) - window_start )) 'BEGIN { printf "%.1f", n / (us / 1e6) }')
  [ -n "$flood" ] && wait "$flood" "$legit"
  start_backend 1
  if [ -n "$flood" ]; then
    local l f
    l=$(sed 's/answered=\([0-9]*\).* sent=\([0-9]*\).*/\1 \2/' "$work/legit")
    f=$(sed 's/.* sent=\([0-9]*\).*/\1/' "$work/flood")
    echo "$label $took $rate_per_s $rss $l $f" >> "$work/results"
  else
    echo "$label $took $rate_per_s $rss 0 0 0" >> "$work/results"
  fi
}
# Knot: legit share under the same flood (the same rate as healthdns').
legit_trial() { # port rate
  taskset -c 1 target/release/examples/loadgen "127.0.0.1:$1" "$work/q_static" 1 "$SECONDS_PER_RUN" --rate "$2" --flood > "$work/flood" & local flood=$!
  taskset -c 1 target/release/examples/loadgen "127.0.0.1:$1" "$work/q_static" 60000 "$SECONDS_PER_RUN" --rate 2000 --source 127.0.2.1 > "$work/legit"
  wait "$flood"
  echo "$(sed 's/answered=\([0-9]*\).* sent=\([0-9]*\).*/\1 \2/' "$work/legit") $(sed 's/.* sent=\([0-9]*\).*/\1/' "$work/flood")"
}

CAP_HD=$(capacity "$P_HD"); CAP_KNOT=$(capacity "$P_KNOT")
echo "capacity (30% of a core, batched generator): healthdns $CAP_HD q/s, knot $CAP_KNOT q/s; flooding both at 2x healthdns'"
RSS_START=$(rss_kb "$PID_HD")
: > "$work/results"
for trial in $(seq 1 "$TRIALS"); do
  failover_trial unloaded 0
  failover_trial flooded $((CAP_HD * 2))
  echo "knot $(legit_trial "$P_KNOT" $((CAP_HD * 2)))" >> "$work/results"
  tail -3 "$work/results" | sed "s/^/trial $trial: /"
done
RSS_END=$(rss_kb "$PID_HD")
python3 - "$work/results" "$SECONDS_PER_RUN" "$CAP_HD" "$CAP_KNOT" "$RSS_START" "$RSS_END" <<'PY'
import sys, statistics
path, seconds, cap_hd, cap_knot, rss_start, rss_end = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
rows = {"unloaded": [], "flooded": [], "knot": []}
for line in open(path):
    kind, *fields = line.split()
    rows[kind].append(fields)
def num(x):
    return float("nan") if x == "timeout" else float(x)
unloaded = [num(r[0]) for r in rows["unloaded"]]
flooded = [num(r[0]) for r in rows["flooded"]]
p_unloaded = [float(r[1]) for r in rows["unloaded"]]
p_flooded = [float(r[1]) for r in rows["flooded"]]
rss = max(int(r[2]) for r in rows["unloaded"] + rows["flooded"])
share = [int(r[3]) / max(1, int(r[4])) for r in rows["flooded"]]
offered = [int(r[5]) / seconds / cap_hd for r in rows["flooded"]]
knot_share = [int(r[0]) / max(1, int(r[1])) for r in rows["knot"]]
knot_offered = [int(r[2]) / seconds / cap_knot for r in rows["knot"]]
m = statistics.median
print(f"\nmedians of {len(unloaded)} trials:")
print(f"  flood offered: {m(offered):.2f}x healthdns' capacity to healthdns, {m(knot_offered):.2f}x knot's capacity to knot (the same rate)")
print(f"  legitimate queries answered (other /24, 2,000 q/s): healthdns {m(share):.1%}, knot {m(knot_share):.1%}")
print(f"  failover (kill to TCP answer without it): unloaded {m(unloaded):.3f} s (max {max(unloaded):.3f}), flooded {m(flooded):.3f} s (max {max(flooded):.3f}); ratio {m(flooded)/m(unloaded):.2f}x (target <= 1.5)")
print(f"  probes a second: unloaded {m(p_unloaded):.1f}, flooded {m(p_flooded):.1f} (min {min(p_flooded):.1f}), schedule 30.0; flooded/unloaded {m(p_flooded)/m(p_unloaded):.2f} (target: none skipped)")
print(f"  healthdns RSS: {rss_start/1024:.1f} MiB at start, {rss/1024:.1f} MiB max during trials, {rss_end/1024:.1f} MiB at the end")
PY
