-- Closed loop with think time: each connection waits `think_ms` between requests, so that
-- connections * 1000 / think_ms approximates a fixed request rate well below saturation.
local think_ms = tonumber(os.getenv("THINK_MS") or "0")
function delay()
  return think_ms
end
