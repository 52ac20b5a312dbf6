#!/usr/bin/env bash
# CPU per answered query, healthdns against NSD, at the same fixed offered load.
#
# Serves one generated zone (10,000 names, 1,000 delegations) from both servers on loopback,
# drives each with dnsperf at RATE queries/s for SECONDS per query kind (positive, NXDOMAIN,
# NODATA, referral), and reads each server's CPU time (all its processes and threads) from
# /proc before and after. Each kind is measured in TRIALS trials, the two servers taking turns
# to go first; prints the median microseconds of CPU per answered query of each server, the
# median of the trials' ratios, and their range. One trial swings by about 20% here (the load
# is not batched, and CPU time is counted in ticks).
# Needs: nsd, dnsperf (Debian packages nsd, dnsperf), a release build of healthdns.
# Usage: bench/qps.sh [RATE] [SECONDS] [TRIALS]   (default 20,000 q/s, 4 s, 10 trials)
set -euo pipefail
RATE=${1:-20000}
SECONDS_PER_RUN=${2:-4}
TRIALS=${3:-10}
NAMES=10000
cd "$(dirname "$0")/.."
for tool in nsd dnsperf; do
  command -v "$tool" >/dev/null || { echo "bench/qps.sh needs $tool (apt-get install -y nsd dnsperf)" >&2; exit 1; }
done
source bench/common.sh

NSD_PORT=$(free_port); HDNS_PORT=$(free_port)

# The zone.
{
  echo '$ORIGIN bench.test.'; echo '$TTL 300'
  echo '@ SOA ns1 hostmaster 1 3600 600 1209600 60'
  echo '@ NS ns1'; echo 'ns1 A 127.0.0.1'
  for i in $(seq 1 $NAMES); do echo "www$i A 192.0.2.$((i % 250 + 1))"; done
  for i in $(seq 1 1000); do echo "d$i NS ns.d$i"; echo "ns.d$i A 198.51.100.$((i % 250 + 1))"; done
} > "$work/bench.test.zone"

# Query files, one per kind; names spread over the zone.
for i in $(seq 1 $NAMES); do echo "www$i.bench.test A"; done > "$work/positive"
for i in $(seq 1 $NAMES); do echo "nx$i.bench.test A"; done > "$work/nxdomain"
for i in $(seq 1 $NAMES); do echo "www$i.bench.test MX"; done > "$work/nodata"
for i in $(seq 1 1000); do echo "host.d$i.bench.test A"; done > "$work/referral"

# NSD, one server process.
nsd_conf "$NSD_PORT" > "$work/nsd.conf"
nsd -d -c "$work/nsd.conf" & pids+=($!); NSD_PID=$!

cat > "$work/config.toml" <<CONF
[server]
listen = ["127.0.0.1:$HDNS_PORT"]
[[zone]]
origin = "bench.test"
file = "bench.test.zone"
CONF
RUST_LOG=warn target/release/healthdns serve --config "$work/config.toml" & pids+=($!); HDNS_PID=$!

wait_ready() { # port
  for _ in $(seq 1 100); do
    dig @127.0.0.1 -p "$1" +time=1 +tries=1 +short bench.test SOA | grep -q hostmaster && return 0
    sleep 0.1
  done
  echo "server on port $1 did not start" >&2; exit 1
}
wait_ready "$NSD_PORT"; wait_ready "$HDNS_PORT"


run() { # pid port kind -> "us_per_query completed"
  local before after completed
  before=$(cpu_ticks "$1")
  completed=$(dnsperf -s 127.0.0.1 -p "$2" -d "$work/$3" -l "$SECONDS_PER_RUN" -Q "$RATE" -c 4 -t 2 2>/dev/null \
    | awk '/Queries completed/ {print $3}')
  after=$(cpu_ticks "$1")
  awk -v t=$((after - before)) -v hz="$HZ" -v n="$completed" 'BEGIN { printf "%.2f %d", (t / hz) * 1e6 / n, n }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

printf '%-9s %10s %10s %8s %13s %10s\n' kind "nsd_us/q" "hdns_us/q" ratio "ratio_range" "answered"
for kind in positive nxdomain nodata referral; do
  nsd_all=(); hd_all=(); ratios=(); answered=0
  for trial in $(seq 1 "$TRIALS"); do
    if [ $((trial % 2)) = 1 ]; then
      read -r nsd_us nsd_n <<<"$(run "$NSD_PID" "$NSD_PORT" "$kind")"
      read -r hd_us hd_n <<<"$(run "$HDNS_PID" "$HDNS_PORT" "$kind")"
    else
      read -r hd_us hd_n <<<"$(run "$HDNS_PID" "$HDNS_PORT" "$kind")"
      read -r nsd_us nsd_n <<<"$(run "$NSD_PID" "$NSD_PORT" "$kind")"
    fi
    nsd_all+=("$nsd_us"); hd_all+=("$hd_us"); answered=$((answered + hd_n))
    ratios+=("$(awk -v a="$hd_us" -v b="$nsd_us" 'BEGIN { printf "%.3f", a / b }')")
  done
  nsd_median=$(printf '%s\n' "${nsd_all[@]}" | median)
  hd_median=$(printf '%s\n' "${hd_all[@]}" | median)
  ratio=$(printf '%s\n' "${ratios[@]}" | median)
  range=$(printf '%s\n' "${ratios[@]}" | sort -g | awk 'NR == 1 { low = $1 } { high = $1 } END { printf "%.2f-%.2f", low, high }')
  printf '%-9s %10.2f %10.2f %8.2f %13s %10d\n' "$kind" "$nsd_median" "$hd_median" "$ratio" "$range" "$answered"
done
echo "offered load: $RATE q/s for ${SECONDS_PER_RUN}s per run, $TRIALS trials per kind; CPU from /proc (HZ=$HZ)"
echo "ratio = median of the trials' healthdns / nsd; answered = healthdns' answers over all trials"
