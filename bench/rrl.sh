#!/usr/bin/env bash
# Response rate limiting against an amplification attempt, healthdns beside Knot's mod-rrl,
# on the same zone and load.
#
# Each server runs twice, one at a time: without rate limiting (the baseline) and with 20
# responses a second per prefix and slip 2. Each time, an attacker at 127.0.0.1 asks for a
# ~1,000-byte TXT answer (EDNS, 1232 bytes) at RATE queries a second, while a client in
# another /24 (127.0.1.1) asks for an A record 10 times a second (below the limit).
# Reported: the bytes the attacker's prefix received, the cut against the baseline (target:
# at least 90%), the TC=1 slips, and the share of the other client's queries answered
# (target: all).
# Needs: knot, dig, python3, a release build of healthdns and examples/loadgen.
# Usage: bench/rrl.sh [SECONDS] [RATE]   (default 3 s at 20,000 queries a second)
set -euo pipefail
SECONDS_PER_RUN=${1:-3}
RATE=${2:-20000}
cd "$(dirname "$0")/.."
for tool in knotd dig python3; do
  command -v "$tool" >/dev/null || { echo "bench/rrl.sh needs $tool (apt-get install -y knot bind9-dnsutils)" >&2; exit 1; }
done
source bench/common.sh
PORT=$(free_port)
{
  echo '$ORIGIN bench.test.'; echo '$TTL 300'
  echo '@ SOA ns1 hostmaster 1 3600 600 1209600 60'
  echo '@ NS ns1'; echo 'ns1 A 127.0.0.1'; echo 'www A 192.0.2.1'
  for i in $(seq 1 4); do printf 'amp TXT "%s"\n' "$(printf "%0250d" "$i")"; done
} > "$work/bench.test.zone"
echo "amp.bench.test TXT edns" > "$work/q_amp"
echo "www.bench.test A" > "$work/q_www"

# One run against the server listening on $PORT: attacker and other client at once.
measure() {
  local attack other
  target/release/examples/loadgen "127.0.0.1:$PORT" "$work/q_amp" 65000 "$SECONDS_PER_RUN" --rate "$RATE" > "$work/attack" &
  local attacker=$!
  target/release/examples/loadgen "127.0.0.1:$PORT" "$work/q_www" 1000 "$SECONDS_PER_RUN" --rate 10 --source 127.0.1.1 > "$work/other"
  wait "$attacker"
  attack=$(cat "$work/attack"); other=$(cat "$work/other")
  echo "$attack" | sed 's/.*sent=\([0-9]*\) bytes=\([0-9]*\) truncated=\([0-9]*\).*/\1 \2 \3/' | tr '\n' ' '
  echo "$other" | sed 's/answered=\([0-9]*\).* sent=\([0-9]*\).*/\1 \2/'
}
wait_answering() {
  for _ in $(seq 1 200); do
    dig @127.0.0.1 -p "$PORT" +time=1 +tries=1 +short www.bench.test A 2>/dev/null | grep -q 192.0.2.1 && return
    sleep 0.05
  done
  echo "the server on port $PORT never answered" >&2; exit 1
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; sleep 0.3; }

: > "$work/results"
for limited in off on; do
  rrl=(); [ "$limited" = on ] && rrl=("[rate_limit]" "responses_per_second = 20" "slip = 2")
  hd_toml "$PORT" "${rrl[@]}" > "$work/hd.toml"
  RUST_LOG=error target/release/healthdns serve --config "$work/hd.toml" & pid=$!; pids+=("$pid")
  wait_answering
  echo "healthdns $limited $(measure)" >> "$work/results"
  stop "$pid"

  knot_conf "$PORT" "udp-workers: 1" "tcp-workers: 1" "background-workers: 1" > "$work/knot.conf"
  if [ "$limited" = on ]; then
    printf 'mod-rrl:\n  - id: limit\n    rate-limit: 20\n    slip: 2\ntemplate:\n  - id: default\n    global-module: mod-rrl/limit\n' >> "$work/knot.conf"
  fi
  knotd -c "$work/knot.conf" 2>"$work/knotd.err" & pid=$!; pids+=("$pid")
  wait_answering
  echo "knot $limited $(measure)" >> "$work/results"
  stop "$pid"
done

python3 - "$work/results" "$RATE" "$SECONDS_PER_RUN" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    server, limited, sent, received, truncated, other_answered, other_sent = line.split()
    rows[(server, limited)] = dict(sent=int(sent), bytes=int(received), tc=int(truncated),
                                   other=int(other_answered) / max(int(other_sent), 1))
print(f"attacker at {sys.argv[2]} q/s for {sys.argv[3]} s (~1,000-byte TXT answers); other /24 at 10 q/s")
print(f"{'server':10} {'rrl':4} {'queries':>8} {'bytes_to_attacker':>18} {'tc_slips':>9} {'other_answered':>15}")
for (server, limited), row in rows.items():
    print(f"{server:10} {limited:4} {row['sent']:8} {row['bytes']:18} {row['tc']:9} {row['other']:14.1%}")
for server in ("healthdns", "knot"):
    off, on = rows[(server, "off")], rows[(server, "on")]
    cut = 1 - on["bytes"] / max(off["bytes"], 1)
    print(f"{server}: bytes to the attacking prefix cut by {cut:.1%} (target >= 90%); other prefix answered {on['other']:.1%} (target 100%)")
PY
