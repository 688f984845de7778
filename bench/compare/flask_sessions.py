"""Flask-Session's session round trip (open_session, change one key, save_session)
on the engines fscache's stores use, for the README's backend table. Run by
flask_sessions.sh with the engine URLs in the environment (.ci/engines.sh).

    python flask_sessions.py ROUNDS

Prints, per backend, p50 / p99 / p99.9 / max in µs, in the format of
`cargo bench --bench stores`.
"""

import os
import sys
import tempfile
import time
from urllib.parse import urlparse

import flask


def app_for(kind, url, tmp):
    app = flask.Flask(__name__)
    app.config["SECRET_KEY"] = "bench"
    if kind == "redis":
        import redis

        u = urlparse(url)
        app.config.update(SESSION_TYPE="redis", SESSION_REDIS=redis.Redis(host=u.hostname, port=u.port))
    elif kind == "memcached":
        from pymemcache.client.base import Client

        u = urlparse(url)
        app.config.update(SESSION_TYPE="memcached", SESSION_MEMCACHED=Client((u.hostname, u.port)))
    elif kind == "file":
        from cachelib.file import FileSystemCache

        app.config.update(
            SESSION_TYPE="cachelib",
            SESSION_CACHELIB=FileSystemCache(os.path.join(tmp, "flask_session"), threshold=0),
        )
    elif kind in ("postgres", "sqlite"):
        from flask_sqlalchemy import SQLAlchemy

        uri = url.replace("postgres://", "postgresql+psycopg2://", 1) if kind == "postgres" else url
        app.config.update(SQLALCHEMY_DATABASE_URI=uri, SESSION_TYPE="sqlalchemy")
        app.config["SESSION_SQLALCHEMY"] = SQLAlchemy(app)
    from flask_session import Session

    Session(app)
    return app


def round_trips(app, rounds):
    si = app.session_interface
    with app.test_request_context("/"):
        s = si.open_session(app, flask.request)
        s["user"] = "ada"
        s["n"] = 0
        resp = app.response_class()
        si.save_session(app, s, resp)
        cookie = resp.headers["Set-Cookie"].split(";")[0]
    lat = []
    for i in range(rounds):
        with app.test_request_context("/", headers={"Cookie": cookie}):
            t = time.perf_counter_ns()
            s = si.open_session(app, flask.request)
            s["n"] = i
            resp = app.response_class()
            si.save_session(app, s, resp)
            lat.append(time.perf_counter_ns() - t)
    return sorted(lat)


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    tmp = tempfile.mkdtemp()
    backends = [("file", None), ("sqlite", "sqlite:///" + os.path.join(tmp, "s.db"))]
    for kind, var in [("redis", "FSCACHE_TEST_REDIS"), ("postgres", "FSCACHE_TEST_POSTGRES"),
                      ("memcached", "FSCACHE_TEST_MEMCACHED")]:
        if os.environ.get(var):
            backends.append((kind, os.environ[var]))
    print(f"Flask-Session round trip (open_session, change one key, save_session); {rounds} each; µs")
    print(f"{'store':<10} {'':<8} {'p50':>9} {'p99':>9} {'p99.9':>9} {'max':>9}")
    for kind, url in backends:
        app = app_for(kind, url, tmp)
        lat = round_trips(app, rounds)
        pick = lambda p: lat[min(int(len(lat) * p), len(lat) - 1)] / 1000
        print(f"{kind:<10} {'flask':<8} {pick(0.5):>9.1f} {pick(0.99):>9.1f} {pick(0.999):>9.1f} {lat[-1] / 1000:>9.1f}")


if __name__ == "__main__":
    main()
