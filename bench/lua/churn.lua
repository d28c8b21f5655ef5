-- bench/lua/churn.lua — bench/lua/hit.lua's traffic with "Connection: close" on every request: each
-- check on a new TCP connection (a proxy that does not keep connections to the auth endpoint).
-- Same environment as hit.lua.
BENCH_FORCE_CLOSE = true
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "hit.lua")
