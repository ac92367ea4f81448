#!/usr/bin/env bash
# Runs huggingface_hub's own test suite (the hub-facing files of the pinned
# 2.4.0 sdist) against a fresh hub, twice: with hf_xet (the client's default)
# and with HF_HUB_DISABLE_XET=1 (the legacy LFS path), as upstream CI runs
# them: `xet` tests only in the first pass, `no_xet` ones only in the second.
# Usage: scripts/hf-suite/run.sh PYTHON HUB_API_BIN [pytest args]
#   The passes run concurrently (HF_SUITE_SERIAL=1: one after the other);
#   a failing pass prints its whole log, a passing one its summary line.
#   PYTHON: a Python with tests/conformance/requirements.txt installed; the
#   few extra test dependencies (requirements.txt here) are added to it.
#   Extra pytest args go to both passes (e.g. -k, -x, a file::test id).
#   HF_SUITE_FILES="test_hf_api.py ..." overrides the list of files.
# The sdist is cached in target/hf-suite/; the tests run from a fresh copy
# with patches/*.patch applied and conftest.py added (the sdist has none).
# Tests listed in out-of-scope.txt are deselected; nothing else is skipped.
set -euo pipefail
PY=$(command -v "${1:?python}" || echo "$1")
[[ "$PY" = /* ]] || PY="$PWD/$PY"
HUB=${2:?hub-api binary}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VERSION=2.4.0
CACHE="${CARGO_TARGET_DIR:-$ROOT/target}/hf-suite"
SDIST="$CACHE/sdist/huggingface_hub-$VERSION.tar.gz"

mkdir -p "$CACHE/sdist"
if [[ ! -f "$SDIST" ]]; then
  "$PY" -m pip download -q --disable-pip-version-check --no-binary :all: --no-deps \
    "huggingface_hub==$VERSION" -d "$CACHE/sdist"
fi
"$PY" -m pip install -q --disable-pip-version-check -r "$HERE/requirements.txt"

. "$ROOT/scripts/lib/hub.sh"
HUB_BIN="$HUB"
# Both passes share one token, and fixtures such as HfFileSystem's make
# bursts of commits: the suite tests the API, not the rate limit (tested in
# hub-api/tests/it), so the token's rate is ten times the default here. The
# same for anonymous calls, which both passes make from 127.0.0.1: on 6 Dec a
# snapshot_download test got 429 from the anonymous default (50/s, burst 200).
export HUB_RATE_LIMIT_TOKEN_RPS="${HUB_RATE_LIMIT_TOKEN_RPS:-1000}" HUB_RATE_LIMIT_TOKEN_BURST="${HUB_RATE_LIMIT_TOKEN_BURST:-4000}"
export HUB_RATE_LIMIT_ANON_RPS="${HUB_RATE_LIMIT_ANON_RPS:-500}" HUB_RATE_LIMIT_ANON_BURST="${HUB_RATE_LIMIT_ANON_BURST:-2000}"
hub_start
DATA="$HUB_WORK" URL="$HUB_URL"
echo "hf-suite: hub at $URL"

# The suite's tests live in the temp dir, removed with the hub's.
SUITE="$DATA/huggingface_hub-$VERSION"
tar xzf "$SDIST" -C "$DATA" "huggingface_hub-$VERSION/tests" "huggingface_hub-$VERSION/pyproject.toml"
for p in "$HERE"/patches/*.patch; do patch -s -d "$SUITE" -p1 <"$p"; done
touch "$SUITE/tests/__init__.py"
cp "$HERE/conftest.py" "$SUITE/tests/conftest.py"
# Each pass runs in its own copy: some tests write into the working directory
# (TestCreateSymlink makes and removes ./dir_for_create_symlink_test), and two
# passes sharing one directory raced there.
cp -r "$SUITE" "$SUITE-xet"
cp -r "$SUITE" "$SUITE-noxet"

# The accounts of testing_constants.py: USER (the CI user), OTHER_USER (owns
# repos USER does not), ENTERPRISE_USER and the org it administers.
# USER is a member of `valid_org_hub` (whoami lists it with its full name).
hub_admin create-user __DUMMY_HUB_USER__ --fullname "Dummy User" >/dev/null
hub_admin create-org valid_org_hub --owner __DUMMY_HUB_USER__ --fullname "Dummy Hub Org" >/dev/null
hub_admin create-user DVUser >/dev/null
hub_admin create-user EnterpriseAdmin >/dev/null
hub_admin create-org EnterpriseOrgPrivate --owner EnterpriseAdmin --private-repos >/dev/null
# The Hub accounts TestWebhookApi watches (a user and an organization).
hub_admin create-user julien-c >/dev/null
hub_admin create-org HuggingFaceH4 --owner julien-c >/dev/null
export HF_SUITE_TOKEN=$(hub_admin create-token __DUMMY_HUB_USER__ --scopes read,write --name hf-suite)
export HF_SUITE_OTHER_TOKEN=$(hub_admin create-token DVUser --scopes read,write --name hf-suite)
export HF_SUITE_ENTERPRISE_TOKEN=$(hub_admin create-token EnterpriseAdmin --scopes read,write --name hf-suite)

export HF_ENDPOINT="$URL"
export HF_HUB_DISABLE_TELEMETRY=1
export HF_HUB_DISABLE_PROGRESS_BARS=1
export HF_HOME="$DATA/hf-home"

FILES=(${HF_SUITE_FILES:-test_hf_api.py test_file_download.py test_snapshot_download.py
  test_commit_api.py test_hf_file_system.py test_repocard.py test_lfs.py test_xet_download.py
  test_xet_upload.py test_xet_utils.py test_xet_progress_reporting.py test_cache_layout.py
  test_cache_no_symlinks.py test_commit_scheduler.py test_hub_mixin.py test_auth.py})
DESELECT=()
while read -r id; do DESELECT+=(--deselect "tests/$id"); done \
  < <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' "$HERE/out-of-scope.txt" | awk 'NF {print $1}')
ARGS=(-q -p no:cacheprovider -o "addopts=-Werror::FutureWarning --strict-markers" -rfE
  "${DESELECT[@]}" "${FILES[@]/#/tests/}" "${@:3}")

# The two passes run at once against the one hub (their repos have unique
# names, as upstream CI runs its jobs against one staging hub): the run takes
# as long as the slower pass. HF_SUITE_SERIAL=1 runs them one after the other.
pass() { # NAME: the pass's pytest; its output goes to $CACHE/NAME.log
  local name=$1 status=0
  case $name in
    xet) (cd "$SUITE-xet" && "$PY" -m pytest "${ARGS[@]}" -m "not no_xet" \
           --basetemp="$DATA/pytest-xet" --junitxml="$CACHE/junit-xet.xml") >"$CACHE/$name.log" 2>&1 || status=$? ;;
    noxet) (cd "$SUITE-noxet" && HF_HUB_DISABLE_XET=1 "$PY" -m pytest "${ARGS[@]}" -m "not xet" \
           --basetemp="$DATA/pytest-noxet" --junitxml="$CACHE/junit-noxet.xml") >"$CACHE/$name.log" 2>&1 || status=$? ;;
  esac
  return "$status"
}
show() { # NAME TITLE STATUS
  echo "hf-suite: $2: $(tail -n1 "$CACHE/$1.log")"
  [[ $3 -eq 0 ]] || cat "$CACHE/$1.log"
}
started=$SECONDS
if [[ -n "${HF_SUITE_SERIAL:-}" ]]; then
  s1=0; pass xet || s1=$?
  s2=0; pass noxet || s2=$?
else
  pass xet & p1=$!
  pass noxet & p2=$!
  s1=0; wait "$p1" || s1=$?
  s2=0; wait "$p2" || s2=$?
fi
show xet "pass 1/2, hf_xet installed (the client's default)" "$s1"
show noxet "pass 2/2, HF_HUB_DISABLE_XET=1 (legacy LFS path)" "$s2"
echo "hf-suite: $((SECONDS - started))s for both passes (logs and JUnit XML in $CACHE)"
hub_stop || true
[[ $s1 -eq 0 && $s2 -eq 0 ]]
