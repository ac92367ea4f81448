#!/usr/bin/env bash
# Webhooks (issue 15): what they cost a commit, and how fast deliveries leave.
#   1. p50/p90 of RUNS 1-file commits with no webhook, with 1 and 98 webhooks
#      watching the repo (each commit then writes 1 or 98 delivery rows in its
#      transaction), and with 1 webhook whose receiver never answers
#   2. delivery lag: commit answered -> request at the receiver (p50/p90), with
#      the hub's idle poll of 1 s
# Usage: scripts/bench/webhooks.sh   (HUB_BIN=path/to/hub-api, else a release build)
# Prints a Markdown report.
set -euo pipefail
cd "$(dirname "$0")/../.."
export RUNS=${RUNS:-30}
. scripts/lib/hub.sh
[[ -n "${HUB_BIN:-}" ]] || hub_build release
export HUB_RATE_LIMIT_TOKEN_RPS=0 HUB_RATE_LIMIT_ANON_RPS=0
hub_start --no-worker --http-workers 2 --webhook-allow-private --webhook-timeout-secs 5
hub_admin create-user bench >/dev/null
export HUB_URL TOKEN
TOKEN=$(hub_admin create-token bench --scopes read,write)
python3 - <<'PY'
import base64, http.server, json, os, statistics, threading, time, urllib.request

URL, TOKEN, RUNS = os.environ["HUB_URL"], os.environ["TOKEN"], int(os.environ["RUNS"])
arrivals = {}
received = [0]

class Ok(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        arrivals.setdefault(json.loads(body)["repo"]["headSha"], time.perf_counter())
        received[0] += 1
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass

class Hang(Ok):
    def do_POST(self):
        time.sleep(60)

def serve(h):
    s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), h)
    s.daemon_threads = True
    threading.Thread(target=s.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{s.server_address[1]}/hook"

ok_url, hang_url = serve(Ok), serve(Hang)

def call(path, body, ctype="application/json", method="POST"):
    req = urllib.request.Request(URL + path, data=body, method=method, headers={
        "Authorization": "Bearer " + TOKEN, "Content-Type": ctype})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.load(r)

def hook(url, repo):
    return call("/api/settings/webhooks", json.dumps({"url": url, "domains": ["repo"],
        "watched": [{"type": "model", "name": f"bench/{repo}"}]}).encode())["webhook"]["id"]

def commit(repo, i):
    lines = [json.dumps({"key": "header", "value": {"summary": "b", "description": ""}}),
             json.dumps({"key": "file", "value": {"path": f"f{i}.txt",
                         "content": base64.b64encode(b"x%d" % i).decode(), "encoding": "base64"}})]
    t0 = time.perf_counter()
    oid = call(f"/api/models/bench/{repo}/commit/main", ("\n".join(lines) + "\n").encode(),
               "application/x-ndjson")["commitOid"]
    return time.perf_counter() - t0, oid, time.perf_counter()

def run(name, setup):
    call("/api/repos/create", json.dumps({"name": name}).encode())
    setup(name)
    commit(name, -1)  # warm up
    times, answered = [], []
    for i in range(RUNS):
        dt, oid, at = commit(name, i)
        times.append(dt * 1000); answered.append((oid, at))
    return times, answered

def q(v, p):
    return statistics.quantiles(v, n=100)[p - 1] if len(v) > 1 else v[0]

rows = []
cases = [
    ("no webhook", lambda r: None),
    ("1 webhook (receiver answers 200)", lambda r: hook(ok_url, r)),
    ("98 webhooks on the repo", lambda r: [hook(ok_url + f"?{i}", r) for i in range(98)]),
    ("1 webhook, receiver never answers", lambda r: hook(hang_url, r)),
]
lags = None
def drained():
    """Waits until the previous case's deliveries stopped arriving."""
    last = -1
    while received[0] != last:
        last = received[0]
        time.sleep(1.5)

for i, (label, setup) in enumerate(cases):
    drained()
    times, answered = run(f"r{i}", setup)
    rows.append((label, q(times, 50), q(times, 90)))
    if i == 1:
        time.sleep(3)
        lags = [(arrivals[o] - at) * 1000 for o, at in answered if o in arrivals]
print("| commit of 1 file | p50 ms | p90 ms |\n|---|---|---|")
for label, p50, p90 in rows:
    print(f"| {label} | {p50:.1f} | {p90:.1f} |")
print(f"\nDelivery lag, commit answered -> receiver (1 webhook, {len(lags)} of {RUNS}): "
      f"p50 {q(lags, 50):.0f} ms, p90 {q(lags, 90):.0f} ms")
PY
hub_stop
