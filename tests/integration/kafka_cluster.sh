#!/usr/bin/env bash
# The local 3-node KRaft cluster (scripts/kafka cluster, SPEC §10): it starts
# on its own ports and data directory, `oauthqctl topics create` makes the
# topics with replication 3 / min.insync.replicas 2 (no drift), and records
# produced with acks=all before, during and after a kill -9 of one node are
# all read back (read_committed) once the node restarted. Stops only the
# cluster it started; the data directory is removed.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${OAUTHQ_BUILD:-build}
tmp=$(mktemp -d /tmp/oauthq-itest-cluster-XXXXXX)
export OAUTHQ_CLUSTER_DIR=$tmp/cluster
# Its own ports (not a `make chaos` cluster on the default 19292).
export OAUTHQ_CLUSTER_BASE_PORT=${OAUTHQ_ITEST_CLUSTER_PORT:-19392}
trap 'scripts/kafka cluster stop >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
command -v kcat >/dev/null || { echo "kcat missing" >&2; exit 1; }

scripts/kafka cluster start
boot=$(scripts/kafka cluster bootstrap)
export OAUTHQ_KAFKA_BOOTSTRAP=$boot OAUTHQ_TOPIC_PREFIX=itestcluster. \
    OAUTHQ_TOPIC_REPLICATION=3 OAUTHQ_TOPIC_PARTITIONS=2 OAUTHQ_LOG_LEVEL=error
"$BUILD/oauthqctl" topics create
# `topics create` waits until one broker lists the topics; another node may
# lag a moment behind (metadata propagation), so describe is retried (bounded).
for _ in $(seq 1 20); do
    desc=$("$BUILD/oauthqctl" topics describe --json 2>/dev/null) && break
    sleep 0.5
done
# Every topic: replication 3, min.insync.replicas 2, no drift.
echo "$desc" | jq -e '[.topics[] | select(.replication != 3 or .min_insync_replicas != 2)] | length == 0' \
    >/dev/null || { echo "topics not replication 3 / min ISR 2: $desc" >&2; exit 1; }
echo "$desc" | jq -e '(.drift // []) | length == 0' >/dev/null ||
    { echo "topics drift: $desc" >&2; exit 1; }

topic=itestcluster.callbacks
produce() { # first last
    seq "$1" "$2" | sed 's/^/m/' | timeout 60 kcat -P -b "$boot" -t "$topic" -k k \
        -X acks=all -X enable.idempotence=true -X message.timeout.ms=45000
}
produce 1 50
scripts/kafka cluster kill 2
produce 51 100 # leaders move to nodes 1 and 3; ISR {1,3} still meets min ISR 2
scripts/kafka cluster status && { echo "node 2 still answers after kill" >&2; exit 1; }
scripts/kafka cluster restart 2
produce 101 150
got=$(timeout 60 kcat -C -b "$boot" -t "$topic" -e -q -X isolation.level=read_committed -f '%s\n' |
    sort -u | wc -l)
[ "$got" = 150 ] || { echo "read back $got of 150 records" >&2; exit 1; }

# The chaos checker's --dump reads the live topics (read_committed) and the
# simulator's stats into files, then checks them: the clean fixture history
# produced into the cluster passes (the non-JSON records above are skipped).
echo "sk_cluster_secret" >"$tmp/secret"
simport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BUILD/oauthq-provider-sim" --listen "127.0.0.1:$simport" --client-id ca_cluster \
    --client-secret-file "$tmp/secret" >"$tmp/sim.log" 2>&1 &
sim=$!
trap 'kill $sim 2>/dev/null || true; scripts/kafka cluster stop >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
for t in callbacks status connections; do
    jq -r '.key + "\t" + .payload' "tests/chaos/fixtures/clean/$t.jsonl" |
        timeout 60 kcat -P -b "$boot" -t "itestcluster.$t" -K '\t' -X acks=all
done
for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$simport/_sim/stats" >/dev/null 2>&1 && break; sleep 0.1; done
mkdir -p "$tmp/history"
cp tests/chaos/fixtures/clean/acked.txt "$tmp/history/"
line=$(node tests/chaos/chaos-check.mjs --dump --bootstrap "$boot" --prefix itestcluster. \
    --sim "http://127.0.0.1:$simport" "$tmp/history")
[ "$line" = "chaos: acknowledged 3, final 3, lost 0, re-sent after definitive 0, unknown outcomes 0 (re-sent 0), version regressions 0, revoked-but-connected 0, faults 0" ] ||
    { echo "checker on the live topics: $line" >&2; exit 1; }
scripts/kafka cluster stop
echo "kafka cluster: 150 of 150 records through a kill -9 of node 2; checker --dump ok"
