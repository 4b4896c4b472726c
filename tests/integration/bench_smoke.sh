#!/usr/bin/env bash
# The benchmark code of `make bench` (scripts/bench, bench/*) still works:
# a smoke run at tiny sizes on the test broker, every benchmark measured,
# and results.json carries every key of SPEC §9 as a number. No figure is
# judged here (the machine may be busy): timing belongs to `make bench`.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${OAUTHQ_BUILD:-build}
BUILD=$BUILD scripts/bench --smoke
r=$BUILD/bench/smoke/results.json
jq -e '
  def nums($o; $keys): all($keys[]; ($o[.] | type) == "number");
  nums(.machine; ["cores"]) and
  nums(.intake; ["callbacks_per_s", "p50_ms", "p99_ms", "ceiling_per_s", "ratio_to_ceiling",
                 "rdkafka_produce_per_s", "rss_kb"]) and
  nums(.worker; ["provider_latency_ms", "concurrency", "exchanges_per_s", "ceiling_per_s",
                 "ratio_to_ceiling", "no_txn_exchanges_per_s", "eos_ratio", "rss_kb"]) and
  nums(.e2e; ["offered_per_s", "provider_latency_ms", "p50_ms", "p99_ms", "hang_fraction",
              "p99_ms_with_hangs"]) and
  nums(.tokens; ["provider_latency_ms", "fresh_per_s", "fresh_p50_ms", "fresh_p99_ms",
                 "refresh_p50_ms", "refresh_p99_ms", "refresh_samples"]) and
  nums(.restore; ["connections", "seconds", "per_s"]) and
  (keys == ["e2e", "intake", "machine", "restore", "tokens", "worker"]) and
  .intake.callbacks_per_s > 0 and .worker.exchanges_per_s > 0 and .restore.seconds > 0 and
  .tokens.fresh_per_s > 0 and .tokens.refresh_samples > 0
' "$r" >/dev/null || {
    cat "$r"
    echo "bench smoke: $r lacks a SPEC §9 key or a number" >&2
    exit 1
}
echo "bench_smoke: 1 passed, 0 failed"
