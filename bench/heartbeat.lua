-- wrk script: each request is one node's unchanged-state heartbeat, nodes in turn.
-- Reads "name credential body" lines from the file in env OTHERIX_BENCH_NODES.
local nodes = {}
local i = 0

function init(args)
  for line in io.lines(os.getenv("OTHERIX_BENCH_NODES")) do
    local name, cred, body = line:match("^(%S+) (%S+) (.*)$")
    nodes[#nodes + 1] = {name = name, cred = cred, body = body}
  end
  i = math.random(#nodes)
end

function request()
  i = i % #nodes + 1
  local n = nodes[i]
  return wrk.format("POST", "/v1/nodes/" .. n.name .. "/heartbeat",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. n.cred}, n.body)
end

function done(summary, latency, requests)
  io.write(string.format("OTHERIX %d %d %d %f %f %d\n", summary.requests, summary.errors.status,
    summary.duration, latency:percentile(50), latency:percentile(99), summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
