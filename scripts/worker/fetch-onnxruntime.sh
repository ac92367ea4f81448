#!/usr/bin/env bash
# Fetches libonnxruntime.so for hub-worker's `engine-ort` feature from the PyPI wheel of
# onnxruntime 1.32.0 (no pip install: the wheel is only unzipped).
#
#   scripts/worker/fetch-onnxruntime.sh [CACHE_DIR]      (default: target/fixtures)
#
# Prints `ORT_DYLIB_PATH=<path>` on its last line.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${1:-${PADDOCK_FIXTURES_DIR:-$ROOT/target/fixtures}}"
PYTHON="${PYTHON:-python3}"
VERSION="1.32.0"
DEST="$CACHE/onnxruntime-$VERSION"
LIB="$DEST/onnxruntime/capi/libonnxruntime.so.$VERSION"

if [ ! -f "$LIB" ]; then
    echo "fetch-onnxruntime: downloading onnxruntime==$VERSION from PyPI" >&2
    WHEELS="$CACHE/wheels"
    mkdir -p "$WHEELS"
    if command -v pip >/dev/null 2>&1; then PIP=(pip); else PIP=("$PYTHON" -m pip); fi
    "${PIP[@]}" download --quiet --no-deps --only-binary=:all: "onnxruntime==$VERSION" -d "$WHEELS"
    WHEEL="$(ls "$WHEELS"/onnxruntime-"$VERSION"-*.whl | head -n1)"
    rm -rf "$DEST.tmp"
    mkdir -p "$DEST.tmp"
    "$PYTHON" -m zipfile -e "$WHEEL" "$DEST.tmp"
    rm -rf "$DEST"
    mv "$DEST.tmp" "$DEST"
fi
[ -f "$LIB" ] || { echo "fetch-onnxruntime: $LIB missing from the wheel" >&2; exit 1; }
echo "fetch-onnxruntime: ok ($LIB)" >&2
echo "ORT_DYLIB_PATH=$LIB"
