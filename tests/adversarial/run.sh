#!/usr/bin/env bash
# The hostile-tenant suite: attacks on a real hub (the hub-api binary with its
# embedded defaults, no in-process worker so its RSS is the hub's own) in a
# fresh data directory, measuring requests tried, 5xx answers other than 503,
# the worst /healthz latency and the hub's peak RSS (ATTACK SUMMARY line).
# Usage: tests/adversarial/run.sh PYTHON HUB_API_BIN [pytest args]
# Needs only the standard library and pytest (tests/conformance/requirements.txt).
set -euo pipefail
PY=${1:?python}
HUB=${2:?hub-api binary}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../../scripts/lib/hub.sh"
HUB_BIN="$HUB"
hub_start --no-worker
DATA="$HUB_WORK" LOG="$HUB_LOG_FILE" URL="$HUB_URL"
echo "adversarial: hub at $URL (pid $HUB_PID)"

export HF_ENDPOINT="$URL" PADDOCK_HUB_PID="$HUB_PID" PADDOCK_HUB_BIN="$HUB" PADDOCK_HUB_DATA="$DATA/hub"
export ADV_TMP="$DATA/tmp"
export ADV_SUMMARY_FILE="${ADV_SUMMARY_FILE:-$DATA/summary.json}"
status=0
# Extra arguments go to pytest; naming test files replaces the default (all of them).
ARGS=("${@:3}")
TARGET=("$HERE")
for a in "${ARGS[@]}"; do if [[ "$a" == *.py* ]]; then TARGET=(); fi; done
"$PY" -m pytest -q -s -p no:cacheprovider --rootdir "$HERE" "${TARGET[@]}" "${ARGS[@]}" || status=$?
if ! kill -0 "$HUB_PID" 2>/dev/null; then
  echo "adversarial: the hub died during the attacks; its log:"; tail -50 "$LOG"; exit 1
fi
if grep -q "panicked at" "$LOG"; then
  echo "adversarial: the hub panicked during the attacks:"; grep -A3 "panicked at" "$LOG" | head -40; status=1
fi
exit $status
