#!/usr/bin/env bash
# `oauthqctl provider check NAME` against the simulator: ok with the right
# credentials, misconfigured with a wrong secret, unreachable on a closed
# port — and no code is spent (the made-up code is unknown to the provider).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${OAUTHQ_BUILD:-build}
tmp=$(mktemp -d /tmp/oauthq-itest-provider-XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
closed=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo "sk_check_secret_value" >"$tmp/secret"
echo "sk_wrong_secret_value" >"$tmp/wrong"
"$BUILD/oauthq-provider-sim" --listen "127.0.0.1:$port" --client-id ca_chk \
    --client-secret-file "$tmp/secret" >"$tmp/sim.log" 2>&1 &
sim=$!
trap 'kill $sim 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$port/_sim/stats" >/dev/null 2>&1 && break; sleep 0.1; done
provider() { # name url secretfile
    printf '{"name":"%s","profile":"sim","authorize_url":"%s/oauth/authorize","token_url":"%s/oauth/token","client_id":"ca_chk","client_secret_file":"%s","token_auth":"client_secret_post","code_ttl_s":300}' "$1" "$2" "$2" "$3"
}
printf '{"providers":[%s,%s,%s]}\n' \
    "$(provider good "http://127.0.0.1:$port" "$tmp/secret")" \
    "$(provider bad "http://127.0.0.1:$port" "$tmp/wrong")" \
    "$(provider down "http://127.0.0.1:$closed" "$tmp/secret")" >"$tmp/providers.json"
export OAUTHQ_PROVIDERS_FILE=$tmp/providers.json OAUTHQ_LOG_LEVEL=error
pass=0
check() { # name want_rc want_result
    set +e
    out=$("$BUILD/oauthqctl" provider check "$1" --json 2>"$tmp/err")
    rc=$?
    set -e
    result=$(echo "$out" | jq -r .result)
    if [ "$rc" != "$2" ] || [ "$result" != "$3" ]; then
        echo "provider check $1: rc=$rc result=$result, expected rc=$2 result=$3" >&2
        cat "$tmp/err" >&2
        exit 1
    fi
    if grep -q sk_ <<<"$out$(cat "$tmp/err")"; then
        echo "provider check $1 printed a secret" >&2
        exit 1
    fi
    pass=$((pass + 1))
}
check good 0 ok
check bad 2 misconfigured
check down 1 unreachable
# Nothing was spent: no grant exists, only unknown codes were presented.
stats=$(curl -fsS "http://127.0.0.1:$port/_sim/stats")
[ "$(echo "$stats" | jq .grants.active)" = 0 ] || { echo "a grant was issued" >&2; exit 1; }
echo "provider check: $pass passed, 0 failed"
