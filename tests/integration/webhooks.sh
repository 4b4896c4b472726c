#!/usr/bin/env bash
# The webhook dispatcher end to end (SPEC §4b) on the real broker: real
# flows through the simulator, worker and intake produce final statuses;
# oauthq-webhooks POSTs them to a node receiver that verifies every
# signature with the independent `standardwebhooks` npm package (with both
# rotated secrets, and a wrong secret must fail).
#  1. The receiver fails every delivery; the dispatcher retries, is killed
#     with -9 mid-way, restarts and resumes the persisted schedule
#     (attempts keep counting).
#  2. The receiver turns healthy: every event is acknowledged (2xx) exactly
#     once, in version order per connection (connected before
#     disconnected), webhook-id = <id>_v<version>.
#  3. Once the 2xx are committed, another kill -9 and restart re-sends none;
#     a 307 is a failed attempt, never followed.
#  4. A 410 receiver: the dispatcher stops delivering (also other
#     connections' events), exposes oauthq_webhooks_endpoint_gone 1; after
#     `oauthqctl webhooks replay --all` the held events are delivered.
#  4b. A second dispatcher joins the group and leaves: every event still
#     acknowledged exactly once.
#  5. Every webhooks-topic record validates against schemas/webhook.v1.json,
#     every body against the OpenAPI WebhookEvent.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${OAUTHQ_BUILD:-build}
tmp=$(mktemp -d /tmp/oauthq-itest-webhooks-XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
sim_port=$(free_port)
recv_port=$(free_port)
wh_port=$(free_port)
export OAUTHQ_KAFKA_BOOTSTRAP=${OAUTHQ_KAFKA_BOOTSTRAP:-127.0.0.1:9092}
export OAUTHQ_TOPIC_PREFIX=itest-webhooks-$$-$(date +%s).
export OAUTHQ_LISTEN=127.0.0.1:$port OAUTHQ_PUBLIC_URL=http://127.0.0.1:$port
export OAUTHQ_WORKER_LISTEN=127.0.0.1:0 OAUTHQ_DATA_DIR=$tmp/data OAUTHQ_LOG_FORMAT=text
secret() { head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }
secret >"$tmp/sim_secret"
printf '{"active":"k1","keys":{"k1":"%s"}}\n' "$(secret)" >"$tmp/state_keys.json"
printf '{"active":"d1","keys":{"d1":"%s"}}\n' "$(secret)" >"$tmp/data_keys.json"
export OAUTHQ_STATE_KEY_FILE=$tmp/state_keys.json OAUTHQ_DATA_KEYS_FILE=$tmp/data_keys.json
jq -n --arg sim "http://127.0.0.1:$sim_port" --arg sf "$tmp/sim_secret" '{providers: [{
    name: "sim", profile: "sim", authorize_url: ($sim + "/oauth/authorize"),
    token_url: ($sim + "/oauth/token"), deauthorize_url: ($sim + "/oauth/deauthorize"),
    client_id: "ca_wh", client_secret_file: $sf, scope: "read_write", pkce: true,
    token_auth: "client_secret_post", code_ttl_s: 300, issuer: null}]}' >"$tmp/providers.json"
export OAUTHQ_PROVIDERS_FILE=$tmp/providers.json
# Two secrets in rotation: every delivery carries two v1 signatures.
{
    echo "# rotation: the new secret first"
    echo "whsec_$(head -c 32 /dev/urandom | base64)"
    echo "whsec_$(head -c 24 /dev/urandom | base64)"
} >"$tmp/webhook_secrets"
export OAUTHQ_WEBHOOK_URL=http://127.0.0.1:$recv_port/hooks/oauthq
export OAUTHQ_WEBHOOK_SECRET_FILE=$tmp/webhook_secrets
export OAUTHQ_WEBHOOK_LISTEN=127.0.0.1:$wh_port
export OAUTHQ_WEBHOOK_RETRY_BASE_MS=200 OAUTHQ_WEBHOOK_RETRY_CAP_S=1 OAUTHQ_WEBHOOK_COMMIT_MS=50
export OAUTHQ_WEBHOOK_TIMEOUT_MS=3000
export OAUTHQ_OPEN_START=1 # flows start in the browser here (no connect session)

