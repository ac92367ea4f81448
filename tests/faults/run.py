#!/usr/bin/env python3
"""Fault injection against the real hub-api binary (issue 13): kill -9 of the
hub under concurrent writers, then kill -9 and an immediate shutdown (SIGQUIT)
of its private PostgreSQL under load. Afterwards every acknowledged commit
must be reachable with its files byte-exact, no file may be partial, and no
answer may be a 5xx other than 503-with-a-code. Recovery needs no manual step:
the restarted hub adopts the orphaned cluster, and the hub restarts a
postmaster that died.

Usage: tests/faults/run.py HUB_API_BIN   (standard library only; loopback only)
Figures are printed at the end; exit status 1 when an invariant fails.
"""

import base64
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "lib"))
import hub as lib_hub  # noqa: E402  (scripts/lib/hub.py: the one way to start a hub)

HUB = sys.argv[1] if len(sys.argv) > 1 else "target/debug/hub-api"
SEED = int(os.environ.get("FAULTS_SEED", "13"))
WRITERS = int(os.environ.get("FAULTS_WRITERS", "8"))
READERS = 2
# A request slower than this is a hang (the pool's acquire timeout is 5 s:
# a request already waiting for a connection when PostgreSQL dies may use it).
HANG_S = 6.5
REQUEST_TIMEOUT_S = 15
REPO = "alice/faults"

rng = random.Random(SEED)
lock = threading.Lock()
stats = {
    "requests": 0,
    "status": {},
    "conn_errors": 0,
    "bad_5xx": [],
    "bad_503": [],
    "hangs": [],
    "faults": [],
    "worst_s": 0.0,
}
acked = []  # (commit id, path, sha256, size)
attempted = {}  # path -> sha256 of the bytes sent (acked or not)


class Hub(lib_hub.Hub):
    """The hub of scripts/lib/hub.py, plus its private cluster's postmaster."""

    def postmaster_pid(self):
        try:
            with open(os.path.join(self.data_dir, "pg", "postmaster.pid")) as f:
                return int(f.readline().strip())
        except (OSError, ValueError):
            return None


def request(hub, method, path, body=None, headers=None, record=True):
    """One HTTP request; returns (status, headers, body bytes) or None when the
    connection failed (the hub is down). Records figures and invariants."""
    url = hub.url + path
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    started = time.time()
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as r:
            status, hdrs, data = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, data = e.code, dict(e.headers), e.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
        took = time.time() - started
        with lock:
            stats["requests"] += record
            stats["conn_errors"] += 1
            if took > HANG_S and "refused" not in str(e).lower():
                stats["hangs"].append((method, path, round(took, 2), str(e)[:80]))
        return None
    took = time.time() - started
    if record:
        with lock:
            stats["requests"] += 1
            stats["status"][status] = stats["status"].get(status, 0) + 1
            stats["worst_s"] = max(stats["worst_s"], took)
            if took > HANG_S:
                stats["hangs"].append((method, path, round(took, 2), status))
            if status >= 500 and status != 503:
                stats["bad_5xx"].append((method, path, status, data[:200]))
            if status == 503:
                try:
                    code = json.loads(data).get("code")
                except ValueError:
                    code = None
                retry = {k.lower(): v for k, v in hdrs.items()}.get("retry-after")
                if not code or not retry:
                    stats["bad_503"].append((method, path, data[:200], retry))
    return status, hdrs, data


def auth(token):
    return {"Authorization": f"Bearer {token}"}


def commit_body(summary, path, content):
    lines = [
        {"key": "header", "value": {"summary": summary, "description": ""}},
        {"key": "file", "value": {"path": path, "content": base64.b64encode(content).decode(), "encoding": "base64"}},
    ]
    return ("\n".join(json.dumps(x) for x in lines) + "\n").encode()


def writer(hub, token, wid, stop):
    r = random.Random(SEED * 1000 + wid)
    j = 0
    while not stop.is_set():
        j += 1
        path = f"w{wid}/f{j:05d}.bin"
        content = r.randbytes(r.choice([1, 100, 4096, 65536, 300_000]))
        sha = hashlib.sha256(content).hexdigest()
        with lock:
            attempted[path] = sha
        res = request(hub, "POST", f"/api/models/{REPO}/commit/main", commit_body(f"{wid}/{j}", path, content),
                      {**auth(token), "Content-Type": "application/x-ndjson"})
        if res is None:
            time.sleep(0.05)
            continue
        status, _, data = res
        if status == 200:
            commit = json.loads(data)["commitOid"]
            with lock:
                acked.append((commit, path, sha, len(content)))
        elif status == 503:
            time.sleep(0.1)


