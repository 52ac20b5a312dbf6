#!/usr/bin/env bash
# Failover time: how fast a dead or frozen backend leaves the DNS answer, and how fast it
# comes back, measured from outside with dig.
#
# Three HTTP backends (examples/http_backend.rs) on 127.0.9.1-3, one pool over them with
# interval 100ms, timeout 200ms, fall 2, rise 2. Each trial either kills a backend (SIGKILL,
# then starts it again) or freezes it (SIGSTOP, then SIGCONT), and polls
# `dig www.bench.test A` every 20 ms: detection is from the signal to the first answer without
# the address, recovery from the restart to the first answer with it again.
# Prints every trial, then the median and max of each kind.
# Needs: bash 5, python3, dig (bind9-dnsutils), a release build of healthdns.
# Trials follow each other 0.3-0.6 s after the previous change (the default
# min_serial_interval is 1 s): a change must reach the answers at once whatever came before.
# Usage: bench/failover.sh [TRIALS]   (default 12 per kind)
set -euo pipefail
TRIALS=${1:-12}
cd "$(dirname "$0")/.."
command -v dig >/dev/null || { echo "bench/failover.sh needs dig (apt-get install -y bind9-dnsutils)" >&2; exit 1; }
source bench/common.sh
DNS_PORT=$(free_port)
HTTP_PORT=$(free_port)

for host in 1 2 3; do start_backend "$host"; done

cat > "$work/bench.test.zone" <<ZONE
\$ORIGIN bench.test.
\$TTL 300
@ SOA ns1 hostmaster 1 3600 600 86400 60
@ NS ns1
ns1 A 127.0.0.1
ZONE
cat > "$work/config.toml" <<CONF
[server]
listen = ["127.0.0.1:$DNS_PORT"]
[[zone]]
origin = "bench.test"
file = "bench.test.zone"
$(pool_toml www.bench.test "127.0.9.1 127.0.9.2 127.0.9.3" 'interval = "100ms"' 'timeout = "200ms"' 'fall = 2' 'rise = 2')
CONF
./target/release/healthdns serve --config "$work/config.toml" 2>"$work/healthdns.log" &
pids+=("$!")

# Microseconds since the epoch, without starting a process (bash 5).
now() { echo "${EPOCHREALTIME/./}"; }
# One dig per poll and no other process, so polling adds as little delay as possible.
answer() { dig @127.0.0.1 -p "$DNS_PORT" www.bench.test A +short +tries=1 +time=1 2>/dev/null; }
# Polls every 20 ms (start to start) until the answer does (present=1) or does not (present=0) hold $1;
# gives up after 10 s. Prints the seconds it took since $3 (microseconds since the epoch).
wait_for() {
  local address=$1 present=$2 since=$3 got started rest
  while true; do
    started=$(now)
    got=$'\n'$(answer)$'\n'
    if [[ $present == 1 && $got == *$'\n'$address$'\n'* ]] || [[ $present == 0 && $got == *.* && $got != *$'\n'$address$'\n'* ]]; then
      printf '%d.%06d\n' $(( ($(now) - since) / 1000000 )) $(( ($(now) - since) % 1000000 )); return 0
    fi
    if (( $(now) - since > 10000000 )); then echo "timeout"; return 0; fi
    # One poll every 20 ms, start to start (dig itself takes about as long here).
    rest=$(( 20000 - ($(now) - started) ))
    (( rest > 0 )) && sleep "0.$(printf '%06d' "$rest")"
  done
}
all_three() { [[ $(answer | sort | tr '\n' ' ') == "127.0.9.1 127.0.9.2 127.0.9.3 " ]]; }
for _ in $(seq 1 250); do all_three && break; sleep 0.02; done
all_three || { echo "healthdns never answered all three"; cat "$work/healthdns.log"; exit 1; }

declare -a kill_detect kill_recover freeze_detect freeze_recover
for trial in $(seq 1 "$TRIALS"); do
  host=$(( (trial - 1) % 3 + 1 )); address="127.0.9.$host"
  # 0.3-0.6 s after the previous change was swapped in (well inside min_serial_interval,
  # so pacing of what secondaries see cannot hide a delayed answer), at a random probe phase.
  sleep "0.$(( RANDOM % 4 + 3 ))"
  t=$(now); kill -KILL "${backend_pid[$host]}"
  detect=$(wait_for "$address" 0 "$t")
  wait "${backend_pid[$host]}" 2>/dev/null || true
  # Recovery counts from when the restarted backend accepts connections.
  start_backend "$host"; t=$(now)
  recover=$(wait_for "$address" 1 "$t")
  kill_detect+=("$detect"); kill_recover+=("$recover")
  echo "kill   trial $trial ($address): detected ${detect}s, recovered ${recover}s"

  sleep "0.$(( RANDOM % 4 + 3 ))"
  t=$(now); kill -STOP "${backend_pid[$host]}"
  detect=$(wait_for "$address" 0 "$t")
  t=$(now); kill -CONT "${backend_pid[$host]}"
  recover=$(wait_for "$address" 1 "$t")
  freeze_detect+=("$detect"); freeze_recover+=("$recover")
  echo "freeze trial $trial ($address): detected ${detect}s, recovered ${recover}s"
done

summary() { # name values...
  local name=$1; shift
  printf '%s\n' "$@" | python3 -c "
import sys, statistics
values = [float(v) for v in sys.stdin.read().split() if v != 'timeout']
missing = sum(1 for v in sys.argv[2:] if v == 'timeout')
print(f'{sys.argv[1]:<18} median {statistics.median(values):.3f}s  max {max(values):.3f}s  (n={len(values)}, timeouts={missing})')
" "$name" "$@"
}
echo
summary "kill detect" "${kill_detect[@]}"
summary "kill recover" "${kill_recover[@]}"
summary "freeze detect" "${freeze_detect[@]}"
summary "freeze recover" "${freeze_recover[@]}"
grep -o 'swap_us=[0-9]*' "$work/healthdns.log" | cut -d= -f2 | sort -n | python3 -c "
import sys, statistics
values = [int(v) for v in sys.stdin.read().split()]
if values: print(f'verdict change to swap: median {statistics.median(values)} us, max {max(values)} us (n={len(values)})')
"
