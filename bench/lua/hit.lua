-- bench/lua/hit.lua — wrk script: every request is the forward-auth check Traefik's forwardAuth
-- middleware sends for one signed-in browser: GET of the outpost's auth path with the session
-- cookie and the X-Forwarded-* headers of the original request. The same request every time, so
-- once the cache is warm every answer from authcached is a hit.
--
-- Environment (all optional):
--   HIT_COOKIE  session cookie value   (default: bench-session-cookie-0001)
--   HIT_COOKIE_NAME                    (default: authentik_proxy_3f2a1b0c, the test IdP's)
--   HIT_HOST    X-Forwarded-Host       (default: app1.test)
--   HIT_PATH    forward-auth path      (default: /outpost.goauthentik.io/auth/traefik)
-- Usage: wrk -t1 -c32 -d10s --latency -s bench/lua/hit.lua http://127.0.0.1:PORT

local cookie_name = os.getenv("HIT_COOKIE_NAME") or "authentik_proxy_3f2a1b0c"
local cookie = os.getenv("HIT_COOKIE") or "bench-session-cookie-0001"
local host = os.getenv("HIT_HOST") or "app1.test"
local path = os.getenv("HIT_PATH") or "/outpost.goauthentik.io/auth/traefik"

local req

function init(args)
    req = wrk.format("GET", path, {
        ["Host"] = "127.0.0.1",
        ["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ["Accept-Encoding"] = "gzip",
        ["Cookie"] = cookie_name .. "=" .. cookie,
        ["X-Forwarded-For"] = "192.0.2.10",
        ["X-Forwarded-Host"] = host,
        ["X-Forwarded-Method"] = "GET",
        ["X-Forwarded-Port"] = "443",
        ["X-Forwarded-Proto"] = "https",
        ["X-Forwarded-Server"] = "traefik-7d9f8b6c4-x2lqp",
        ["X-Forwarded-Uri"] = "/dashboard/projects?page=2",
        ["X-Real-Ip"] = "192.0.2.10",
    })
end

function request()
    return req
end
