#!/usr/bin/env bash
# Starts the self-contained publish as an operator would, from its tarball in an empty folder, on the local PostgreSQL
# and Redis of deploy/local/servers.sh, outside Development (no local key, no migration at start):
#   migrate → start → readiness SERVING (grpc.health.v1) → one CheckLimit through buf curl → /metrics → SIGTERM, exit 0.
#   deploy/ci/smoke-publish.sh [TARBALL]
# SMOKE_POSTGRES and SMOKE_REDIS (connection strings) use other servers instead of the local ones.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
tarball=$(realpath "${1:-artifacts/metering-linux-x64.tar.gz}")
buf=$root/node_modules/.bin/buf
log() { printf 'smoke-publish: %s\n' "$*" >&2; }

free_port() {
  local port=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  echo "$port"
}

work=$(mktemp -d)
server_pid=
started_servers=false
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill -KILL "$server_pid" 2>/dev/null || true; fi
  if $started_servers; then "$root/deploy/local/servers.sh" stop || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# The local servers, unless others are named or they already run (then they are left running).
if [ -z "${SMOKE_POSTGRES:-}" ]; then
  if ! (exec 3<>/dev/tcp/127.0.0.1/55432) 2>/dev/null; then started_servers=true; fi
  deploy/local/servers.sh start
fi

tar -C "$work" -xzf "$tarball"
cd "$work" # not the binary's folder: its settings must be found next to it
server=$work/metering/Metering.Server
key="mtr_smoke_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
port=$(free_port 50561)
metrics=$(free_port 59474)
http_api=$(free_port 58080)
export ASPNETCORE_ENVIRONMENT=Production
export ConnectionStrings__Postgres=${SMOKE_POSTGRES:-'Host=127.0.0.1;Port=55432;Database=metering;Username=metering;Password=metering'}
export ConnectionStrings__Redis=${SMOKE_REDIS:-'127.0.0.1:56379'}
export Auth__ApiKeys__smoke__Hash="$(printf %s "$key" | sha256sum | cut -d' ' -f1)"
export Auth__ApiKeys__smoke__Scopes='metering.check'
export Metrics__Port=$metrics
export HttpApi__Port=$http_api

log "migrate"
"$server" migrate

log "start on 127.0.0.1:$port (metrics :$metrics, HTTP/JSON :$http_api)"
"$server" --urls "http://127.0.0.1:$port" >"$work/server.log" 2>&1 &
server_pid=$!
ready=false
for _ in $(seq 1 60); do
  if "$server" health "http://127.0.0.1:$port" readiness >/dev/null 2>&1; then ready=true; break; fi
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 1
done
if ! $ready; then log "not ready; server output:"; cat "$work/server.log" >&2; exit 1; fi
"$server" health "http://127.0.0.1:$port" liveness

log "CheckLimit"
answer=$("$buf" curl --protocol grpc --http2-prior-knowledge --emit-defaults \
  -H "authorization: Bearer $key" \
  -d '{"subject_id":"smoke-publish","usage":[{"usage_type":"minutes_per_month","amount":1}]}' \
  "http://127.0.0.1:$port/metering.v1.MeteringService/CheckLimit")
echo "$answer"
grep -q '"allowed": true' <<<"$answer" || { log "CheckLimit did not allow 1 minute"; cat "$work/server.log" >&2; exit 1; }

log "/metrics"
curl -fsS "http://127.0.0.1:$metrics/metrics" | grep -E '^rpc_server_duration_seconds_count\{.*rpc_method="CheckLimit".*\} 1$'

log "SIGTERM"
kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=
if [ "$status" -ne 0 ]; then log "exit code $status after SIGTERM"; cat "$work/server.log" >&2; exit 1; fi
grep -q 'Stopping: health is NOT_SERVING' "$work/server.log"
log "passed"
