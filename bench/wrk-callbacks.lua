-- wrk script (scripts/bench): every request is a callback with its own
-- state. Usage: wrk ... -s wrk-callbacks.lua URL -- FLOWS_FILE THREADS
-- FLOWS_FILE comes from `bench-load flows` ("<id> <flag> <path> <cookies>"
-- lines; the cookies are what the flow's browser sends to the callback);
-- thread t of THREADS takes the lines i with i % THREADS == t, so no
-- state is sent twice unless a thread runs out of lines ("wrapped").
local threads = {}
local count = 0

function setup(thread)
    thread:set("tid", count)
    count = count + 1
    table.insert(threads, thread)
end

function init(args)
    local file, nthreads = args[1], tonumber(args[2])
    paths, cookies, idx, wrapped = {}, {}, 0, 0
    local i = 0
    for line in io.lines(file) do
        if i % nthreads == tid then
            local p, c = line:match("^%S+ %S+ (%S+) ?(%S*)")
            paths[#paths + 1] = p
            cookies[#cookies + 1] = (c or ""):gsub(";", "; ")
        end
        i = i + 1
    end
end

function request()
    idx = idx + 1
    if idx > #paths then
        idx, wrapped = 1, wrapped + 1
    end
    local c = cookies[idx]
    if c and c ~= "" then
        return wrk.format("GET", paths[idx], { Cookie = c })
    end
    return wrk.format("GET", paths[idx])
end

function done(summary, latency, requests)
    local e, w = summary.errors, 0
    for _, t in ipairs(threads) do
        w = w + (t:get("wrapped") or 0)
    end
    io.write(string.format(
        '{"requests": %d, "seconds": %.3f, "per_s": %.1f, "p50_ms": %.3f, "p99_ms": %.3f, '
            .. '"errors": %d, "non_2xx_3xx": %d, "wrapped": %d}\n',
        summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
        latency:percentile(50) / 1000, latency:percentile(99) / 1000,
        e.connect + e.read + e.write + e.timeout, e.status, w))
end
