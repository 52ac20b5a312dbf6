#!/usr/bin/env bash
# Snapshot writes of a 100,000-record zone: how long each write takes (from the server's log),
# and whether answers stall meanwhile (dig query times measured all through the writes).
#
# One pool over two HTTP backends (examples/http_backend.rs on 127.0.9.1-2); each trial kills or
# restarts backend 2, which changes the answer, the serial and so the snapshot file.
# Needs: dig, python3, a release build of healthdns.
# Usage: bench/snapshot.sh [TRIALS]   (default 5)
set -euo pipefail
TRIALS=${1:-5}
cd "$(dirname "$0")/.."
command -v dig >/dev/null || { echo "bench/snapshot.sh needs dig (apt-get install -y bind9-dnsutils)" >&2; exit 1; }
source bench/common.sh
DNS_PORT=$(free_port); HTTP_PORT=$(free_port)
start_backend 1; start_backend 2
python3 - "$work/big.test.zone" <<'PY'
import sys
with open(sys.argv[1], "w") as zone:
    zone.write("$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 60\n@ NS ns1\nns1 A 127.0.0.1\n")
    for index in range(99_996):
        zone.write(f"host{index} A 10.{index >> 16}.{(index >> 8) & 255}.{index & 255}\n")
PY
cat > "$work/config.toml" <<CONF
[server]
listen = ["127.0.0.1:$DNS_PORT"]
[[zone]]
origin = "big.test"
file = "big.test.zone"
snapshot = "snapshots/big.test.zone"
$(pool_toml www.big.test "127.0.9.1 127.0.9.2" "${FAST_CHECK[@]}")
CONF
./target/release/healthdns serve --config "$work/config.toml" 2>"$work/healthdns.log" &
pids+=("$!")
for _ in $(seq 1 200); do
  grep -q "zone snapshot written" "$work/healthdns.log" && break
  sleep 0.1
done
grep -q "zone snapshot written" "$work/healthdns.log" || { echo "no first snapshot" >&2; cat "$work/healthdns.log" >&2; exit 1; }

# Query all through the trials (bounded: at most 60 s).
( end=$(( $(date +%s) + 60 ))
  while [ "$(date +%s)" -lt "$end" ] && [ ! -e "$work/stop" ]; do
    dig @127.0.0.1 -p "$DNS_PORT" +time=1 +tries=1 www.big.test A | awk '/Query time/ {print $4}'
  done > "$work/query_ms" ) &
pids+=("$!")
for trial in $(seq 1 "$TRIALS"); do
  flip_backend 2
  sleep 1.5
done
touch "$work/stop"; sleep 1.2
echo "snapshot writes (ms, render + fsync + rename, 100,000 records):"
grep "zone snapshot written" "$work/healthdns.log" | sed -E 's/.*bytes=([0-9]+).*took_ms=([0-9]+).*/  \2 ms (\1 bytes)/'
sort -n "$work/query_ms" | awk '{a[NR]=$1} END {printf "dig query times during the writes: %d queries, median %d ms, max %d ms\n", NR, a[int((NR+1)/2)], a[NR]}'
