"""Flask + Flask-Session on Redis: the page of bench/http/run.sh, served by
gunicorn -w 2. REDIS_URL from the environment."""
import os

import redis
from flask import Flask, session
from flask_session import Session

app = Flask(__name__)
app.config.update(
    SECRET_KEY="bench",
    SESSION_TYPE="redis",
    SESSION_REDIS=redis.from_url(os.environ["REDIS_URL"]),
    SESSION_PERMANENT=True,
)
Session(app)


@app.get("/")
def page():
    session["visits"] = session.get("visits", 0) + 1
    return f"visits {session['visits']}\n"
