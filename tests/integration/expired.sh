#!/usr/bin/env bash
# connection.expired end to end (SPEC §4a, §4b, §5) on the real broker: the
# real intake creates connections (POST /v1/connections with an API key,
# and the open start), which produce session.v1 records; the real worker
# keeps them awaiting their callback and, with none by the state's expiry
# (OAUTHQ_STATE_TTL_S=30) plus OAUTHQ_SESSION_EXPIRY_MARGIN_MS, makes them
# final `expired`; oauthq-webhooks delivers the signed connection.expired to
# a node receiver that verifies every signature with the independent
# `standardwebhooks` npm package.
#  1. A session without a callback and an open start without one: each gets
#     exactly one connection.expired, acknowledged once, webhook-id
#     <id>_v<version>, with the platform's metadata in data (none for the
#     open start) — across a kill -9 and restart of the worker between the
#     session and its expiry (the expiry is durable, not in memory);
#     oauthq_worker_final_total counts both expiries.
#  2. A session whose flow completes before its expiry: connection.connected
#     once, never connection.expired, still connected after the expiry. Also
#     when the worker is down from before the callback until after the
#     expiry: restarted, it handles the queued callback first.
#  3. The public status document reads expired (no metadata), the platform
#     view carries the metadata, the list filters by status=expired.
#  4. Every session.v1 record validates against schemas/session.v1.json,
#     every webhook body against the OpenAPI WebhookEvent.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${OAUTHQ_BUILD:-build}
tmp=$(mktemp -d /tmp/oauthq-itest-expired-XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
sim_port=$(free_port)
recv_port=$(free_port)
wh_port=$(free_port)
wm_port=$(free_port)
export OAUTHQ_KAFKA_BOOTSTRAP=${OAUTHQ_KAFKA_BOOTSTRAP:-127.0.0.1:9092}
export OAUTHQ_TOPIC_PREFIX=itest-expired-$$-$(date +%s).
export OAUTHQ_LISTEN=127.0.0.1:$port OAUTHQ_PUBLIC_URL=http://127.0.0.1:$port
export OAUTHQ_WORKER_LISTEN=127.0.0.1:$wm_port OAUTHQ_DATA_DIR=$tmp/data OAUTHQ_LOG_FORMAT=text
export OAUTHQ_STATE_TTL_S=30 OAUTHQ_SESSION_EXPIRY_MARGIN_MS=1000
secret() { head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }
secret >"$tmp/sim_secret"
printf '{"active":"k1","keys":{"k1":"%s"}}\n' "$(secret)" >"$tmp/state_keys.json"
printf '{"active":"d1","keys":{"d1":"%s"}}\n' "$(secret)" >"$tmp/data_keys.json"
export OAUTHQ_STATE_KEY_FILE=$tmp/state_keys.json OAUTHQ_DATA_KEYS_FILE=$tmp/data_keys.json
jq -n --arg sim "http://127.0.0.1:$sim_port" --arg sf "$tmp/sim_secret" '{providers: [{
    name: "sim", profile: "sim", authorize_url: ($sim + "/oauth/authorize"),
    token_url: ($sim + "/oauth/token"), deauthorize_url: ($sim + "/oauth/deauthorize"),
    client_id: "ca_exp", client_secret_file: $sf, scope: "read_write", pkce: true,
    token_auth: "client_secret_post", code_ttl_s: 300, issuer: null}]}' >"$tmp/providers.json"
export OAUTHQ_PROVIDERS_FILE=$tmp/providers.json
created=$("$BUILD/oauthqctl" apikey create --kid exp --json --scopes connections:write,connections:read)
(umask 077 && jq '{keys: {(.kid): .entry}}' <<<"$created" >"$tmp/api_keys.json")
printf 'Authorization: Bearer %s\n' "$(jq -r .key <<<"$created")" >"$tmp/auth_header"
chmod 600 "$tmp/auth_header"
export OAUTHQ_API_KEYS_FILE=$tmp/api_keys.json
export OAUTHQ_OPEN_START=1
echo "whsec_$(head -c 32 /dev/urandom | base64)" >"$tmp/webhook_secrets"
export OAUTHQ_WEBHOOK_URL=http://127.0.0.1:$recv_port/hooks/oauthq
export OAUTHQ_WEBHOOK_SECRET_FILE=$tmp/webhook_secrets
export OAUTHQ_WEBHOOK_LISTEN=127.0.0.1:$wh_port
export OAUTHQ_WEBHOOK_RETRY_BASE_MS=200 OAUTHQ_WEBHOOK_RETRY_CAP_S=1 OAUTHQ_WEBHOOK_COMMIT_MS=50

