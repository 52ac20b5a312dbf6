#!/usr/bin/env bash
# Peer votes: how fast a cluster agrees, and what gossip costs.
#
# 1. Three real healthdns processes on 127.0.6.1-3 (default gossip interval, 200 ms), each
#    probing from its own address one HTTP backend (python3) that fails for the sources
#    listed in a file. Each trial makes it fail for nodes 1 and 2, then heals it. From the
#    servers' own logs (one clock): the time from the second "address down" (the second vote)
#    to the last node's "cluster state changed ... state=down" (every node serving the new
#    answer, which is swapped in at once).
# 2. The same protocol in one process (examples/cluster_scale.rs), without probing:
#    3 nodes x 1,000 addresses and 25 nodes x 1,000 addresses; time for every node to see a
#    flip agreed, and gossip bytes per node per second, steady and while flipping.
# Needs: python3, dig, a release build. Usage: bench/cluster.sh [TRIALS]   (default 10)
set -euo pipefail
TRIALS=${1:-10}
cd "$(dirname "$0")/.."
source bench/common.sh
cargo build --release --quiet --example cluster_scale
HTTP_PORT=$(free_port)
echo -n "" > "$work/fail"
cat > "$work/backend.py" <<'PY'
import http.server, sys
fail_file = sys.argv[2]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        failing = open(fail_file).read().split()
        code = 503 if self.client_address[0] in failing else 200
        self.send_response(code); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer(("127.0.9.1", int(sys.argv[1])), Handler).serve_forever()
PY
python3 "$work/backend.py" "$HTTP_PORT" "$work/fail" & pids+=("$!")
head -c 32 /dev/urandom | base64 > "$work/cluster.key"
printf '$TTL 300\n@ SOA ns1 h 1 3600 600 86400 60\n@ NS ns1\nns1 A 192.0.2.53\n' > "$work/zone.zone"
G=(0 $(free_port) $(free_port) $(free_port))
for n in 1 2 3; do
  peers=""
  for m in 1 2 3; do [ "$m" != "$n" ] && peers="$peers\"127.0.6.$m:${G[$m]}\", "; done
  cat > "$work/node$n.toml" <<CONF
[server]
listen = ["127.0.6.$n:$(free_port)"]
state_file = "node$n.state"
[cluster]
node = "ns$n"
listen = "127.0.6.$n:${G[$n]}"
peers = [${peers%, }]
min_peers_agree = 1
key_file = "cluster.key"
[[zone]]
origin = "example.test"
file = "zone.zone"
$(pool_toml www.example.test "127.0.9.1 127.0.9.2" "${FAST_CHECK[@]}" "source = \"127.0.6.$n\"")
CONF
  ./target/release/healthdns serve --config "$work/node$n.toml" 2>"$work/node$n.log" & pids+=("$!")
done
for n in 1 2 3; do
  for _ in $(seq 1 100); do grep -q "hearing from peers" "$work/node$n.log" && break; sleep 0.1; done
done
# Node $1's log since the trial's mark.
since_mark() { tail -n +"$(( $(cat "$work/mark$1") + 1 ))" "$work/node$1.log"; }
# Waits (up to 5 s) until every node's log since its mark has a line matching $1.
all_logged() {
  local n count
  for _ in $(seq 1 100); do
    count=0
    for n in 1 2 3; do since_mark "$n" | grep -q "$1" && count=$((count + 1)); done
    [ "$count" = 3 ] && return 0
    sleep 0.05
  done
  return 1
}
seconds() { python3 -c 'import sys,datetime; print(datetime.datetime.fromisoformat(sys.argv[1].replace("Z","+00:00")).timestamp())' "$1"; }
: > "$work/agree_ms"
for trial in $(seq 1 "$TRIALS"); do
  for n in 1 2 3; do wc -l < "$work/node$n.log" > "$work/mark$n"; done
  echo "127.0.6.1 127.0.6.2" > "$work/fail"
  all_logged "cluster state changed.*127.0.9.1.*state=down" || { echo "trial $trial: not every node agreed" >&2; tail -5 "$work"/node*.log >&2; exit 1; }
  votes=(); served=()
  for n in 1 2; do
    line=$(since_mark "$n" | grep -m1 "address down address=127.0.9.1")
    votes+=("$(seconds "${line%% *}")")
  done
  for n in 1 2 3; do
    line=$(since_mark "$n" | grep -m1 "cluster state changed.*127.0.9.1.*state=down")
    served+=("$(seconds "${line%% *}")")
  done
  python3 -c 'import sys; v=[float(x) for x in sys.argv[1:3]]; s=[float(x) for x in sys.argv[3:]]; print(round((max(s)-max(v))*1000, 1))' "${votes[@]}" "${served[@]}" >> "$work/agree_ms"
  echo "trial $trial: second vote to every node serving: $(tail -1 "$work/agree_ms") ms"
  echo -n "" > "$work/fail"
  all_logged "cluster state changed.*127.0.9.1.*state=up" || true
  sleep 0.3
done
sort -n "$work/agree_ms" | awk '{a[NR]=$1} END {printf "3 processes, gossip 200 ms: second vote to every node serving: median %s ms, max %s ms (%d trials; target <= 1000 ms median)\n", a[int((NR+1)/2)], a[NR], NR}'
echo
./target/release/examples/cluster_scale 3 1000 200 "$TRIALS"
./target/release/examples/cluster_scale 25 1000 200 "$TRIALS"