def reader(hub, token, stop):
    while not stop.is_set():
        with lock:
            sample = rng.choice(acked) if acked else None
        if sample:
            request(hub, "GET", f"/{REPO}/resolve/{sample[0]}/{sample[1]}", headers=auth(token))
        request(hub, "GET", f"/api/models/{REPO}", headers=auth(token))
        time.sleep(0.02)


def wait_ready(hub, within_s):
    """Polls /readyz; returns seconds until it said ready (None: never)."""
    started = time.time()
    while time.time() - started < within_s:
        res = request(hub, "GET", "/readyz", record=False)
        if res and res[0] == 200:
            return time.time() - started
        time.sleep(0.1)
    return None


def readyz_during_outage(hub, seconds):
    """Polls /readyz while PostgreSQL is down: returns (worst latency, statuses)."""
    worst, seen = 0.0, {}
    end = time.time() + seconds
    while time.time() < end:
        t = time.time()
        res = request(hub, "GET", "/readyz", record=False)
        worst = max(worst, time.time() - t)
        key = res[0] if res else "conn"
        seen[key] = seen.get(key, 0) + 1
        if res and res[0] == 200:
            break
        time.sleep(0.05)
    return worst, seen


def run_load(hub, token, seconds_before, fault, seconds_after_ready=3):
    stop = threading.Event()
    threads = [threading.Thread(target=writer, args=(hub, token, i, stop)) for i in range(WRITERS)]
    threads += [threading.Thread(target=reader, args=(hub, token, stop)) for _ in range(READERS)]
    for t in threads:
        t.start()
    time.sleep(seconds_before)
    info = fault()
    ready = wait_ready(hub, 60)
    if ready is None:
        stop.set()
        for t in threads:
            t.join()
        sys.exit(f"no recovery within 60 s after {info}")
    info["ready_after_s"] = round(ready, 2)
    time.sleep(seconds_after_ready)
    stop.set()
    for t in threads:
        t.join()
    return info


