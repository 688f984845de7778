#!/usr/bin/env bash
# Flask-Session's session round trip on each engine (from PyPI, pinned), beside
# `cargo bench --features engines --bench stores`. Needs the engine servers:
#   eval "$(bash .ci/engines.sh start)"; bench/compare/flask_sessions.sh [ROUNDS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -x "$here/.venv/bin/python" ]; then
  python3 -m venv "$here/.venv"
fi
"$here/.venv/bin/pip" install -q --disable-pip-version-check \
  flask==3.1.3 flask-session==0.8.0 cachelib==0.17.0 redis pymemcache \
  flask-sqlalchemy sqlalchemy psycopg2-binary >&2
"$here/.venv/bin/python" "$here/flask_sessions.py" "${1:-5000}"
