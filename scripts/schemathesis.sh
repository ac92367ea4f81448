#!/usr/bin/env bash
# Fuzzes the management API from its OpenAPI document with schemathesis
# (reliability test 16): starts the hub binary with embedded defaults on a
# free port, creates a site admin and a token with the admin CLI, and runs
# `schemathesis run --checks all` against /api/v1/openapi.json. Fails on any
# 5xx, schema mismatch or undocumented status.
#
# `DELETE /api/v1/tokens/{id}` is left out: the fuzzer would revoke its own
# token (id 1) and spend the rest of the run on 401s; hub-api/tests/it/tenancy.rs covers it.
#
#   scripts/schemathesis.sh [MAX_EXAMPLES]     (default 30)
#
# Needs: a built target/debug/hub-api (CARGO_TARGET_DIR respected), python3,
# PostgreSQL server binaries (the hub starts its own cluster).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
HUB="$TARGET/debug/hub-api"
MAX_EXAMPLES="${1:-30}"
VENV="${SCHEMATHESIS_VENV:-$TARGET/schemathesis-venv}"
ST_VERSION="4.32.5"

[ -x "$HUB" ] || { echo "build the hub first: cargo build -p paddock" >&2; exit 1; }

if [ ! -x "$VENV/bin/schemathesis" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "schemathesis==$ST_VERSION"
fi

DATA="$(mktemp -d /tmp/paddock-st-XXXXXX)"
chmod 755 "$DATA"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
export HUB_DATA_DIR="$DATA" HUB_BIND="127.0.0.1:$PORT" HUB_NO_WORKER=true HUB_PG_UNSAFE_FAST=true
# The fuzzer is one client hammering one token: lift the rate limit for it.
export HUB_RATE_LIMIT_TOKEN_RPS=0 HUB_RATE_LIMIT_ANON_RPS=0
HUB_PID=""
cleanup() {
  if [ -n "$HUB_PID" ]; then kill "$HUB_PID" 2>/dev/null || true; wait "$HUB_PID" 2>/dev/null || true; fi
  rm -rf "$DATA"
}
trap cleanup EXIT

"$HUB" migrate >/dev/null
"$HUB" admin create-user stadmin --admin >/dev/null
TOKEN="$("$HUB" admin create-token stadmin --scopes read,write,admin --name schemathesis | grep -o "^pdk_[A-Za-z0-9]*")"
"$HUB" admin create-org st-org --owner stadmin >/dev/null

"$HUB" serve >"$DATA/hub.log" 2>&1 &
HUB_PID=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null

set +e
"$VENV/bin/schemathesis" run "http://127.0.0.1:$PORT/api/v1/openapi.json" \
  --url "http://127.0.0.1:$PORT" \
  --header "Authorization: Bearer $TOKEN" \
  --checks all \
  --exclude-operation-id revoke \
  --exclude-operation-id put \
  --max-examples "$MAX_EXAMPLES" \
  --seed 1 \
  --no-color
RC=$?
# Quota changes last: a low rate limit set on the fuzzer's own namespace would
# (correctly) throttle the rest of the run.
"$VENV/bin/schemathesis" run "http://127.0.0.1:$PORT/api/v1/openapi.json" \
  --url "http://127.0.0.1:$PORT" \
  --header "Authorization: Bearer $TOKEN" \
  --checks all \
  --include-operation-id put \
  --max-examples "$MAX_EXAMPLES" \
  --seed 1 \
  --no-color || RC=1
set -e
if grep -q '"http.status":5\|http.status=5' "$DATA/hub.log"; then
  echo "the hub answered 5xx:" >&2
  grep 'http.status=5' "$DATA/hub.log" >&2 || true
  RC=1
fi
exit $RC
