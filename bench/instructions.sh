#!/usr/bin/env bash
# Instructions per answered query, counted by valgrind's callgrind: repeatable on a shared
# machine, where CPU time is noise. Each server (NSD and one or more healthdns binaries) serves
# the same generated zone under callgrind, once with Q queries of a kind and once with 2Q; the
# difference divided by Q is the cost of one query, start-up and zone loading cancelled out.
# Prints instructions per query for each server and kind, and each healthdns binary's ratio
# to NSD. With CACHE=1, also simulated first- and second-level data-cache
# read misses per query (--cache-sim=yes), and gdnsd beside them: healthdns runs fewer
# instructions than either, so where it is slower the cause is memory (measured: NXDOMAIN).
# Needs: valgrind, nsd, dig, python3, a release build of healthdns.
# Usage: [CACHE=1] bench/instructions.sh [QUERIES] [HEALTHDNS_BINARY...]
#   (default 2000 queries; binaries default to ./target/release/healthdns; pass another build,
#   e.g. of an earlier commit, to compare two versions side by side in one run)
set -euo pipefail
QUERIES=${1:-2000}
shift || true
cd "$(dirname "$0")/.."
for tool in valgrind nsd dig python3; do
  command -v "$tool" >/dev/null || { echo "bench/instructions.sh needs $tool (apt-get install -y valgrind nsd bind9-dnsutils)" >&2; exit 1; }
done
source bench/common.sh
BINARIES=("$@")
[ ${#BINARIES[@]} -gt 0 ] || BINARIES=(./target/release/healthdns)
PORT=$(free_port)

{
  echo '$ORIGIN bench.test.'; echo '$TTL 300'
  echo '@ SOA ns1 hostmaster 1 3600 600 1209600 60'
  echo '@ NS ns1'; echo 'ns1 A 127.0.0.1'
  for i in $(seq 1 2000); do echo "www$i A 192.0.2.$((i % 250 + 1))"; done
  for i in $(seq 1 200); do echo "d$i NS ns.d$i"; echo "ns.d$i A 198.51.100.$((i % 250 + 1))"; done
} > "$work/bench.test.zone"
for i in $(seq 1 1000); do echo "www$i.bench.test A"; done > "$work/positive"
for i in $(seq 1 1000); do echo "nx$i.bench.test A"; done > "$work/nxdomain"
for i in $(seq 1 1000); do echo "www$i.bench.test MX"; done > "$work/nodata"
for i in $(seq 1 200); do echo "host.d$i.bench.test A"; done > "$work/referral"
nsd_conf "$PORT" "minimal-responses: yes" > "$work/nsd.conf"
hd_toml "$PORT" > "$work/config.toml"
SIM=""
if [ "${CACHE:-}" = 1 ]; then
  command -v gdnsd >/dev/null || { echo "CACHE=1 needs gdnsd (apt-get install -y gdnsd)" >&2; exit 1; }
  # The last level simulated is one core's second-level cache here (512 KiB, 8-way).
  SIM="--cache-sim=yes --LL=524288,8,64"
  gdnsd_setup "$PORT" "udp_threads => 1" "tcp_threads => 1"
fi

# Total instructions of server $1 (nsd or a healthdns binary) answering $3 queries of kind $2.
count() {
  local server=$1 kind=$2 queries=$3 out="$work/cg.$RANDOM" pid
  # Each run starts without state: builds of different versions may not read each other's.
  rm -f "$out".* "$work/state"
  if [ "$server" = nsd ]; then
    valgrind --tool=callgrind $SIM --trace-children=yes --callgrind-out-file="$out.%p" \
      nsd -d -c "$work/nsd.conf" >/dev/null 2>&1 &
  elif [ "$server" = gdnsd ]; then
    valgrind --tool=callgrind $SIM --trace-children=yes --callgrind-out-file="$out.%p" \
      gdnsd -c "$work/gdnsd" -f start >/dev/null 2>&1 &
  else
    valgrind --tool=callgrind $SIM --callgrind-out-file="$out.%p" \
      "$server" serve --config "$work/config.toml" >/dev/null 2>&1 &
  fi
  pid=$!; pids+=("$pid")
  for _ in $(seq 1 600); do
    dig @127.0.0.1 -p "$PORT" +time=1 +tries=1 bench.test SOA 2>/dev/null | grep -q 'status: NOERROR' && break
    sleep 0.1
  done
  # One query at a time, so none is dropped under valgrind's slowness.
  python3 - "$PORT" "$work/$kind" "$queries" <<'PY'
import socket, sys, struct, random
port, path, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
names = [line.split() for line in open(path)]
types = {"A": 1, "MX": 15}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
answered = 0
for i in range(count):
    name, qtype = names[i % len(names)]
    wire = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    ident = random.randrange(65536)
    s.sendto(struct.pack(">HHHHHH", ident, 0, 1, 0, 0, 0) + wire + struct.pack(">HH", types[qtype], 1), ("127.0.0.1", port))
    try:
        s.recv(4096); answered += 1
    except socket.timeout:
        pass
if answered != count:
    print(f"only {answered} of {count} answered", file=sys.stderr); sys.exit(1)
PY
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  [ "$server" = nsd ] && { kill -TERM "$(cat "$work/nsd.pid" 2>/dev/null)" 2>/dev/null || true; sleep 1; }
  [ "$server" = gdnsd ] && sleep 1
  # Sum every process's totals (NSD forks a server child): instructions, and with the cache
  # simulation the D1 read misses (the events line names the columns).
  cat "$out".* 2>/dev/null | awk '/^events:/ { for (i = 2; i <= NF; i++) { if ($i == "D1mr") col = i; if ($i == "DLmr") last = i } }
    /^summary:/ { sum += $2; if (col) miss += $col; if (last) far += $last } END { print sum + 0, miss + 0, far + 0 }'
}

printf '%-10s %-40s %14s\n' kind server instructions/query
SERVERS=(nsd); [ -n "$SIM" ] && SERVERS+=(gdnsd)
for kind in positive nxdomain nodata referral; do
  nsd_cost=""
  for server in "${SERVERS[@]}" "${BINARIES[@]}"; do
    read -r one one_miss one_far < <(count "$server" "$kind" "$QUERIES")
    read -r two two_miss two_far < <(count "$server" "$kind" $(( 2 * QUERIES )))
    cost=$(( (two - one) / QUERIES ))
    [ "$server" = nsd ] && nsd_cost=$cost
    ratio=$(python3 -c "print(f'{$cost / $nsd_cost:.2f}')")
    misses=""; [ -n "$SIM" ] && misses=$(python3 -c "print(f'  D1 read misses/query {($two_miss - $one_miss) / $QUERIES:.1f}, L2 (512 KiB) {($two_far - $one_far) / $QUERIES:.2f}')")
    printf '%-10s %-40s %14d  ratio to nsd %s%s\n' "$kind" "$server" "$cost" "$ratio" "$misses"
  done
done
