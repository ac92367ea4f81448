#!/usr/bin/env bash
# `git clone` from Paddock vs from a local bare repository served by
# `git http-backend` behind nginx (fcgiwrap), side by side in one run
# (issue 15: "at least 1.0x"). The repo: 1,000 small files and one 1 GiB LFS
# file, uploaded with huggingface_hub; the peer is a bare clone of it (the
# same commits), whose LFS object nginx serves as a static file behind a
# static batch answer (the fastest LFS server there is). Each clone is timed
# whole (pack, checkout, git-lfs smudge of the 1 GiB file), RUNS times each,
# alternating; then the pack alone (GIT_LFS_SKIP_SMUDGE=1).
# Usage: scripts/bench/git.sh [RUNS]   (default 3)
#   HUB_BIN=... (else target/release/examples/hub-serve, built when missing;
#   BUILD=debug uses target/debug/examples/hub-serve)
#   HUB_BIN_B=... a second build (say, before a change) serving the same repo
#   as a replica on the same data dir: every clone is timed from the peer,
#   HUB_BIN and HUB_BIN_B in turn, so both builds see the same machine load
#   PACK_ONLY=1 skips the whole clones; BIG_MB=1024 is the LFS file's size
#   FETCH_RUNS=N also times N bare protocol v2 fetches of the whole pack per
#   server with curl (the server's pack building and sending alone, without
#   git's indexing and checkout), in turn
#   PY=python with huggingface_hub (default .venv/test/bin/python)
# Installs git-lfs, nginx and fcgiwrap (Debian) when missing. Prints a Markdown report.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-3}
need() { command -v "$1" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }
need git-lfs git-lfs
need nginx nginx
need fcgiwrap fcgiwrap
PY=${PY:-$PWD/.venv/test/bin/python}

. scripts/lib/hub.sh
BUILD=${BUILD:-release}
if [[ -z "${HUB_BIN:-}" ]]; then
  HUB_BIN="$PADDOCK_TARGET/$BUILD/examples/hub-serve"
  [[ -x "$HUB_BIN" ]] || (cd "$PADDOCK_ROOT" && cargo build --quiet $([[ $BUILD == release ]] && echo --release) -p hub-api --example hub-serve)
fi
hub_on_exit '[[ -n "${NGINX_PID:-}" ]] && kill "$NGINX_PID" 2>/dev/null'
# (fcgiwrap -c 4 forks its workers: they go with it.)
hub_on_exit '[[ -n "${FCGI_PID:-}" ]] && { pkill -P "$FCGI_PID"; kill "$FCGI_PID"; } 2>/dev/null'
export HUB_RATE_LIMIT_TOKEN_RPS=0 HUB_RATE_LIMIT_ANON_RPS=0
hub_start
WORK="$HUB_WORK"; URL="$HUB_URL"
hub_admin create-user bench >/dev/null
TOKEN=$(hub_admin create-token bench --scopes read,write)
export GIT_CONFIG_NOSYSTEM=1 HOME="$WORK/home" GIT_TERMINAL_PROMPT=0
mkdir -p "$HOME"
git lfs install --skip-repo >/dev/null

