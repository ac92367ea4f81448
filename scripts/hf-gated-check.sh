#!/usr/bin/env bash
# Gated and private repos with the real `huggingface_hub` (2.4.0, from PyPI)
# against the hub binary: GatedRepoError until approved, metadata visible,
# list_pending_access_requests / accept_access_request / reject_access_request
# / grant_access, RepositoryNotFoundError for others' private repos, whoami roles.
#
#   scripts/hf-gated-check.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
HUB="$TARGET/debug/hub-api"
VENV="${HF_VENV:-$TARGET/hf-venv}"
[ -x "$HUB" ] || { echo "build the hub first: cargo build -p paddock" >&2; exit 1; }
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import huggingface_hub' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "huggingface_hub==2.4.0"
fi

DATA="$(mktemp -d /tmp/paddock-hf-XXXXXX)"
chmod 755 "$DATA"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
export HUB_DATA_DIR="$DATA" HUB_BIND="127.0.0.1:$PORT" HUB_NO_WORKER=true HUB_PG_UNSAFE_FAST=true
HUB_PID=""
cleanup() {
  if [ -n "$HUB_PID" ]; then kill "$HUB_PID" 2>/dev/null || true; wait "$HUB_PID" 2>/dev/null || true; fi
  rm -rf "$DATA"
}
trap cleanup EXIT
tok() { "$HUB" admin create-token "$1" --scopes "$2" --name hf | grep -o '^pdk_[A-Za-z0-9]*'; }
"$HUB" migrate >/dev/null
for u in owner reader other; do "$HUB" admin create-user "$u" >/dev/null; done
export OWNER_TOKEN="$(tok owner read,write)" USER_TOKEN="$(tok reader read)" OTHER_TOKEN="$(tok other read)"
mkdir -p "$DATA/cache"
"$HUB" serve >"$DATA/hub.log" 2>&1 &
HUB_PID=$!
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
HF_ENDPOINT="http://127.0.0.1:$PORT" USER_NAME=reader OTHER_NAME=other CACHE="$DATA/cache" \
  HF_HUB_DISABLE_XET=1 HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_IMPLICIT_TOKEN=1 \
  "$VENV/bin/python" "$ROOT/scripts/hf-gated-check.py"
