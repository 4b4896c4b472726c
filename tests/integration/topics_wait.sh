#!/usr/bin/env bash
# Issue 14, defect 11: processes wait (bounded, logged) for their topics at
# start instead of dying, and `oauthqctl topics create` returns only once
# the topics are in metadata answers.
#  1. The worker, the intake and oauthq-webhooks are started BEFORE their
#     topics exist (before the fix each exited at once: "topic ... does not
#     exist"). Each logs waiting_for_topic; the topics are created 3 s later;
#     each then becomes ready and logs topic_visible, and a real flow through
#     the simulator ends `connected`.
#  2. A process whose topics never appear exits non-zero after the bound
#     (here the worker with a prefix nobody creates; the bound is
#     KAFKA_TOPIC_WAIT_MS = 30 s), naming the way out.
#  3. Right after `topics create` returns, a metadata query of a new topic
#     lists every partition with a leader (kcat -L), and no process prints
#     libmicrohttpd's "thread pool size is ignored" warning.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${OAUTHQ_BUILD:-build}
tmp=$(mktemp -d /tmp/oauthq-itest-topicswait-XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
sim_port=$(free_port)
wm_port=$(free_port)
wh_port=$(free_port)
export OAUTHQ_KAFKA_BOOTSTRAP=${OAUTHQ_KAFKA_BOOTSTRAP:-127.0.0.1:9092}
prefix=itest-topicswait-$$-$(date +%s)
export OAUTHQ_TOPIC_PREFIX=$prefix.
export OAUTHQ_LISTEN=127.0.0.1:$port OAUTHQ_PUBLIC_URL=http://127.0.0.1:$port
export OAUTHQ_WORKER_LISTEN=127.0.0.1:$wm_port OAUTHQ_DATA_DIR=$tmp/data OAUTHQ_LOG_FORMAT=text
export OAUTHQ_WEBHOOK_LISTEN=127.0.0.1:$wh_port OAUTHQ_WEBHOOK_URL=http://127.0.0.1:9/unused
secret() { head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }
secret >"$tmp/sim_secret"
echo "whsec_$(head -c 32 /dev/urandom | base64)" >"$tmp/webhook_secrets"
export OAUTHQ_WEBHOOK_SECRET_FILE=$tmp/webhook_secrets
printf '{"active":"k1","keys":{"k1":"%s"}}\n' "$(secret)" >"$tmp/state_keys.json"
printf '{"active":"d1","keys":{"d1":"%s"}}\n' "$(secret)" >"$tmp/data_keys.json"
export OAUTHQ_STATE_KEY_FILE=$tmp/state_keys.json OAUTHQ_DATA_KEYS_FILE=$tmp/data_keys.json
jq -n --arg sim "http://127.0.0.1:$sim_port" --arg sf "$tmp/sim_secret" '{providers: [{
    name: "sim", profile: "sim", authorize_url: ($sim + "/oauth/authorize"),
    token_url: ($sim + "/oauth/token"), client_id: "ca_tw", client_secret_file: $sf,
    scope: "read_write", pkce: true, token_auth: "client_secret_post", code_ttl_s: 300,
    issuer: null}]}' >"$tmp/providers.json"
export OAUTHQ_PROVIDERS_FILE=$tmp/providers.json OAUTHQ_OPEN_START=1

