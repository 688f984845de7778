#!/usr/bin/env bash
# Starts the engine servers the store tests run against, each on 127.0.0.1 on a
# private port, with no persistence, in a throwaway directory; prints the
# environment the tests read (eval it). Installs the servers from Debian's packages
# if they are missing. Usage:
#   eval "$(bash .ci/engines.sh start)"    # then cargo test --features engines …
#   bash .ci/engines.sh stop
#   bash .ci/engines.sh check             # all still answering? (logs if not)
# Ports: FSCACHE_ENGINE_PORT_BASE (default 16300) + 79 redis, + 11 memcached,
# + 32 postgres.
set -euo pipefail
base=${FSCACHE_ENGINE_PORT_BASE:-16300}
redis_port=$((base + 79)); mc_port=$((base + 11)); pg_port=$((base + 32))
run=${FSCACHE_ENGINE_DIR:-/tmp/fscache-engines}

log() { echo "$*" >&2; }

# Kills the process in a pid file and waits until it is gone (its port is free).
kill_wait() {
  [ -f "$1" ] || return 0
  local pid; pid=$(cat "$1")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
  kill -9 "$pid" 2>/dev/null || true
}

stop() {
  kill_wait "$run/redis.pid"
  kill_wait "$run/memcached.pid"
  if [ -d "$run/pg" ]; then
    su postgres -s /bin/sh -c "$(pg_bin)/pg_ctl -D $run/pg -m immediate stop" >/dev/null 2>&1 || true
  fi
  rm -rf "$run"
}

# Whether every server still answers; prints the logs of one that does not.
check() {
  local ok=0
  for pair in "$redis_port:redis" "$mc_port:memcached" "$pg_port:pg"; do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/${pair%%:*}") 2>/dev/null; then
      log "${pair#*:} is not answering on 127.0.0.1:${pair%%:*}; its log:"
      cat "$run/${pair#*:}.log" >&2 2>/dev/null || true
      ok=1
    fi
  done
  return $ok
}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

wait_port() { # port name
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  log "$2 did not start on 127.0.0.1:$1; its log:"
  cat "$run/$2.log" >&2 2>/dev/null || true
  return 1
}

start() {
  need=()
  command -v redis-server >/dev/null || need+=(redis-server)
  command -v memcached >/dev/null || need+=(memcached)
  [ -n "$(pg_bin)" ] || need+=(postgresql)
  # tests/postgres_ops.rs starts its own PgBouncer (transaction pooling).
  [ -x /usr/sbin/pgbouncer ] || command -v pgbouncer >/dev/null || need+=(pgbouncer)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing: ${need[*]}"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  stop
  mkdir -p "$run"; chmod 0777 "$run"
  redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
    --daemonize yes --pidfile "$run/redis.pid" --logfile "$run/redis.log" --dir "$run" >&2
  # In the foreground of its own session (not -d), so a failure lands in its log.
  setsid memcached -l 127.0.0.1 -p "$mc_port" -U 0 -m 256 -I 2m -u nobody \
    >"$run/memcached.log" 2>&1 </dev/null &
  echo $! >"$run/memcached.pid"
  # initdb refuses to run as root: the cluster belongs to the postgres user.
  mkdir -p "$run/pg"; chown postgres "$run/pg"
  su postgres -s /bin/sh -c "$(pg_bin)/initdb -D $run/pg -A trust -U postgres --no-sync" >/dev/null
  su postgres -s /bin/sh -c "$(pg_bin)/pg_ctl -D $run/pg -l $run/pg.log -o '-c listen_addresses=127.0.0.1 -p $pg_port -k $run -c fsync=off -c synchronous_commit=off -c full_page_writes=off' -w start" >/dev/null
  wait_port "$redis_port" redis
  wait_port "$mc_port" memcached
  wait_port "$pg_port" pg
  echo "export FSCACHE_TEST_REDIS=redis://127.0.0.1:$redis_port/0"
  echo "export FSCACHE_TEST_MEMCACHED=memcache://127.0.0.1:$mc_port"
  echo "export FSCACHE_TEST_POSTGRES=postgres://postgres@127.0.0.1:$pg_port/postgres"
  echo "export FSCACHE_ENGINE_DIR=$run"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  check) check ;;
  *) log "usage: $0 start|stop|check"; exit 2 ;;
esac
