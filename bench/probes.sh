#!/usr/bin/env bash
# Probe throughput: the CPU healthdns spends probing many targets at a 1 s interval.
#
# ICMP: ICMP_TARGETS loopback addresses (127.1.x.y; Linux answers echo on all of 127/8), in
# pools of 100, one icmp check each (interval 1s, timeout 500ms).
# HTTP: HTTP_TARGETS loopback addresses (127.2.x.y) served by one python3 asyncio HTTP server,
# one http check each (interval 1s, timeout 500ms; a fresh connection per probe).
# Each run warms up for 5 s, then reads healthdns's CPU time (all threads) from /proc over
# SECONDS_MEASURED and prints the cores used, and how many targets were up at the end.
# Needs: root or ping_group_range (ICMP), python3, dig, a release build of healthdns.
# Usage: bench/probes.sh [ICMP_TARGETS] [HTTP_TARGETS] [SECONDS_MEASURED]
set -euo pipefail
ICMP_TARGETS=${1:-10000}
HTTP_TARGETS=${2:-1000}
SECONDS_MEASURED=${3:-20}
cd "$(dirname "$0")/.."
source bench/common.sh

# $1 = kind (icmp|http), $2 = targets, $3 = second octet, $4 = extra check keys
write_config() {
  local kind=$1 count=$2 octet=$3 check=$4 port=$5
  {
    echo "[server]"; echo "listen = [\"127.0.0.1:$port\"]"; echo "udp_sockets = 1"
    echo "[[zone]]"; echo 'origin = "bench.test"'; echo 'file = "bench.test.zone"'
    python3 - "$kind" "$count" "$octet" "$check" <<'PY'
import sys
kind, count, octet, check = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
addresses = [f"127.{octet}.{i // 250}.{i % 250 + 1}" for i in range(count)]
for pool in range(0, count, 100):
    members = ", ".join(f'"{a}"' for a in addresses[pool:pool + 100])
    print(f'[[pool]]\nname = "p{pool}"\nnames = ["p{pool}.bench.test"]\naddresses = [{members}]')
    print(f'[[pool.check]]\nkind = "{kind}"\ninterval = "1s"\ntimeout = "500ms"\n{check}')
PY
  } > "$work/config.toml"
}

cat > "$work/bench.test.zone" <<'ZONE'
$ORIGIN bench.test.
$TTL 300
@ SOA ns1 hostmaster 1 3600 600 86400 60
@ NS ns1
ns1 A 127.0.0.1
ZONE


# $1 = label, $2 = targets, $3 = DNS port
measure() {
  local label=$1 count=$2 port=$3
  ./target/release/healthdns serve --config "$work/config.toml" 2>"$work/$label.log" &
  local pid=$!; pids+=("$pid")
  for _ in $(seq 1 600); do
    dig @127.0.0.1 -p "$port" p0.bench.test A +short +tries=1 +time=1 >/dev/null 2>&1 && break
    sleep 0.05
  done
  sleep 5
  local before after start end
  before=$(cpu_ticks "$pid"); start=$(date +%s.%N)
  sleep "$SECONDS_MEASURED"
  after=$(cpu_ticks "$pid"); end=$(date +%s.%N)
  local up=0 pool
  for ((pool = 0; pool < count; pool += 100)); do
    up=$(( up + $(dig @127.0.0.1 -p "$port" "p$pool.bench.test" A +short +tries=1 +time=2 | wc -l) ))
  done
  local downs; downs=$(grep -c "address down" "$work/$label.log" || true)
  python3 -c "
cpu = ($after - $before) / $HZ
wall = $end - $start
print(f'$label: $count targets at 1 s: {cpu / wall:.3f} cores ({cpu:.2f} s CPU in {wall:.1f} s), $up answering at the end, $downs down transitions logged')
"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

if (( ICMP_TARGETS > 0 )); then
  port=$(free_port)
  write_config icmp "$ICMP_TARGETS" 1 "" "$port"
  measure icmp "$ICMP_TARGETS" "$port"
fi

if (( HTTP_TARGETS > 0 )); then
  http_port=$(free_port)
  python3 - "$HTTP_TARGETS" "$http_port" <<'PY' &
import asyncio, sys
count, port = int(sys.argv[1]), int(sys.argv[2])
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
async def handle(reader, writer):
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(RESPONSE)
        await writer.drain()
    except Exception:
        pass
    writer.close()
async def main():
    servers = [await asyncio.start_server(handle, f"127.2.{i // 250}.{i % 250 + 1}", port, backlog=256)
               for i in range(count)]
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
PY
  pids+=($!)
  for _ in $(seq 1 200); do
    python3 -c "import socket;socket.create_connection(('127.2.0.1',$http_port),0.2)" 2>/dev/null && break
    sleep 0.05
  done
  port=$(free_port)
  write_config http "$HTTP_TARGETS" 2 "url = \"http://{address}:$http_port/\"" "$port"
  measure http "$HTTP_TARGETS" "$port"
fi
