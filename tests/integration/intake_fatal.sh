#!/usr/bin/env bash
# Issue 14, defect 9: the error convention holds at the intake's edge. A
# broken random source (OpenSSL's RAND_bytes failing, injected with
# tests/preload/fail_random.so) is ERRC_FATAL: the start answers 500 (never
# the 400 of a bad request, which told the user their request was wrong),
# the intake logs intake_fatal_error and exits with code 3 (a supervisor
# restarts it), and it never hands out a flow it could not secure. Before
# the failure the same start answers 302.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${OAUTHQ_BUILD:-build}
tmp=$(mktemp -d /tmp/oauthq-itest-intakefatal-XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
export OAUTHQ_KAFKA_BOOTSTRAP=${OAUTHQ_KAFKA_BOOTSTRAP:-127.0.0.1:9092}
export OAUTHQ_TOPIC_PREFIX=itest-intakefatal-$$-$(date +%s).
export OAUTHQ_LISTEN=127.0.0.1:$port OAUTHQ_PUBLIC_URL=http://127.0.0.1:$port
export OAUTHQ_DATA_DIR=$tmp/data OAUTHQ_LOG_FORMAT=text OAUTHQ_OPEN_START=1
secret() { head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }
secret >"$tmp/sim_secret"
printf '{"active":"k1","keys":{"k1":"%s"}}\n' "$(secret)" >"$tmp/state_keys.json"
export OAUTHQ_STATE_KEY_FILE=$tmp/state_keys.json
jq -n --arg sf "$tmp/sim_secret" '{providers: [{
    name: "sim", profile: "sim", authorize_url: "http://127.0.0.1:9/oauth/authorize",
    token_url: "http://127.0.0.1:9/oauth/token", client_id: "ca_f", client_secret_file: $sf,
    scope: "read_write", pkce: true, token_auth: "client_secret_post", code_ttl_s: 300,
    issuer: null}]}' >"$tmp/providers.json"
export OAUTHQ_PROVIDERS_FILE=$tmp/providers.json
intake=""
cleanup() {
    local rc=$?
    [ -n "$intake" ] && kill -TERM "$intake" 2>/dev/null || true
    [ $rc -ne 0 ] && tail -n 30 "$tmp/intake.log"
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
[ -f "$BUILD/tests/fail_random.so" ] || fail "$BUILD/tests/fail_random.so missing (make tests)"

"$BUILD/oauthqctl" topics create >/dev/null
OAUTHQ_TEST_FAIL_RANDOM_FILE=$tmp/break-random LD_PRELOAD=$BUILD/tests/fail_random.so \
    "$BUILD/oauthq-intake" >"$tmp/intake.log" 2>&1 &
intake=$!
for _ in $(seq 1 120); do
    curl -fsS "$OAUTHQ_PUBLIC_URL/readyz" >/dev/null 2>&1 && break
    sleep 0.5
done
curl -fsS "$OAUTHQ_PUBLIC_URL/readyz" >/dev/null || fail "intake not ready"
start() { curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/json' \
    "$OAUTHQ_PUBLIC_URL/oauth/start?provider=sim"; }
code=$(start)
[ "$code" = 302 ] || fail "start with a working random source: $code, expected 302"
touch "$tmp/break-random"
code=$(start)
[ "$code" = 500 ] || fail "start with a broken random source: $code, expected 500 (fatal, not a bad request)"
rc=0
for _ in $(seq 1 40); do
    kill -0 "$intake" 2>/dev/null || break
    sleep 0.25
done
if kill -0 "$intake" 2>/dev/null; then fail "intake still running 10 s after a fatal error"; fi
wait "$intake" || rc=$?
intake=""
[ "$rc" = 3 ] || fail "intake exit code $rc after a fatal error, expected 3"
grep -q intake_fatal_error "$tmp/intake.log" || fail "no intake_fatal_error log line"
echo "broken random source: 500, intake_fatal_error logged, exit 3"
