-- bench/lua/mixed.lua — a day's traffic in miniature. Per request, at random:
--   95 %  a cached session: bench/lua/hit.lua's population (pool "h", BENCH_SESSIONS sessions over
--         5 hosts, Zipf-skewed), kept fresh by the traffic itself
--   4 %   a session the cache holds but has not been asked about for longer than --fresh-ttl, so the
--         answer must be revalidated: pool "r", BENCH_REVAL_SESSIONS sessions x 5 hosts, visited in
--         turn (bench/run warms them and picks the pool big enough that a pair comes back only
--         after fresh-ttl)
--   1 %   a new session: pool "f" from BENCH_NEW_FROM on, each used once; every 10th of them comes
--         from pool "b" (from BENCH_BYE_FROM) instead and signs out later
-- and every BENCH_SIGNOUT_EVERY-th request (default 2000) is the sign-out of the oldest "b" session
-- not yet signed out (X-Forwarded-Uri under /outpost.goauthentik.io/sign_out), which the script then
-- never uses again. Reports, besides wrk's figures: requests per kind (wrk_hot, wrk_reval, wrk_new,
-- wrk_signout), wrk_keys (distinct (session, host) pairs asked for) and answers by status class.
local c = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
local env = os.getenv
c.report()
c.count_status()

local HOSTS = 5
local hot_sessions = tonumber(env("BENCH_SESSIONS") or "10000")
local reval_sessions = tonumber(env("BENCH_REVAL_SESSIONS") or "5000")
local new_from = tonumber(env("BENCH_NEW_FROM") or "0")
local new_count = tonumber(env("BENCH_NEW_COUNT") or "100000")
local bye_from = tonumber(env("BENCH_BYE_FROM") or "0")
local bye_count = tonumber(env("BENCH_BYE_COUNT") or "10000")
local signout_every = tonumber(env("BENCH_SIGNOUT_EVERY") or "2000")
local zipf_s = tonumber(env("BENCH_ZIPF_S") or "1.0")

local random, floor = math.random, math.floor
local request_of = c.request
local hot_cookies, host_names = {}, {}
local pick_session, pick_host
local seen = {}
local n, reval_k, new_j, bye_j = 0, 0, 0, 0
local bye_queue, bye_head, bye_tail = {}, 1, 1

function init()
    c.seed()
    for i = 1, hot_sessions do hot_cookies[i] = c.cookie("h", i - 1) end
    for h = 1, HOSTS do host_names[h] = c.host(h) end
    pick_session, pick_host = c.zipf(hot_sessions, zipf_s), c.zipf(HOSTS, zipf_s)
    for _, k in ipairs({ "hot", "reval", "new", "signout", "keys", "reused" }) do bench_counts[k] = 0 end
end

local function touch(key)
    if not seen[key] then
        seen[key] = true
        bench_counts.keys = bench_counts.keys + 1
    end
end

function request()
    n = n + 1
    if n % signout_every == 0 and bye_queue[bye_head] then
        local b = bye_queue[bye_head]
        bye_queue[bye_head] = nil
        bye_head = bye_head + 1
        bench_counts.signout = bench_counts.signout + 1
        return request_of(b[1], b[2], c.signout_uri)
    end
    local u = random()
    if u < 0.95 then
        local s, h = pick_session(), pick_host()
        touch(s * 8 + h)
        bench_counts.hot = bench_counts.hot + 1
        return request_of(hot_cookies[s], host_names[h], c.uri(n))
    elseif u < 0.99 then
        local k = reval_k
        reval_k = (reval_k + 1) % (reval_sessions * HOSTS)
        touch(-1 - k)
        bench_counts.reval = bench_counts.reval + 1
        return request_of(c.cookie("r", floor(k / HOSTS)), host_names[k % HOSTS + 1], c.uri(n))
    end
    bench_counts.new = bench_counts.new + 1
    bench_counts.keys = bench_counts.keys + 1 -- a new session: a pair never asked for before
    local host = host_names[random(HOSTS)]
    if (new_j + bye_j) % 10 == 9 then
        if bye_j >= bye_count then bench_counts.reused = bench_counts.reused + 1 end
        local cookie = c.cookie("b", bye_from + bye_j % bye_count)
        bye_j = bye_j + 1
        bye_queue[bye_tail] = { cookie, host }
        bye_tail = bye_tail + 1
        return request_of(cookie, host, c.uri(n))
    end
    if new_j >= new_count then bench_counts.reused = bench_counts.reused + 1 end
    local cookie = c.cookie("f", new_from + new_j % new_count)
    new_j = new_j + 1
    return request_of(cookie, host, c.uri(n))
end
