#!/usr/bin/env bash
# Runs the service (or, with "migrate", applies the migrations) on the storage backend STORAGE (or Storage__Backend):
#   embedded        one SQLite file, <repo>/.local/metering.db, and counters in process: needs nothing but the .NET SDK
#                   (the default for a run when no connection string is set)
#   postgres-redis  the configured PostgreSQL and Redis; starts local ones with servers.sh when ConnectionStrings__Postgres
#                   or ConnectionStrings__Redis is not set (the default when one is set, and for migrate)
# Usage: [STORAGE=embedded|postgres-redis] run.sh <address>|migrate [dotnet run options...]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
target="${1:?usage: run.sh <address>|migrate [dotnet options]}"
shift

storage="${STORAGE:-${Storage__Backend:-}}"
if [[ -z "$storage" ]]; then
  if [[ "$target" == "migrate" || -n "${ConnectionStrings__Postgres:-}" || -n "${ConnectionStrings__Redis:-}" ]]; then
    storage=postgres-redis
  else
    storage=embedded
  fi
fi
case "$storage" in
  embedded | postgres-redis) export Storage__Backend="$storage" ;;
  *) echo "run.sh: STORAGE must be embedded or postgres-redis, not '$storage'" >&2; exit 2 ;;
esac

if [[ "$storage" == "embedded" ]]; then
  # dotnet run starts the server in its project folder: the file goes beside the local servers' data instead.
  export Storage__Embedded__Path="${Storage__Embedded__Path:-$root/.local/metering.db}"
fi

if [[ "$storage" == "postgres-redis" && ( -z "${ConnectionStrings__Postgres:-}" || -z "${ConnectionStrings__Redis:-}" ) ]]; then
  # Captured first, so that a failure to start the servers stops here (set -e) instead of running without them.
  settings="$("$root/deploy/local/servers.sh" start)"
  while IFS='=' read -r key value; do
    # Keep what the caller configured; fill in only what is missing.
    if [[ -z "${!key:-}" ]]; then
      export "$key=$value"
    fi
  done <<<"$settings"
fi

export ASPNETCORE_ENVIRONMENT="${ASPNETCORE_ENVIRONMENT:-Development}"
cd "$root"
if [[ "$target" == "migrate" ]]; then
  exec dotnet run --project src/Metering.Server "$@" -- migrate
fi
if [[ "$storage" == "embedded" ]]; then
  echo "Storage: embedded ($Storage__Embedded__Path; one process, counters in process; not for production). PostgreSQL and Redis: make run STORAGE=postgres-redis" >&2
else
  echo "Storage: postgres-redis (PostgreSQL and Redis)" >&2
fi
echo "Metering listens on $target (gRPC, plaintext HTTP/2, reflection on)" >&2
if [[ "$ASPNETCORE_ENVIRONMENT" == "Development" ]]; then
  echo "Local API key (every scope, Development only): -H 'authorization: Bearer mtr_dev_local_key_not_secret'" >&2
fi
exec dotnet run --project src/Metering.Server "$@" -- --urls "$target"