# The repo: 1,000 small text files (1-4 KiB) in 10 folders, one 1 GiB LFS file.
SRC="$WORK/src"
mkdir -p "$SRC"
"$PY" - "$SRC" <<'PY'
import os, random, sys
root = sys.argv[1]
rng = random.Random(15)
for i in range(1000):
    d = os.path.join(root, f"shard-{i % 10}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"file-{i:04d}.txt"), "w") as f:
        f.write("".join(rng.choice("abcdefghij \n") for _ in range(rng.randint(1024, 4096))))
PY
BIG=$(( ${BIG_MB:-1024} << 20 ))
head -c "$BIG" /dev/urandom > "$SRC/model.bin"
SHA=$(sha256sum "$SRC/model.bin" | cut -d' ' -f1)
HF_ENDPOINT="$URL" HF_HUB_DISABLE_XET=1 HF_HUB_DISABLE_PROGRESS_BARS=1 HF_HOME="$WORK/hf" "$PY" - "$SRC" "$TOKEN" <<'PY'
import sys
from huggingface_hub import HfApi
api = HfApi(token=sys.argv[2])
api.create_repo("bench/big")
api.upload_folder(repo_id="bench/big", folder_path=sys.argv[1], commit_message="1,000 files and 1 GiB")
PY

# The peer: a bare clone of the same repo, served by git http-backend behind
# nginx; its LFS object is a static file behind a static batch answer.
PORT=18095
PEER="$WORK/peer"
mkdir -p "$PEER/git/bench" "$PEER/www/lfs"
GIT_LFS_SKIP_SMUDGE=1 git clone -q --bare "$URL/bench/big" "$PEER/git/bench/big.git"
cp "$SRC/model.bin" "$PEER/www/lfs/$SHA"
BATCH=$(printf '{"transfer":"basic","objects":[{"oid":"%s","size":%d,"authenticated":true,"actions":{"download":{"href":"http://127.0.0.1:%d/lfs/%s"}}}]}' \
  "$SHA" "$BIG" "$PORT" "$SHA")
fcgiwrap -c 4 -s "unix:$PEER/fcgi.sock" &
FCGI_PID=$!
RUN="$PEER/nginx-run"
mkdir -p "$RUN"
# (nginx's workers run as root, like fcgiwrap here, to reach its socket.)
cat > "$RUN/nginx.conf" <<CONF
$([[ $(id -u) == 0 ]] && echo "user root;")
worker_processes 2;
daemon off;
pid $RUN/nginx.pid;
error_log $RUN/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on; tcp_nopush on;
  client_body_temp_path $RUN; proxy_temp_path $RUN; fastcgi_temp_path $RUN; uwsgi_temp_path $RUN; scgi_temp_path $RUN;
  server {
    listen 127.0.0.1:$PORT;
    root $PEER/www;
    client_max_body_size 0;
    location = /bench/big.git/info/lfs/objects/batch {
      default_type application/vnd.git-lfs+json;
      return 200 '$BATCH';
    }
    location ~ ^/bench/big(\.git)?/(info/refs|git-upload-pack)\$ {
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME $(git --exec-path)/git-http-backend;
      fastcgi_param GIT_PROJECT_ROOT $PEER/git;
      fastcgi_param GIT_HTTP_EXPORT_ALL 1;
      fastcgi_param GIT_PROTOCOL \$http_git_protocol;
      fastcgi_param PATH_INFO /bench/big.git/\$2;
      fastcgi_pass unix:$PEER/fcgi.sock;
    }
  }
}
CONF
for _ in $(seq 1 50); do [[ -S "$PEER/fcgi.sock" ]] && break; sleep 0.1; done
nginx -c "$RUN/nginx.conf" -p "$RUN" &
NGINX_PID=$!
for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done

