# shellcheck shell=bash
# A real S3 server for tests and benchmarks: Garage (crates.io `garage`, a
# production S3-compatible object store), one node on loopback. Source it,
# then
#
#   garage_install            build `garage` once into target/tools (cached)
#   garage_start              start a node in a temp dir, make a bucket and a key;
#                             exports AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
#                             AWS_REGION, AWS_ENDPOINT_URL and GARAGE_BUCKET
#   garage_stop               stop it and remove its data
#   garage_cli ARGS...        the `garage` CLI against the running node
#
# Install cost: one `cargo install` of garage 2.5.0 with only the LMDB
# metadata engine (see GARAGE_FEATURES) at opt-level 0 (GARAGE_OPT_LEVEL),
# about 265 CPU-seconds the first time (700 at opt-level 1); later runs reuse
# target/tools/bin/garage.

GARAGE_VERSION=${GARAGE_VERSION:-2.5.0}
GARAGE_FEATURES=${GARAGE_FEATURES:-lmdb,bundled-libs}
_GARAGE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
GARAGE_TOOLS="${CARGO_TARGET_DIR:-$_GARAGE_ROOT/target}/tools"
GARAGE_BIN="$GARAGE_TOOLS/bin/garage"

garage_install() {
  mkdir -p "$GARAGE_TOOLS"
  # One install at a time: scripts/test.sh starts one in the background at the
  # beginning of a run (garage_install_background); a caller that comes while
  # it builds waits here for it, then finds the binary. If that install failed,
  # this one runs in the foreground and shows why.
  (
    if ! flock -n 9; then
      # The background build holds the lock: from now on the tests wait for
      # it, so it gets its fair share of the CPU (root only; else it stays at
      # nice 19 and is merely slower).
      echo "garage: waiting for the background build (log: ${GARAGE_INSTALL_LOG:-target/garage-install.log})" >&2
      _garage_unnice "$(cat "$GARAGE_TOOLS/install.pid" 2>/dev/null)"
      flock -x 9
    fi
    if [[ -x "$GARAGE_BIN" ]] && "$GARAGE_BIN" --version 2>/dev/null | grep -q ":$GARAGE_VERSION\b"; then
      exit 0
    fi
    # Its own target dir: the workspace's lint wrapper and flags must not apply.
    # A test server, not a production one: opt-level 0 (GARAGE_OPT_LEVEL)
    # instead of release's 3. Its build competes with the tests for the CPU and
    # the S3 lane waits for it: ~265 CPU-seconds against ~700 at opt-level 1
    # (docs/BENCHMARKS.md, "The test run").
    # Its block path is the exception: the crates that compress, checksum and
    # hash every byte (and LMDB's C) keep opt-level 2, for about the same build
    # CPU (276 s) and an S3 step as fast as at opt-level 1 (101 s alone).
    local fast=() p
    for p in zstd-sys lmdb-master-sys blake2 sha2 md-5 crc-fast crc32fast; do
      fast+=(--config "profile.release.package.$p.opt-level=2")
    done
    env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS -u RUSTFLAGS \
      CARGO_PROFILE_RELEASE_OPT_LEVEL="${GARAGE_OPT_LEVEL:-0}" \
      cargo install --quiet --locked garage --version "$GARAGE_VERSION" \
      --no-default-features --features "$GARAGE_FEATURES" "${fast[@]}" \
      --root "$GARAGE_TOOLS" --target-dir "$GARAGE_TOOLS/build"
    # The build tree is gigabytes; the binary is all later runs need.
    rm -rf "$GARAGE_TOOLS/build"
  ) 9>"$GARAGE_TOOLS/install.lock"
}

