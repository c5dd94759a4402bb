-- wrk script for bench/login_flood.py: a flood of wrong-password logins, each for
-- a new user name. OTHERIX_FLOOD_MODE: "one" (one client), "many" (each login
-- with another X-Forwarded-For address), "cheap" (GET /v1/users/me with a bad
-- token: no password work, the control). OTHERIX_FLOOD_DELAY_MS paces each
-- connection (wrk has no fixed-rate mode). Prints one line of counts at the end.
local threads = {}
local mode = os.getenv("OTHERIX_FLOOD_MODE") or "one"
-- per-connection pause between requests (0: as fast as the server answers)
local pause = tonumber(os.getenv("OTHERIX_FLOOD_DELAY_MS") or "0")

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  n = 0
  c401, window, queue, other = 0, 0, 0, 0
end

function delay()
  return pause
end

function request()
  n = n + 1
  if mode == "cheap" then
    return wrk.format("GET", "/v1/users/me", {["Authorization"] = "Bearer not-a-token"})
  end
  local headers = {["Content-Type"] = "application/json"}
  if mode == "many" then
    headers["X-Forwarded-For"] = string.format("10.%d.%d.%d", tid, math.floor(n / 256) % 256, n % 256)
  end
  local body = string.format('{"username":"flood-%s-%d-%d","password":"wrong-guess"}', mode, tid, n)
  return wrk.format("POST", "/v1/auth/login", headers, body)
end

function response(status, headers, body)
  if status == 401 then
    c401 = c401 + 1
  elseif status == 429 and body:find("login_queue_full", 1, true) then
    queue = queue + 1
  elseif status == 429 then
    window = window + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local t401, tw, tq, to = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    t401 = t401 + t:get("c401")
    tw = tw + t:get("window")
    tq = tq + t:get("queue")
    to = to + t:get("other")
  end
  io.write(string.format("OTHERIX %d %d %d %d %d %d\n", summary.requests, t401, tw, tq, to,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
