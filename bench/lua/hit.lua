-- bench/lua/hit.lua — every request the forward-auth check of a signed-in browser whose answer the
-- cache holds (the caller warms the cache first and keeps --fresh-ttl longer than the run).
--
-- bench/run: BENCH_SESSIONS sessions of pool BENCH_POOL (default "h") over BENCH_HOSTS hosts
-- (default 5), session and host Zipf(BENCH_ZIPF_S, default 1.0)-skewed; BENCH_DIST=uniform spreads
-- them evenly instead. BENCH_STATUS=1 counts answers by status class (costs wrk some speed).
-- BENCH_RATE and BENCH_CONNS pace the connections (below).
-- bench/hitpath.sh: without BENCH_SESSIONS, one session: HIT_COOKIE on HIT_HOST (default app1.test),
-- the same request every time.
-- Common settings and the name=value report: bench/lua/common.lua.
-- Usage: wrk -t1 -c32 -d10s --latency -s bench/lua/hit.lua http://127.0.0.1:PORT
local c = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
local env = os.getenv
c.report()
if env("BENCH_STATUS") == "1" or BENCH_FORCE_STATUS then c.count_status() end
if BENCH_FORCE_CLOSE then c.set_close(true) end -- churn.lua

local sessions = tonumber(env("BENCH_SESSIONS") or "0")
local next_request

-- Paced (bench/run's scale at equal load): BENCH_RATE requests/s in total over BENCH_CONNS
-- connections, each waiting on average BENCH_CONNS / BENCH_RATE seconds between an answer and its
-- next request: a random whole number of milliseconds (wrk's timer) between half and one and a half
-- times that, so that the connections do not stay in step and fire in bursts.
local rate, conns = tonumber(env("BENCH_RATE") or "0"), tonumber(env("BENCH_CONNS") or "0")
if rate > 0 and conns > 0 and conns * 1000 / rate >= 1 then
    local pause = conns * 1000 / rate
    local lo, hi = math.floor(pause / 2), math.ceil(pause * 3 / 2)
    local random = math.random
    function delay()
        return random(lo, hi)
    end
end

function init()
    c.seed()
    if sessions > 0 then
        next_request = c.population(env("BENCH_POOL") or "h", sessions,
            tonumber(env("BENCH_HOSTS") or "5"), env("BENCH_DIST") or "zipf",
            tonumber(env("BENCH_ZIPF_S") or "1.0"))
    else
        local req = c.request(env("HIT_COOKIE") or "bench-session-cookie-0001",
            env("HIT_HOST") or "app1.test", "/dashboard/projects?page=2")
        next_request = function() return req end
    end
end

function request()
    return next_request()
end
