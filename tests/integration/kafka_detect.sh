#!/usr/bin/env bash
# How the test runners find their broker (scripts/test-kafka.sh, issue 14
# defect 10): by its address, never by a pid file. A broker answering on
# OAUTHQ_KAFKA_BOOTSTRAP (the one these tests run against, whoever started
# it) is used and never started or stopped, and the tests are not told they
# own it; a free local port gets a broker started on that port (controller
# port+1, its own data directory), owned and stopped at the end; a remote
# address that does not answer is an error and starts nothing. scripts/kafka
# is replaced by a stub that records start/stop (and answers through the
# real script), so nothing here starts or stops a real broker.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
calls=$tmp/calls
cat >"$tmp/kafka" <<STUB
#!/usr/bin/env bash
case \$1 in
answers) exec "$root/scripts/kafka" answers "\${2:-}" ;;
*) echo "\$1 port=\${OAUTHQ_KAFKA_PORT:-} cport=\${OAUTHQ_KAFKA_CONTROLLER_PORT:-} dir=\${OAUTHQ_KAFKA_DIR:-}" >>"$calls" ;;
esac
STUB
chmod +x "$tmp/kafka"
fail() { echo "kafka_detect: $*" >&2; exit 1; }
shared=${OAUTHQ_KAFKA_BOOTSTRAP:-127.0.0.1:9092}
"$root/scripts/kafka" answers "$shared" || fail "no broker answers on $shared (run under scripts/run-tests)"

# 1. The address decides the port, controller port and data directory.
(
    unset OAUTHQ_KAFKA_PORT OAUTHQ_KAFKA_CONTROLLER_PORT OAUTHQ_KAFKA_DIR
    export OAUTHQ_KAFKA_BOOTSTRAP=127.0.0.1:19492
    . scripts/test-kafka.sh
    test_kafka_env "$root"
    [ "$OAUTHQ_KAFKA_PORT/$OAUTHQ_KAFKA_CONTROLLER_PORT/$OAUTHQ_KAFKA_DIR" = "19492/19493/$root/var/kafka-19492" ] ||
        fail "127.0.0.1:19492 gave $OAUTHQ_KAFKA_PORT/$OAUTHQ_KAFKA_CONTROLLER_PORT/$OAUTHQ_KAFKA_DIR"
    unset OAUTHQ_KAFKA_PORT OAUTHQ_KAFKA_CONTROLLER_PORT OAUTHQ_KAFKA_DIR OAUTHQ_KAFKA_BOOTSTRAP
    test_kafka_env "$root"
    [ "$OAUTHQ_KAFKA_BOOTSTRAP/$OAUTHQ_KAFKA_PORT/$OAUTHQ_KAFKA_CONTROLLER_PORT/$OAUTHQ_KAFKA_DIR" = \
        "127.0.0.1:9092/9092/9093/$root/var/kafka" ] || fail "the default gave $OAUTHQ_KAFKA_DIR"
    unset OAUTHQ_KAFKA_PORT
    export OAUTHQ_KAFKA_BOOTSTRAP=kafka-1.example:9092,kafka-2.example:9092
    test_kafka_env "$root"
    [ -z "${OAUTHQ_KAFKA_PORT:-}" ] && [ "$test_kafka_local" = 0 ] || fail "a remote list counted as local"
)

# 2. A broker answering (someone's): used, not owned, never started or stopped.
(
    unset OAUTHQ_TEST_KAFKA_OWNED OAUTHQ_KAFKA_PORT OAUTHQ_KAFKA_CONTROLLER_PORT OAUTHQ_KAFKA_DIR
    export OAUTHQ_KAFKA_BOOTSTRAP=$shared
    . scripts/test-kafka.sh
    test_kafka_up "$tmp" "$root" >/dev/null
    [ -z "${OAUTHQ_TEST_KAFKA_OWNED:-}" ] || fail "a running broker was taken as owned"
    test_kafka_down "$tmp"
    [ ! -s "$calls" ] || fail "a running broker was started or stopped: $(cat "$calls")"
)

# 3. A free local port: a broker is started there (its own ports and data), owned, stopped.
port=19497
"$root/scripts/kafka" answers "127.0.0.1:$port" && fail "something answers on $port"
(
    unset OAUTHQ_TEST_KAFKA_OWNED OAUTHQ_KAFKA_PORT OAUTHQ_KAFKA_CONTROLLER_PORT OAUTHQ_KAFKA_DIR
    export OAUTHQ_KAFKA_BOOTSTRAP=127.0.0.1:$port
    . scripts/test-kafka.sh
    test_kafka_up "$tmp" "$root" >/dev/null
    [ "${OAUTHQ_TEST_KAFKA_OWNED:-}" = 1 ] || fail "a started broker is not owned"
    test_kafka_down "$tmp"
)
want="start port=$port cport=$((port + 1)) dir=$root/var/kafka-$port
stop port=$port cport=$((port + 1)) dir=$root/var/kafka-$port"
[ "$(cat "$calls")" = "$want" ] || fail "free port: calls were: $(cat "$calls")"

# 4. A remote address that does not answer: an error, nothing started.
: >"$calls"
(
    export OAUTHQ_KAFKA_BOOTSTRAP=broker.invalid:9092
    . scripts/test-kafka.sh
    if test_kafka_up "$tmp" "$root" 2>/dev/null; then fail "an unreachable remote broker was accepted"; fi
)
[ ! -s "$calls" ] || fail "a remote address started a local broker: $(cat "$calls")"
echo "kafka_detect: ok"
