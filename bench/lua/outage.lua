-- bench/lua/outage.lua — bench/lua/hit.lua's traffic (cached sessions only), every answer counted by
-- status class: bench/run stops the IdP in the middle of the run, and any answer but a 2xx for a
-- session the cache held is a failure of the cache. Same environment as hit.lua.
BENCH_FORCE_STATUS = true
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "hit.lua")