pids=()
dispatcher=""
cleanup() {
    local rc=$?
    [ -n "$dispatcher" ] && kill -TERM "$dispatcher" 2>/dev/null || true
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    if [ $rc -ne 0 ]; then
        for f in "$tmp"/*.log; do echo "--- $f"; tail -n 40 "$f"; done
    fi
    [ -n "${KEEP_TMP:-}" ] && cp -r "$tmp" /tmp/wh-keep; rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*" >&2
    exit 1
}

"$BUILD/oauthqctl" topics create >/dev/null
"$BUILD/oauthq-provider-sim" --listen "127.0.0.1:$sim_port" --client-id ca_wh \
    --client-secret-file "$tmp/sim_secret" --redirect-uri "$OAUTHQ_PUBLIC_URL/oauth/callback" \
    >"$tmp/sim.log" 2>&1 &
pids+=($!)
"$BUILD/oauthq-worker" >"$tmp/worker.log" 2>&1 &
pids+=($!)
"$BUILD/oauthq-intake" >"$tmp/intake.log" 2>&1 &
pids+=($!)
node tests/tools/webhook-receiver.mjs "$recv_port" "$tmp/webhook_secrets" fail:1000000 \
    >"$tmp/receiver.log" 2>&1 &
pids+=($!)
start_dispatcher() {
    "$BUILD/oauthq-webhooks" >>"$tmp/webhooks.log" 2>&1 &
    dispatcher=$!
}
start_dispatcher
for _ in $(seq 1 120); do
    curl -fsS "$OAUTHQ_PUBLIC_URL/readyz" >/dev/null 2>&1 &&
        curl -fsS "http://127.0.0.1:$recv_port/_log" >/dev/null 2>&1 && break
    sleep 0.5
done
curl -fsS "$OAUTHQ_PUBLIC_URL/readyz" >/dev/null || fail "intake not ready"

connect() { # → connection id, once the status is connected
    local jar=$tmp/jar.$RANDOM authorize callback page id st
    authorize=$(curl -fsS -c "$jar" -o /dev/null -w '%{redirect_url}' "$OAUTHQ_PUBLIC_URL/oauth/start?provider=sim")
    callback=$(curl -fsS -o /dev/null -w '%{redirect_url}' "$authorize")
    page=$(curl -fsS -b "$jar" -o /dev/null -w '%{redirect_url}' "$callback")
    id=${page##*/connect/}
    for _ in $(seq 1 60); do
        st=$(curl -fsS "$OAUTHQ_PUBLIC_URL/v1/connections/$id" | jq -r .status)
        [ "$st" = connected ] && break
        sleep 0.25
    done
    [ "$st" = connected ] || fail "connection $id is $st"
    echo "$id"
}
wait_status() { # id status
    local st=""
    for _ in $(seq 1 80); do
        st=$(curl -fsS "$OAUTHQ_PUBLIC_URL/v1/connections/$1" | jq -r .status)
        [ "$st" = "$2" ] && return 0
        sleep 0.25
    done
    fail "connection $1 is $st, expected $2"
}
rlog() { curl -fsS "http://127.0.0.1:$recv_port/_log"; }
version_of() { curl -fsS "$OAUTHQ_PUBLIC_URL/v1/connections/$1" | jq -r .version; }

