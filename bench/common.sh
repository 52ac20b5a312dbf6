# Sourced by the bench scripts: a release build, a scratch folder, and cleanup of the
# processes they start (by PID, listed in `pids`).
cargo build --release --quiet --bins --examples
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -CONT "$pid" 2>/dev/null || true; kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# HTTP backends for pool benchmarks: examples/http_backend.rs on 127.0.9.N, all on $HTTP_PORT
# (set it first); each answers `200 ok` for a few microseconds of CPU, as a web server on another
# machine costs this one nothing (python3's http.server took 1.8 ms a probe, which showed in the
# DNS server's latency when it ran on the server's core). backend_pid[N] is each one's PID
# ("" when killed).
declare -A backend_pid
start_backend() { # $1 = host number
  target/release/examples/http_backend "127.0.9.$1:$HTTP_PORT" &
  backend_pid[$1]=$!; pids+=("$!")
  # Ready when it accepts connections.
  for _ in $(seq 1 100); do
    python3 -c "import socket;socket.create_connection(('127.0.9.$1',$HTTP_PORT),0.2)" 2>/dev/null && return 0
    sleep 0.02
  done
  echo "backend 127.0.9.$1 did not start" >&2; exit 1
}
# Kills backend $1 if it runs, else starts it: either way the pool's answer changes.
flip_backend() {
  if [ -n "${backend_pid[$1]:-}" ]; then
    kill -KILL "${backend_pid[$1]}"; wait "${backend_pid[$1]}" 2>/dev/null || true; backend_pid[$1]=""
  else
    start_backend "$1"
  fi
}

# An NSD config serving $work/bench.test.zone on 127.0.0.1:$1, one server process, RRL off;
# further arguments are extra `server:` lines.
nsd_conf() { # $1 = port, then extra server lines
  local port=$1; shift
  cat <<CONF
server:
  ip-address: 127.0.0.1@$port
  server-count: 1
  username: ""
  chroot: ""
  zonesdir: "$work"
  pidfile: "$work/nsd.pid"
  database: ""
  xfrdfile: "$work/xfrd.state"
  zonelistfile: "$work/zone.list"
  logfile: "$work/nsd.log"
  verbosity: 0
  hide-version: yes
  # Debian builds NSD with response-rate limiting on; off, so every query is answered.
  rrl-ratelimit: 0
$(printf '  %s\n' "$@")
remote-control:
  control-enable: no
zone:
  name: bench.test
  zonefile: bench.test.zone
CONF
}

# CPU clock ticks (utime + stime) and resident memory (KiB) of a process and all its
# descendants (NSD forks its server, Knot and healthdns run threads), read from /proc.
descendants() { local child; for child in $(pgrep -P "$1" || true); do echo "$child"; descendants "$child"; done; }
# CPU clock ticks of a process and its descendants, from one reading of /proc: "TOTAL USER",
# utime + stime and utime alone (the server's own code, apart from the kernel's per-packet
# work, which is the same syscalls for every server). utime and stime are fields 14 and 15;
# the name (field 2) may hold spaces, so fields are counted after ')'.
cpu_split() {
  local pid
  for pid in $1 $(descendants "$1"); do
    sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null || true
  done | awk '{ total += $12 + $13; user += $12 } END { print total + 0, user + 0 }'
}
cpu_ticks() { local total user; read -r total user < <(cpu_split "$1"); echo "$total"; }
# Resident memory (KiB) of a process and its descendants, read as cpu_split reads CPU.
rss_kb() {
  local pid
  for pid in $1 $(descendants "$1"); do
    cat "/proc/$pid/status" 2>/dev/null || true
  done | awk '/^VmRSS/ { total += $2 } END { print total + 0 }'
}
HZ=$(getconf CLK_TCK)

# A Knot config serving $work/bench.test.zone as bench.test on 127.0.0.1:$1, errors logged to
# $work/knot.log; further arguments are extra `server:` lines.
# A gdnsd config folder at $work/gdnsd serving $work/bench.test.zone on 127.0.0.1:$1; further
# arguments are extra `options` lines (threads, buffers).
gdnsd_setup() { # $1 = port, then extra options lines
  local port=$1; shift
  mkdir -p "$work/gdnsd/zones" "$work/gdnsd/run" "$work/gdnsd/state"
  cp "$work/bench.test.zone" "$work/gdnsd/zones/bench.test"
  { printf 'options => {\n  listen => [ 127.0.0.1:%s ]\n  run_dir => %s/gdnsd/run\n  state_dir => %s/gdnsd/state\n' "$port" "$work" "$work"
    [ $# -eq 0 ] || printf '  %s\n' "$@"
    printf '}\n'; } > "$work/gdnsd/config"
}

knot_conf() { # $1 = port, then extra server lines
  local port=$1 line; shift
  mkdir -p "$work/knot"
  printf 'server:\n    listen: 127.0.0.1@%s\n    rundir: "%s/knot"\n' "$port" "$work"
  for line in "$@"; do printf '    %s\n' "$line"; done
  cat <<CONF
log:
  - target: "$work/knot.log"
    any: error
database:
    storage: "$work/knot"
zone:
  - domain: bench.test
    storage: "$work"
    file: "bench.test.zone"
    zonefile-sync: -1
    journal-content: none
CONF
}

# A [[pool]] "web" answering the name $1 with the addresses $2 (space-separated), checked by
# HTTP on $HTTP_PORT; further arguments are extra [[pool.check]] lines, e.g. "${FAST_CHECK[@]}".
pool_toml() { # $1 = name, $2 = addresses, then check lines
  local name=$1 list="" address
  for address in $2; do list+="\"$address\", "; done
  shift 2
  printf '[[pool]]\nname = "web"\nnames = ["%s"]\naddresses = [%s]\n' "$name" "${list%, }"
  printf '[[pool.check]]\nkind = "http"\nurl = "http://{address}:%s/"\n' "$HTTP_PORT"
  [ $# -eq 0 ] || printf '%s\n' "$@"
}
# Checks that decide within about 100 ms: one probe each way.
FAST_CHECK=('interval = "100ms"' 'timeout = "100ms"' 'fall = 1' 'rise = 1')

# A healthdns config serving bench.test (bench.test.zone, next to the config) on 127.0.0.1:$1
# with one UDP socket; further arguments are extra lines (e.g. a [rate_limit] table).
# RCVBUF=bytes: healthdns' udp_receive_buffer (else its default); `healthdns check` judges it.
hd_toml() { # $1 = port, then extra lines
  local port=$1; shift
  printf '[server]\nlisten = ["127.0.0.1:%s"]\nudp_sockets = 1\nstate_file = "hd.state"\n' "$port"
  [ -z "${RCVBUF:-}" ] || printf 'udp_receive_buffer = %s\n' "$RCVBUF"
  printf '[[zone]]\norigin = "bench.test"\nfile = "bench.test.zone"\n'
  [ $# -eq 0 ] || printf '%s\n' "$@"
}
