#!/usr/bin/env bash
# Runs the service (or, with "migrate", applies the migrations) against the configured PostgreSQL and Redis;
# starts local ones with servers.sh when ConnectionStrings__Postgres or ConnectionStrings__Redis is not set.
# Usage: run.sh <address>|migrate [dotnet run options...]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
target="${1:?usage: run.sh <address>|migrate [dotnet options]}"
shift

if [[ -z "${ConnectionStrings__Postgres:-}" || -z "${ConnectionStrings__Redis:-}" ]]; then
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
echo "Metering listens on $target (gRPC, plaintext HTTP/2, reflection on)" >&2
if [[ "$ASPNETCORE_ENVIRONMENT" == "Development" ]]; then
  echo "Local API key (every scope, Development only): -H 'authorization: Bearer mtr_dev_local_key_not_secret'" >&2
fi
exec dotnet run --project src/Metering.Server "$@" -- --urls "$target"