pids=()
worker=""
cleanup() {
    local rc=$?
    [ -n "$worker" ] && kill -TERM "$worker" 2>/dev/null || true
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    if [ $rc -ne 0 ]; then
        for f in "$tmp"/*.log; do echo "--- $f"; tail -n 40 "$f"; done
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*" >&2
    exit 1
}

"$BUILD/oauthqctl" topics create >/dev/null
"$BUILD/oauthq-provider-sim" --listen "127.0.0.1:$sim_port" --client-id ca_exp \
    --client-secret-file "$tmp/sim_secret" --redirect-uri "$OAUTHQ_PUBLIC_URL/oauth/callback" \
    >"$tmp/sim.log" 2>&1 &
pids+=($!)
start_worker() {
    "$BUILD/oauthq-worker" >>"$tmp/worker.log" 2>&1 &
    worker=$!
}
start_worker
"$BUILD/oauthq-intake" >"$tmp/intake.log" 2>&1 &
pids+=($!)
node tests/tools/webhook-receiver.mjs "$recv_port" "$tmp/webhook_secrets" ok \
    >"$tmp/receiver.log" 2>&1 &
pids+=($!)
"$BUILD/oauthq-webhooks" >"$tmp/webhooks.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do
    curl -fsS "$OAUTHQ_PUBLIC_URL/readyz" >/dev/null 2>&1 &&
        curl -fsS "http://127.0.0.1:$recv_port/_log" >/dev/null 2>&1 && break
    sleep 0.5
done
curl -fsS "$OAUTHQ_PUBLIC_URL/readyz" >/dev/null || fail "intake not ready"

create() { # end_user_id → the 201 body
    curl -fsS -H @"$tmp/auth_header" -H 'Content-Type: application/json' \
        -d "{\"provider\":\"sim\",\"end_user\":{\"id\":\"$1\"},\"tags\":{\"case\":\"$1\"}}" \
        "$OAUTHQ_PUBLIC_URL/v1/connections"
}
doc() { curl -fsS "$OAUTHQ_PUBLIC_URL/v1/connections/$1"; }
wait_doc() { # id jq-condition what
    for _ in $(seq 1 240); do
        doc "$1" | jq -e "$2" >/dev/null && return 0
        sleep 0.25
    done
    fail "connection $1 never $3: $(doc "$1")"
}
rlog() { curl -fsS "http://127.0.0.1:$recv_port/_log"; }

# ---- sessions: one abandoned, one open start abandoned, one completed ----
a=$(create u_abandoned | jq -r .id)
# The open start: the browser is sent to the provider and never comes back.
authorize=$(curl -fsS -o /dev/null -w '%{redirect_url}' "$OAUTHQ_PUBLIC_URL/oauth/start?provider=sim")
[ -n "$authorize" ] || fail "the open start did not redirect"
c_body=$(create u_completed)
c=$(jq -r .id <<<"$c_body")
jar=$tmp/jar.c
authorize_c=$(curl -fsS -c "$jar" -o /dev/null -w '%{redirect_url}' "$(jq -r .start_url <<<"$c_body")")
callback=$(curl -fsS -o /dev/null -w '%{redirect_url}' "$authorize_c")
curl -fsS -b "$jar" -o /dev/null "$callback"
wait_doc "$c" '.status == "connected"' connected
# The worker recorded the abandoned session (its own record: provider set).
wait_doc "$a" '.status == "pending" and .phase == "awaiting_callback" and .provider == "sim" and .version == 1' \
    "recorded by the worker"
# The open start's id: the only other session.v1 in the topic.
timeout 60 kcat -C -b "$OAUTHQ_KAFKA_BOOTSTRAP" -t "${OAUTHQ_TOPIC_PREFIX}callbacks" -e -q -J |
    jq -c 'select(.payload != null) | .payload | fromjson | select(.schema == "oauthq.session.v1")' \
        >"$tmp/sessions.jsonl"
b=$(jq -r --arg a "$a" --arg c "$c" 'select(.connection_id != $a and .connection_id != $c) | .connection_id' \
    "$tmp/sessions.jsonl")
[ "$(wc -w <<<"$b")" = 1 ] || fail "expected one open-start session, got '$b'"
wait_doc "$b" '.status == "pending" and .provider == "sim"' "recorded by the worker"
echo "sessions recorded: abandoned $a, open start $b, completed $c"

# The expiry is durable: a kill -9 of the worker between the session and
# its expiry loses nothing (a new worker restores it from the changelog).
kill -9 "$worker"
wait "$worker" 2>/dev/null || true
start_worker

# ---- expiry: ~30 s after creation ---------------------------------------
wait_doc "$a" '.status == "expired"' expired
wait_doc "$b" '.status == "expired"' expired
for _ in $(seq 1 80); do
    n=$(rlog | jq --arg a "$a" --arg b "$b" '[.[] | select(.answered == 204 and .type == "connection.expired" and (.connection_id == $a or .connection_id == $b))] | length')
    [ "$n" -ge 2 ] && break
    sleep 0.25
done
[ "$n" -ge 2 ] || fail "$n of 2 connection.expired webhooks acknowledged"
sleep 3 # anything sent twice would arrive by now
rlog >"$tmp/received.json"
node -e '
const log = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const [a, b, c] = process.argv.slice(2);
const fail = (m) => { console.error("FAIL: " + m); process.exit(1); };
for (const e of log) {
  if (!e.verified || !e.verified_all) fail(`signature did not verify (standardwebhooks): ${e.webhook_id}`);
  if (!e.wrong_secret_rejected) fail(`a wrong secret verified ${e.webhook_id}`);
  if (e.webhook_id !== `${e.connection_id}_v${e.version}`) fail(`webhook-id ${e.webhook_id}`);
}
const of = (id) => log.filter((e) => e.connection_id === id);
for (const [id, user] of [[a, "u_abandoned"], [b, null]]) {
  const mine = of(id);
  if (mine.length !== 1) fail(`${id}: ${mine.length} deliveries, expected exactly one (${mine.map((e) => e.type)})`);
  const e = mine[0];
  if (e.type !== "connection.expired" || e.answered !== 204) fail(`${id}: ${e.type} answered ${e.answered}`);
  if (e.data.status !== "expired" || e.data.phase !== null || e.data.reason !== null) fail(`${id}: data ${JSON.stringify(e.data)}`);
  if (e.data.provider !== "sim" || e.data.attempts !== 0) fail(`${id}: data ${JSON.stringify(e.data)}`);
  if (user === null ? e.data.end_user != null : !e.data.end_user || e.data.end_user.id !== user)
    fail(`${id}: end_user ${JSON.stringify(e.data.end_user)}, expected ${user}`);
  if (user && e.data.tags.case !== user) fail(`${id}: tags ${JSON.stringify(e.data.tags)}`);
}
const mc = of(c);
if (mc.length !== 1 || mc[0].type !== "connection.connected" || mc[0].answered !== 204)
  fail(`${c}: ${JSON.stringify(mc.map((e) => [e.type, e.answered]))}, expected one connection.connected`);
console.log(`checked ${log.length} deliveries: one connection.expired each for the abandoned flows, the completed one connected only, all verified with standardwebhooks`);
' "$tmp/received.json" "$a" "$b" "$c"
# The worker counts what it made final, the expiries included (the
# restarted worker made both; the completed flow was final before it).
finals=$(curl -fsS "http://127.0.0.1:$wm_port/metrics" | grep '^oauthq_worker_final_total{' || true)
n_exp=$(awk '/status="expired"/ {s += $NF} END {print s + 0}' <<<"$finals")
[ "$n_exp" = 2 ] || fail "oauthq_worker_final_total counts $n_exp expired, expected 2: $finals"
# The completed flow stays connected past its expiry (G3).
doc "$c" | jq -e '.status == "connected"' >/dev/null || fail "the completed connection is $(doc "$c" | jq -r .status)"

# ---- the documents ---------------------------------------------------------
doc "$a" >"$tmp/doc_a.json"
jq -e '.status == "expired" and .phase == null and .reason == null and .version == 2 and
    (.message | test("expired")) and (has("end_user") | not)' "$tmp/doc_a.json" >/dev/null ||
    fail "public document of $a: $(cat "$tmp/doc_a.json")"
curl -fsS -H @"$tmp/auth_header" "$OAUTHQ_PUBLIC_URL/v1/connections/$a" |
    jq -e '.status == "expired" and .end_user.id == "u_abandoned"' >/dev/null ||
    fail "platform view of $a"
curl -fsS -H @"$tmp/auth_header" "$OAUTHQ_PUBLIC_URL/v1/connections?status=expired" |
    jq -e --arg a "$a" --arg b "$b" '[.data[].id] | (index($a) != null and index($b) != null)' \
        >/dev/null || fail "the list of expired connections lacks $a or $b"
node tests/tools/validate-records.mjs 'schemas/openapi.yaml#StatusDocument' "$tmp/doc_a.json" --min 1
echo "documents: public expired (no metadata), platform view with metadata, listed by status=expired"

# ---- records ---------------------------------------------------------------
jq -c '.[] | .body | fromjson' "$tmp/received.json" >"$tmp/bodies.jsonl"
node tests/tools/validate-records.mjs 'schemas/openapi.yaml#WebhookEvent' "$tmp/bodies.jsonl" --min 3
node tests/tools/validate-records.mjs schemas/session.v1.json "$tmp/sessions.jsonl" --min 3
jq -c 'select(.end_user != null) | .expires_at = "later"' "$tmp/sessions.jsonl" | head -n 1 >"$tmp/bad.jsonl"
if node tests/tools/validate-records.mjs schemas/session.v1.json "$tmp/bad.jsonl" --min 1 >/dev/null 2>&1; then
    fail "the session schema accepted an invalid record"
fi

# ---- a callback queued behind a stopped worker wins over the expiry --------
# The worker is down while the user completes the flow (the intake stores
# the callback) and stays down past the session's expiry, with a backlog of
# other sessions in front of the callback. Restarted (one record per poll,
# so its due scan runs long before it reaches the callback), it must handle
# the queued callback before deciding the expiry: connected only, never
# expired first.
d_body=$(create u_late)
d=$(jq -r .id <<<"$d_body")
wait_doc "$d" '.status == "pending" and .version == 1' "recorded by the worker"
kill -9 "$worker"
wait "$worker" 2>/dev/null || true
worker=""
for i in $(seq 1 120); do backlog=$(create "u_backlog_$i" | jq -r .id); done
jar=$tmp/jar.d
authorize_d=$(curl -fsS -c "$jar" -o /dev/null -w '%{redirect_url}' "$(jq -r .start_url <<<"$d_body")")
callback=$(curl -fsS -o /dev/null -w '%{redirect_url}' "$authorize_d")
[ "$(curl -sS -b "$jar" -o /dev/null -w '%{http_code}' "$callback")" = 303 ] ||
    fail "the callback of $d was not acknowledged"
due=$(($(date -d "$(jq -r .expires_at <<<"$d_body")" +%s) + 3))
while [ "$(date +%s)" -lt "$due" ]; do sleep 1; done
OAUTHQ_WORKER_BATCH=1 "$BUILD/oauthq-worker" >>"$tmp/worker.log" 2>&1 &
worker=$!
wait_doc "$d" '.status == "connected"' connected
sleep 3
rlog | jq -e --arg d "$d" '[.[] | select(.connection_id == $d) | .type] == ["connection.connected"]' \
    >/dev/null || fail "$d got $(rlog | jq -c --arg d "$d" '[.[] | select(.connection_id == $d) | .type]'), expected connection.connected only"
# The gate opens once the worker caught up: the backlog's sessions expire.
wait_doc "$backlog" '.status == "expired"' expired
echo "a callback queued while the worker was down past the expiry: connected, never expired"

grep -q "whsec_" "$tmp"/*.log && fail "a secret reached a log"
echo "expired: 5 passed, 0 failed"