# ---- 1. failing receiver, retries, kill -9 mid-way ----------------------
ids=()
for _ in 1 2 3; do ids+=("$(connect)"); done
"$BUILD/oauthqctl" disconnect "${ids[0]}" "${ids[1]}" >/dev/null
wait_status "${ids[0]}" disconnected
wait_status "${ids[1]}" disconnected
expected=()
for id in "${ids[@]}"; do
    # The connected event's version: the one before any disconnect.
    v=$(rlog | jq -r --arg id "$id" '[.[] | select(.connection_id == $id and .type == "connection.connected")][0].version // empty')
    expected+=("$id")
done
for _ in $(seq 1 80); do
    n=$(rlog | jq '[.[] | select(.answered == 503)] | length')
    [ "$n" -ge 6 ] && break
    sleep 0.25
done
[ "$n" -ge 6 ] || fail "only $n failed attempts reached the receiver"
kill -9 "$dispatcher"
wait "$dispatcher" 2>/dev/null || true
before=$(rlog | jq length)
# The schedule is in Kafka: attempts were persisted.
persisted=$("$BUILD/oauthqctl" webhooks list --json | jq '[.connections[].pending[].attempts] | max')
[ "$persisted" -ge 1 ] || fail "no attempt was persisted (max attempts $persisted)"
queued=$("$BUILD/oauthqctl" webhooks list --json | jq '[.connections[].pending[]] | length')
[ "$queued" = 5 ] || fail "$queued events queued, expected 5 (3 connected + 2 disconnected)"
echo "retries persisted across kill -9: $before attempts, up to $persisted per event, 5 queued"

# ---- 2. healthy receiver: each event acknowledged once, in order ---------
curl -fsS -X POST -d '{"mode":"ok"}' "http://127.0.0.1:$recv_port/_mode" >/dev/null
start_dispatcher
for _ in $(seq 1 120); do
    acked=$(rlog | jq '[.[] | select(.answered == 204)] | length')
    [ "$acked" -ge 5 ] && break
    sleep 0.25
done
[ "$acked" -ge 5 ] || fail "only $acked of 5 events acknowledged"
# Committed (the dispatcher records each 2xx within a commit interval).
for _ in $(seq 1 40); do
    left=$("$BUILD/oauthqctl" webhooks list --json | jq '[.connections[].pending[]] | length')
    [ "$left" = 0 ] && break
    sleep 0.25
done
[ "$left" = 0 ] || fail "$left events still pending after delivery"

# ---- 3. kill -9 after the 2xx committed: nothing is sent again ----------
kill -9 "$dispatcher"
wait "$dispatcher" 2>/dev/null || true
start_dispatcher
for _ in $(seq 1 60); do
    curl -fsS "http://127.0.0.1:$wh_port/readyz" >/dev/null 2>&1 && break
    sleep 0.25
done
sleep 2
check_log() {
    rlog >"$tmp/received.json"
    node -e '
const log = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const ids = process.argv.slice(2);
const fail = (m) => { console.error("FAIL: " + m); process.exit(1); };
for (const e of log) {
  if (!e.verified || !e.verified_all) fail(`signature did not verify with every secret: ${e.webhook_id}`);
  if (!e.wrong_secret_rejected) fail(`a wrong secret verified ${e.webhook_id}`);
  if (e.signatures !== 2) fail(`${e.signatures} signatures, expected 2 (rotation)`);
  if (e.content_type !== "application/json") fail(`content-type ${e.content_type}`);
  if (e.webhook_id !== `${e.connection_id}_v${e.version}`) fail(`webhook-id ${e.webhook_id}`);
  if (e.data.status !== e.type.replace("connection.", "")) fail(`type ${e.type} for ${e.data.status}`);
}
for (const [i, id] of ids.entries()) {
  const mine = log.filter((e) => e.connection_id === id);
  const acked = mine.filter((e) => e.answered === 204);
  const want = i < 2 ? ["connection.connected", "connection.disconnected"] : ["connection.connected"];
  const got = acked.map((e) => e.type);
  if (JSON.stringify(got) !== JSON.stringify(want)) fail(`${id}: acknowledged ${got}, expected ${want} exactly once each`);
  for (let k = 1; k < mine.length; k++)
    if (mine[k].version < mine[k - 1].version) fail(`${id}: version ${mine[k].version} sent after ${mine[k - 1].version}`);
  // The next event waited until the previous was acknowledged.
  const firstDisc = mine.findIndex((e) => e.type === "connection.disconnected");
  const conAck = mine.findIndex((e) => e.type === "connection.connected" && e.answered === 204);
  if (firstDisc >= 0 && firstDisc < conAck) fail(`${id}: disconnected sent before connected was acknowledged`);
}
const acks = {};
for (const e of log.filter((x) => x.answered === 204)) {
  acks[e.webhook_id] = (acks[e.webhook_id] || 0) + 1;
  if (acks[e.webhook_id] > 1) fail(`${e.webhook_id} acknowledged twice`);
}
console.log(`checked ${log.length} deliveries: all verified with both secrets (standardwebhooks), wrong secret rejected, each event acknowledged once, in version order`);
' "$tmp/received.json" "$@"
}
check_log "${ids[@]}"

