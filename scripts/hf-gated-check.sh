#!/usr/bin/env bash
# Gated and private repos with the real `huggingface_hub` (2.4.0, from PyPI)
# against the hub binary: GatedRepoError until approved, metadata visible,
# list_pending_access_requests / accept_access_request / reject_access_request
# / grant_access, RepositoryNotFoundError for others' private repos, whoami roles.
#
#   scripts/hf-gated-check.sh
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib/hub.sh"
VENV="${HF_VENV:-$PADDOCK_TARGET/hf-venv}"
hub_need_bin debug
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import huggingface_hub' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "huggingface_hub==2.4.0"
fi

export HUB_PG_UNSAFE_FAST=true
hub_start --no-worker
tok() { hub_admin create-token "$1" --scopes "$2" --name hf; }
for u in owner reader other; do hub_admin create-user "$u" >/dev/null; done
export OWNER_TOKEN="$(tok owner read,write)" USER_TOKEN="$(tok reader read)" OTHER_TOKEN="$(tok other read)"
# Asking for access changes state, so it needs a write-scoped token.
export USER_WRITE_TOKEN="$(tok reader read,write)"
mkdir -p "$HUB_WORK/cache"
HF_ENDPOINT="$HUB_URL" USER_NAME=reader OTHER_NAME=other CACHE="$HUB_WORK/cache" \
  HF_HUB_DISABLE_XET=1 HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_IMPLICIT_TOKEN=1 \
  "$VENV/bin/python" "$PADDOCK_ROOT/scripts/hf-gated-check.py"
