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
DATA=$(mktemp -d /tmp/paddock-adversarial-XXXXXX)
LOG="$DATA/hub.log"
cleanup() {
  if [[ -n "${HUB_PID:-}" ]] && kill -0 "$HUB_PID" 2>/dev/null; then kill -TERM "$HUB_PID"; wait "$HUB_PID" || true; fi
  rm -rf "$DATA"
}
trap cleanup EXIT

"$HUB" --data-dir "$DATA/hub" --bind 127.0.0.1:0 --no-worker >"$LOG" 2>&1 &
HUB_PID=$!
for _ in $(seq 1 120); do
  if grep -q "paddock: listening on" "$LOG"; then break; fi
  if ! kill -0 "$HUB_PID" 2>/dev/null; then cat "$LOG"; echo "hub exited early"; exit 1; fi
  sleep 0.5
done
URL=$(grep -o "listening on http://[0-9.:]*" "$LOG" | head -1 | sed 's/listening on //')
[[ -n "$URL" ]] || { cat "$LOG"; echo "hub did not start"; exit 1; }
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
