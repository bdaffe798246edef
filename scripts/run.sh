#!/usr/bin/env bash
# One machine, one command: a fathom-server with the embedded store (ClickHouse
# in-process via chDB) plus a local agent capturing this machine's own
# traffic. Ctrl-C stops both. Needs root: the agent captures packets.
#
# Security is the same as in a real cluster: the server makes its cluster CA in
# $DATA/server/ca and writes an admin bundle (CA + admin certificate) to
# $DATA/server/admin; this script uses it with fathomctl to create a one-time
# enrollment token, and the agent enrolls with it on the control port, so the
# agent's data and control channels are mTLS too.
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
CONTROL_ADDR="${FATHOM_CONTROL_ADDR:-127.0.0.1:20035}"
PROFILE="${FATHOM_PROFILE:-release}"

bash scripts/fetch-chdb.sh
if [ -n "${FATHOM_NO_BUILD:-}" ]; then
    : # binaries built before, in $CARGO_TARGET_DIR/$PROFILE
elif [ "$PROFILE" = release ]; then
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
FATHOM_SERVER_CONTROLLER__LISTEN="$CONTROL_ADDR" \
    "$BIN/fathom-server" run >"$DATA/server.log" 2>&1 &
pids+=($!)

ADMIN="$DATA/server/admin"
# Healthy, the control port serving and the admin bundle written.
for _ in $(seq 1 300); do
    if curl -sf "http://$QUERY_ADDR/v1/health" >/dev/null 2>&1 && [ -s "$ADMIN/admin.key" ] &&
        (exec 3<>"/dev/tcp/${CONTROL_ADDR%:*}/${CONTROL_ADDR##*:}") 2>/dev/null; then
        break
    fi
    if ! kill -0 "${pids[0]}" 2>/dev/null; then
        echo "fathom-server exited; see $DATA/server.log:" >&2
        tail -20 "$DATA/server.log" >&2
        exit 1
    fi
    sleep 0.2
done

CTL=("$BIN/fathomctl" --server "$CONTROL_ADDR")
export FATHOMCTL_ADMIN_DIR="$ADMIN"
CERTS="$DATA/agent-certs"
token=(env)
if [ ! -s "$CERTS/enrollment.json" ]; then
    # A one-time token for this machine's pool (creating the topology is idempotent).
    "${CTL[@]}" region create local >/dev/null
    "${CTL[@]}" az create local-1 --region local >/dev/null
    "${CTL[@]}" pool create local --region local --az local-1 --kind vm >/dev/null
    secret=$("${CTL[@]}" token create --pool local --ttl 10m -o json |
        sed -n 's/.*"secret": *"\([^"]*\)".*/\1/p')
    if [ -z "$secret" ]; then
        echo "run.sh: could not create an enrollment token with fathomctl" >&2
        exit 1
    fi
    token+=("FATHOM_AGENT_SENDER__ENROLL_TOKEN=$secret")
fi

# The agent's own connections to the server are not captured (no feedback loop).
"${token[@]}" \
FATHOM_AGENT_OUTPUT__FORMAT=server \
FATHOM_AGENT_SENDER__SERVER="$INGEST_ADDR" \
FATHOM_AGENT_SENDER__CONTROL_ADDR="$CONTROL_ADDR" \
FATHOM_AGENT_SENDER__CA_FILE="$ADMIN/ca.pem" \
FATHOM_AGENT_SENDER__CERT_DIR="$CERTS" \
FATHOM_AGENT_SENDER__SPOOL_DIR="$DATA/agent-spool" \
FATHOM_AGENT_CAPTURE__EXCLUDE_PORTS="[${INGEST_ADDR##*:}, ${CONTROL_ADDR##*:}]" \
    "$BIN/fathom-agent" run >"$DATA/agent.log" 2>&1 &
pids+=($!)

cat <<EOM
fathom is running (logs in $DATA); every agent <-> server channel is mTLS.
  query API:  http://$QUERY_ADDR/v1/query   (POST {"db": "flow_log", "sql": "..."})
  fathomctl:  $BIN/fathomctl context set local --server $CONTROL_ADDR --query-url http://$QUERY_ADDR --ca $ADMIN/ca.pem --cert $ADMIN/admin.pem --key $ADMIN/admin.key
              $BIN/fathomctl agent list
  try:        $BIN/fathomctl --query-url http://$QUERY_ADDR query "SELECT l7_protocol, request_type, endpoint, response_code, Count(*) AS calls FROM l7_flow_log GROUP BY l7_protocol, request_type, endpoint, response_code ORDER BY calls DESC LIMIT 20"
Ctrl-C stops the agent and the server.
EOM
wait -n "${pids[@]}"
