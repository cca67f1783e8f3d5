#!/usr/bin/env bash
# The release build of the server: self-contained (runs without the .NET SDK or runtime), for linux-x64 unless RID
# says otherwise. `make publish` and deploy/docker/Dockerfile both build through this script, so CI exercises the
# image's build steps even where no container engine runs.
#   deploy/publish.sh OUT_DIR [extra dotnet publish arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: deploy/publish.sh OUT_DIR [dotnet publish arguments]}
shift
rid=${RID:-linux-x64}
dotnet publish src/Metering.Server/Metering.Server.csproj -c Release -r "$rid" --self-contained true \
  -p:UseAppHost=true -p:DebugType=none -o "$out" "$@"
