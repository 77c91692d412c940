-- wrk script: POST one chat completion (non-streaming) and print exact figures as JSON.
-- The body is the same for every target; BENCH_MODEL picks the model alias.
local model = os.getenv("BENCH_MODEL") or "bench"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"' .. model .. '","messages":[{"role":"user","content":'
  .. '"Say hello in one short sentence."}],"max_tokens":50}'

-- Paced load (BENCH_THINK_MS > 0): each connection waits a random, exponentially
-- distributed think time before each request, so many connections together make
-- Poisson-like arrivals at about connections / (latency + think) req/s, with no
-- lockstep bursts.  wrk rounds the delay down to whole milliseconds.
local think = tonumber(os.getenv("BENCH_THINK_MS") or "0")

function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end

function delay()
  if think > 0 then
    return -think * math.log(1 - math.random())
  end
  return 0
end

function done(summary, latency, requests)
  -- latency values are microseconds; wrk's own --latency print rounds them
  local out = string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,'
    .. '"write":%d,"status":%d,"timeout":%d},"latency_us":{"min":%d,"mean":%.1f,'
    .. '"max":%d,"stdev":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}',
    summary.requests, summary.duration, summary.bytes,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout,
    latency.min, latency.mean, latency.max, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9))
  io.stderr:write("WRKJSON " .. out .. "\n")
end
