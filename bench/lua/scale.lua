-- bench/lua/scale.lua — cached sessions, every (session, host) pair equally likely: BENCH_KEYS pairs,
-- sessions of pool BENCH_POOL (default "f") over BENCH_HOSTS hosts (default 20), pair k being
-- session k // hosts on host k % hosts + 1 — the pairs bench/lua/warm.lua put in the cache. Uniform,
-- not skewed, so that a bigger population really spreads lookups over more memory.
local c = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
local env = os.getenv
c.report()

local next_request

function init()
    c.seed()
    local hosts = tonumber(env("BENCH_HOSTS") or "20")
    local keys = tonumber(env("BENCH_KEYS") or "1000")
    next_request = c.population(env("BENCH_POOL") or "f", math.ceil(keys / hosts), hosts, "uniform")
end

function request()
    return next_request()
end
