-- bench/lua/warm.lua — fills a cache: asks for (session, host) pairs BENCH_FROM .. BENCH_TO - 1 once
-- each, in order, then starts over (those are hits by then). Pair k is session k // BENCH_HOSTS of
-- pool BENCH_POOL on host k % BENCH_HOSTS + 1, as in bench/lua/scale.lua and (with 5 hosts)
-- bench/lua/hit.lua. bench/run watches the cache (or the IdP's call counter) and interrupts wrk once
-- every pair was answered; wrk_wrapped in the report says how often the list was started over.
local c = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
local env = os.getenv
c.report()

local pool = env("BENCH_POOL") or "h"
local hosts = tonumber(env("BENCH_HOSTS") or "5")
local from = tonumber(env("BENCH_FROM") or "0")
local to = tonumber(env("BENCH_TO") or "1000")
local k = from
local host_names = {}

function init()
    for h = 1, hosts do host_names[h] = c.host(h) end
end

function request()
    if k >= to then
        k = from
        c.count("wrapped")
    end
    local s = math.floor(k / hosts)
    local req = c.request(c.cookie(pool, s), host_names[k % hosts + 1], "/")
    k = k + 1
    return req
end
