#!/usr/bin/env bash
# Repo search at hub scale (issue 14): a fresh hub seeded with N repos
# (default 1,000,000: 1,000 organizations of 1,000 model repos, names from a
# vocabulary of model families and sizes, 10% private, downloads and likes
# spread), then `GET /api/models` over loopback for searches of every
# selectivity, a filter and the sorts, p50/p99 of RUNS calls each (anonymous,
# limit 20, as the Hub's default page). Side by side, per search, the database
# time (EXPLAIN ANALYZE) of the SQL `db::repos::list` runs now (the trigram
# index on `repos.search_key`, or the character-pair index for terms with no
# trigram) and of the substring scan it ran before
# (`strpos(lower(n.name || '/' || r.name), ...)`).
#
#   scripts/bench/search.sh [N]        HUB_BIN=... to skip the release build; RUNS (default 50)
#
# Prints a Markdown report.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-1000000}
export RUNS=${RUNS:-50}

. scripts/lib/hub.sh
[[ -n "${HUB_BIN:-}" ]] || { cargo build --quiet --release -p hub-api --example hub-serve; HUB_BIN=target/release/examples/hub-serve; }
export HUB_RATE_LIMIT_TOKEN_RPS=0 HUB_RATE_LIMIT_ANON_RPS=0
hub_start --no-worker --http-workers 2
PSQL_BIN="$(command -v psql || ls /usr/lib/postgresql/*/bin/psql | tail -1)"
export PSQL="$PSQL_BIN -h $HUB_WORK/hub/pg-run -U postgres -d paddock -qAt"

echo "seeding $N repos" >&2
started=$(date +%s)
$PSQL -v ON_ERROR_STOP=1 <<SQL
INSERT INTO namespaces (name, kind) SELECT 'org-' || lpad(g::text, 4, '0'), 'org' FROM generate_series(0, ($N - 1) / 1000) g;
INSERT INTO repos (namespace_id, name, repo_type, private, downloads, likes, pipeline_tag, last_modified)
SELECT n.id,
       (ARRAY['llama','qwen','mistral','gemma','phi','bert','roberta','whisper','clip','t5','gpt2','falcon'])[1 + g % 12]
         || '-' || (ARRAY['7b','13b','small','base','large','mini'])[1 + (g / 12) % 6] || '-' || g,
       'model', g % 10 = 0, (g::bigint * 7919) % 100000, (g::bigint * 104729) % 5000,
       (ARRAY['text-generation','feature-extraction','text-classification','automatic-speech-recognition'])[1 + g % 4],
       now() - make_interval(secs => g)
FROM generate_series(0, $N - 1) g
JOIN namespaces n ON n.name = 'org-' || lpad((g / 1000)::text, 4, '0');
ANALYZE;
SQL
echo "seeded in $(( $(date +%s) - started )) s" >&2

export HUB_URL
python3 - "$N" <<'PY'
import json, os, statistics, subprocess, sys, time, urllib.request

URL, RUNS, N = os.environ["HUB_URL"], int(os.environ["RUNS"]), int(sys.argv[1])
PSQL = os.environ["PSQL"].split()

def api(query):
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        with urllib.request.urlopen(f"{URL}/api/models?{query}&limit=20", timeout=60) as r:
            body = json.load(r)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return len(body), statistics.median(times), times[max(0, int(len(times) * 0.99) - 1)]

def db_ms(sql):
    """Median execution time of `sql` (EXPLAIN ANALYZE, 5 runs)."""
    out = []
    for _ in range(5):
        plan = subprocess.run(PSQL + ["-c", "EXPLAIN (ANALYZE, BUFFERS OFF) " + sql],
                              check=True, capture_output=True, text=True).stdout
        out.append(float(plan.rsplit("Execution Time: ", 1)[1].split()[0]))
    return statistics.median(out)

def trigram_usable(t):
    """db::repos::trigram_usable: does pg_trgm take a trigram from %t%?"""
    i = 0
    while i < len(t):
        if not t[i].isalnum():
            i += 1
            continue
        start = i
        while i < len(t) and t[i].isalnum():
            i += 1
        if i - start + (2 if start > 0 else 0) + (1 if i < len(t) else 0) >= 3:
            return True
    return False

COLS = "SELECT r.id FROM repos r JOIN namespaces n ON n.id = r.namespace_id WHERE r.repo_type = 'model' AND NOT r.private"
def both(term, sort="downloads"):
    esc = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("'", "''")
    lit = term.replace("'", "''")
    # What db::repos::list adds for a term pg_trgm finds no trigram in
    # (trigram_usable / term_grams): the character-pair index.
    pre = ""
    low = term.lower()
    if not trigram_usable(low):
        keys = "abcdefghijklmnopqrstuvwxyz0123456789._-/"
        if all(c in keys for c in low):
            grams = sorted({low[i:i + 2] for i in range(len(low) - 1)} if len(low) > 1 else {low})
            pre = " AND search_grams(r.search_key) @> ARRAY[" + ",".join("'" + g + "'" for g in grams) + "]"
        else:
            pre = " AND false"
    now = f"{COLS}{pre} AND r.search_key LIKE lower('%{esc}%') ORDER BY r.{sort} DESC, r.id DESC LIMIT 20"
    old = f"{COLS} AND strpos(lower(n.name || '/' || r.name), lower('{lit}')) > 0 ORDER BY r.{sort} DESC, r.id DESC LIMIT 20"
    return db_ms(now), db_ms(old)

cases = [
    ("rare: one repo", "search=mistral-large-123458", "mistral-large-123458"),
    ("an organization's repos", "search=org-0421/", "org-0421/"),
    ("a family and size (1/72)", "search=qwen-7b", "qwen-7b"),
    ("a family (1/12)", "search=gemma", "gemma"),
    ("no match", "search=nonexistent-model", "nonexistent-model"),
    ("two letters, no match", "search=zz", "zz"),
    ("two letters (1/4 of repos)", "search=b-", "b-"),
    ("two characters (1/6 of repos)", "search=7b", "7b"),
    ("one character", "search=q", "q"),
    ("punctuation, no match", "search=a..", "a.."),
]
print(f"## Repo search, {N:,} repos ({os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {RUNS} calls each)\n")
print("| query | results | API p50 | API p99 | database: now (indexes) | database: substring scan (before) | scan / index |")
print("|---|---:|---:|---:|---:|---:|---:|")
for label, q, term in cases:
    n, p50, p99 = api(q + "&sort=downloads")
    now_ms, old_ms = both(term)
    print(f"| {label} (`{q}`) | {n} | {p50:.1f} ms | {p99:.1f} ms | {now_ms:.1f} ms | {old_ms:.1f} ms | {old_ms / now_ms:.1f}x |", flush=True)
for label, q in [
    ("filter, sort by likes", "filter=text-generation&sort=likes"),
    ("pipeline tag, sort by downloads", "pipeline_tag=feature-extraction&sort=downloads"),
    ("everything, newest first", "sort=lastModified"),
]:
    n, p50, p99 = api(q)
    print(f"| {label} (`{q}`) | {n} | {p50:.1f} ms | {p99:.1f} ms | | | |", flush=True)
PY
