#!/usr/bin/env bash
# Serves the MiniLM fixture and the fixture classifier with hub-worker's HTTP API (no hub),
# then runs scripts/worker/check-clients.py with the real huggingface_hub and openai
# clients from a venv (default target/worker-clients-venv, created from PyPI if missing).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
VENV="${CLIENTS_VENV:-$ROOT/target/worker-clients-venv}"
eval "$(scripts/worker/fetch-fixtures.sh | tail -n1)"
export PADDOCK_MINILM_DIR
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "huggingface_hub==2.4.0" openai numpy
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
cargo build --quiet --release -p hub-worker --example serve-local --example make-classifier
CLS="$ROOT/target/fixtures/minilm-classifier-rs"
"$CARGO_TARGET_DIR/release/examples/make-classifier" "$PADDOCK_MINILM_DIR" "$CLS" >/dev/null
. scripts/lib/hub.sh
LOG="$(mktemp)"
"$CARGO_TARGET_DIR/release/examples/serve-local" --bind 127.0.0.1:0 --secret s3cret \
    "minilm=$PADDOCK_MINILM_DIR" "cls=$CLS" > "$LOG" 2>&1 &
PID=$!
hub_on_exit 'kill $PID 2>/dev/null; rm -f "$LOG"'
URL="$(server_url "$LOG" "$PID" 30)"
"$VENV/bin/python" scripts/worker/check-clients.py "$URL" minilm cls s3cret