# _garage_unnice PID: PID and its descendants back to nice 0 (cargo's later
# children inherit it from cargo).
_garage_unnice() {
  local pid=$1 f stat pids=() queue
  [[ -n "$pid" ]] || return 0
  queue=("$pid")
  while ((${#queue[@]})); do
    local p=${queue[0]}
    queue=("${queue[@]:1}")
    pids+=("$p")
    for f in /proc/[0-9]*/stat; do
      { stat=$(<"$f"); } 2>/dev/null || continue
      stat=${stat##*) }
      read -r _ ppid _ <<<"$stat"
      [[ "$ppid" == "$p" ]] && queue+=("$(basename "$(dirname "$f")")")
    done
  done
  renice -n 0 -p "${pids[@]}" >/dev/null 2>&1 || true
}

# garage_install_background LOG: garage_install at nice 19 in the background
# (its output in LOG), so that a test run builds Garage on the CPU its own
# build and tests leave idle; a later garage_install waits for it.
garage_install_background() {
  local log=$1
  mkdir -p "$GARAGE_TOOLS"
  ( nice -n 19 bash -c ". '$_GARAGE_ROOT/scripts/lib/garage.sh'; garage_install" >"$log" 2>&1 ||
      echo "garage: the background install failed (its log: $log); the S3 tests will retry it" >&2 ) &
  echo $! >"$GARAGE_TOOLS/install.pid"
  export GARAGE_INSTALL_LOG=$log
  # Until the subshell holds the lock, a garage_install would not wait for it.
  local _
  for _ in $(seq 1 50); do
    flock -n "$GARAGE_TOOLS/install.lock" true 2>/dev/null || return 0
    [[ -x "$GARAGE_BIN" ]] && return 0
    sleep 0.1
  done
}

_garage_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# _garage_retry CMD...: CMD until it succeeds (20 s), quietly; its output on failure.
_garage_retry() {
  local _ out
  for _ in $(seq 1 100); do
    out=$("$@" 2>&1) && return 0
    sleep 0.2
  done
  echo "$out" >&2
  echo "garage: failed: $*" >&2
  return 1
}

garage_cli() {
  "$GARAGE_BIN" -c "$GARAGE_WORK/garage.toml" "$@"
}

garage_start() {
  GARAGE_WORK="$(mktemp -d /tmp/paddock-garage-XXXXXX)"
  local s3_port rpc_port admin_port
  s3_port=$(_garage_free_port); rpc_port=$(_garage_free_port); admin_port=$(_garage_free_port)
  cat >"$GARAGE_WORK/garage.toml" <<EOF
metadata_dir = "$GARAGE_WORK/meta"
data_dir = "$GARAGE_WORK/data"
db_engine = "lmdb"
metadata_fsync = true
data_fsync = true
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(openssl rand -hex 32 2>/dev/null || python3 -c 'import secrets; print(secrets.token_hex(32))')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3_port"

[admin]
api_bind_addr = "127.0.0.1:$admin_port"
EOF
  "$GARAGE_BIN" -c "$GARAGE_WORK/garage.toml" server >"$GARAGE_WORK/garage.log" 2>&1 &
  GARAGE_PID=$!
  local node="" _
  for _ in $(seq 1 100); do
    node=$(garage_cli node id -q 2>/dev/null | cut -d@ -f1) && [[ -n "$node" ]] && break
    kill -0 "$GARAGE_PID" 2>/dev/null || { tail -30 "$GARAGE_WORK/garage.log" >&2; echo "garage: exited" >&2; return 1; }
    sleep 0.2
  done
  [[ -n "$node" ]] || { tail -30 "$GARAGE_WORK/garage.log" >&2; echo "garage: no node id" >&2; return 1; }
  _garage_retry garage_cli layout assign -z dc1 -c 10G "$node"
  _garage_retry garage_cli layout apply --version 1
  export AWS_ACCESS_KEY_ID="GK$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
  export AWS_SECRET_ACCESS_KEY="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
  export AWS_REGION=garage AWS_DEFAULT_REGION=garage
  export AWS_ENDPOINT_URL="http://127.0.0.1:$s3_port"
  export GARAGE_BUCKET=paddock
  # The layout takes a moment to apply: until it has, these answer 500.
  _garage_retry garage_cli key import --yes -n paddock "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY"
  _garage_retry garage_cli bucket create "$GARAGE_BUCKET"
  _garage_retry garage_cli bucket allow --read --write --owner "$GARAGE_BUCKET" --key paddock
  for _ in $(seq 1 50); do
    curl -s -o /dev/null "$AWS_ENDPOINT_URL" && break
    sleep 0.1
  done
  echo "garage: $AWS_ENDPOINT_URL bucket $GARAGE_BUCKET (pid $GARAGE_PID)" >&2
}

garage_stop() {
  [[ -n "${GARAGE_PID:-}" ]] || return 0
  kill -TERM "$GARAGE_PID" 2>/dev/null || true
  wait "$GARAGE_PID" 2>/dev/null || true
  GARAGE_PID=""
  [[ -n "${GARAGE_WORK:-}" && -z "${GARAGE_KEEP_WORK:-}" ]] && rm -rf "$GARAGE_WORK"
  return 0
}
