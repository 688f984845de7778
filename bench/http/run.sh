#!/usr/bin/env bash
# The HTTP session benchmark: one page (read the session, count the visit, write
# it back) on fscache's axum layer (file store on disk and on tmpfs, Redis), the
# tiny_http example (file store on disk and tmpfs), axum + tower-sessions + its
# Redis store, actix-web + actix-session's Redis store, and Flask + Flask-Session on
# Redis under gunicorn -w 2. wrk with keep-alive at 1, 4 and 16 connections (each
# wrk thread keeps one session), every server with 2 workers; then the lost-update
# column: 10 keep-alive clients x 5 page views of one session released together.
#
#   bench/http/run.sh [SECONDS] [ROUNDS]     (default 5 s, 3 rounds: medians)
#
# Needs wrk and redis-server (Debian's packages; installed if missing), python3.
# Redis: $FSCACHE_TEST_REDIS if set, else one started by .ci/engines.sh.
# Set OLD_AXUM=/path/to/axum-server to add a build of another commit as a row,
# ROWS="min-redis tower-redis …" to run only the rows of those names (see run below),
# SESSIONS=many for 64 sessions used in turn by all connections (concurrent
# requests are of different sessions) instead of one session per wrk thread.
# Prints a markdown table on stdout; progress on stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
secs=${1:-5}
rounds=${2:-3}
log() { printf '%s\n' "$*" >&2; }

command -v wrk >/dev/null || { log "installing wrk"; apt-get install -y wrk >&2; }
if [ -z "${FSCACHE_TEST_REDIS:-}" ]; then
  eval "$(bash "$root/.ci/engines.sh" start)"
fi
redis=$FSCACHE_TEST_REDIS

log "building the fscache servers and the peers"
(cd "$root" && cargo build --quiet --release -p fscache-web --features redis --bin axum-server \
  && cargo build --quiet --release --features redis --example server)
cargo build --quiet --release --manifest-path "$here/peers/Cargo.toml"
if [ ! -x "$here/.venv/bin/gunicorn" ]; then
  python3 -m venv "$here/.venv"
  "$here/.venv/bin/pip" install -q --disable-pip-version-check \
    flask==3.1.3 flask-session==0.8.0 redis==6.4.0 gunicorn==23.0.0 >&2
fi

work=$(mktemp -d /var/tmp/fscache-http.XXXXXX)
shm=$(mktemp -d /dev/shm/fscache-http.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work" "$shm"; }
trap cleanup EXIT

port=18180
# start NAME COMMAND...: starts a server on $port (given in the command) and waits
# until it answers.
start() {
  local name=$1; shift
  "$@" >"$work/$name.log" 2>&1 &
  pid=$!
  for _ in $(seq 200); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && return 0
    sleep 0.05
  done
  log "$name did not start:"; cat "$work/$name.log" >&2; exit 1
}
stop() { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; pid=; }

# median of the arguments
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# wrk's figure in ms
ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/,"",v); print v/1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v); print v+0 } else if (v ~ /s$/) { sub(/s$/,"",v); print v*1000 } }'; }

row() { # NAME: measures the running server, prints one table row
  local name=$1 cells="" c t
  for c in 1 4 16; do
    t=$(( c < 2 ? 1 : 2 ))
    local rps=() p50=() p99=()
    if [ "${SESSIONS:-thread}" = many ]; then
      python3 "$here/sessions.py" "127.0.0.1:$port" 64 >"$work/cookies"
      export BENCH_COOKIES="$work/cookies"
    fi
    wrk -t"$t" -c"$c" -d1s -s "$here/session.lua" "http://127.0.0.1:$port/" >/dev/null  # warm-up
    for _ in $(seq "$rounds"); do
      out=$(wrk -t"$t" -c"$c" -d"${secs}s" --latency -s "$here/session.lua" "http://127.0.0.1:$port/")
      # (The peers answer each wrk thread's first request, POST /login, with 404/405.)
      n=$(awk '/Non-2xx or 3xx responses/ {print $NF}' <<<"$out")
      [ "${n:-0}" -gt "$t" ] && { log "$name: $n error responses at $c connections:"; log "$out"; }
      rps+=("$(awk '/^Requests\/sec/ {print $2}' <<<"$out")")
      p50+=("$(ms "$(awk '$1=="50%" {print $2}' <<<"$out")")")
      p99+=("$(ms "$(awk '$1=="99%" {print $2}' <<<"$out")")")
    done
    cells+=$(printf ' %.0f / %.2f / %.2f |' "$(median "${rps[@]}")" "$(median "${p50[@]}")" "$(median "${p99[@]}")")
  done
  # Threads of the server process after the 16-connection runs (gunicorn: its
  # master's, the workers are processes).
  local threads
  threads=$(ls "/proc/$pid/task" 2>/dev/null | wc -l)
  local kept=()
  for _ in 1 2 3; do kept+=("$(python3 "$here/lost.py" "127.0.0.1:$port")"); done
  printf '| %s |%s %s | %s |\n' "$name" "$cells" "$threads" "$(IFS=,; echo "${kept[*]}" | sed 's/,/, /g')"
  log "done: $name"
}

