-- The kit's introspect_bearer.lua (the homeserver's introspection), paced: one request every
-- PACE_MS milliseconds (default 5: 200 a second on one connection). A latency probe beside a
-- load (the sign-in storm) must not be a load itself: the kit's script on one connection
-- sends the next request as soon as the answer is in, some 3,000–5,000 a second, and takes a
-- core from what it measures.
-- Env: KIT_WRK = the kit's wrk/ folder; HS_SECRET, TOKEN as introspect_bearer.lua.
dofile(assert(os.getenv("KIT_WRK"), "KIT_WRK env var required") .. "/introspect_bearer.lua")
local pace = tonumber(os.getenv("PACE_MS") or "5")
function delay()
  return pace
end
