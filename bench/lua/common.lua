-- bench/lua/common.lua — what the bench wrk scripts share; loaded with dofile() by each of them
-- (see load() at the top of any script). Returns a table:
--
--   cookie(pool, i)      the session cookie value of session i of a pool ("h" hot, "r" revalidated,
--                        "f" fresh, "b" signed out): BENCH_TAG .. pool .. 7 digits .. 8 hex digits
--                        .. a fixed tail, 64 characters. bench/idpctl.py makes the same values, so
--                        the sessions the IdP holds are the ones the scripts send.
--   host(h)              "app<h>.test", h = 1..20: the applications the test IdP is started with
--   request(c, h, uri)   the forward-auth check Traefik's forwardAuth sends for a browser request:
--                        GET of the outpost's auth path with the browser's cookies (the session
--                        cookie among two others) and the X-Forwarded-* headers; with BENCH_CLOSE=1
--                        (or after set_close(true)) also "Connection: close"
--   population(...)      a request generator over a population of sessions and hosts (below)
--   uri(n)               one of a few page paths for X-Forwarded-Uri
--   zipf(n, s)           a sampler of 1..n, P(k) ~ 1 / k^s (inverse CDF, binary search)
--   count_status()       defines response(): counts answers by class (2xx..5xx) in bench_counts
--   count(name, d)       adds d to bench_counts[name] (reported by done())
--   report(names)        defines setup() and done(): done() prints name=value lines (requests,
--                        duration, latency percentiles in microseconds, errors, and every counter
--                        of bench_counts summed over threads)
--
-- Environment: BENCH_TAG (default "b0b0b0b0"), BENCH_COOKIE_NAME (authentik_proxy_3f2a1b0c, the
-- test IdP's), BENCH_PATH (/outpost.goauthentik.io/auth/traefik), BENCH_CLOSE (0).

local M = {}
local env = os.getenv
local floor = math.floor

M.tag = env("BENCH_TAG") or "b0b0b0b0"
M.cookie_name = env("BENCH_COOKIE_NAME") or "authentik_proxy_3f2a1b0c"
M.path = env("BENCH_PATH") or "/outpost.goauthentik.io/auth/traefik"
M.close = env("BENCH_CLOSE") == "1"
M.signout_uri = "/outpost.goauthentik.io/sign_out"

local TAIL = "RmFrZVNlc3Npb25UYWlsWFlaMDEyMzQ1Njc4OUFC" -- pads the value to 64 characters

function M.cookie(pool, i)
    return string.format("%s%s%07d%08x%s", M.tag, pool, i, (i * 2654435761) % 4294967296, TAIL)
end

function M.host(h)
    return "app" .. h .. ".test"
end

local URIS = { "/", "/dashboard/projects?page=2", "/api/v1/items?limit=50&offset=100",
    "/static/js/app.4f2a9c.js", "/settings/profile", "/api/v1/notifications", "/search?q=report",
    "/d/abc123?orgId=1" }

function M.uri(n)
    return URIS[n % #URIS + 1]
end

local A = "GET " .. M.path .. " HTTP/1.1\r\n" ..
    "Host: 127.0.0.1\r\n" ..
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" ..
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n" ..
    "Accept-Language: en-US,en;q=0.5\r\n" ..
    "Accept-Encoding: gzip, deflate, br\r\n" ..
    "Cookie: _ga=GA1.1.1234567890.1700000000; " .. M.cookie_name .. "="
local B = "; theme=dark\r\n" ..
    "X-Forwarded-For: 192.0.2.10\r\n" ..
    "X-Forwarded-Host: "
local C = "\r\n" ..
    "X-Forwarded-Method: GET\r\n" ..
    "X-Forwarded-Port: 443\r\n" ..
    "X-Forwarded-Proto: https\r\n" ..
    "X-Forwarded-Server: traefik-7d9f8b6c4-x2lqp\r\n" ..
    "X-Forwarded-Uri: "
local D

function M.set_close(on)
    M.close = on
    D = "\r\nX-Real-Ip: 192.0.2.10\r\n" .. (on and "Connection: close\r\n" or "") .. "\r\n"
end
M.set_close(M.close)

function M.request(cookie, host, uri)
    return A .. cookie .. B .. host .. C .. uri .. D
end

-- population(pool, sessions, hosts, dist, s): a function returning the next request of a
-- population of cached sessions: session i of the pool on host h. dist "zipf": session and host
-- each Zipf(s)-skewed (session 0 and app1.test the busiest); "uniform": every (session, host) pair
-- equally likely.
function M.population(pool, nsessions, nhosts, dist, s)
    local cookies, hosts = {}, {}
    for i = 1, nsessions do cookies[i] = M.cookie(pool, i - 1) end
    for h = 1, nhosts do hosts[h] = M.host(h) end
    local n = 0
    local request = M.request
    local uri = M.uri
    if dist == "uniform" then
        local random, nkeys = math.random, nsessions * nhosts
        return function()
            n = n + 1
            local k = random(nkeys) - 1
            return request(cookies[floor(k / nhosts) + 1], hosts[k % nhosts + 1], uri(n))
        end
    end
    local ps, ph = M.zipf(nsessions, s), M.zipf(nhosts, s)
    return function()
        n = n + 1
        return request(cookies[ps()], hosts[ph()], uri(n))
    end
end

function M.zipf(n, s)
    local cdf, sum = {}, 0
    for k = 1, n do
        sum = sum + 1 / k ^ s
        cdf[k] = sum
    end
    for k = 1, n do cdf[k] = cdf[k] / sum end
    local random = math.random
    return function()
        local u, lo, hi = random(), 1, n
        while lo < hi do
            local mid = floor((lo + hi) / 2)
            if cdf[mid] < u then lo = mid + 1 else hi = mid end
        end
        return lo
    end
end

bench_counts = {}

function M.count(name, d)
    bench_counts[name] = (bench_counts[name] or 0) + (d or 1)
end

function M.count_status()
    bench_counts.status_2xx, bench_counts.status_3xx = 0, 0
    bench_counts.status_4xx, bench_counts.status_5xx = 0, 0
    local names = { "status_1xx", "status_2xx", "status_3xx", "status_4xx", "status_5xx" }
    response = function(status)
        local n = names[floor(status / 100)] or "status_other"
        bench_counts[n] = (bench_counts[n] or 0) + 1
    end
end

function M.report()
    local threads = {}
    setup = function(thread)
        threads[#threads + 1] = thread
        thread:set("bench_seed", #threads)
    end
    done = function(summary, latency)
        local out = {}
        local function put(k, v) out[#out + 1] = string.format("wrk_%s=%s", k, v) end
        put("requests", summary.requests)
        put("duration_us", summary.duration)
        put("rps", string.format("%.1f", summary.requests / (summary.duration / 1e6)))
        put("p50_us", latency:percentile(50))
        put("p90_us", latency:percentile(90))
        put("p99_us", latency:percentile(99))
        put("max_us", latency.max)
        local e = summary.errors
        put("err_connect", e.connect)
        put("err_read", e.read)
        put("err_write", e.write)
        put("err_timeout", e.timeout)
        put("err_status", e.status)
        local sums = {}
        for _, t in ipairs(threads) do
            for k, v in pairs(t:get("bench_counts") or {}) do sums[k] = (sums[k] or 0) + v end
        end
        for k, v in pairs(sums) do put(k, v) end
        io.write(table.concat(out, "\n") .. "\n")
    end
end

function M.seed()
    math.randomseed((bench_seed or 1) * 7919 + os.time())
end

return M
