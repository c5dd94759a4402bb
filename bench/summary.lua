-- wrk script: plain requests, machine-readable summary line.
function done(summary, latency, requests)
  io.write(string.format("OTHERIX %d %d %d %f %f %d\n", summary.requests, summary.errors.status,
    summary.duration, latency:percentile(50), latency:percentile(99), summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
