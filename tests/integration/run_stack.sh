#!/usr/bin/env bash
# `make run` works as the README says: scripts/run-stack brings up the
# simulator, worker, intake (demo mode), webhook dispatcher and demo
# receiver on the local Kafka, a browser-like client connects through the
# simulator, the status API says connected, the receiver got the signed
# webhook, and Ctrl-C (SIGINT) stops every process it started.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${OAUTHQ_BUILD:-build}
tmp=$(mktemp -d /tmp/oauthq-itest-runstack-XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
sim_port=$(free_port)
export OAUTHQ_LISTEN=127.0.0.1:$port
export OAUTHQ_PUBLIC_URL=http://127.0.0.1:$port
export OAUTHQ_SIM_LISTEN=127.0.0.1:$sim_port
export OAUTHQ_WORKER_LISTEN=127.0.0.1:0
export OAUTHQ_WEBHOOK_LISTEN=127.0.0.1:0
recv_port=$(free_port)
export OAUTHQ_RECEIVER_LISTEN=127.0.0.1:$recv_port
export OAUTHQ_RUN_DIR=$tmp/run
export OAUTHQ_DATA_DIR=$tmp/data
export OAUTHQ_TOPIC_PREFIX=itest-runstack-$$-$(date +%s).
export BUILD

# A background job ignores SIGINT in a non-interactive shell; restore the
# default disposition so the Ctrl-C below is a real Ctrl-C.
python3 -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])' \
    scripts/run-stack >"$tmp/run-stack.out" 2>&1 &
stack=$!
cleanup() {
    kill -INT "$stack" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

for _ in $(seq 1 120); do
    grep -q "oauthq is up" "$tmp/run-stack.out" && break
    kill -0 "$stack" 2>/dev/null || { cat "$tmp/run-stack.out"; echo "run-stack exited" >&2; exit 1; }
    sleep 0.5
done
grep -q "oauthq is up: open $OAUTHQ_PUBLIC_URL/" "$tmp/run-stack.out" || {
    cat "$tmp/run-stack.out"
    echo "run-stack did not print the URL" >&2
    exit 1
}
# The demo page, then the flow a browser makes (cookies kept).
# (Body captured first: `curl | grep -q` fails under pipefail when grep
# closes the pipe early.)
demo=$(curl -fsS "$OAUTHQ_PUBLIC_URL/")
grep -q "Connect (simulated provider)" <<<"$demo"
jar=$tmp/jar
authorize=$(curl -fsS -c "$jar" -o /dev/null -w '%{redirect_url}' "$OAUTHQ_PUBLIC_URL/oauth/start?provider=sim")
callback=$(curl -fsS -o /dev/null -w '%{redirect_url}' "$authorize")
status_page=$(curl -fsS -b "$jar" -o /dev/null -w '%{redirect_url}' "$callback")
id=${status_page##*/connect/}
final=""
for _ in $(seq 1 60); do
    final=$(curl -fsS "$OAUTHQ_PUBLIC_URL/v1/connections/$id" | jq -r .status)
    [ "$final" = connected ] && break
    sleep 0.5
done
[ "$final" = connected ] || { echo "status is '$final', expected connected" >&2; exit 1; }
page=$(curl -fsS "$OAUTHQ_PUBLIC_URL/connect/$id")
grep -q "<script>" <<<"$page"
echo "flow through make run: connected ($id)"
# The demo receiver got the signed connection.connected webhook.
got=""
for _ in $(seq 1 60); do
    got=$(curl -fsS "http://127.0.0.1:$recv_port/_log" |
        jq -r --arg id "$id" '.[] | select(.connection_id == $id and .verified and .answered == 204) | .type')
    [ "$got" = connection.connected ] && break
    sleep 0.5
done
[ "$got" = connection.connected ] || { echo "no verified connection.connected webhook for $id" >&2; exit 1; }
grep -q "Signed webhooks, verified with standardwebhooks: http://127.0.0.1:$recv_port/" "$tmp/run-stack.out"
echo "webhook through make run: connection.connected delivered and verified"

# The demo's generated API key works for the platform calls; no key is 401.
key=$(cat "$OAUTHQ_RUN_DIR/api_key")
code=$(curl -sS -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    -d '{"provider":"sim"}' "$OAUTHQ_PUBLIC_URL/v1/connections")
[ "$code" = 401 ] || { echo "POST /v1/connections without a key answered $code" >&2; exit 1; }
# The platform integration of the README: a session for a user, its
# start_url in a browser (cookies kept), then the user's list.
session=$(curl -fsS -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer $key" \
    -d '{"provider":"sim","end_user":{"id":"usr_readme"}}' "$OAUTHQ_PUBLIC_URL/v1/connections")
start_url=$(jq -r .start_url <<<"$session")
sid=$(jq -r .id <<<"$session")
jar2=$tmp/jar2
authorize=$(curl -fsS -c "$jar2" -o /dev/null -w '%{redirect_url}' "$start_url")
callback=$(curl -fsS -o /dev/null -w '%{redirect_url}' "$authorize")
curl -fsS -b "$jar2" -o /dev/null "$callback"
listed=""
for _ in $(seq 1 60); do
    listed=$(curl -fsS -H "Authorization: Bearer $key" \
        "$OAUTHQ_PUBLIC_URL/v1/connections?end_user_id=usr_readme&status=connected" |
        jq -r '.data[].id')
    [ "$listed" = "$sid" ] && break
    sleep 0.5
done
[ "$listed" = "$sid" ] || { echo "the user's list shows '$listed', expected $sid" >&2; exit 1; }
echo "platform session through make run: connected and listed ($sid)"

# Ctrl-C stops everything it started (the pids it printed).
pids=$(sed -n 's/^started [a-z-]* (pid \([0-9]*\),.*/\1/p' "$tmp/run-stack.out")
[ -n "$pids" ]
kill -INT "$stack"
for _ in $(seq 1 60); do
    kill -0 "$stack" 2>/dev/null || break
    sleep 0.5
done
! kill -0 "$stack" 2>/dev/null || { echo "run-stack still running after SIGINT" >&2; exit 1; }
for pid in $pids; do
    ! kill -0 "$pid" 2>/dev/null || { echo "pid $pid survived Ctrl-C" >&2; exit 1; }
done
grep -q "^stopped" "$tmp/run-stack.out"
echo "run-stack: 1 passed, 0 failed"
