#!/usr/bin/env bash
# Starts the Redis topologies benches/stores.rs measures besides the single node of
# .ci/engines.sh, all on 127.0.0.1 with no persistence: a master with one replica
# and three sentinels, and a Redis Cluster of 3 masters and 3 replicas. Prints the
# environment the bench reads (eval it). (The failover tests, tests/redis_topologies.rs,
# start topologies of their own and kill them; these are for timing only.) Usage:
#   eval "$(bash bench/redis-topologies.sh start)"
#   cargo bench --features engines --bench stores -- redis
#   bash bench/redis-topologies.sh stop
# Ports: FSCACHE_TOPOLOGY_PORT_BASE (default 16400) + 0..1 master/replica,
# + 10..12 sentinels, + 20..25 cluster nodes.
set -euo pipefail
base=${FSCACHE_TOPOLOGY_PORT_BASE:-16400}
run=${FSCACHE_TOPOLOGY_DIR:-/tmp/fscache-topologies}

log() { echo "$*" >&2; }

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  log "nothing listens on 127.0.0.1:$1"; return 1
}

server() { # port [args…]
  local port=$1; shift
  mkdir -p "$run/$port"
  redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize yes \
    --pidfile "$run/$port.pid" --logfile "$run/$port.log" --dir "$run/$port" "$@" >&2
}

stop() {
  for pid in "$run"/*.pid; do
    [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
  done
  sleep 0.5
  rm -rf "$run"
}

start() {
  command -v redis-server >/dev/null || { log "redis-server is missing (apt-get install redis-server)"; exit 1; }
  stop
  mkdir -p "$run"
  local master=$base replica=$((base + 1))
  server "$master"
  server "$replica" --replicaof 127.0.0.1 "$master"
  for i in 10 11 12; do
    local port=$((base + i))
    mkdir -p "$run/$port"
    printf 'sentinel monitor main 127.0.0.1 %s 2\nsentinel down-after-milliseconds main 1000\nsentinel failover-timeout main 5000\n' \
      "$master" >"$run/$port/sentinel.conf"
    redis-server "$run/$port/sentinel.conf" --sentinel --bind 127.0.0.1 --port "$port" --daemonize yes \
      --pidfile "$run/$port.pid" --logfile "$run/$port.log" --dir "$run/$port" >&2
  done
  local nodes=()
  for i in 20 21 22 23 24 25; do
    local port=$((base + i))
    server "$port" --cluster-enabled yes --cluster-config-file "nodes-$port.conf" --cluster-node-timeout 2000
    nodes+=("127.0.0.1:$port")
  done
  for port in "$master" "$replica" $((base + 10)) $((base + 11)) $((base + 12)); do wait_port "$port"; done
  for n in "${nodes[@]}"; do wait_port "${n#*:}"; done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
  for _ in $(seq 1 100); do
    redis-cli -p $((base + 20)) cluster info | grep -q 'cluster_state:ok' && break
    sleep 0.1
  done
  echo "export FSCACHE_TEST_REDIS_SENTINEL=redis-sentinel://127.0.0.1:$((base + 10)),127.0.0.1:$((base + 11)),127.0.0.1:$((base + 12))/main/0"
  echo "export FSCACHE_TEST_REDIS_CLUSTER=redis-cluster://$(IFS=,; echo "${nodes[*]:0:3}")"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) log "usage: $0 start|stop"; exit 2 ;;
esac
