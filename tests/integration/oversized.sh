#!/usr/bin/env bash
# Issue 14, defect 8: an oversized callback (a 9,000-byte code) sent with a
# cookie header is answered, never reset: 414 with an error body while the
# request fits the connection's memory, 431 once the headers alone are too
# large; the reply arrives complete over a raw socket (the client reads it
# before the server closes), and a normal callback works afterwards on a new
# connection. Read with Python's socket module, so an empty reply or a reset
# (which curl may report as a status of 0) fails the test.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${OAUTHQ_BUILD:-build}
tmp=$(mktemp -d /tmp/oauthq-itest-oversized-XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
export OAUTHQ_KAFKA_BOOTSTRAP=${OAUTHQ_KAFKA_BOOTSTRAP:-127.0.0.1:9092}
export OAUTHQ_TOPIC_PREFIX=itest-oversized-$$-$(date +%s).
export OAUTHQ_LISTEN=127.0.0.1:$port OAUTHQ_PUBLIC_URL=http://127.0.0.1:$port
export OAUTHQ_DATA_DIR=$tmp/data OAUTHQ_LOG_FORMAT=text
secret() { head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }
secret >"$tmp/sim_secret"
printf '{"active":"k1","keys":{"k1":"%s"}}\n' "$(secret)" >"$tmp/state_keys.json"
export OAUTHQ_STATE_KEY_FILE=$tmp/state_keys.json
jq -n --arg sf "$tmp/sim_secret" '{providers: [{
    name: "sim", profile: "sim", authorize_url: "http://127.0.0.1:9/oauth/authorize",
    token_url: "http://127.0.0.1:9/oauth/token", client_id: "ca_o", client_secret_file: $sf,
    scope: "read_write", pkce: true, token_auth: "client_secret_post", code_ttl_s: 300,
    issuer: null}]}' >"$tmp/providers.json"
export OAUTHQ_PROVIDERS_FILE=$tmp/providers.json
intake=""
cleanup() {
    local rc=$?
    [ -n "$intake" ] && kill -TERM "$intake" 2>/dev/null || true
    if [ $rc -ne 0 ]; then tail -n 30 "$tmp/intake.log"; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
"$BUILD/oauthqctl" topics create >/dev/null 2>&1
"$BUILD/oauthq-intake" >"$tmp/intake.log" 2>&1 &
intake=$!
for _ in $(seq 1 120); do
    curl -fsS "$OAUTHQ_PUBLIC_URL/readyz" >/dev/null 2>&1 && break
    sleep 0.5
done
curl -fsS "$OAUTHQ_PUBLIC_URL/readyz" >/dev/null || fail "intake not ready"
python3 - "$port" <<'PY' || fail "oversized callback not answered"
import socket, sys
port = int(sys.argv[1])
def ask(code_len, cookie_len, keep_alive):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    req = ("GET /oauth/callback?state=abc&code=" + "x" * code_len + " HTTP/1.1\r\n"
           "Host: 127.0.0.1\r\nAccept: application/json\r\n"
           "Cookie: oauthq_bind=" + "y" * cookie_len + "\r\n"
           "Connection: " + ("keep-alive" if keep_alive else "close") + "\r\n\r\n")
    s.sendall(req.encode())
    data = b""
    try:
        while True:  # until the server closes (close) or the head arrived (keep-alive)
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if keep_alive and b"\r\n\r\n" in data:
                break
    except ConnectionResetError:
        print("reset after %d bytes (code %d, cookie %d)" % (len(data), code_len, cookie_len))
        sys.exit(1)
    s.close()
    line = data.split(b"\r\n", 1)[0].decode(errors="replace")
    if not line.startswith("HTTP/1.1 "):
        print("no status line (code %d, cookie %d): %r" % (code_len, cookie_len, data[:80]))
        sys.exit(1)
    return int(line.split()[1]), data
for keep in (False, True):
    st, body = ask(9000, 64, keep)
    if st != 414 or b"uri_too_long" not in body:
        print("9,000-byte code with a cookie: %d, expected 414 uri_too_long" % st); sys.exit(1)
    st, _ = ask(9000, 30000, keep)
    if st not in (414, 431):
        print("9,000-byte code with a 30 KB cookie: %d, expected 431 (or 414)" % st); sys.exit(1)
print("oversized callbacks with cookies: answered 414 / 431, never reset")
PY
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/json' "$OAUTHQ_PUBLIC_URL/oauth/callback?state=abc&code=short")
[ "$code" = 400 ] || fail "a normal (bad-state) callback afterwards: $code, expected 400"
echo "a normal callback afterwards still answered ($code)"
