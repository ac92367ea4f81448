#!/usr/bin/env bash
# Runs the client conformance suite against a real hub: the hub-api binary
# with its embedded defaults (private PostgreSQL cluster, local object store,
# the in-process worker) in a fresh data directory.
# Usage: tests/conformance/run.sh PYTHON HUB_API_BIN [pytest args]
# Endpoint tests need PADDOCK_MINILM_DIR (scripts/worker/fetch-fixtures.sh).
set -euo pipefail
PY=${1:?python}
HUB=${2:?hub-api binary}
HERE=$(cd "$(dirname "$0")" && pwd)
DATA=$(mktemp -d /tmp/paddock-conformance-XXXXXX)
LOG="$DATA/hub.log"
cleanup() {
  if [[ -n "${HUB_PID:-}" ]] && kill -0 "$HUB_PID" 2>/dev/null; then kill -TERM "$HUB_PID"; wait "$HUB_PID" || true; fi
  rm -rf "$DATA"
}
trap cleanup EXIT

"$HUB" --data-dir "$DATA/hub" --bind 127.0.0.1:0 >"$LOG" 2>&1 &
HUB_PID=$!
for _ in $(seq 1 120); do
  if grep -q "paddock: listening on" "$LOG"; then break; fi
  if ! kill -0 "$HUB_PID" 2>/dev/null; then cat "$LOG"; echo "hub exited early"; exit 1; fi
  sleep 0.5
done
URL=$(grep -o "listening on http://[0-9.:]*" "$LOG" | head -1 | sed 's/listening on //')
[[ -n "$URL" ]] || { cat "$LOG"; echo "hub did not start"; exit 1; }
echo "conformance: hub at $URL"

admin() { "$HUB" --data-dir "$DATA/hub" "$@" | tail -1; }
admin admin create-user alice >/dev/null
admin admin create-user bob >/dev/null
admin admin create-user root --admin >/dev/null
export PADDOCK_TOKEN_ALICE=$(admin admin create-token alice --scopes read,write --name conformance)
export PADDOCK_TOKEN_ALICE_RO=$(admin admin create-token alice --scopes read --name readonly)
export PADDOCK_TOKEN_BOB=$(admin admin create-token bob --scopes read,write --name conformance)
export PADDOCK_TOKEN_ROOT=$(admin admin create-token root --scopes read,write,admin --name conformance)
export PADDOCK_TOKEN_WORKER=$(admin admin create-token root --scopes worker --name workers)
export PADDOCK_WORKER_BIN="${PADDOCK_WORKER_BIN:-$(dirname "$HUB")/hub-worker}"
if [[ -n "${PADDOCK_MINILM_DIR:-}" && -z "${PADDOCK_CLASSIFIER_DIR:-}" && -x "$(dirname "$HUB")/examples/make-classifier" ]]; then
  export PADDOCK_CLASSIFIER_DIR="$DATA/classifier"
  "$(dirname "$HUB")/examples/make-classifier" "$PADDOCK_MINILM_DIR" "$PADDOCK_CLASSIFIER_DIR" >/dev/null
fi
export HF_ENDPOINT="$URL"
export HF_HUB_DISABLE_TELEMETRY=1
export DISABLE_SAFETENSORS_CONVERSION=1
export HF_HUB_DISABLE_PROGRESS_BARS=1
export HF_HOME="$DATA/hf-home"
export PADDOCK_HUB_BIN="$HUB" PADDOCK_HUB_DATA="$DATA/hub"

# The legacy LFS path (what self-hosted hubs document for huggingface_hub >= 1.20).
HF_HUB_DISABLE_XET=1 "$PY" -m pytest -q -p no:cacheprovider "$HERE" --ignore="$HERE/test_xet_default.py" "${@:3}"
# The client's default (hf_xet installed, Xet not disabled): small uploads and all downloads.
"$PY" -m pytest -q -p no:cacheprovider "$HERE/test_xet_default.py"

# Graceful stop: SIGTERM drains and stops the private cluster cleanly.
kill -TERM "$HUB_PID"
wait "$HUB_PID"
status=$?
unset HUB_PID
if [[ -f "$DATA/hub/pg/postmaster.pid" ]]; then echo "private PostgreSQL still running after SIGTERM"; exit 1; fi
echo "conformance: hub stopped cleanly (exit $status)"