# ---- 3b. redirects are not followed: a 307 is a failed attempt ----------
curl -fsS -X POST -d '{"mode":"redirect"}' "http://127.0.0.1:$recv_port/_mode" >/dev/null
r1=$(connect)
for _ in $(seq 1 60); do
    n=$(rlog | jq --arg id "$r1" '[.[] | select(.connection_id == $id and .answered == 307)] | length')
    [ "$n" -ge 2 ] && break
    sleep 0.25
done
[ "$n" -ge 2 ] || fail "$n redirected attempts, expected a retry after a 307"
[ "$(rlog | jq '[.[] | select(.followed)] | length')" = 0 ] || fail "a redirect was followed"
curl -fsS -X POST -d '{"mode":"ok"}' "http://127.0.0.1:$recv_port/_mode" >/dev/null
for _ in $(seq 1 60); do
    n=$(rlog | jq --arg id "$r1" '[.[] | select(.connection_id == $id and .answered == 204)] | length')
    [ "$n" = 1 ] && break
    sleep 0.25
done
[ "$n" = 1 ] || fail "the redirected event was not delivered once the endpoint answered"
echo "307 not followed: retried, then delivered"

# ---- 4. 410: stop everything until an operator replays -----------------
curl -fsS -X POST -d '{"mode":"gone"}' "http://127.0.0.1:$recv_port/_mode" >/dev/null
before=$(rlog | jq length)
g1=$(connect)
for _ in $(seq 1 60); do
    n=$(rlog | jq '[.[] | select(.answered == 410)] | length')
    [ "$n" -ge 1 ] && break
    sleep 0.25
done
[ "$n" = 1 ] || fail "$n deliveries answered 410, expected 1"
g2=$(connect)
sleep 3
after=$(rlog | jq length)
[ "$after" = $((before + 1)) ] || fail "deliveries went on after a 410 ($before → $after)"
gone=$(curl -fsS "http://127.0.0.1:$wh_port/metrics" | awk '/^oauthq_webhooks_endpoint_gone/ {print $2}')
[ "$gone" = 1 ] || fail "oauthq_webhooks_endpoint_gone is '$gone', expected 1"
state=$("$BUILD/oauthqctl" webhooks list "$g1" --json | jq -r '.connections[0].pending[0].state')
[ "$state" = gone ] || fail "held event state '$state', expected gone"
curl -fsS -X POST -d '{"mode":"ok"}' "http://127.0.0.1:$recv_port/_mode" >/dev/null
"$BUILD/oauthqctl" webhooks replay --all >/dev/null
for _ in $(seq 1 80); do
    n=$(rlog | jq --arg a "$g1" --arg b "$g2" '[.[] | select(.answered == 204 and (.connection_id == $a or .connection_id == $b))] | length')
    [ "$n" -ge 2 ] && break
    sleep 0.25
