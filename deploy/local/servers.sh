#!/usr/bin/env bash
# Local PostgreSQL and Redis for running Metering on a developer machine (used by `make run`), and throwaway ones for
# the tests (tests/Metering.Testing starts them through this script).
#
#   deploy/local/servers.sh start [options]   start both unless already running, wait until they accept connections,
#                                             then print the connection-string lines (and nothing else) on stdout:
#                                      ConnectionStrings__Postgres=Host=127.0.0.1;Port=55432;Database=metering;Username=metering;Password=metering
#                                      ConnectionStrings__Redis=127.0.0.1:56379
#   deploy/local/servers.sh stop [options]    stop both (no-op when not running)
#   deploy/local/servers.sh status [options]  say on stderr whether each runs; exit 0 when both do
#   deploy/local/servers.sh pid postgres|redis [options]  print the process id of the running server
#
# Options:
#   --dir DIR               where the data lives (default <repo>/.local): DIR/postgres and DIR/redis
#   --postgres-port N       PostgreSQL port on 127.0.0.1 (default $METERING_LOCAL_PG_PORT, else 55432)
#   --redis-port N          Redis port on 127.0.0.1 (default $METERING_LOCAL_REDIS_PORT, else 56379)
#   --only postgres|redis   start, stop or check only one of them
#   --throwaway             for tests: no durability (fsync off, no Redis snapshots), trust authentication, and
#                           nothing is installed
#   --postgres-setting K=V  one more PostgreSQL setting (repeatable), e.g. max_connections=100
#   --redis-arg ARG         one more redis-server argument (repeatable), e.g. --redis-arg --replicaof ...
#
# PostgreSQL: superuser metering, password metering, database metering. PostgreSQL refuses to run as root, so as root
# it runs as user nobody (its folder is chowned to it). Missing server binaries are installed with apt-get (Debian/
# Ubuntu, as root, not with --throwaway); otherwise the script says what to install. Diagnostics go to stderr.
set -euo pipefail

readonly PG_USER=metering
readonly PG_PASSWORD=metering
readonly PG_DATABASE=metering
readonly RUN_AS=nobody

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
readonly REPO_ROOT

COMMAND="${1:-}"
[ "$#" -gt 0 ] && shift
PID_OF=""
if [ "$COMMAND" = pid ]; then PID_OF="${1:-}"; [ "$#" -gt 0 ] && shift; fi
LOCAL_DIR="$REPO_ROOT/.local"
PG_PORT="${METERING_LOCAL_PG_PORT:-55432}"
REDIS_PORT="${METERING_LOCAL_REDIS_PORT:-56379}"
ONLY=""
THROWAWAY=0
PG_SETTINGS=()
REDIS_ARGS=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --dir) LOCAL_DIR="${2:?--dir needs a folder}"; shift 2 ;;
    --postgres-port) PG_PORT="${2:?--postgres-port needs a port}"; shift 2 ;;
    --redis-port) REDIS_PORT="${2:?--redis-port needs a port}"; shift 2 ;;
    --only) ONLY="${2:?--only needs postgres or redis}"; shift 2 ;;
    --throwaway) THROWAWAY=1; shift ;;
    --postgres-setting) PG_SETTINGS+=(-c "${2:?--postgres-setting needs name=value}"); shift 2 ;;
    --redis-arg) REDIS_ARGS+=("${2?--redis-arg needs an argument}"); shift 2 ;;
    *) echo "servers.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ "$THROWAWAY" = 1 ]; then
  PG_SETTINGS=(-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 -c jit=off "${PG_SETTINGS[@]}")
  REDIS_ARGS=(--save '' --loglevel warning "${REDIS_ARGS[@]}")
fi
readonly LOCAL_DIR PG_PORT REDIS_PORT ONLY THROWAWAY
readonly PG_DIR="$LOCAL_DIR/postgres"
readonly PG_LOG="$PG_DIR/server.log"
readonly REDIS_DIR="$LOCAL_DIR/redis"
readonly REDIS_PID="$REDIS_DIR/redis.pid"
readonly REDIS_LOG="$REDIS_DIR/redis.log"

wants() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }

log() { printf 'servers.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# Folder with initdb, pg_ctl and postgres: PATH first, then the highest /usr/lib/postgresql/N/bin.
find_pg_bin() {
  local initdb dir
  if initdb="$(command -v initdb 2>/dev/null)"; then
    dir="$(dirname "$initdb")"
    if [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]; then
      printf '%s\n' "$dir"
      return 0
    fi
  fi
  local candidate
  candidate="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -type d -name bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -n "$candidate" ] && [ -x "$candidate/initdb" ] && [ -x "$candidate/pg_ctl" ] && [ -x "$candidate/postgres" ]; then
    printf '%s\n' "$candidate"
    return 0
  fi
  return 1
}

find_psql() {
  local bin candidate
  if bin="$(find_pg_bin)" && [ -x "$bin/psql" ]; then printf '%s\n' "$bin/psql"; return 0; fi
  command -v psql 2>/dev/null && return 0
  candidate="$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/psql' 2>/dev/null | sort -V | tail -n 1 || true)"
  [ -n "$candidate" ] && printf '%s\n' "$candidate"
}

find_redis_server() {
  command -v redis-server 2>/dev/null && return 0
  local candidate
  for candidate in /usr/bin/redis-server /usr/sbin/redis-server /usr/local/bin/redis-server; do
    if [ -x "$candidate" ]; then printf '%s\n' "$candidate"; return 0; fi
  done
  return 1
}

ensure_installed() {
  local missing=()
  if wants postgres; then find_pg_bin >/dev/null || missing+=(postgresql); fi
  if wants redis; then find_redis_server >/dev/null || missing+=(redis-server); fi
  [ "${#missing[@]}" -eq 0 ] && return 0

  if [ "$THROWAWAY" = 0 ] && [ -f /etc/debian_version ] && is_root && command -v apt-get >/dev/null; then
    log "installing ${missing[*]} with apt-get"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2; then
      DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || true
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2 || die "apt-get install -y ${missing[*]} failed"
    fi
    if wants postgres; then find_pg_bin >/dev/null || die "PostgreSQL binaries (initdb, pg_ctl, postgres) still not found after installing postgresql"; fi
    if wants redis; then find_redis_server >/dev/null || die "redis-server still not found after installing redis-server"; fi
    return 0
  fi
  die "missing ${missing[*]}: install them (Debian/Ubuntu: sudo apt-get install -y ${missing[*]}; macOS: brew install postgresql@16 redis) and run again"
}

# Runs a command as the PostgreSQL owner: nobody when root, else the current user.
as_pg_owner() {
  if is_root; then
    local uid gid
    uid="$(id -u "$RUN_AS")" || die "user $RUN_AS does not exist"
    gid="$(id -g "$RUN_AS")"
    command -v setpriv >/dev/null || die "setpriv (util-linux) is needed to run PostgreSQL as $RUN_AS"
    (cd / && setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@")
  else
    (cd / && "$@")
  fi
}

port_answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

redis_pong() {
  local reply=""
  {
    exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT" || return 1
    printf 'PING\r\n' >&3
    IFS= read -r -t 2 reply <&3 || true
    exec 3>&-
  } 2>/dev/null || return 1
  [[ "$reply" == +PONG* ]]
}

pg_running() {
  local bin
  [ -f "$PG_DIR/PG_VERSION" ] || return 1
  bin="$(find_pg_bin)" || return 1
  as_pg_owner "$bin/pg_ctl" -D "$PG_DIR" status >/dev/null 2>&1
}

redis_running() {
  [ -f "$REDIS_PID" ] && kill -0 "$(cat "$REDIS_PID")" 2>/dev/null
}

start_postgres() {
  local bin
  bin="$(find_pg_bin)"
  if pg_running; then
    log "PostgreSQL already running (data $PG_DIR, port $PG_PORT)"
  else
    port_answers "$PG_PORT" && die "port $PG_PORT is in use by another process, not by the PostgreSQL in $PG_DIR"
    mkdir -p "$PG_DIR"
    if is_root; then
      chown "$RUN_AS:" "$PG_DIR"
      chmod 700 "$PG_DIR"
      as_pg_owner test -w "$PG_DIR" \
        || die "$RUN_AS cannot reach $PG_DIR (a parent folder is not traversable by others); move the repository or open its parent folders (chmod o+x)"
    fi
    if [ ! -f "$PG_DIR/PG_VERSION" ]; then
      [ -z "$(ls -A "$PG_DIR")" ] || die "$PG_DIR is not empty but holds no PostgreSQL cluster; remove it and run again"
      log "creating a PostgreSQL cluster in $PG_DIR ($bin)"
      local pwfile="$LOCAL_DIR/.postgres-password"
      (umask 077 && printf '%s\n' "$PG_PASSWORD" >"$pwfile")
      if is_root; then chown "$RUN_AS:" "$pwfile"; fi
      # A throwaway cluster trusts every local connection (any password), like the servers tests used to start.
      local initdb_options=(--auth=scram-sha-256)
      if [ "$THROWAWAY" = 1 ]; then initdb_options=(--auth=trust --no-sync); fi
      if ! as_pg_owner "$bin/initdb" -D "$PG_DIR" -U "$PG_USER" --pwfile="$pwfile" --encoding=UTF8 --locale=C "${initdb_options[@]}" >&2; then
        rm -f "$pwfile"
        die "initdb failed"
      fi
      rm -f "$pwfile"
      log "creating database $PG_DATABASE"
      printf 'CREATE DATABASE "%s"\n' "$PG_DATABASE" | as_pg_owner "$bin/postgres" --single -D "$PG_DIR" postgres >&2 \
        || die "creating database $PG_DATABASE failed"
    fi
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT (log $PG_LOG)"
    as_pg_owner "$bin/pg_ctl" -D "$PG_DIR" -l "$PG_LOG" -w -t 60 \
      -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories='' ${PG_SETTINGS[*]}" start >&2 \
      || { tail -n 30 "$PG_LOG" >&2 || true; die "PostgreSQL did not start"; }
  fi

  # pg_ctl -w returned once the server was ready; check the port (and, with psql at hand, the database) anyway.
  local psql
  psql="$(find_psql || true)"
  for _ in $(seq 1 60); do
    if port_answers "$PG_PORT"; then
      if [ -z "$psql" ]; then return 0; fi
      local exists
      if exists="$(PGPASSWORD="$PG_PASSWORD" "$psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -XtAq \
          -c "select 1 from pg_database where datname = '$PG_DATABASE'" 2>/dev/null)"; then
        if [ "$exists" != "1" ]; then
          log "creating database $PG_DATABASE"
          PGPASSWORD="$PG_PASSWORD" "$psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -Xq \
            -c "create database \"$PG_DATABASE\"" >&2
        fi
        return 0
      fi
    fi
    sleep 1
  done
  tail -n 30 "$PG_LOG" >&2 || true
  die "PostgreSQL on 127.0.0.1:$PG_PORT did not accept connections within 60 s"
}

start_redis() {
  local redis_server
  redis_server="$(find_redis_server)"
  if redis_running; then
    log "Redis already running (pid $(cat "$REDIS_PID"), port $REDIS_PORT)"
  else
    port_answers "$REDIS_PORT" && die "port $REDIS_PORT is in use by another process, not by the Redis in $REDIS_DIR"
    mkdir -p "$REDIS_DIR"
    log "starting Redis on 127.0.0.1:$REDIS_PORT (data $REDIS_DIR, log $REDIS_LOG)"
    (cd "$REDIS_DIR" && "$redis_server" --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$REDIS_DIR" \
      --daemonize yes --pidfile "$REDIS_PID" --logfile "$REDIS_LOG" --appendonly no "${REDIS_ARGS[@]}") >&2 \
      || die "redis-server failed to start"
  fi

  for _ in $(seq 1 300); do
    redis_pong && return 0
    sleep 0.1
  done
  tail -n 30 "$REDIS_LOG" >&2 || true
  die "Redis on 127.0.0.1:$REDIS_PORT did not answer PING within 30 s"
}

stop_postgres() {
  if pg_running; then
    log "stopping PostgreSQL"
    as_pg_owner "$(find_pg_bin)/pg_ctl" -D "$PG_DIR" -m fast -w -t 60 stop >&2
  else
    log "PostgreSQL is not running"
  fi
}

stop_redis() {
  if redis_running; then
    local pid
    pid="$(cat "$REDIS_PID")"
    log "stopping Redis (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 300); do
      kill -0 "$pid" 2>/dev/null || { rm -f "$REDIS_PID"; return 0; }
      sleep 0.1
    done
    die "Redis (pid $pid) did not stop within 30 s"
  else
    log "Redis is not running"
    rm -f "$REDIS_PID"
  fi
}

case "$COMMAND" in
  start)
    ensure_installed
    if wants postgres; then
      start_postgres
      printf 'ConnectionStrings__Postgres=Host=127.0.0.1;Port=%s;Database=%s;Username=%s;Password=%s\n' "$PG_PORT" "$PG_DATABASE" "$PG_USER" "$PG_PASSWORD"
    fi
    if wants redis; then
      start_redis
      printf 'ConnectionStrings__Redis=127.0.0.1:%s\n' "$REDIS_PORT"
    fi
    ;;
  stop)
    if wants postgres; then stop_postgres; fi
    if wants redis; then stop_redis; fi
    ;;
  status)
    ok=0
    if wants postgres; then
      if pg_running; then log "PostgreSQL running on 127.0.0.1:$PG_PORT"; else log "PostgreSQL not running"; ok=1; fi
    fi
    if wants redis; then
      if redis_running; then log "Redis running on 127.0.0.1:$REDIS_PORT"; else log "Redis not running"; ok=1; fi
    fi
    exit "$ok"
    ;;
  pid)
    case "$PID_OF" in
      postgres) pg_running || die "PostgreSQL is not running"; head -n 1 "$PG_DIR/postmaster.pid" ;;
      redis) redis_running || die "Redis is not running"; cat "$REDIS_PID" ;;
      *) die "usage: $0 pid postgres|redis [options]" ;;
    esac
    ;;
  *)
    echo "usage: $0 start|stop|status|pid postgres|redis [--dir DIR] [--postgres-port N] [--redis-port N] [--only postgres|redis] [--throwaway] [--postgres-setting K=V]... [--redis-arg ARG]..." >&2
    exit 2
    ;;
esac
