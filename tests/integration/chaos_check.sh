#!/usr/bin/env bash
# The chaos checker (tests/chaos/chaos-check.mjs, SPEC §10) on recorded
# histories: the clean fixture passes with the exact summary line; each
# history derived from it with one violation — a double exchange, a lost
# acknowledged callback (twice: never produced, and no final status), a
# version regression, connected followed by failed, a revoked grant still
# connected — fails with exit 1 and the right count; a retry that found the
# code unconsumed (429) passes; a disconnect (connected -> disconnected,
# grant deauthorized) passes, and disconnected then connected again, connected
# -> failed after an unanswered disconnect, an accepted disconnect never
# final, a disconnect that left the grant active, a replay that re-sent a
# consumed code all fail. No services needed.
set -euo pipefail
cd "$(dirname "$0")/../.."
fx=tests/chaos/fixtures/clean
tmp=$(mktemp -d /tmp/oauthq-itest-chaoscheck-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
h1=$(printf '1%.0s' $(seq 1 64))
pass=0

run() { # name want_rc want_line_regex  (checks $tmp/$name)
    set +e
    out=$(node tests/chaos/chaos-check.mjs "$tmp/$1" 2>"$tmp/$1.err")
    rc=$?
    set -e
    if [ "$rc" != "$2" ] || ! grep -Eq "$3" <<<"$out"; then
        echo "$1: rc=$rc (want $2), line: $out (want /$3/)" >&2
        cat "$tmp/$1.err" >&2
        exit 1
    fi
    pass=$((pass + 1))
}
derive() { mkdir -p "$tmp/$1" && cp "$fx"/* "$tmp/$1/"; }
env_line() { # topic partition offset key payload-json
    jq -cn --arg t "chaos.$1" --argjson p "$2" --argjson o "$3" --arg k "$4" --arg v "$5" \
        '{topic:$t,partition:$p,offset:$o,key:$k,payload:$v}'
}

derive clean
run clean 0 '^chaos: acknowledged 3, final 3, lost 0, re-sent after definitive 0, unknown outcomes 1 \(re-sent 1\), version regressions 0, revoked-but-connected 0, faults 2$'

# Double exchange: c1's code was sent twice, no unknown outcome was counted.
derive double
jq --arg h "$h1" '.codes[$h].token_requests = 2 | .codes[$h].after_consumed = 1' "$fx/sim-stats.json" \
    >"$tmp/double/sim-stats.json"
run double 1 're-sent after definitive 1,'

# A retry after an answer that did not consume the code (429, 500 before) is
# no re-send after a definitive answer.
derive retry
jq --arg h "$h1" '.codes[$h].token_requests = 2' "$fx/sim-stats.json" >"$tmp/retry/sim-stats.json"
run retry 0 're-sent after definitive 0,'

# Lost: c4 acknowledged but never got a final status (still pending).
derive lost
echo "c4 $(printf '4%.0s' $(seq 1 64))" >>"$tmp/lost/acked.txt"
env_line callbacks 1 9 c4 '{"schema":"oauthq.callback.v1","connection_id":"c4","kind":"code"}' >>"$tmp/lost/callbacks.jsonl"
run lost 1 'acknowledged 4, final 3, lost 1,'

# Lost: an acknowledged callback that is not in the callbacks topic at all.
derive unproduced
grep -v '"key":"c2"' "$fx/callbacks.jsonl" >"$tmp/unproduced/callbacks.jsonl"
run unproduced 1 'final 2, lost 1,'

# Version regression: c1's status goes back to version 2 at a later offset.
derive regression
env_line status 0 9 c1 '{"id":"c1","status":"connected","version":2}' >>"$tmp/regression/status.jsonl"
run regression 1 'version regressions 1,'

# Success is sticky: c1 connected, then failed (with a higher version).
derive sticky
env_line status 0 9 c1 '{"id":"c1","status":"failed","reason":"code_rejected","version":4}' \
    >>"$tmp/sticky/status.jsonl"
run sticky 1 'version regressions 1,'

# Revoked but connected: the provider revoked c1's grant, c1 stays connected.
derive revoked
jq --arg h "$h1" '.codes[$h].grant = "revoked"' "$fx/sim-stats.json" >"$tmp/revoked/sim-stats.json"
run revoked 1 'revoked-but-connected 1,'

# Disconnects. A clean one: c1 connected, DELETE accepted, disconnected
# (version 4), the provider's grant deauthorized; a reload and a replay of c1
# afterwards changed nothing.
disc() { # dir: c1 disconnected, grant deauthorized
    derive "$1"
    env_line status 0 9 c1 '{"id":"c1","status":"disconnected","version":4}' >>"$tmp/$1/status.jsonl"
    env_line connections 0 9 c1 "{\"id\":\"c1\",\"status\":\"disconnected\",\"version\":4,\"code_sha256\":\"$h1\",\"unknown_outcomes\":0}" \
        >>"$tmp/$1/connections.jsonl"
    jq --arg h "$h1" '.codes[$h].grant = "deauthorized"' "$fx/sim-stats.json" >"$tmp/$1/sim-stats.json"
    echo "c1 202" >"$tmp/$1/disconnects.txt"
    echo c1 >"$tmp/$1/replays.txt"
}
disc disconnected
run disconnected 0 '^chaos: acknowledged 3, final 3, lost 0, re-sent after definitive 0, unknown outcomes 1 \(re-sent 1\), version regressions 0, revoked-but-connected 0, faults 2$'

# Disconnected is final: connected again afterwards (a reload or a replay
# that re-exchanged) is a regression, in status and in connections.
disc reconnected
env_line status 0 10 c1 '{"id":"c1","status":"connected","version":5}' >>"$tmp/reconnected/status.jsonl"
run reconnected 1 'version regressions 1,'

# A disconnect request never answered (000), then connected -> failed: still
# a violation of "connected never followed by failed".
derive unanswered
echo "c1 000" >"$tmp/unanswered/disconnects.txt"
env_line status 0 9 c1 '{"id":"c1","status":"failed","reason":"code_rejected","version":4}' \
    >>"$tmp/unanswered/status.jsonl"
run unanswered 1 'lost 0, .*version regressions 1,'

# An accepted disconnect (202) whose connection stays connected: lost.
derive disclost
echo "c1 202" >"$tmp/disclost/disconnects.txt"
run disclost 1 'final 3, lost 1,'

# Disconnected but the provider's grant still active: the disconnect did not
# deauthorize.
disc granted
jq --arg h "$h1" '.codes[$h].grant = "active"' "$fx/sim-stats.json" >"$tmp/granted/sim-stats.json"
run granted 1 'revoked-but-connected 1,'

# A replayed connection whose code was sent again after the definitive answer
# (no unknown outcome counted): G1 counts it.
disc replayed
jq --arg h "$h1" '.codes[$h].grant = "deauthorized" | .codes[$h].token_requests = 2 | .codes[$h].after_consumed = 1' \
    "$fx/sim-stats.json" >"$tmp/replayed/sim-stats.json"
run replayed 1 're-sent after definitive 1,'

echo "chaos checker: $pass passed, 0 failed"