# clone NAME URL [env...]: seconds for a full `git clone`, checked.
clone() {
  local name=$1 url=$2 dest="$WORK/clone-$1" t0 t1
  shift 2
  rm -rf "$dest"
  sync
  t0=$(date +%s.%N)
  env "$@" git clone -q "$url" "$dest"
  t1=$(date +%s.%N)
  [[ "$(find "$dest" -path "$dest/.git" -prune -o -type f -print | wc -l)" == 1002 ]] || { echo "$name: wrong file count" >&2; exit 1; }
  if [[ "$*" != *GIT_LFS_SKIP_SMUDGE* ]]; then
    [[ "$(sha256sum "$dest/model.bin" | cut -d' ' -f1)" == "$SHA" ]] || { echo "$name: LFS file differs" >&2; exit 1; }
  fi
  rm -rf "$dest"
  echo "$t1 - $t0" | bc -l
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# The second build, a replica over the same data dir and database.
if [[ -n "${HUB_BIN_B:-}" ]]; then
  "$HUB_BIN_B" --data-dir "$WORK/hub" --bind 127.0.0.1:0 serve >"$WORK/hub-b.log" 2>&1 &
  HUB_B_PID=$!
  hub_on_exit 'kill "$HUB_B_PID" 2>/dev/null; wait "$HUB_B_PID" 2>/dev/null'
  URL_B=$(server_url "$WORK/hub-b.log" "$HUB_B_PID")
  for _ in $(seq 1 100); do curl -fsS -o /dev/null "$URL_B/readyz" 2>/dev/null && break; sleep 0.2; done
fi

P=(); G=(); PP=(); GP=(); PB=(); PPB=()
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
if [[ -z "${PACK_ONLY:-}" ]]; then
  for _ in $(seq 1 "$RUNS"); do
    G+=("$(clone peer "http://127.0.0.1:$PORT/bench/big" X=1)")
    P+=("$(clone paddock "$URL/bench/big" X=1)")
    [[ -n "${URL_B:-}" ]] && PB+=("$(clone paddock-b "$URL_B/bench/big" X=1)")
  done
fi
for _ in $(seq 1 "$RUNS"); do
  GP+=("$(clone peer "http://127.0.0.1:$PORT/bench/big" GIT_LFS_SKIP_SMUDGE=1)")
  PP+=("$(clone paddock "$URL/bench/big" GIT_LFS_SKIP_SMUDGE=1)")
  [[ -n "${URL_B:-}" ]] && PPB+=("$(clone paddock-b "$URL_B/bench/big" GIT_LFS_SKIP_SMUDGE=1)")
done
# fetch URL: seconds for a bare v2 fetch of everything (want the head, done),
# the pack read to the end and dropped.
HEAD_ID=$(git ls-remote "$URL/bench/big" refs/heads/main | cut -f1)
FETCH_BODY="$WORK/fetch.req"
pkt() { printf '%04x%s' $(( ${#1} + 4 )) "$1"; }
{ pkt $'command=fetch\n'; printf 0001; pkt $'ofs-delta\n'; pkt $'no-progress\n'
  pkt "want $HEAD_ID"$'\n'; pkt $'done\n'; printf 0000; } > "$FETCH_BODY"
fetch() {
  curl -sS -o /dev/null -w '%{time_total}\n' -H 'Git-Protocol: version=2' \
    -H 'Content-Type: application/x-git-upload-pack-request' --data-binary "@$FETCH_BODY" "$1/git-upload-pack"
}
FG=(); FP=(); FPB=()
for _ in $(seq 1 "${FETCH_RUNS:-0}"); do
  FG+=("$(fetch "http://127.0.0.1:$PORT/bench/big.git")")
  FP+=("$(fetch "$URL/bench/big")")
  [[ -n "${URL_B:-}" ]] && FPB+=("$(fetch "$URL_B/bench/big")")
done
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
[[ -z "${PACK_ONLY:-}" ]] || { G=(0); P=(1); }  # (not reported)
MG=$(median "${G[@]}"); MP=$(median "${P[@]}"); MGP=$(median "${GP[@]}"); MPP=$(median "${PP[@]}")
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }
WHOLE_ROW=""
if [[ -z "${PACK_ONLY:-}" ]]; then
  WHOLE_ROW="| whole (pack, checkout, git-lfs $((BIG >> 20)) MiB) | ${MG} s | ${MP} s | $(ratio "$MG" "$MP")x |"$'\n'
fi
cat <<REPORT
## git clone vs git http-backend behind nginx ($(date -u +%Y-%m-%d), $RUNS runs each, median)

Repo: 1,000 text files (1-4 KiB) and one $((BIG >> 20)) MiB LFS file, one commit on top of
the initial one. Hub: \`$(basename "$HUB_BIN")\` ($BUILD). Peer: \`git http-backend\`
($(git --version | cut -d' ' -f3)) through fcgiwrap behind nginx, LFS object
as a static file. Client: git $(git --version | cut -d' ' -f3), $(git lfs version | cut -d' ' -f1).

| clone | git http-backend + nginx | Paddock | ratio (peer time / Paddock time) |
|---|---|---|---|
${WHOLE_ROW}| pack and checkout only (GIT_LFS_SKIP_SMUDGE=1) | ${MGP} s | ${MPP} s | $(ratio "$MGP" "$MPP")x |

Runs (s): $([[ -z "${PACK_ONLY:-}" ]] && echo "peer ${G[*]}; Paddock ${P[*]}; ")pack only: peer ${GP[*]}; Paddock ${PP[*]}.
Load average before / after the clones: $LOAD0 / $LOAD1.
REPORT
if [[ -n "${FG[*]}" ]]; then
  cat <<REPORT

Bare v2 fetches of the whole pack (curl, ${FETCH_RUNS} each, in turn), median: peer $(median "${FG[@]}") s,
Paddock $(median "${FP[@]}") s (ratio $(ratio "$(median "${FG[@]}")" "$(median "${FP[@]}")")x)$([[ -n "${FPB[*]}" ]] && echo ", second build $(median "${FPB[@]}") s (ratio $(ratio "$(median "${FG[@]}")" "$(median "${FPB[@]}")")x)").
Runs (s): peer ${FG[*]}; Paddock ${FP[*]}$([[ -n "${FPB[*]}" ]] && echo "; second build ${FPB[*]}").
REPORT
fi
if [[ -n "${URL_B:-}" ]]; then
  cat <<REPORT

Second build (HUB_BIN_B=\`$HUB_BIN_B\`), the clones taken in turn with the above:
pack and checkout only: ${PPB[*]} (median $(median "${PPB[@]}") s, ratio to the peer $(ratio "$MGP" "$(median "${PPB[@]}")")x)$([[ -n "${PB[*]}" ]] && echo "; whole: ${PB[*]} (median $(median "${PB[@]}") s)").
REPORT
fi
