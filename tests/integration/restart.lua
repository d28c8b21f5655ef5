-- restart.lua — test_restart.py's load: every request the forward-auth check of one of the
-- signed-in sessions in RESTART_COOKIES (comma-separated, cached by the test first), in turn.
-- done() prints one line: "restart: answers=N hits=N not_hit=N" (X-Authcache of each answer).
-- Usage: RESTART_COOKIES=a,b wrk -t1 -c64 -d6s -s restart.lua http://127.0.0.1:PORT
local cookie_name = os.getenv("RESTART_COOKIE_NAME") or "authentik_proxy_3f2a1b0c"
local reqs, i = {}, 0
answers, hits = 0, 0 -- globals: done() reads them with thread:get
local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init()
    for c in string.gmatch(os.getenv("RESTART_COOKIES") or "", "[^,]+") do
        table.insert(reqs, wrk.format("GET", "/outpost.goauthentik.io/auth/traefik", {
            ["Host"] = "127.0.0.1",
            ["X-Forwarded-Method"] = "GET",
            ["X-Forwarded-Proto"] = "https",
            ["X-Forwarded-Host"] = "app1.test",
            ["X-Forwarded-Uri"] = "/dashboard",
            ["Cookie"] = "theme=dark; " .. cookie_name .. "=" .. c,
        }))
    end
end

function request()
    i = i % #reqs + 1
    return reqs[i]
end

function response(status, headers, body)
    answers = answers + 1
    if headers["X-Authcache"] == "hit" then hits = hits + 1 end
end

function done(summary, latency, requests)
    local a, h = 0, 0
    for _, t in ipairs(threads) do
        a = a + t:get("answers")
        h = h + t:get("hits")
    end
    io.write(string.format("restart: answers=%d hits=%d not_hit=%d\n", a, h, a - h))
end
