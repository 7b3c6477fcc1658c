-- wrk script for throughput.py's HTTP column: exactly TOTAL POSTs of one JSON body.
--
--   wrk -t1 -c32 -d600s -s bench/wrk_post.lua URL -- BODY_FILE API_KEY TOTAL
--
-- Each connection sends while fewer than TOTAL requests have been sent; then it idles
-- (delay). After the TOTAL-th response it prints "done <status>=<count> ..." on one line;
-- throughput.py then stops wrk with SIGINT (its main thread ends only at -d or on it),
-- and wrk prints the final "codes ..." and its socket "errors ..." (a request lost to
-- one is never answered: then throughput.py stops wrk at its timeout).
-- One thread (-t1): the counters live in it.

local total = 0
local sent, answered = 0, 0
codes = {} -- a global: done() reads it from the thread
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local file = assert(io.open(args[1], "rb"))
  wrk.method = "POST"
  wrk.body = file:read("*a")
  file:close()
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. args[2]
  total = tonumber(args[3])
end

function delay()
  if sent < total then
    sent = sent + 1
    return 0
  end
  return 3600000 -- every request is out: idle until stopped
end

local function counts(table_)
  local parts = {}
  for code, n in pairs(table_) do
    parts[#parts + 1] = code .. "=" .. n
  end
  return table.concat(parts, " ")
end

function response(status, headers, body)
  local key = tostring(status)
  codes[key] = (codes[key] or 0) + 1
  answered = answered + 1
  if answered == total then
    io.write("done ", counts(codes), "\n")
    io.flush()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write("codes ", counts(threads[1]:get("codes")), "\n")
  io.write(string.format("errors connect=%d read=%d write=%d timeout=%d\n",
    e.connect, e.read, e.write, e.timeout))
end
