-- wrk script for bench/http/run.sh: each wrk thread keeps one session. Its first
-- request is POST /login (the fscache examples store a session once it holds
-- something; the peers' page makes one itself); every later request is GET / with
-- the cookie the server last set.
--
-- Many-sessions mode (BENCH_COOKIES=FILE, one cookie per line, made by
-- sessions.py): every request is GET / with the next cookie of the file, each
-- thread starting at its own offset, so concurrent requests are of different
-- sessions (16 users with one connection each rather than 2 users with 8).
local cookie = nil
local logged_in = false
local cookies = nil
local n = 0
local threads = 0

setup = function(thread)
  thread:set("offset", threads * 1000003)
  threads = threads + 1
end

init = function(args)
  local path = os.getenv("BENCH_COOKIES")
  if path and path ~= "" then
    cookies = {}
    for line in io.lines(path) do table.insert(cookies, line) end
    n = offset or 0
  end
end

request = function()
  if cookies then
    n = n + 1
    return wrk.format("GET", "/", {["Cookie"] = cookies[n % #cookies + 1]})
  end
  if not logged_in then
    logged_in = true
    return wrk.format("POST", "/login", {["Content-Type"] = "application/x-www-form-urlencoded"}, "user=bench")
  end
  local headers = {}
  if cookie then headers["Cookie"] = cookie end
  return wrk.format("GET", "/", headers)
end

response = function(status, headers, body)
  if cookies then return end
  local sc = headers["Set-Cookie"] or headers["set-cookie"]
  if sc then
    local pair = sc:match("^([^;]+)")
    -- An expiring cookie (Max-Age=0) never replaces a live one, and the tiny_http
    -- example's own visit counter cookie is not the session's.
    if pair and not sc:find("Max%-Age=0") and not pair:match("^visits=") then cookie = pair end
  end
end