def main():
    started = time.time()
    data = tempfile.mkdtemp(prefix="paddock-faults-")
    hub = Hub(HUB, data)
    env = dict(os.environ, HUB_RATE_LIMIT_TOKEN_RPS="0", HUB_RATE_LIMIT_ANON_RPS="0", HUB_LOG="info,sqlx=warn")
    env.pop("HUB_PG_UNSAFE_FAST", None)  # durability is the point: fsync on
    try:
        hub.start("--no-worker", env=env)
    except lib_hub.HubError as e:
        sys.exit(str(e))
    print(f"faults: hub at {hub.url} (data {data}, seed {SEED})", flush=True)
    hub.admin("admin", "create-user", "alice")
    token = hub.admin("admin", "create-token", "alice", "--scopes", "read,write")
    res = request(hub, "POST", "/api/repos/create", json.dumps({"name": "faults", "organization": "alice"}).encode(),
                  {**auth(token), "Content-Type": "application/json"})
    assert res and res[0] == 200, res

    # (a) kill -9 of the hub under concurrent writers, twice; restart on the same data dir.
    for n in range(2):
        def kill_hub():
            hub.proc.send_signal(signal.SIGKILL)
            hub.proc.wait()
            t = time.time()
            try:
                hub.start()  # same data dir, flags and environment
            except lib_hub.HubError as e:
                sys.exit(str(e))
            return {"fault": "kill -9 hub-api", "restart_s": round(time.time() - t, 2)}
        info = run_load(hub, token, 3, kill_hub)
        stats["faults"].append(info)
        print(f"faults: {info}", flush=True)

    # (b) PostgreSQL dies under load: kill -9 of the postmaster, then an
    # immediate shutdown (SIGQUIT); the hub restarts it by itself.
    for sig, name in [(signal.SIGKILL, "kill -9 postgres"), (signal.SIGQUIT, "postgres immediate shutdown (SIGQUIT)")]:
        def kill_pg():
            pid = hub.postmaster_pid()
            assert pid, "no postmaster.pid"
            os.kill(pid, sig)
            time.sleep(0.3)
            worst, seen = readyz_during_outage(hub, 3)
            return {"fault": name, "readyz_worst_s": round(worst, 3), "readyz_seen": seen}
        info = run_load(hub, token, 3, kill_pg)
        stats["faults"].append(info)
        print(f"faults: {info}", flush=True)

    # Every acknowledged commit is reachable and its file reads back byte-exact.
    lost = []
    for commit, path, sha, size in acked:
        res = request(hub, "GET", f"/{REPO}/resolve/{commit}/{path}", headers=auth(token), record=False)
        if not res or res[0] != 200 or hashlib.sha256(res[2]).hexdigest() != sha:
            lost.append((commit, path, res[0] if res else None))
    # The branch head holds every acknowledged file (commits without parentCommit
    # never drop another's file), and no file in it is partial.
    tree = {}
    page = f"/api/models/{REPO}/tree/main?recursive=true"
    while page:
        res = request(hub, "GET", page, headers=auth(token), record=False)
        assert res and res[0] == 200, res
        tree.update({e["path"]: e for e in json.loads(res[2]) if e.get("type") == "file"})
        link = {k.lower(): v for k, v in res[1].items()}.get("link", "")
        m = re.search(r'<([^>]+)>;\s*rel="next"', link)
        page = m.group(1).replace(hub.url, "") if m else None
    for _, path, _, _ in acked:
        if path not in tree:
            lost.append(("head", path, "missing"))
    partial = []
    for path, entry in tree.items():
        if path not in attempted:
            continue
        res = request(hub, "GET", f"/{REPO}/resolve/main/{path}", headers=auth(token), record=False)
        if not res or res[0] != 200 or hashlib.sha256(res[2]).hexdigest() != attempted[path] \
                or len(res[2]) != entry.get("size"):
            partial.append((path, res[0] if res else None))

    # SIGTERM stops the hub and the cluster it adopted after the kill -9.
    code = hub.stop()
    cluster_left = hub.postmaster_pid() is not None and os.path.exists(f"/proc/{hub.postmaster_pid()}")

    s5 = stats["status"]
    print("\n=== fault injection figures")
    print(f"requests tried:                 {stats['requests']}")
    print(f"faults injected:                {len(stats['faults'])} "
          f"({', '.join(f['fault'] for f in stats['faults'])})")
    print(f"status counts:                  {dict(sorted(s5.items()))}; connection errors {stats['conn_errors']}")
    print(f"acknowledged commits:           {len(acked)}")
    print(f"acknowledged writes lost:       {len(lost)}")
    print(f"partial or wrong files in head: {len(partial)}")
    print(f"5xx other than 503:             {len(stats['bad_5xx'])}")
    print(f"503 without code/Retry-After:   {len(stats['bad_503'])}")
    print(f"requests over {HANG_S} s:          {len(stats['hangs'])}; slowest answer {stats['worst_s']:.2f} s")
    for f in stats["faults"]:
        print(f"  {f}")
    print(f"SIGTERM: exit {code}, private PostgreSQL left running: {cluster_left}")
    print(f"duration: {time.time() - started:.0f} s")
    failures = []
    if lost:
        failures.append(f"lost: {lost[:5]}")
    if partial:
        failures.append(f"partial: {partial[:5]}")
    if stats["bad_5xx"]:
        failures.append(f"5xx other than 503: {stats['bad_5xx'][:5]}")
    if stats["bad_503"]:
        failures.append(f"503 without a code or Retry-After: {stats['bad_503'][:5]}")
    if stats["hangs"]:
        failures.append(f"hangs: {stats['hangs'][:5]}")
    for f in stats["faults"]:
        if "readyz_worst_s" in f and f["readyz_worst_s"] > 1.0:
            failures.append(f"/readyz took {f['readyz_worst_s']} s during {f['fault']}")
    if cluster_left:
        failures.append("SIGTERM left the private PostgreSQL running")
    if code != 0:
        failures.append(f"hub exit status {code} on SIGTERM")
    if len(acked) < 50:
        failures.append(f"only {len(acked)} commits acknowledged: the load did not run")
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        print(f"logs kept in {data}")
        sys.exit(1)
    subprocess.run(["rm", "-rf", data])
    print("fault injection: all invariants hold")


if __name__ == "__main__":
    main()
