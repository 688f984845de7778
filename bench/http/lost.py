"""The lost-update column of bench/http/run.sh: one session, 10 keep-alive clients
x 5 page views released together by a barrier; prints how many of the 50 visits
the server counted. Usage: lost.py HOST:PORT"""
import http.client, re, sys, threading

host = sys.argv[1]
COUNT = re.compile(r"(?:visited this page <b>|visits )(\d+)")


def call(conn, method, path, cookie, body=None):
    headers = {"Cookie": cookie} if cookie else {}
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    text = r.read().decode()
    sc = r.getheader("Set-Cookie")
    return r.status, text, sc


conn = http.client.HTTPConnection(host)
cookie = None
# The fscache examples store a session at login; the peers answer 404 and make
# one on the first page.
# (On a connection of its own: a server that refuses the POST without reading its
# body may close the connection after answering.)
_, _, sc = call(http.client.HTTPConnection(host), "POST", "/login", None, "user=bench")
if sc and "Max-Age=0" not in sc:
    cookie = sc.split(";")[0]
_, text, sc = call(conn, "GET", "/", cookie)
if sc and "Max-Age=0" not in sc:
    cookie = sc.split(";")[0]
before = int(COUNT.search(text).group(1))
barrier = threading.Barrier(10)
errors = []


def client():
    c = http.client.HTTPConnection(host)
    c.connect()
    barrier.wait()
    for _ in range(5):
        status, _, _ = call(c, "GET", "/", cookie)
        if status != 200:
            errors.append(status)


threads = [threading.Thread(target=client) for _ in range(10)]
for t in threads:
    t.start()
for t in threads:
    t.join()
_, text, _ = call(conn, "GET", "/", cookie)
after = int(COUNT.search(text).group(1))
kept = after - before - 1
print(kept if not errors else f"{kept} ({len(errors)} errors: {sorted(set(errors))})")
