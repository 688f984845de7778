-- wrk script for bench/http/run.sh: each wrk thread keeps one session. Its first
-- request is POST /login (the fscache examples store a session once it holds
-- something; the peers' page makes one itself); every later request is GET / with
-- the cookie the server last set.
local cookie = nil
local logged_in = false

request = function()
  if not logged_in then
    logged_in = true
    return wrk.format("POST", "/login", {["Content-Type"] = "application/x-www-form-urlencoded"}, "user=bench")
  end
  local headers = {}
  if cookie then headers["Cookie"] = cookie end
  return wrk.format("GET", "/", headers)
end

response = function(status, headers, body)
  local sc = headers["Set-Cookie"] or headers["set-cookie"]
  if sc then
    local pair = sc:match("^([^;]+)")
    -- An expiring cookie (Max-Age=0) never replaces a live one, and the tiny_http
    -- example's own visit counter cookie is not the session's.
    if pair and not sc:find("Max%-Age=0") and not pair:match("^visits=") then cookie = pair end
  end
end
