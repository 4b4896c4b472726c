# shellcheck shell=bash
# scripts/test-kafka.sh — sourced by scripts/run-tests and scripts/test-all:
# which broker the tests use, and whether they own it (issue 14, defect 10).
#
# The broker is found by its address, $OAUTHQ_KAFKA_BOOTSTRAP (default
# 127.0.0.1:$OAUTHQ_KAFKA_PORT, port 9092), never by a pid file:
# - a broker answering there is used as it is, whoever started it (another
#   checkout's, a `make run` left open, a dev broker on another port), and is
#   never stopped: OAUTHQ_TEST_KAFKA_OWNED stays unset, and the test that
#   stops the broker (itest_intake's broker-down test) skips;
# - nothing answers and the address is one local port: scripts/kafka starts
#   a broker on that port (controller on port+1, data in var/kafka, or in
#   var/kafka-PORT for another port than 9092, unless OAUTHQ_KAFKA_CONTROLLER_PORT
#   / OAUTHQ_KAFKA_DIR say otherwise), OAUTHQ_TEST_KAFKA_OWNED=1 is exported
#   (the tests may stop and start it: scripts/kafka reaches it through the
#   same variables) and test_kafka_down stops it at the end;
# - nothing answers on a remote or multi-broker address: an error.
#
# test_kafka_env       export the variables above (no broker contacted)
# test_kafka_up        test_kafka_env, then use or start the broker
# test_kafka_down      stop the broker test_kafka_up started (no-op otherwise)

test_kafka_started=0

test_kafka_env() {
    local root=$1
    export OAUTHQ_KAFKA_BOOTSTRAP=${OAUTHQ_KAFKA_BOOTSTRAP:-127.0.0.1:${OAUTHQ_KAFKA_PORT:-9092}}
    test_kafka_local=0
    local b=$OAUTHQ_KAFKA_BOOTSTRAP
    if [[ $b =~ ^(127\.0\.0\.1|localhost):([0-9]+)$ ]]; then
        test_kafka_local=1
        local port=${BASH_REMATCH[2]}
        export OAUTHQ_KAFKA_PORT=$port
        export OAUTHQ_KAFKA_CONTROLLER_PORT=${OAUTHQ_KAFKA_CONTROLLER_PORT:-$((port + 1))}
        if [ "$port" = 9092 ]; then
            export OAUTHQ_KAFKA_DIR=${OAUTHQ_KAFKA_DIR:-$root/var/kafka}
        else
            export OAUTHQ_KAFKA_DIR=${OAUTHQ_KAFKA_DIR:-$root/var/kafka-$port}
        fi
    fi
}

test_kafka_up() {
    local here=$1 root=$2
    test_kafka_env "$root"
    if "$here/kafka" answers "$OAUTHQ_KAFKA_BOOTSTRAP"; then
        if [ "${OAUTHQ_TEST_KAFKA_OWNED:-}" = 1 ]; then
            echo "using Kafka at $OAUTHQ_KAFKA_BOOTSTRAP (started for this test run)"
        else
            echo "using running Kafka at $OAUTHQ_KAFKA_BOOTSTRAP (shared: never stopped; the broker-down test skips)"
        fi
        return 0
    fi
    if [ "$test_kafka_local" != 1 ]; then
        echo "no Kafka answers at $OAUTHQ_KAFKA_BOOTSTRAP (not a local port: nothing is started)" >&2
        return 1
    fi
    test_kafka_started=1
    export OAUTHQ_TEST_KAFKA_OWNED=1
    "$here/kafka" start
}

test_kafka_down() {
    local here=$1
    if [ "$test_kafka_started" = 1 ]; then
        "$here/kafka" stop || true
        test_kafka_started=0
    fi
}
