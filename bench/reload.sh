#!/usr/bin/env bash
# Reload of a 100,000-record zone, healthdns beside Knot, in one run.
#
# Each trial changes one record of the zone file (its SOA serial goes up), then:
# - healthdns: POST /reload; the time is from the request to the reply, by which the new
#   snapshot is swapped in (read, check, diff for IXFR, swap);
# - Knot: `knotc zone-reload`, then polling until Knot serves the new serial.
# A dig loop queries healthdns all through its reloads: failed queries and the slowest answer
# show whether answers stall while a reload runs.
# Needs: dig, curl, knotd/knotc (knot), python3, a release build of healthdns.
# Usage: bench/reload.sh [TRIALS]   (default 10)
set -euo pipefail
TRIALS=${1:-10}
cd "$(dirname "$0")/.."
for tool in dig curl knotd knotc python3; do
  command -v "$tool" >/dev/null || { echo "bench/reload.sh needs $tool (apt-get install -y bind9-dnsutils curl knot)" >&2; exit 1; }
done
source bench/common.sh
DNS_PORT=$(free_port); API_PORT=$(free_port); KNOT_PORT=$(free_port)
write_zone() { # $1 = file, $2 = serial
  python3 - "$1" "$2" <<'PY'
import sys
path, serial = sys.argv[1], int(sys.argv[2])
with open(path + ".tmp", "w") as zone:
    zone.write(f"$TTL 300\n@ SOA ns1 hostmaster {serial} 3600 600 86400 60\n@ NS ns1\nns1 A 127.0.0.1\n")
    zone.write(f'changed TXT "trial {serial}"\n')
    for index in range(99_995):
        zone.write(f"host{index} A 10.{index >> 16}.{(index >> 8) & 255}.{index & 255}\n")
import os
os.rename(path + ".tmp", path)
PY
}
mkdir -p "$work/hd" "$work/knot"
write_zone "$work/hd/big.test.zone" 1
cp "$work/hd/big.test.zone" "$work/knot/big.test.zone"
cat > "$work/hd/config.toml" <<CONF
[server]
listen = ["127.0.0.1:$DNS_PORT"]
[api]
listen = "127.0.0.1:$API_PORT"
[[zone]]
origin = "big.test"
file = "big.test.zone"
CONF
cat > "$work/knot/knot.conf" <<CONF
server:
    listen: 127.0.0.1@$KNOT_PORT
    rundir: "$work/knot"
control:
    listen: "$work/knot/knot.sock"
log:
  - target: "$work/knot/knot.log"
    any: warning
database:
    storage: "$work/knot"
zone:
  - domain: big.test
    storage: "$work/knot"
    file: "big.test.zone"
    zonefile-sync: -1
    journal-content: none
CONF
./target/release/healthdns serve --config "$work/hd/config.toml" 2>"$work/healthdns.log" &
pids+=("$!")
knotd -c "$work/knot/knot.conf" 2>"$work/knotd.err" &
pids+=("$!")
serial_of() { dig @127.0.0.1 -p "$1" +short +time=1 +tries=1 big.test SOA 2>/dev/null | awk '{print $3}'; }
for port in "$DNS_PORT" "$KNOT_PORT"; do
  for _ in $(seq 1 300); do [ "$(serial_of "$port")" = 1 ] && break; sleep 0.1; done
  [ "$(serial_of "$port")" = 1 ] || { echo "server on $port did not load the zone" >&2; cat "$work/healthdns.log" "$work/knot/knot.log" >&2; exit 1; }
done

# Query healthdns all through its reloads (bounded: at most 300 s).
( end=$(( $(date +%s) + 300 ))
  while [ "$(date +%s)" -lt "$end" ] && [ ! -e "$work/stop" ]; do
    out=$(dig @127.0.0.1 -p "$DNS_PORT" +time=2 +tries=1 host5.big.test A || true)
    if echo "$out" | grep -q "status: NOERROR"; then echo "$out" | awk '/Query time/ {print $4}'; else echo FAIL; fi
  done > "$work/query_ms" ) &
pids+=("$!")
now_ms() { date +%s%3N; }
: > "$work/hd_ms"; : > "$work/knot_ms"
for trial in $(seq 1 "$TRIALS"); do
  serial=$((trial + 1))
  write_zone "$work/hd/big.test.zone" "$serial"
  start=$(now_ms)
  curl -sf -X POST "http://127.0.0.1:$API_PORT/reload" > "$work/report.json"
  echo $(( $(now_ms) - start )) >> "$work/hd_ms"
  [ "$(serial_of "$DNS_PORT")" = "$serial" ] || { echo "healthdns did not serve serial $serial" >&2; cat "$work/report.json" >&2; exit 1; }

  write_zone "$work/knot/big.test.zone" "$serial"
  start=$(now_ms)
  knotc -s "$work/knot/knot.sock" zone-reload big.test >/dev/null
  for _ in $(seq 1 3000); do [ "$(serial_of "$KNOT_PORT")" = "$serial" ] && break; sleep 0.005; done
  [ "$(serial_of "$KNOT_PORT")" = "$serial" ] || { echo "knot did not serve serial $serial" >&2; exit 1; }
  echo $(( $(now_ms) - start )) >> "$work/knot_ms"
done
touch "$work/stop"; sleep 2.5
stats() { sort -n "$1" | awk '{a[NR]=$1} END {printf "median %d ms, max %d ms (%d trials)", a[int((NR+1)/2)], a[NR], NR}'; }
echo "reload of a changed 100,000-record zone:"
echo "  healthdns (POST /reload until swapped in): $(stats "$work/hd_ms")"
echo "  knot (knotc zone-reload until served):     $(stats "$work/knot_ms")"
python3 - "$work/hd_ms" "$work/knot_ms" <<'PY'
import sys, statistics
hd = statistics.median(float(x) for x in open(sys.argv[1]))
knot = statistics.median(float(x) for x in open(sys.argv[2]))
print(f"  ratio healthdns / knot (medians): {hd / knot:.2f}")
PY
failed=$(grep -c FAIL "$work/query_ms" || true)
grep -v FAIL "$work/query_ms" | sort -n | awk -v failed="$failed" '{a[NR]=$1} END {printf "dig queries to healthdns during its reloads: %d answered, %d failed, median %d ms, max %d ms\n", NR, failed, a[int((NR+1)/2)], a[NR]}'
