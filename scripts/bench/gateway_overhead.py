"""The gateway's own cost, without a model: a stand-in worker (a separate
Python process answering a fixed embeddings body) registered straight in the
hub's database, called directly and through the gateway, alternated, at each
concurrency level. Run by scripts/bench/gateway_overhead.sh."""
import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid

LEADER_LOCK = 0x5041_4444_4f43_4b01

STANDIN = r'''
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
SECRET = sys.argv[1]
BODY = b'{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.6,0.8]}],"usage":{"prompt_tokens":5,"total_tokens":5}}'
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def setup(self):
        super().setup()
        # Headers and body are two writes: without this, Nagle holds the body.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        if self.headers.get("Authorization") != "Bearer " + SECRET:
            self.send_response(401); self.send_header("Content-Length", "0"); self.end_headers(); return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Input-Tokens", "5")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
'''


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


class Client:
    def __init__(self, port, path, token):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.path = path
        self.hdr = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(self):
        self.conn.request("POST", self.path, b'{"input":["How fast is the gateway?"]}', self.hdr)
        r = self.conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {body[:200]!r}")


def measure(hub_port, worker_port, token, secret, replica, n, conc):
    g, d = [], []
    lock = threading.Lock()
    barrier = threading.Barrier(conc)

    def run(k):
        via = Client(hub_port, "/endpoints/bench/standin/v1/embeddings", token)
        direct = Client(worker_port, f"/models/{replica}/v1/embeddings", secret)
        for _ in range(20):
            via.call()
            direct.call()
        mg, md = [], []
        barrier.wait()
        for i in range(n // conc):
            pair = [(via, mg), (direct, md)] if (i + k) % 2 == 0 else [(direct, md), (via, mg)]
            for c, acc in pair:
                t = time.perf_counter()
                c.call()
                acc.append((time.perf_counter() - t) * 1000)
        with lock:
            g.extend(mg)
            d.extend(md)

    ts = [threading.Thread(target=run, args=(k,)) for k in range(conc)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    res = {"concurrency": conc, "requests_each": len(g)}
    for key, xs in (("gateway", g), ("direct", d)):
        res[key] = {q: round(percentile(xs, p), 3) for q, p in (("p50", .5), ("p90", .9), ("p99", .99))}
    res["added_p50_ms"] = round(res["gateway"]["p50"] - res["direct"]["p50"], 3)
    res["added_p99_ms"] = round(res["gateway"]["p99"] - res["direct"]["p99"], 3)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hub", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--psql", required=True)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", default="1,16")
    a = ap.parse_args()
    psql = a.psql.split()
    hub_port = int(a.hub.rsplit(":", 1)[1])
    secret = uuid.uuid4().hex
    worker = subprocess.Popen([sys.executable, "-c", STANDIN, secret], stdout=subprocess.PIPE, text=True)
    worker_port = int(worker.stdout.readline())
    # The scheduler stands by while this session holds its lock.
    leader = subprocess.Popen(psql + ["-q", "-c", f"SELECT pg_advisory_lock({LEADER_LOCK}); SELECT pg_sleep(100000)"],
                              stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    wid, replica = uuid.uuid4(), uuid.uuid4()
    sql = f"""
      INSERT INTO workers (id, name, url, gateway_secret, memory_bytes, free_memory_bytes, cores, last_heartbeat)
        VALUES ('{wid}', 'standin', 'http://127.0.0.1:{worker_port}', '{secret}', 8589934592, 8589934592, 2, now() + interval '1 day');
      WITH e AS (INSERT INTO endpoints (namespace_id, name, repo_type, repository, revision, commit_oid, task,
                   min_replicas, max_replicas, access, status)
                 SELECT id, 'standin', 'model', 'bench/standin', 'main', repeat('0', 40), 'feature-extraction', 1, 1, 'protected', 'running'
                 FROM namespaces WHERE name = 'bench' RETURNING id)
      INSERT INTO replicas (id, endpoint_id, worker_id, status) SELECT '{replica}', id, '{wid}', 'running' FROM e;
    """
    subprocess.run(psql + ["-q", "-v", "ON_ERROR_STOP=1", "-c", sql], check=True, stdout=subprocess.DEVNULL)
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
        print(f"CPU: {cpu}; {os.cpu_count()} cores; load {' '.join(open('/proc/loadavg').read().split()[:3])}")
        for c in [int(x) for x in a.concurrency.split(",")]:
            r = measure(hub_port, worker_port, a.token, secret, replica, a.requests, c)
            print(f"* concurrency {c}, {r['requests_each']} requests each way: added p50 **{r['added_p50_ms']} ms**, "
                  f"p99 **{r['added_p99_ms']} ms** (gateway {r['gateway']} / direct {r['direct']})")
            print(json.dumps(r), file=sys.stderr)
    finally:
        worker.kill()
        leader.kill()


if __name__ == "__main__":
    main()