pids=()
cleanup() {
    local rc=$?
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    if [ $rc -ne 0 ]; then
        for f in "$tmp"/*.log; do echo "--- $f"; tail -n 30 "$f"; done
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
alive() { kill -0 "$1" 2>/dev/null; }

"$BUILD/oauthq-provider-sim" --listen "127.0.0.1:$sim_port" --client-id ca_tw \
    --client-secret-file "$tmp/sim_secret" --redirect-uri "$OAUTHQ_PUBLIC_URL/oauth/callback" \
    >"$tmp/sim.log" 2>&1 &
pids+=($!)

# 1. Started before their topics exist.
"$BUILD/oauthq-worker" >"$tmp/worker.log" 2>&1 &
worker=$!
pids+=($worker)
"$BUILD/oauthq-intake" >"$tmp/intake.log" 2>&1 &
intake=$!
pids+=($intake)
"$BUILD/oauthq-webhooks" >"$tmp/webhooks.log" 2>&1 &
webhooks=$!
pids+=($webhooks)
for name in worker intake webhooks; do
    for _ in $(seq 1 40); do
        grep -q waiting_for_topic "$tmp/$name.log" && break
        sleep 0.25
    done
    grep -q waiting_for_topic "$tmp/$name.log" || fail "$name did not log waiting_for_topic"
done
sleep 3
for pid in $worker $intake $webhooks; do alive "$pid" || fail "pid $pid died while its topics were missing"; done
"$BUILD/oauthqctl" topics create >"$tmp/create.log" 2>&1 || fail "topics create failed"

# 3. Visible the moment create returned: every partition has a leader.
md=$(timeout 20 kcat -b "$OAUTHQ_KAFKA_BOOTSTRAP" -L -J -t "$prefix.status")
jq -e '.topics[0].partitions | length > 0 and all(.leader >= 0)' <<<"$md" >/dev/null ||
    fail "status topic not fully visible right after topics create: $md"

for _ in $(seq 1 120); do
    curl -fsS "$OAUTHQ_PUBLIC_URL/readyz" >/dev/null 2>&1 &&
        curl -fsS "http://127.0.0.1:$wm_port/readyz" >/dev/null 2>&1 &&
        curl -fsS "http://127.0.0.1:$wh_port/readyz" >/dev/null 2>&1 && break
    sleep 0.5
done
curl -fsS "$OAUTHQ_PUBLIC_URL/readyz" >/dev/null || fail "intake not ready after the topics appeared"
curl -fsS "http://127.0.0.1:$wm_port/readyz" >/dev/null || fail "worker not ready after the topics appeared"
curl -fsS "http://127.0.0.1:$wh_port/readyz" >/dev/null || fail "webhooks not ready after the topics appeared"
for name in worker intake webhooks; do
    grep -q topic_visible "$tmp/$name.log" || fail "$name did not log topic_visible"
done
jar=$tmp/jar
authorize=$(curl -fsS -c "$jar" -o /dev/null -w '%{redirect_url}' "$OAUTHQ_PUBLIC_URL/oauth/start?provider=sim")
callback=$(curl -fsS -o /dev/null -w '%{redirect_url}' "$authorize")
page=$(curl -fsS -b "$jar" -o /dev/null -w '%{redirect_url}' "$callback")
id=${page##*/connect/}
final=""
for _ in $(seq 1 80); do
    final=$(curl -fsS "$OAUTHQ_PUBLIC_URL/v1/connections/$id" | jq -r .status)
    [ "$final" = connected ] && break
    sleep 0.25
done
[ "$final" = connected ] || fail "flow after late topics: status '$final', expected connected"
if grep -h "thread pool size" "$tmp"/*.log; then fail "libmicrohttpd warned about the thread pool"; fi
echo "started before their topics: waited, became ready, flow connected ($id)"

# 2. Topics that never appear: bounded, then a clear exit.
start=$(date +%s)
rc=0
OAUTHQ_TOPIC_PREFIX=$prefix-never. OAUTHQ_WORKER_LISTEN=127.0.0.1:0 OAUTHQ_DATA_DIR=$tmp/data2 \
    timeout 90 "$BUILD/oauthq-worker" >"$tmp/worker-never.log" 2>&1 || rc=$?
took=$(($(date +%s) - start))
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "worker without topics: exit $rc (expected a non-zero exit of its own)"
[ "$took" -ge 25 ] || fail "worker without topics gave up after ${took}s, before the 30 s bound"
grep -q "oauthqctl topics create" "$tmp/worker-never.log" || fail "the exit does not name the way out"
echo "topics that never appear: exit $rc after ${took}s, naming oauthqctl topics create"