[ "${SESSIONS:-thread}" = many ] && echo "64 sessions, requests rotate through them (SESSIONS=many)" && echo
echo "| stack | 1 conn: req/s / p50 ms / p99 ms | 4 conns | 16 conns | server threads | increments kept of 50 concurrent (3 runs) |"
echo "|---|---:|---:|---:|---:|---:|"
axum="$root/target/release/axum-server"
tiny="$root/target/release/examples/server"
peers="$here/peers/target/release"

# run NAME TITLE COMMAND...: one row (skipped unless NAME is in $ROWS, when set).
run() {
  local name=$1 title=$2; shift 2
  if [ -n "${ROWS:-}" ] && [[ " $ROWS " != *" $name "* ]]; then return 0; fi
  start "$name" "$@"; row "$title"; stop
}

run min-file-tmpfs "fscache axum layer, the peers' page, file store (tmpfs)" "$peers/fscache-axum" 127.0.0.1:$port "file://$shm/min" auto
run min-redis "fscache axum layer, the peers' page, Redis (async client)" "$peers/fscache-axum" 127.0.0.1:$port "${redis%/*}/6" auto
run min-redis-blocking "fscache axum layer, the peers' page, Redis (sync client on the blocking pool)" "$peers/fscache-axum" 127.0.0.1:$port "${redis%/*}/7" blocking
run axum-file-disk "fscache axum layer, file store (disk)" "$axum" --bind 127.0.0.1:$port --store "file://$work/axum"
run axum-file-tmpfs "fscache axum layer, file store (tmpfs)" "$axum" --bind 127.0.0.1:$port --store "file://$shm/axum"
run axum-file-tmpfs-blocking "fscache axum layer, file store (tmpfs), store calls on the blocking pool" "$axum" --bind 127.0.0.1:$port --store "file://$shm/axum-b" --store-calls blocking
run axum-redis "fscache axum layer, Redis (async client)" "$axum" --bind 127.0.0.1:$port --store "${redis%/*}/1"
if [ -n "${OLD_AXUM:-}" ]; then
  run old-axum-file-tmpfs "before: axum example on TowerStore, file store (tmpfs)" "$OLD_AXUM" --bind 127.0.0.1:$port --store "file://$shm/old"
  run old-axum-redis "before: axum example on TowerStore, Redis" "$OLD_AXUM" --bind 127.0.0.1:$port --store "${redis%/*}/2"
fi
run tiny-file-disk "fscache tiny_http example (2 threads), file store (disk)" "$tiny" --bind 127.0.0.1:$port --threads 2 --dir "$work/tiny"
run tiny-file-tmpfs "fscache tiny_http example (2 threads), file store (tmpfs)" "$tiny" --bind 127.0.0.1:$port --threads 2 --dir "$shm/tiny"
run tower-redis "axum + tower-sessions 0.14 + tower-sessions-redis-store 0.16 (fred)" "$peers/tower-redis" 127.0.0.1:$port "${redis%/*}/3"
run actix-redis "actix-web 4 + actix-session 0.11 RedisSessionStore" "$peers/actix-redis" 127.0.0.1:$port "${redis%/*}/4"
export REDIS_URL="${redis%/*}/5"
run flask "Flask 3.1 + Flask-Session 0.8 on Redis, gunicorn -w 2 (sync)" "$here/.venv/bin/gunicorn" --chdir "$here" -w 2 -b 127.0.0.1:$port --log-level warning flask_app:app
