#!/usr/bin/env bash
# A throwaway 3-primary Redis Cluster on loopback, for running the tests against Redis Cluster (make test-cluster).
#
#   deploy/local/redis-cluster.sh start    start three redis-server --cluster-enabled yes processes in a temp folder,
#                                          join them with redis-cli --cluster create (no replicas), wait until the
#                                          cluster is ok, then print its StackExchange.Redis configuration string (and
#                                          nothing else) on stdout:
#                                            127.0.0.1:46381,127.0.0.1:46382,127.0.0.1:46383
#   deploy/local/redis-cluster.sh stop     stop the three processes by the PIDs recorded at start, delete the folder
#   deploy/local/redis-cluster.sh status   say on stderr whether the cluster runs; exit 0 when it does
#
# Ports: REDIS_CLUSTER_PORT (default 46381) and the next two; each node's cluster bus is its port + 10000.
# Nothing is persisted. The temp folder's path is kept in <repo>/.local/redis-cluster.dir (git-ignored).
# Diagnostics go to stderr.
set -euo pipefail

readonly FIRST_PORT="${REDIS_CLUSTER_PORT:-46381}"
readonly PORTS=("$FIRST_PORT" "$((FIRST_PORT + 1))" "$((FIRST_PORT + 2))")

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
readonly REPO_ROOT
readonly STATE_FILE="$REPO_ROOT/.local/redis-cluster.dir"

log() { printf 'redis-cluster.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

port_answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

configuration() {
  local joined="" port
  for port in "${PORTS[@]}"; do joined+="${joined:+,}127.0.0.1:$port"; done
  printf '%s\n' "$joined"
}

cluster_dir() { [ -f "$STATE_FILE" ] && cat "$STATE_FILE"; }

running_pids() {
  local dir pidfile pid
  dir="$(cluster_dir)" || return 0
  for pidfile in "$dir"/*/redis.pid; do
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then printf '%s\n' "$pid"; fi
  done
}

cluster_ok() {
  local state
  state="$(redis-cli -h 127.0.0.1 -p "${PORTS[0]}" cluster info 2>/dev/null | tr -d '\r' | grep '^cluster_state:' || true)"
  [ "$state" = "cluster_state:ok" ]
}

start() {
  command -v redis-server >/dev/null || die "redis-server is not installed (Debian/Ubuntu: apt-get install -y redis-server)"
  command -v redis-cli >/dev/null || die "redis-cli is not installed (Debian/Ubuntu: apt-get install -y redis-tools)"
  if [ -n "$(running_pids)" ]; then
    cluster_ok || die "a cluster from $(cluster_dir) runs but is not ok; run '$0 stop' first"
    log "already running ($(cluster_dir))"
    configuration
    return 0
  fi

  local port
  for port in "${PORTS[@]}"; do
    port_answers "$port" && die "port $port is in use by another process"
    port_answers "$((port + 10000))" && die "port $((port + 10000)) (cluster bus of $port) is in use by another process"
  done

  local dir
  dir="$(mktemp -d "${TMPDIR:-/tmp}/metering-redis-cluster.XXXXXX")"
  mkdir -p "$(dirname "$STATE_FILE")"
  printf '%s\n' "$dir" >"$STATE_FILE"
  for port in "${PORTS[@]}"; do
    mkdir -p "$dir/$port"
    (cd "$dir/$port" && redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file nodes.conf --cluster-node-timeout 5000 --cluster-announce-ip 127.0.0.1 \
      --dir "$dir/$port" --appendonly no --save '' --daemonize yes --pidfile "$dir/$port/redis.pid" \
      --logfile "$dir/$port/redis.log") >&2 || die "redis-server on port $port failed to start"
  done

  for port in "${PORTS[@]}"; do
    for _ in $(seq 1 100); do
      [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = "PONG" ] && break
      sleep 0.1
    done
    [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = "PONG" ] || die "redis-server on port $port does not answer PING (log $dir/$port/redis.log)"
  done

  local nodes=()
  for port in "${PORTS[@]}"; do nodes+=("127.0.0.1:$port"); done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >&2 || die "redis-cli --cluster create failed"

  for _ in $(seq 1 100); do
    if cluster_ok; then
      log "3-primary cluster ok on ports ${PORTS[*]} (folder $dir)"
      configuration
      return 0
    fi
    sleep 0.1
  done
  die "the cluster did not reach cluster_state:ok within 10 s"
}

stop() {
  local dir pids pid
  dir="$(cluster_dir)" || { log "not running"; return 0; }
  mapfile -t pids < <(running_pids)
  for pid in "${pids[@]}"; do
    log "stopping redis-server (pid $pid)"
    kill -TERM "$pid"
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || continue 2
      sleep 0.1
    done
    die "redis-server (pid $pid) did not stop within 10 s"
  done
  case "$dir" in
    */metering-redis-cluster.*) rm -rf "$dir" ;;
  esac
  rm -f "$STATE_FILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if [ -n "$(running_pids)" ] && cluster_ok; then log "running ($(cluster_dir)): $(configuration)"; exit 0; fi
    log "not running"
    exit 1
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
