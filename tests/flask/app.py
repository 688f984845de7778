"""A Flask app on Flask-Session, for the interop tests (tests/flask_interop.rs).

Configured by the environment, as a deployment would be:
  FLASK_SESSION_STORE   cachelib:DIR (Flask-Session's cachelib backend on cachelib's
                        FileSystemCache), redis://HOST:PORT/DB (its Redis backend),
                        or cookie (Flask's default signed-cookie session)
  FLASK_SECRET_KEY      the app's SECRET_KEY
  FLASK_USE_SIGNER      1: SESSION_USE_SIGNER = True
  FLASK_HASH            sha256 (default) or md5: cachelib's hash_method
  FLASK_THRESHOLD       cachelib's threshold (0: none; default 500, as Flask-Session)
  FLASK_LIFETIME        PERMANENT_SESSION_LIFETIME in seconds (default 31 days)
  FLASK_KEY_PREFIX      SESSION_KEY_PREFIX (default "session:")
Prints "listening on http://127.0.0.1:PORT" once it accepts connections.

Routes, the same as the Rust example server's: GET / (a page), GET /me, POST /login
(form field user; a new session id), POST /logout, GET /cart, POST /cart/add/<item>,
POST /cart/clear. GET /dump returns the whole session dict (repr) for the tests.
"""
import hashlib
import logging
import os
import socket
import sys
import warnings
from datetime import timedelta

warnings.simplefilter("ignore", DeprecationWarning)
# One line per request is noise in the test log; errors still show.
logging.getLogger("werkzeug").setLevel(logging.WARNING)

from flask import Flask, jsonify, redirect, request, session  # noqa: E402

app = Flask(__name__)
app.secret_key = os.environ.get("FLASK_SECRET_KEY", "dev secret")
app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(
    seconds=int(os.environ.get("FLASK_LIFETIME", 31 * 86400))
)
store = os.environ.get("FLASK_SESSION_STORE", "cookie")
server_side = store != "cookie"
if server_side:
    from flask_session import Session

    app.config["SESSION_USE_SIGNER"] = os.environ.get("FLASK_USE_SIGNER") == "1"
    app.config["SESSION_KEY_PREFIX"] = os.environ.get("FLASK_KEY_PREFIX", "session:")
    if store.startswith("cachelib:"):
        from cachelib.file import FileSystemCache

        hash_method = {"sha256": hashlib.sha256, "md5": hashlib.md5}[
            os.environ.get("FLASK_HASH", "sha256")
        ]
        app.config["SESSION_TYPE"] = "cachelib"
        app.config["SESSION_CACHELIB"] = FileSystemCache(
            store[len("cachelib:"):],
            threshold=int(os.environ.get("FLASK_THRESHOLD", 500)),
            hash_method=hash_method,
        )
    elif store.startswith("redis://"):
        import redis

        app.config["SESSION_TYPE"] = "redis"
        app.config["SESSION_REDIS"] = redis.from_url(store)
    else:
        sys.exit(f"unknown FLASK_SESSION_STORE {store!r}")
    Session(app)


@app.get("/")
def index():
    user = session.get("user")
    cart = session.get("cart", {})
    items = "".join(f"<li>{k} × {n}</li>" for k, n in sorted(cart.items()))
    who = f"Logged in as <b>{user}</b>." if user else "Not logged in."
    return f"<!doctype html><title>Flask</title><h1>Flask app</h1><p>{who}</p><ul>{items}</ul>"


@app.get("/me")
def me():
    user = session.get("user")
    return jsonify(user=user), (200 if user else 401)


@app.post("/login")
def login():
    user = request.form.get("user", "").strip()
    if not user:
        return "user missing\n", 400
    if server_side:
        app.session_interface.regenerate(session)
    session.permanent = True
    session["user"] = user
    return redirect("/")


@app.post("/logout")
def logout():
    session.clear()
    return redirect("/")


@app.get("/cart")
def cart():
    return jsonify(session.get("cart", {}))


@app.post("/cart/add/<item>")
def cart_add(item):
    cart = dict(session.get("cart", {}))
    cart[item] = cart.get(item, 0) + 1
    session["cart"] = cart
    return jsonify(cart)


@app.post("/cart/clear")
def cart_clear():
    session.pop("cart", None)
    return jsonify({})


@app.post("/tags/add/<tag>")
def tags_add(tag):
    # A set: a value fscache cannot represent, so the Rust side must leave the
    # session (and its cookie) alone.
    session["tags"] = set(session.get("tags", set())) | {tag}
    return jsonify(sorted(session["tags"]))


@app.get("/dump")
def dump():
    return repr(sorted(dict(session).items()))


if __name__ == "__main__":
    from werkzeug.serving import make_server

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = make_server("127.0.0.1", port, app, threaded=True)
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    server.serve_forever()
