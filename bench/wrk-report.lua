-- wrk script (scripts/bench): prints the run as one JSON line, for
-- endpoints whose request never changes (/healthz).
function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        '{"requests": %d, "seconds": %.3f, "per_s": %.1f, "p50_ms": %.3f, "p99_ms": %.3f, '
            .. '"errors": %d, "non_2xx_3xx": %d, "wrapped": 0}\n',
        summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
        latency:percentile(50) / 1000, latency:percentile(99) / 1000,
        e.connect + e.read + e.write + e.timeout, e.status))
end