done
[ "$n" = 2 ] || fail "$n of 2 held events delivered after the replay"
check_log "${ids[@]}"
curl -fsS "http://127.0.0.1:$wh_port/metrics" >"$tmp/metrics.txt"
grep -q '^oauthq_webhooks_deliveries_total{outcome="delivered"}' "$tmp/metrics.txt" || fail "no deliveries metric"
grep -q '^oauthq_webhooks_attempts_total{result="410"} 1' "$tmp/metrics.txt" || fail "410 attempt not counted"
grep -q '^oauthq_webhooks_oldest_undelivered_seconds' "$tmp/metrics.txt" || fail "no oldest-age metric"
echo "410 stopped every delivery until oauthqctl webhooks replay --all; then delivered"

# ---- 4b. a second dispatcher: the group shares the partitions -----------
OAUTHQ_DATA_DIR=$tmp/data2 OAUTHQ_WEBHOOK_LISTEN=127.0.0.1:0 "$BUILD/oauthq-webhooks" \
    >"$tmp/webhooks2.log" 2>&1 &
second=$!
for _ in $(seq 1 60); do
    grep -q partitions_assigned "$tmp/webhooks2.log" && break
    sleep 0.25
done
grep -q partitions_assigned "$tmp/webhooks2.log" || fail "the second dispatcher got no partitions"
more=()
for _ in 1 2 3 4; do more+=("$(connect)"); done
for _ in $(seq 1 80); do
    n=$(rlog | jq --argjson ids "$(printf '%s\n' "${more[@]}" | jq -R . | jq -s .)" \
        '[.[] | select(.answered == 204 and (.connection_id as $c | $ids | index($c)))] | length')
    [ "$n" -ge 4 ] && break
    sleep 0.25
done
[ "$n" = 4 ] || fail "$n of 4 events delivered with two dispatchers"
kill -TERM "$second"
wait "$second" || fail "the second dispatcher exited non-zero on SIGTERM"
last=$(connect)
for _ in $(seq 1 80); do
    n=$(rlog | jq --arg id "$last" '[.[] | select(.answered == 204 and .connection_id == $id)] | length')
    [ "$n" = 1 ] && break
    sleep 0.25
done
[ "$n" = 1 ] || fail "no delivery after the second dispatcher left"
check_log "${ids[@]}"
echo "two dispatchers in one group, then one again: every event acknowledged once"

# ---- 5. records validate against the schema ------------------------------
timeout 60 kcat -C -b "$OAUTHQ_KAFKA_BOOTSTRAP" -X isolation.level=read_committed -t "${OAUTHQ_TOPIC_PREFIX}webhooks" -e -q -J |
    jq -c 'select(.payload != null and (.key | startswith("replay/") | not)) | .payload | fromjson' >"$tmp/webhook-records.jsonl"
node tests/tools/validate-records.mjs schemas/webhook.v1.json "$tmp/webhook-records.jsonl" --min 10
# The bodies the receiver got match the OpenAPI WebhookEvent.
rlog | jq -c '.[] | .body | fromjson' >"$tmp/bodies.jsonl"
node tests/tools/validate-records.mjs 'schemas/openapi.yaml#WebhookEvent' "$tmp/bodies.jsonl" --min 10
echo '{"schema":"oauthq.webhook.v1","connection_id":"x"}' >"$tmp/bad.jsonl"
if node tests/tools/validate-records.mjs schemas/webhook.v1.json "$tmp/bad.jsonl" --min 1 >/dev/null 2>&1; then
    fail "the schema accepted an invalid record"
fi
kill -TERM "$dispatcher"
wait "$dispatcher" || fail "dispatcher exited non-zero on SIGTERM"
dispatcher=""
grep -q "whsec_" "$tmp/webhooks.log" && fail "a secret reached the log"
grep -q "receiver response body" "$tmp/webhooks.log" && fail "a response body reached the log"
echo "webhooks: 7 passed, 0 failed"
