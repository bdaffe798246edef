#!/usr/bin/env bash
# One machine, one command: a fathom-server with the embedded store (ClickHouse
# in-process via chDB) plus a local agent capturing this machine's own
# traffic. Ctrl-C stops both. Needs root: the agent captures packets.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "run.sh: run as root (the agent opens AF_PACKET rings and loads eBPF programs)" >&2
    exit 1
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/fathom-target}"
DATA="${FATHOM_DATA:-/var/tmp/fathom-run}"
QUERY_ADDR="${FATHOM_QUERY_ADDR:-127.0.0.1:20416}"
INGEST_ADDR="${FATHOM_INGEST_ADDR:-127.0.0.1:20033}"
PROFILE="${FATHOM_PROFILE:-release}"

bash scripts/fetch-chdb.sh
if [ "$PROFILE" = release ]; then
    cargo build --release -p fathom-server -p fathom-agent -p fathomctl
else
    cargo build -p fathom-server -p fathom-agent -p fathomctl
fi
BIN="$CARGO_TARGET_DIR/$PROFILE"
mkdir -p "$DATA"

pids=()
stop() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop EXIT INT TERM

FATHOM_SERVER_STORE__DATA_DIR="$DATA/store" \
FATHOM_SERVER_INGEST__DATA_DIR="$DATA/server" \
FATHOM_SERVER_INGEST__LISTEN="$INGEST_ADDR" \
FATHOM_SERVER_QUERY__LISTEN="$QUERY_ADDR" \
    "$BIN/fathom-server" run >"$DATA/server.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 100); do
    curl -sf "http://$QUERY_ADDR/v1/health" >/dev/null 2>&1 && break
    if ! kill -0 "${pids[0]}" 2>/dev/null; then
        echo "fathom-server exited; see $DATA/server.log:" >&2
        tail -20 "$DATA/server.log" >&2
        exit 1
    fi
    sleep 0.2
done

# The agent's own connection to the server is not captured (no feedback loop).
FATHOM_AGENT_OUTPUT__FORMAT=server \
FATHOM_AGENT_SENDER__SERVER="$INGEST_ADDR" \
FATHOM_AGENT_SENDER__SPOOL_DIR="$DATA/agent-spool" \
FATHOM_AGENT_CAPTURE__EXCLUDE_PORTS="[${INGEST_ADDR##*:}]" \
    "$BIN/fathom-agent" run >"$DATA/agent.log" 2>&1 &
pids+=($!)

cat <<EOM
fathom is running (logs in $DATA).
  query API:  http://$QUERY_ADDR/v1/query   (POST {"db": "flow_log", "sql": "..."})
  try:        $BIN/fathomctl --query-url http://$QUERY_ADDR query "SELECT l7_protocol, request_type, endpoint, response_code, Count(*) AS calls FROM l7_flow_log GROUP BY l7_protocol, request_type, endpoint, response_code ORDER BY calls DESC LIMIT 20"
Ctrl-C stops the agent and the server.
EOM
wait -n "${pids[@]}"
