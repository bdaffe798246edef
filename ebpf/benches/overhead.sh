#!/usr/bin/env bash
# Throughput cost of the capture programs: wrk against nginx on loopback,
# alternating rounds without and with fathom-ebpf-probe attached (reading the
# ring buffer), in one run so both see the same machine state. Prints each
# round, the throughput ratio and the events/s delivered to userspace.
#
# Not a test: numbers depend on the machine. Needs root and:
#   apt-get install wrk nginx
# usage: sudo ebpf/benches/overhead.sh
# environment:
#   ROUNDS=5 DURATION=10      rounds, and seconds per wrk run
#   CONNECTIONS=16 THREADS=1  wrk load
#   BODY_BYTES=1024           size of the served file
#   PROBE_ARGS=               extra fathom-ebpf-probe flags (e.g. --no-infer)
#   FATHOM_PROBE=path         probe binary; default: built with cargo --release
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-16}
THREADS=${THREADS:-1}
BODY_BYTES=${BODY_BYTES:-1024}
PROBE_ARGS=${PROBE_ARGS:-}

die() { echo "overhead.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (the probe loads eBPF programs)"
command -v wrk >/dev/null || die "wrk not found: apt-get install wrk"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || die "nginx not found: apt-get install nginx"

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [ -z "${FATHOM_PROBE:-}" ]; then
    (cd "$ROOT" && cargo build --release -q -p fathom-ebpf --bin fathom-ebpf-probe)
    FATHOM_PROBE="${CARGO_TARGET_DIR:-$ROOT/target}/release/fathom-ebpf-probe"
fi
[ -x "$FATHOM_PROBE" ] || die "probe binary not found at $FATHOM_PROBE"

WORK=$(mktemp -d /tmp/fathom-overhead.XXXXXX)
NGINX_PID=
PROBE_PID=
cleanup() {
    [ -n "$PROBE_PID" ] && kill "$PROBE_PID" 2>/dev/null && wait "$PROBE_PID" 2>/dev/null
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/www"
head -c "$BODY_BYTES" /dev/urandom >"$WORK/www/body.bin"
# nginx's worker runs unprivileged.
chmod 755 "$WORK" "$WORK/www"
chmod 644 "$WORK/www/body.bin"
cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/tmp;
    proxy_temp_path $WORK/tmp;
    fastcgi_temp_path $WORK/tmp;
    uwsgi_temp_path $WORK/tmp;
    scgi_temp_path $WORK/tmp;
    server {
        listen 127.0.0.1:$PORT;
        root $WORK/www;
    }
}
EOF
mkdir -p "$WORK/tmp"
"$NGINX" -c "$WORK/nginx.conf" -e "$WORK/error.log" &
NGINX_PID=$!
for _ in $(seq 50); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/body.bin" && break
    sleep 0.1
done
curl -sf -o /dev/null "http://127.0.0.1:$PORT/body.bin" || die "nginx did not serve: $(cat "$WORK/error.log")"

URL="http://127.0.0.1:$PORT/body.bin"
wrk_rps() {
    local out
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" "$URL")
    echo "$out" | grep -q "Non-2xx" && die "wrk got errors: $out"
    echo "$out" | awk '/^Requests\/sec:/ {print $2}'
}

# One traced run: the probe attached and reading for the whole wrk run.
# Prints "rps delivered drops filtered".
traced_run() {
    local log="$WORK/probe.log"
    # shellcheck disable=SC2086
    "$FATHOM_PROBE" $((DURATION + 2)) --quiet $PROBE_ARGS >"$log" 2>&1 &
    PROBE_PID=$!
    for _ in $(seq 100); do
        grep -q '^loaded' "$log" && break
        kill -0 "$PROBE_PID" 2>/dev/null || die "probe failed: $(cat "$log")"
        sleep 0.1
    done
    grep -q '^loaded' "$log" || die "probe did not load: $(cat "$log")"
    local rps
    rps=$(wrk_rps)
    wait "$PROBE_PID" || die "probe failed: $(cat "$log")"
    PROBE_PID=
    local delivered drops filtered
    delivered=$(awk '/^delivered/ {print $2}' "$log")
    drops=$(sed -n 's/.*ring buffer drops \([0-9]*\).*/\1/p' "$log")
    filtered=$(awk '/filtered/ {s += $NF} END {print s + 0}' "$log")
    echo "$rps $delivered $drops $filtered"
}

echo "nginx (1 worker, ${BODY_BYTES}-byte file) <- wrk -t$THREADS -c$CONNECTIONS, ${DURATION}s runs, $ROUNDS rounds; probe $FATHOM_PROBE $PROBE_ARGS"
wrk_rps >/dev/null # warm up
BASE=()
TRACED=()
EVENTS=()
RATIOS=()
for round in $(seq "$ROUNDS"); do
    # Alternate which goes first so drift over the run hits both alike.
    if [ $((round % 2)) = 1 ]; then
        base=$(wrk_rps)
        read -r rps delivered drops filtered <<<"$(traced_run)"
    else
        read -r rps delivered drops filtered <<<"$(traced_run)"
        base=$(wrk_rps)
    fi
    eps=$(awk -v n="$delivered" -v d="$DURATION" 'BEGIN {printf "%.0f", n / d}')
    ratio=$(awk -v a="$rps" -v b="$base" 'BEGIN {printf "%.4f", a / b}')
    printf 'round %d: without %10.1f req/s   with %10.1f req/s (%.3f)   %s events/s delivered, %s ring drops, %s filtered\n' \
        "$round" "$base" "$rps" "$ratio" "$eps" "$drops" "$filtered"
    RATIOS+=("$ratio")
    BASE+=("$base")
    TRACED+=("$rps")
    EVENTS+=("$eps")
done

mean() { printf '%s\n' "$@" | awk '{s += $1} END {printf "%.1f", s / NR}'; }
b=$(mean "${BASE[@]}")
t=$(mean "${TRACED[@]}")
e=$(mean "${EVENTS[@]}")
# The median of the per-round ratios resists a round disturbed by other load.
m=$(printf '%s\n' "${RATIOS[@]}" | sort -g | awk '{r[NR] = $1} END {print NR % 2 ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2}')
awk -v b="$b" -v t="$t" -v e="$e" -v m="$m" 'BEGIN {
    printf "mean: without %.1f req/s, with %.1f req/s: ratio %.3f (%.1f%% throughput loss)\n", b, t, t / b, (1 - t / b) * 100
    printf "median round ratio %.3f (%.1f%% throughput loss); %.0f events/s delivered\n", m, (1 - m) * 100, e
}'
