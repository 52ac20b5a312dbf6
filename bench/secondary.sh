#!/usr/bin/env bash
# Secondary refresh: how long after a primary serves a new serial a BIND secondary serves it,
# with healthdns and NSD as primaries side by side (one named, secondary for both zones, so
# both are measured under the same conditions in one run).
#
# healthdns: a pool over two HTTP backends (examples/http_backend.rs on 127.0.9.1-2), checked every
# 100 ms (fall 1, rise 1); each trial kills or restarts backend 2, which changes the answer
# and the serial. NSD: each trial rewrites its zone file with the next serial and a changed A
# record and sends SIGHUP. Both send NOTIFY to named, whose refresh timer is an hour.
# Each trial measures from the first moment the primary answers the new serial to the first
# moment named does (both polled with dig every ~10 ms). Prints every trial and the medians.
# Needs: dig, named (bind9), nsd, python3, a release build of healthdns.
# Usage: bench/secondary.sh [TRIALS]   (default 10 per primary)
set -euo pipefail
TRIALS=${1:-10}
cd "$(dirname "$0")/.."
for tool in dig nsd python3; do
  command -v "$tool" >/dev/null || { echo "bench/secondary.sh needs $tool (apt-get install -y bind9-dnsutils bind9 nsd)" >&2; exit 1; }
done
[ -x /usr/sbin/named ] || { echo "bench/secondary.sh needs named (apt-get install -y bind9)" >&2; exit 1; }
source bench/common.sh
HDNS_PORT=$(free_port); NSD_PORT=$(free_port); NAMED_PORT=$(free_port); HTTP_PORT=$(free_port)
mkdir -p "$work/named" "$work/nsd"
start_backend 1; start_backend 2

# healthdns, primary for hdns.test.
cat > "$work/hdns.test.zone" <<ZONE
\$TTL 300
@ SOA ns1.hdns.test. hostmaster.hdns.test. 1 3600 600 86400 60
@ NS ns1.hdns.test.
ns1 A 127.0.0.1
ZONE
cat > "$work/config.toml" <<CONF
[server]
listen = ["127.0.0.1:$HDNS_PORT"]
[[zone]]
origin = "hdns.test"
file = "hdns.test.zone"
allow_transfer = ["127.0.0.1"]
also_notify = ["127.0.0.1:$NAMED_PORT"]
$(pool_toml www.hdns.test "127.0.9.1 127.0.9.2" "${FAST_CHECK[@]}")
CONF
./target/release/healthdns serve --config "$work/config.toml" 2>"$work/healthdns.log" &
pids+=("$!")

# NSD, primary for nsd.test.
nsd_zone() { # $1 = serial
  printf '$TTL 300\n@ SOA ns1.nsd.test. hostmaster.nsd.test. %s 3600 600 86400 60\n@ NS ns1.nsd.test.\nns1 A 127.0.0.1\nwww A 127.0.9.%s\n' "$1" "$(( $1 % 2 + 1 ))" > "$work/nsd/nsd.test.zone"
}
nsd_zone 1
cat > "$work/nsd/nsd.conf" <<CONF
server:
  ip-address: 127.0.0.1@$NSD_PORT
  server-count: 1
  username: ""
  chroot: ""
  zonesdir: "$work/nsd"
  pidfile: "$work/nsd/nsd.pid"
  database: ""
  xfrdfile: "$work/nsd/xfrd.state"
  zonelistfile: "$work/nsd/zone.list"
  logfile: "$work/nsd/nsd.log"
remote-control:
  control-enable: no
zone:
  name: nsd.test
  zonefile: nsd.test.zone
  notify: 127.0.0.1@$NAMED_PORT NOKEY
  provide-xfr: 127.0.0.1 NOKEY
CONF
nsd -d -c "$work/nsd/nsd.conf" &
nsd_pid=$!; pids+=("$nsd_pid")

# named, secondary for both.
cat > "$work/named/named.conf" <<CONF
options {
  directory "$work/named";
  listen-on port $NAMED_PORT { 127.0.0.1; };
  listen-on-v6 { none; };
  pid-file "$work/named/named.pid";
  recursion no;
  notify no;
  dnssec-validation no;
  session-keyfile "$work/named/session.key";
  managed-keys-directory "$work/named";
};
controls { };
zone "hdns.test" { type secondary; primaries { 127.0.0.1 port $HDNS_PORT; }; file "$work/named/hdns.test.bk"; };
zone "nsd.test" { type secondary; primaries { 127.0.0.1 port $NSD_PORT; }; file "$work/named/nsd.test.bk"; };
CONF
/usr/sbin/named -g -n 1 -c "$work/named/named.conf" 2>"$work/named/named.log" &
pids+=("$!")

serial() { # $1 = port, $2 = zone
  dig @127.0.0.1 -p "$1" +short +norecurse +time=1 +tries=1 "$2" SOA 2>/dev/null | awk '{print $3}'
}
now_ms() { date +%s%3N; }
# Polls until port $1 serves serial $3 for zone $2 (at most 20 s); prints the time (ms) it did.
wait_serial() {
  local deadline=$(( $(now_ms) + 20000 ))
  while [ "$(serial "$1" "$2")" != "$3" ]; do
    [ "$(now_ms)" -lt "$deadline" ] || { echo "timeout waiting for $2 serial $3 on port $1" >&2; tail -20 "$work/named/named.log" >&2; exit 1; }
  done
  now_ms
}
# Waits until port $1 answers a numeric serial for zone $2 (at most 20 s).
wait_up() {
  for _ in $(seq 1 400); do
    [[ "$(serial "$1" "$2")" =~ ^[0-9]+$ ]] && return 0
    sleep 0.05
  done
  echo "port $1 does not serve $2" >&2; exit 1
}
wait_up "$HDNS_PORT" hdns.test; wait_up "$NSD_PORT" nsd.test
wait_serial "$NAMED_PORT" hdns.test "$(serial "$HDNS_PORT" hdns.test)" >/dev/null
wait_serial "$NAMED_PORT" nsd.test 1 >/dev/null

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
hdns_times=(); nsd_times=()
nsd_serial=1
for trial in $(seq 1 "$TRIALS"); do
  # healthdns: flip backend 2 and wait for the new serial.
  before=$(serial "$HDNS_PORT" hdns.test)
  flip_backend 2
  after=$(( before + 1 ))
  primary=$(wait_serial "$HDNS_PORT" hdns.test "$after")
  secondary=$(wait_serial "$NAMED_PORT" hdns.test "$after")
  hdns_times+=($(( secondary - primary )))
  # NSD: next serial, SIGHUP.
  nsd_serial=$(( nsd_serial + 1 ))
  nsd_zone "$nsd_serial"
  kill -HUP "$nsd_pid"
  primary=$(wait_serial "$NSD_PORT" nsd.test "$nsd_serial")
  secondary=$(wait_serial "$NAMED_PORT" nsd.test "$nsd_serial")
  nsd_times+=($(( secondary - primary )))
  echo "trial $trial: healthdns -> named ${hdns_times[-1]} ms, nsd -> named ${nsd_times[-1]} ms"
  sleep 1.2 # past min_serial_interval, so each trial is one serial
done
hdns_median=$(printf '%s\n' "${hdns_times[@]}" | median)
nsd_median=$(printf '%s\n' "${nsd_times[@]}" | median)
echo "median: healthdns -> named ${hdns_median} ms, nsd -> named ${nsd_median} ms (ratio $(echo "scale=2; $hdns_median / $nsd_median" | bc))"
