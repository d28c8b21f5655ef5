-- bench/lua/miss.lua — every request a session the cache has never seen: session BENCH_FROM + n of
-- pool BENCH_POOL (default "f") for the n-th request, on one of BENCH_HOSTS hosts (default 5) at
-- random. The IdP holds BENCH_COUNT such sessions (bench/run creates them); past that the script
-- starts over and counts wrk_reused (those requests are no longer misses: the run was faster than
-- planned). Answers are counted by status class.
local c = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
local env = os.getenv
c.report()
c.count_status()

local pool = env("BENCH_POOL") or "f"
local from = tonumber(env("BENCH_FROM") or "0")
local count = tonumber(env("BENCH_COUNT") or "100000")
local hosts = tonumber(env("BENCH_HOSTS") or "5")
local n = 0
local host_names = {}
local random = math.random

function init()
    c.seed()
    for h = 1, hosts do host_names[h] = c.host(h) end
end

function request()
    if n >= count then
        n = 0
        c.count("reused", count)
    end
    local req = c.request(c.cookie(pool, from + n), host_names[random(hosts)], c.uri(n))
    n = n + 1
    return req
end
