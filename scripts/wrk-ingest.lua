-- wrk script: POST one form-encoded sample per request to the original
-- ingest route, each with a distinct time, as the GUI client does.
-- Used by scripts/quick-ingest.sh; USER and TOKEN come from the environment.
-- Globals on purpose: setup() sets thread_base in each thread's own Lua
-- state, which a `local` here would shadow (every thread would then send
-- the same times, and the server would rightly store each time once).
counter = 0
thread_base = 0
local thread_count = 0

function setup(thread)
  thread:set("thread_base", thread_count * 10000000)
  thread_count = thread_count + 1
end

function init(args)
  wrk.method = "POST"
  wrk.path = "/client/" .. os.getenv("USER_NAME")
  wrk.headers["Authorization"] = os.getenv("TOKEN")
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

function request()
  counter = counter + 1
  -- Milliseconds apart from 2023-11-14 on: distinct for every request.
  local time = string.format("%.3f", 1700000000 + (thread_base + counter) / 1000)
  local body = "time=" .. time .. "&cpu_load=12.5&mem=6172&storage=95888"
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local non_2xx = summary.errors.status
  io.write(string.format("requests: %d, non-2xx: %d, socket errors: %d\n",
    summary.requests, non_2xx,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
