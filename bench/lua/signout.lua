-- bench/lua/signout.lua — a flood of sign-outs of sessions the cache never saw: every request is
-- the forward-auth check of X-Forwarded-Uri /outpost.goauthentik.io/sign_out with a session cookie
-- value used once (BENCH_TAG .. "z" .. the thread's seed .. a counter .. random hex: 61
-- characters, about as long as common.lua's), on one of BENCH_HOSTS hosts (default 5). authcached
-- does not know such a session, so each one costs it an IdP call (to learn the user) and a purge
-- of the session; the IdP knows no such session either, so no user is purged: the cached answers
-- of other sessions should stay. Reports wrk's figures and answers by status class.
-- Usage (bench/signout.sh): wrk -t1 -c4 -d5s -s bench/lua/signout.lua http://127.0.0.1:PORT
local c = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
local env = os.getenv
c.report()
c.count_status()

local hosts = tonumber(env("BENCH_HOSTS") or "5")
local host_names = {}
local n = 0
local random = math.random

function init()
    c.seed()
    for h = 1, hosts do host_names[h] = c.host(h) end
end

-- BENCH_DELAY_MS: wait this long before each request of a connection (bench/signout.sh's
-- control run: n connections at n * 1000 / rate ms each send about rate a second)
local delay_ms = tonumber(env("BENCH_DELAY_MS") or "")
if delay_ms then
    function delay() return delay_ms end
end

function request()
    n = n + 1
    local v = string.format("%sz%02d%010d%08x%08x%08x%08x%08x", c.tag, (bench_seed or 1) % 100, n,
        random(0, 0x7fffffff), random(0, 0x7fffffff), random(0, 0x7fffffff), random(0, 0x7fffffff),
        random(0, 0x7fffffff))
    return c.request(v, host_names[random(hosts)], c.signout_uri)
end
