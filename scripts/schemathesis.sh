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

. "$(dirname "${BASH_SOURCE[0]}")/lib/hub.sh"
TARGET="$PADDOCK_TARGET"
MAX_EXAMPLES="${1:-30}"
VENV="${SCHEMATHESIS_VENV:-$TARGET/schemathesis-venv}"
ST_VERSION="4.32.5"

hub_need_bin debug

if [ ! -x "$VENV/bin/schemathesis" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "schemathesis==$ST_VERSION"
fi

# The fuzzer is one client hammering one token: lift the rate limit for it.
export HUB_RATE_LIMIT_TOKEN_RPS=0 HUB_RATE_LIMIT_ANON_RPS=0 HUB_PG_UNSAFE_FAST=true
hub_start --no-worker
hub_admin create-user stadmin --admin >/dev/null
TOKEN="$(hub_admin create-token stadmin --scopes read,write,admin --name schemathesis)"
hub_admin create-org st-org --owner stadmin >/dev/null

set +e
"$VENV/bin/schemathesis" run "$HUB_URL/api/v1/openapi.json" \
  --url "$HUB_URL" \
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
"$VENV/bin/schemathesis" run "$HUB_URL/api/v1/openapi.json" \
  --url "$HUB_URL" \
  --header "Authorization: Bearer $TOKEN" \
  --checks all \
  --include-operation-id put \
  --max-examples "$MAX_EXAMPLES" \
  --seed 1 \
  --no-color || RC=1
set -e
if grep -q '"http.status":5\|http.status=5' "$HUB_LOG_FILE"; then
  echo "the hub answered 5xx:" >&2
  grep 'http.status=5' "$HUB_LOG_FILE" >&2 || true
  RC=1
fi
exit $RC
