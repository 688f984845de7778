"""Makes N sessions on the server of bench/http/run.sh the way lost.py makes one
(POST /login, then GET /) and prints their cookies, one per line, for
session.lua's many-sessions mode. Usage: sessions.py HOST:PORT N"""
import http.client, sys

host, n = sys.argv[1], int(sys.argv[2])


def session_cookie(sc):
    # An expiring cookie is not a session, and the tiny_http example's visit
    # counter cookie is not the session's.
    if not sc or "Max-Age=0" in sc:
        return None
    pair = sc.split(";")[0]
    return None if pair.startswith("visits=") else pair


for _ in range(n):
    conn = http.client.HTTPConnection(host)
    conn.request("POST", "/login", body="user=bench",
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    r = conn.getresponse()
    r.read()
    cookie = session_cookie(r.getheader("Set-Cookie"))
    conn.close()  # a peer may close after answering /login with 404/405
    conn = http.client.HTTPConnection(host)
    conn.request("GET", "/", headers={"Cookie": cookie} if cookie else {})
    r = conn.getresponse()
    r.read()
    cookie = session_cookie(r.getheader("Set-Cookie")) or cookie
    if not cookie:
        sys.exit(f"{host}: no session cookie")
    print(cookie)
    conn.close()
