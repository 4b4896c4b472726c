-- wrk script (scripts/bench): GET /v1/connections/{id}/token over the
-- connected ids of FLOWS_FILE, round robin, with the tokens:read API key.
-- Usage: OAUTHQ_BENCH_TOKEN_KEY=oq_... wrk ... -s wrk-token.lua URL -- FLOWS_FILE THREADS
-- FLOWS_FILE comes from `bench-load flows` (the id is each line's first
-- field); thread t of THREADS takes the lines i with i % THREADS == t. The
-- key comes from the environment (never from argv).
local threads = {}
local count = 0

function setup(thread)
    thread:set("tid", count)
    count = count + 1
    table.insert(threads, thread)
end

function init(args)
    local file, nthreads = args[1], tonumber(args[2])
    local key = os.getenv("OAUTHQ_BENCH_TOKEN_KEY") or ""
    headers = { Authorization = "Bearer " .. key }
    paths, idx = {}, 0
    local i = 0
    for line in io.lines(file) do
        if i % nthreads == tid then
            local id = line:match("^(%S+)")
            if id then
                paths[#paths + 1] = "/v1/connections/" .. id .. "/token"
            end
        end
        i = i + 1
    end
end

function request()
    idx = idx % #paths + 1
    return wrk.format("GET", paths[idx], headers)
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        '{"requests": %d, "seconds": %.3f, "per_s": %.1f, "p50_ms": %.3f, "p99_ms": %.3f, '
            .. '"errors": %d, "non_2xx_3xx": %d, "wrapped": 0}\n',
        summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
        latency:percentile(50) / 1000, latency:percentile(99) / 1000,
        e.connect + e.read + e.write + e.timeout, e.status))
end
