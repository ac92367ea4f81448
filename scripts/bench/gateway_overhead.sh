#!/usr/bin/env bash
# The gateway's added latency without a model (issue 19): the hub (no
# in-process worker) in front of a stand-in worker that answers a fixed body,
# direct vs through the gateway, alternated, at concurrency 1 and 16.
#
#   scripts/bench/gateway_overhead.sh [HUB_API_BIN] [--requests N] [--concurrency 1,16]
#
# HUB_API_BIN defaults to target/release/hub-api (build it first:
# cargo build --release --bin hub-api). Prints Markdown lines; standard library
# Python only.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
. scripts/lib/hub.sh
HUB_BIN="${1:-$PADDOCK_TARGET/release/hub-api}"
shift || true
export HUB_RATE_LIMIT_TOKEN_RPS=0 HUB_RATE_LIMIT_ANON_RPS=0
hub_start --no-worker
hub_admin create-user bench >/dev/null
TOKEN="$(hub_admin create-token bench --scopes inference --name bench)"
PSQL_BIN="$(command -v psql || ls /usr/lib/postgresql/*/bin/psql | tail -1)"
python3 scripts/bench/gateway_overhead.py --hub "$HUB_URL" --token "$TOKEN" \
  --psql "$PSQL_BIN -h $HUB_WORK/hub/pg-run -U postgres -d paddock" "$@"
