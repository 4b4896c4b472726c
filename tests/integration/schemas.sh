#!/usr/bin/env bash
# Every record the integration tests read from Kafka validates against its
# JSON Schema in schemas/ (ajv, draft 2020-12, strict). Runs after the C
# integration tests, which append what they read to var/test-logs/*.jsonl.
# A deliberately broken record must be rejected, so the check can fail.
set -euo pipefail
cd "$(dirname "$0")/../.."
v=tests/tools/validate-records.mjs
logs=var/test-logs

node "$v" schemas/callback.v1.json "$logs/callback-records.jsonl" --min 10
node "$v" schemas/status.v1.json "$logs/status-records.jsonl" --min 100
# One file per test binary (they run in parallel; a shared file would
# interleave their buffered writes mid-line).
node "$v" schemas/connection.v1.json "$logs/connection-records.jsonl" --min 100
node "$v" schemas/connection.v1.json "$logs/connection-records-tokens.jsonl" --min 4
node "$v" schemas/provider_state.v1.json "$logs/provider-state-records.jsonl" --min 4
node "$v" schemas/dlq.v1.json "$logs/dlq-records.jsonl" --min 1
node "$v" schemas/status.v1.json "$logs/status-api-docs.jsonl" --min 100 --status-api
node "$v" 'schemas/openapi.yaml#StatusDocument' "$logs/status-api-docs.jsonl" --min 100
node "$v" 'schemas/openapi.yaml#ConnectSession' "$logs/connect-session-docs.jsonl" --min 10
node "$v" 'schemas/openapi.yaml#PlatformView' "$logs/platform-view-docs.jsonl" --min 5
node "$v" 'schemas/openapi.yaml#ConnectionList' "$logs/connection-list-docs.jsonl" --min 3
node "$v" 'schemas/openapi.yaml#TokenResponse' "$logs/token-api-docs.jsonl" --min 2
node "$v" schemas/refresh.v1.json "$logs/refresh-records.jsonl" --min 1
node "$v" schemas/session.v1.json "$logs/session-records.jsonl" --min 2

# Negative controls: the validator must reject these.
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
good=$(head -n 1 "$logs/callback-records.jsonl")
for mutate in 'del(.connection_id)' '.kind = "code" | del(.code) | del(.error)' \
    '.extra = 1' '.received_at = "yesterday"' '.error = "invalid_grant" | .kind = "error" | del(.code) | del(.code_verifier)'; do
    echo "$good" | jq -c "$mutate" >"$tmp"
    if node "$v" schemas/callback.v1.json "$tmp" --min 1 >/dev/null 2>&1; then
        echo "schema accepted an invalid record ($mutate)" >&2
        exit 1
    fi
done
status=$(grep -m 1 '"status":"connected"' "$logs/status-records.jsonl")
for mutate in '.status = "failed"' '.message = null' '.version = 0' '.account.token = "x"'; do
    echo "$status" | jq -c "$mutate" >"$tmp"
    if node "$v" schemas/status.v1.json "$tmp" --min 1 >/dev/null 2>&1; then
        echo "status schema accepted an invalid record ($mutate)" >&2
        exit 1
    fi
done
# The public document never carries the platform's metadata (SPEC §4a).
pub=$(head -n 1 "$logs/status-api-docs.jsonl")
echo "$pub" | jq -c '.end_user = {"id": "u", "email": null, "display_name": null}' >"$tmp"
if node "$v" 'schemas/openapi.yaml#StatusDocument' "$tmp" --min 1 >/dev/null 2>&1; then
    echo "StatusDocument accepted a public document with end_user" >&2
    exit 1
fi
view=$(head -n 1 "$logs/platform-view-docs.jsonl")
echo "$view" | jq -c 'del(.end_user)' >"$tmp"
if node "$v" 'schemas/openapi.yaml#PlatformView' "$tmp" --min 1 >/dev/null 2>&1; then
    echo "PlatformView accepted a view without end_user" >&2
    exit 1
fi
session=$(grep -m 1 '"end_user"' "$logs/session-records.jsonl")
for mutate in 'del(.expires_at)' '.code = "x"' '.created_at = "now"' '.end_user = {}'; do
    echo "$session" | jq -c "$mutate" >"$tmp"
    if node "$v" schemas/session.v1.json "$tmp" --min 1 >/dev/null 2>&1; then
        echo "session schema accepted an invalid record ($mutate)" >&2
        exit 1
    fi
done
refresh=$(head -n 1 "$logs/refresh-records.jsonl")
for mutate in '.seen_version = 0' '.requested_at_ms = 1' 'del(.connection_id)'; do
    echo "$refresh" | jq -c "$mutate" >"$tmp"
    if node "$v" schemas/refresh.v1.json "$tmp" --min 1 >/dev/null 2>&1; then
        echo "refresh schema accepted an invalid record ($mutate)" >&2
        exit 1
    fi
done
echo "negative controls rejected: 14 of 14"
