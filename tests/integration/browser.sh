#!/usr/bin/env bash
# tests/integration/browser.sh — the browser end-to-end test: starts a
# private stack (provider simulator, topics under a unique prefix, worker,
# intake with the demo page) on free loopback ports against the running
# Kafka, then drives Debian's Chromium through it with playwright-core
# (tests/browser/e2e.mjs). Screenshots land in $SCREENSHOT_DIR
# (build/screenshots). Everything started here is stopped by pid on exit.
#
# Run from the repository root (scripts/run-tests does) with OAUTHQ_BUILD
# naming the build directory (default build). OAUTHQ_KEEP_TEST_LOGS=1 keeps
# the temporary directory with the services' logs.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
build=${OAUTHQ_BUILD:-build}
case $build in /*) ;; *) build=$root/$build ;; esac
export SCREENSHOT_DIR=${SCREENSHOT_DIR:-build/screenshots}
chromium=${CHROMIUM:-/usr/bin/chromium}

for bin in oauthq-provider-sim oauthqctl oauthq-worker oauthq-intake; do
    [ -x "$build/$bin" ] || { echo "browser: $build/$bin is not built" >&2; exit 1; }
done
[ -x "$chromium" ] || { echo "browser: $chromium is missing (scripts/setup installs it)" >&2; exit 1; }
[ -d tests/node_modules/playwright-core ] ||
    { echo "browser: tests/node_modules/playwright-core is missing (cd tests && npm install)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/oauthq-itest-browser-XXXXXX)
pids=()
names=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local i pid
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[$i]}" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "$rc" -ne 0 ]; then
        for i in "${!names[@]}"; do
            echo "--- last lines of ${names[$i]}.log"
            tail -n 25 "$tmp/${names[$i]}.log" 2>/dev/null || true
        done
    fi
    if [ -n "${OAUTHQ_KEEP_TEST_LOGS:-}" ]; then
        echo "browser: logs kept in $tmp"
    else
        rm -rf "$tmp"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => {
        console.log(s.address().port); s.close(); });'
}
wait_http() { # url, seconds
    local deadline=$((SECONDS + $2))
    until curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; do
        if [ $SECONDS -ge "$deadline" ]; then
            echo "browser: $1 did not answer within $2 s" >&2
            return 1
        fi
        sleep 0.2
    done
}
start() { # name, command...
    local name=$1
    shift
    "$@" >"$tmp/$name.log" 2>&1 &
    pids+=($!)
    names+=("$name")
}
alive() {
    local i
    for i in "${!pids[@]}"; do
        kill -0 "${pids[$i]}" 2>/dev/null ||
            { echo "browser: ${names[$i]} exited; see its log below" >&2; return 1; }
    done
}

# ---- configuration ---------------------------------------------------------
secret() { head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }
(umask 077 && secret >"$tmp/sim_secret")
(umask 077 && printf '{"active":"k1","keys":{"k1":"%s"}}\n' "$(secret)" >"$tmp/state_keys.json")
(umask 077 && printf '{"active":"d1","keys":{"d1":"%s"}}\n' "$(secret)" >"$tmp/data_keys.json")

sim_port=$(free_port)
intake_port=$(free_port)
while [ "$intake_port" = "$sim_port" ]; do intake_port=$(free_port); done
sim_url=http://127.0.0.1:$sim_port
intake_url=http://127.0.0.1:$intake_port

cat >"$tmp/providers.json" <<EOF
{"providers": [
  {"name": "sim", "profile": "sim",
   "authorize_url": "$sim_url/oauth/authorize", "token_url": "$sim_url/oauth/token",
   "deauthorize_url": "$sim_url/oauth/deauthorize",
   "client_id": "ca_browser", "client_secret_file": "$tmp/sim_secret",
   "scope": "read_write", "pkce": true, "token_auth": "client_secret_post",
   "code_ttl_s": 300, "issuer": null}
]}
EOF

export OAUTHQ_KAFKA_BOOTSTRAP=${OAUTHQ_KAFKA_BOOTSTRAP:-127.0.0.1:9092}
export OAUTHQ_TOPIC_PREFIX="itest-browser-$$-$(date +%s)."
export OAUTHQ_TOPIC_PARTITIONS=2
export OAUTHQ_LOG_FORMAT=text
export OAUTHQ_PROVIDERS_FILE=$tmp/providers.json
export OAUTHQ_STATE_KEY_FILE=$tmp/state_keys.json
export OAUTHQ_DATA_KEYS_FILE=$tmp/data_keys.json
export OAUTHQ_LISTEN=127.0.0.1:$intake_port
export OAUTHQ_PUBLIC_URL=$intake_url

# The platform backend's API key (e2e.mjs creates flows with it).
created=$("$build/oauthqctl" apikey create --kid browser --json \
    --scopes connections:write,connections:read)
(umask 077 && jq '{keys: {(.kid): .entry}}' <<<"$created" >"$tmp/api_keys.json")
api_key=$(jq -r .key <<<"$created")
export OAUTHQ_API_KEYS_FILE=$tmp/api_keys.json
export OAUTHQ_OPEN_START=1 # scenarios (a)-(f) start as the demo page does

# ---- services ----------------------------------------------------------------
mkdir -p "$tmp/worker" "$tmp/intake"
"$build/oauthqctl" topics create >"$tmp/topics.log" 2>&1 ||
    { cat "$tmp/topics.log" >&2; exit 1; }

start sim "$build/oauthq-provider-sim" --listen "127.0.0.1:$sim_port" --client-id ca_browser \
    --client-secret-file "$tmp/sim_secret" --redirect-uri "$intake_url/oauth/callback"
OAUTHQ_DATA_DIR=$tmp/worker OAUTHQ_INSTANCE_ID=browser-worker start worker "$build/oauthq-worker"
OAUTHQ_DATA_DIR=$tmp/intake OAUTHQ_INSTANCE_ID=browser-intake OAUTHQ_DEMO=1 \
    start intake "$build/oauthq-intake"

wait_http "$sim_url/_sim/stats" 15
wait_http "$intake_url/healthz" 20
wait_http "$intake_url/readyz" 30
alive

echo "browser: intake $intake_url, simulator $sim_url, topics ${OAUTHQ_TOPIC_PREFIX}*"
INTAKE_URL=$intake_url SIM_URL=$sim_url CHROMIUM=$chromium OAUTHQ_API_KEY=$api_key \
    timeout --kill-after=10 300 node tests/browser/e2e.mjs
alive
