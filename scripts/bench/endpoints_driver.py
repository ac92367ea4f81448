"""Endpoint benchmark driver (run by scripts/bench/endpoints.sh; needs a hub
started by it). Measures, in one run:

1. cold start: POST /api/v1/endpoints -> first 200 from the endpoint, worker
   cache empty (and the phases from the endpoint's event history);
2. wake from zero: a request to a scaled-to-zero endpoint (cache warm);
3. the gateway's added latency: the same request through the hub's gateway
   and straight to the worker, alternated, p50/p90/p99;
4. throughput in sentences/s over the 256-sentence corpus, interleaved rounds
   (engine order rotating, so background load hits everyone alike):
   * http-concurrent C: C clients each sending one sentence per request
     (the worker batches across requests), through the gateway;
   * http-batched B: one client, requests of B sentences in corpus order;
   * http-sorted B: one client, requests of B sentences from the corpus
     sorted the way `encode` sorts it (longest text first), i.e. the very
     batches st-corpus runs;
   * rs-concurrent / rs-batched / rs-sorted: the same three through
     `hub-api/examples/bench-client.rs` (one tokio thread) instead of Python's
     http.client, so the client takes less of the cores the hub shares with
     it (--client-bin; skipped without it);
   * sentence-transformers in-process on PyTorch CPU: `encode(corpus,
     batch_size=B)` (it length-sorts: its best case) and B-sentence calls in
     corpus order (like http-batched);
   * with --precision bf16 (the endpoint computes in bfloat16) also
     st-corpus-bf16: `encode` under `torch.autocast("cpu", torch.bfloat16)`,
     PyTorch at the same precision.

Prints a Markdown report and writes JSON to --out.
"""
import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

SIZES = (1, 4, 32)


class Hub:
    def __init__(self, url, token):
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method, path, body=None, base=None, token=None):
        u = urllib.parse.urlsplit((base or self.url) + path)
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        hdr = {"Authorization": f"Bearer {token or self.token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdr["Content-Type"] = "application/json"
        c.request(method, u.path + (f"?{u.query}" if u.query else ""), data, hdr)
        r = c.getresponse()
        raw = r.read()
        c.close()
        try:
            return r.status, json.loads(raw)
        except ValueError:
            return r.status, raw.decode(errors="replace")


class Client:
    """One keep-alive connection posting embeddings requests."""

    def __init__(self, base, path, token):
        u = urllib.parse.urlsplit(base)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        self.path = path
        self.hdr = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def embed(self, inputs):
        self.conn.request("POST", self.path, json.dumps({"input": inputs}).encode(), self.hdr)
        r = self.conn.getresponse()
        raw = r.read()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {raw[:300]!r}")
        return json.loads(raw)

    def close(self):
        self.conn.close()


def parse_time(s):
    from datetime import datetime
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def wait_status(hub, ns, name, want, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        st, ep = hub.call("GET", f"/api/v1/endpoints/{ns}/{name}")
        if st == 200 and ep["status"] in want:
            return ep
        time.sleep(0.1)
    raise RuntimeError(f"endpoint {name} did not reach {want}: {ep}")


def cold_start(hub, ns, repo, name, precision):
    path = f"/endpoints/{ns}/{name}/v1/embeddings"
    t0 = time.time()
    st, ep = hub.call("POST", f"/api/v1/endpoints/{ns}",
                      {"name": name, "repository": repo, "min_replicas": 1, "max_replicas": 1,
                       "access": "protected", "precision": precision})
    if st != 201:
        raise RuntimeError(f"create endpoint: {st} {ep}")
    client = Client(hub.url, path, hub.token)
    while True:
        # The gateway holds a request to a starting endpoint until a replica is
        # ready; retry only if that hold ends without one.
        try:
            client.embed(["The first sentence."])
            break
        except RuntimeError as e:
            if time.time() - t0 > 120:
                raise
            print(f"bench: cold start retry after {e}", file=sys.stderr)
            client.close()
            client = Client(hub.url, path, hub.token)
            time.sleep(0.05)
    first = time.time() - t0
    client.close()
    first_engine, switched = engine_after(hub, ns, name, t0)
    _, ep = hub.call("GET", f"/api/v1/endpoints/{ns}/{name}")
    created = parse_time(ep["created_at"])
    phases = [(ev["status"], round((parse_time(ev["at"]) - created) * 1000))
              for ev in reversed(ep["events"])]
    return {"first_embedding_ms": round(first * 1000), "phases_ms": phases,
            "first_engine": first_engine, "engine_switch_ms": switched}


def engine_after(hub, ns, name, t0, timeout=120):
    """The engine answering now, and (with a fast start) when the endpoint moved
    off candle to its graph engine, in ms since t0 (None if it did not)."""
    first, deadline = None, time.time() + timeout
    while time.time() < deadline:
        st, info = hub.call("GET", f"/endpoints/{ns}/{name}/info")
        engine = info.get("engine") if st == 200 and isinstance(info, dict) else None
        first = first or engine
        if engine and engine != "candle":
            return first, (round((time.time() - t0) * 1000) if first == "candle" else None)
        time.sleep(0.05)
    return first, None


def wake_from_zero(hub, ns, name):
    st, ep = hub.call("PATCH", f"/api/v1/endpoints/{ns}/{name}",
                      {"min_replicas": 0, "scale_to_zero_after_s": 10})
    if st != 200:
        raise RuntimeError(f"patch: {st} {ep}")
    wait_status(hub, ns, name, ("scaled_to_zero",), 60)
    client = Client(hub.url, f"/endpoints/{ns}/{name}/v1/embeddings", hub.token)
    t0 = time.time()
    client.embed(["Wake up."])
    ms = round((time.time() - t0) * 1000)
    client.close()
    # Let a fast start finish its switch before anything else is measured.
    engine_after(hub, ns, name, t0)
    hub.call("PATCH", f"/api/v1/endpoints/{ns}/{name}", {"min_replicas": 1})
    wait_status(hub, ns, name, ("running",), 60)
    return ms


def print_cold_wake(report):
    cs = report["cold_start"]
    switch = (f"; first answered on {cs['first_engine']}, moved to its graph engine at {cs['engine_switch_ms']} ms"
              if cs.get("engine_switch_ms") else f"; engine {cs.get('first_engine')}")
    print(f"* Cold start, POST to first embedding, empty worker cache: **{cs['first_embedding_ms']} ms** "
          f"(phases after creation, ms: {', '.join(f'{s} {ms}' for s, ms in cs['phases_ms'])}{switch})")
    wakes = report.get("wake_from_zero_all_ms", [report["wake_from_zero_ms"]])
    print(f"* Wake from scaled-to-zero (cache warm), request to answer: {report['wake_from_zero_ms']} ms"
          + (f" (median of {len(wakes)}: {', '.join(map(str, wakes))})" if len(wakes) > 1 else ""))


def worker_target(psql, replica):
    out = subprocess.run(psql + ["-tAF", " ", "-c",
                                 "SELECT w.url, w.gateway_secret FROM replicas r JOIN workers w "
                                 f"ON w.id = r.worker_id WHERE r.id = '{replica}'"],
                         check=True, capture_output=True, text=True).stdout.split()
    return out[0], out[1]


def gateway_latency(hub, ns, name, psql, n, conc=1):
    """Added latency at concurrency `conc`: `conc` threads, each with its own
    keep-alive connection to the gateway and to the worker, alternating the two
    (n requests each way in all)."""
    _, ep = hub.call("GET", f"/api/v1/endpoints/{ns}/{name}")
    replica = ep["replicas"]["items"][0]["id"]
    wurl, secret = worker_target(psql, replica)
    body = ["How fast is the gateway?"]
    g, d = [], []
    lock = threading.Lock()
    start = threading.Barrier(conc)

    def run(k):
        via = Client(hub.url, f"/endpoints/{ns}/{name}/v1/embeddings", hub.token)
        direct = Client(wurl, f"/models/{replica}/v1/embeddings", secret)
        for _ in range(max(1, 50 // conc)):
            via.embed(body)
            direct.embed(body)
        mine_g, mine_d = [], []
        start.wait()
        for i in range(n // conc):
            pair = [(via, mine_g), (direct, mine_d)] if (i + k) % 2 == 0 else [(direct, mine_d), (via, mine_g)]
            for c, acc in pair:
                t = time.perf_counter()
                c.embed(body)
                acc.append((time.perf_counter() - t) * 1000)
        via.close()
        direct.close()
        with lock:
            g.extend(mine_g)
            d.extend(mine_d)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    res = {"concurrency": conc}
    for key, xs in (("gateway", g), ("direct", d)):
        res[key] = {q: round(percentile(xs, p), 3) for q, p in (("p50", .5), ("p90", .9), ("p99", .99))}
    res["added_p50_ms"] = round(res["gateway"]["p50"] - res["direct"]["p50"], 3)
    res["added_p99_ms"] = round(res["gateway"]["p99"] - res["direct"]["p99"], 3)
    res["requests_each"] = len(g)
    # Which engine served (the worker's model info, behind the same secret).
    _, info = hub.call("GET", f"/models/{replica}/info", base=wurl, token=secret)
    res["engine"] = f"{info.get('engine')} x{info.get('replicas')}" if isinstance(info, dict) else "?"
    return res


def print_gateway(g):
    print(f"* Gateway added latency at concurrency {g['concurrency']}, {g['requests_each']} alternated "
          f"single-sentence requests each way: "
          f"p50 **{g['added_p50_ms']} ms** (gateway {g['gateway']['p50']} / direct {g['direct']['p50']}), "
          f"p99 **{g['added_p99_ms']} ms** (gateway {g['gateway']['p99']} / direct {g['direct']['p99']})")


def http_concurrent(hub, path, corpus, conc):
    clients = [Client(hub.url, path, hub.token) for _ in range(conc)]
    nxt = iter(range(len(corpus)))
    lock = threading.Lock()
    errors = []

    def run(c):
        while True:
            with lock:
                i = next(nxt, None)
            if i is None:
                return
            try:
                c.embed([corpus[i]])
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
                return

    t = time.perf_counter()
    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    dt = time.perf_counter() - t
    for c in clients:
        c.close()
    if errors:
        raise errors[0]
    return dt


def http_batched(hub, path, corpus, batch):
    c = Client(hub.url, path, hub.token)
    t = time.perf_counter()
    for i in range(0, len(corpus), batch):
        c.embed(corpus[i:i + batch])
    dt = time.perf_counter() - t
    c.close()
    return dt


def rust_client(binary, hub, path, corpus_file, mode, n):
    """Runs bench-client; returns its wall time for the corpus (process start excluded)."""
    out = subprocess.run([binary, "--url", hub.url + path, "--token", hub.token,
                          "--corpus", corpus_file, "--mode", mode, "--n", str(n)],
                         check=True, capture_output=True, text=True)
    return float(out.stdout.strip())


def st_order(corpus):
    """The corpus in the order SentenceTransformer.encode batches it (longest text first)."""
    return sorted(corpus, key=lambda s: -len(s))


class SentenceTransformers:
    def __init__(self, model_dir, threads):
        import torch
        from sentence_transformers import SentenceTransformer
        torch.set_num_threads(threads)
        self.torch = torch
        self.model = SentenceTransformer(model_dir, device="cpu")

    def corpus(self, corpus, batch):
        t = time.perf_counter()
        with self.torch.inference_mode():
            self.model.encode(corpus, batch_size=batch, normalize_embeddings=True)
        return time.perf_counter() - t

    def corpus_bf16(self, corpus, batch):
        t = time.perf_counter()
        with self.torch.inference_mode(), self.torch.autocast("cpu", dtype=self.torch.bfloat16):
            self.model.encode(corpus, batch_size=batch, normalize_embeddings=True)
        return time.perf_counter() - t

    def requests(self, corpus, batch):
        t = time.perf_counter()
        with self.torch.inference_mode():
            for i in range(0, len(corpus), batch):
                self.model.encode(corpus[i:i + batch], batch_size=batch, normalize_embeddings=True)
        return time.perf_counter() - t

    def embed(self, sentences):
        return self.model.encode(sentences, normalize_embeddings=True)


def check_agreement(hub, path, st, corpus):
    """The endpoint's embeddings match sentence-transformers' (sanity, not speed)."""
    import numpy as np
    c = Client(hub.url, path, hub.token)
    got = c.embed(corpus[:16])
    c.close()
    a = np.array([d["embedding"] for d in got["data"]])
    b = st.embed(corpus[:16])
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    return float(min((a * b).sum(axis=1)))


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


def proc_cpu_seconds(pid):
    """utime + stime of a process (all threads), from /proc."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hub", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--psql", required=True, help="psql command line for the hub's database")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--latency-requests", type=int, default=500)
    ap.add_argument("--latency-concurrency", default="1,16",
                    help="concurrency levels of the gateway-latency leg, comma-separated")
    ap.add_argument("--hub-pid", type=int, required=True,
                    help="the hub's process id (its CPU time includes the in-process worker)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--client-bin", help="hub-api's bench-client example (rs-* modes)")
    ap.add_argument("--only", default="all", choices=("all", "cold-wake", "gateway", "throughput"),
                    help="cold-wake: only the cold start and wake legs; gateway: only the gateway's "
                         "added latency (neither needs sentence-transformers); throughput: only the "
                         "sentences/s table (and the cold start that creates the endpoint)")
    ap.add_argument("--wake-rounds", type=int, default=1, help="wakes from zero to measure")
    ap.add_argument("--precision", default="f32", choices=("f32", "bf16"),
                    help="the endpoint's precision (bf16 adds PyTorch under bf16 autocast)")
    a = ap.parse_args()
    hub = Hub(a.hub, a.token)
    ns = a.namespace
    corpus = [line for line in open(a.corpus).read().splitlines() if line.strip()]
    psql = a.psql.split()

    os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
    from huggingface_hub import HfApi
    api = HfApi(endpoint=a.hub, token=a.token)
    repo = f"{ns}/all-minilm-l6-v2"
    t = time.time()
    api.create_repo(repo, exist_ok=True)
    api.upload_folder(repo_id=repo, folder_path=a.model, commit_message="bench: upload")
    print(f"bench: pushed {a.model} with huggingface_hub in {time.time() - t:.1f}s", file=sys.stderr)

    report = {"load_before": open("/proc/loadavg").read().split()[:3]}
    report["precision"] = a.precision
    report["cold_start"] = cold_start(hub, ns, repo, "minilm", a.precision)
    print(f"bench: cold start {report['cold_start']}", file=sys.stderr)
    if a.only not in ("gateway", "throughput"):
        wakes = [wake_from_zero(hub, ns, "minilm") for _ in range(max(1, a.wake_rounds))]
        report["wake_from_zero_ms"] = round(statistics.median(wakes))
        report["wake_from_zero_all_ms"] = wakes
        print(f"bench: wake from zero {wakes} ms", file=sys.stderr)
        if a.only == "cold-wake":
            json.dump(report, open(a.out, "w"), indent=1)
            print_cold_wake(report)
            return
    levels = [int(c) for c in a.latency_concurrency.split(",") if c.strip()]
    if a.only == "throughput":
        levels = []
    report["gateway_by_concurrency"] = [
        gateway_latency(hub, ns, "minilm", psql, a.latency_requests * max(1, c // 4), c) for c in levels]
    report["gateway"] = (report["gateway_by_concurrency"] or [{}])[0]
    for g in report["gateway_by_concurrency"]:
        print(f"bench: gateway {g}", file=sys.stderr)
    if a.only == "gateway":
        json.dump(report, open(a.out, "w"), indent=1)
        print(f"CPU: {cpu_model()}; {os.cpu_count()} cores; load before {' '.join(report['load_before'])}, "
              f"after {' '.join(open('/proc/loadavg').read().split()[:3])}\n")
        for g in report["gateway_by_concurrency"]:
            print_gateway(g)
        print(f"* Engine serving the endpoint: {report['gateway'].get('engine')} (endpoint precision {a.precision})")
        return

    path = f"/endpoints/{ns}/minilm/v1/embeddings"
    st = SentenceTransformers(a.model, a.threads)
    report["min_cosine_vs_st"] = check_agreement(hub, path, st, corpus)
    engines = {
        "http-concurrent": lambda n: http_concurrent(hub, path, corpus, n),
        "http-batched": lambda n: http_batched(hub, path, corpus, n),
        "http-sorted": lambda n: http_batched(hub, path, st_order(corpus), n),
        **({f"rs-{m}": (lambda m: lambda n: rust_client(a.client_bin, hub, path, a.corpus, m, n))(m)
            for m in ("concurrent", "batched", "sorted")} if a.client_bin else {}),
        "st-corpus": lambda n: st.corpus(corpus, n),
        "st-requests": lambda n: st.requests(corpus, n),
        **({"st-corpus-bf16": lambda n: st.corpus_bf16(corpus, n)} if a.precision == "bf16" else {}),
    }
    for fn in engines.values():  # warm-up
        fn(4)
    times = {(e, n): [] for e in engines for n in SIZES}
    cpu = {(e, n): [] for e in engines for n in SIZES}
    names = list(engines)
    for r in range(a.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in SIZES:
            for e in order:
                # CPU seconds of the serving side: the hub process (gateway +
                # in-process worker) for HTTP, this process for PyTorch.
                clock = (lambda: proc_cpu_seconds(a.hub_pid)) if not e.startswith("st-") else time.process_time
                c0 = clock()
                times[(e, n)].append(engines[e](n))
                cpu[(e, n)].append(clock() - c0)
        print(f"bench: round {r + 1}/{a.rounds} done, load {open('/proc/loadavg').read().split()[0]}",
              file=sys.stderr)
    report["load_after"] = open("/proc/loadavg").read().split()[:3]
    rows = []
    for n in SIZES:
        for e in names:
            xs = times[(e, n)]
            rows.append({"engine": e, "n": n, "best": len(corpus) / min(xs),
                         "median": len(corpus) / statistics.median(xs),
                         "cpu_s": statistics.median(cpu[(e, n)])})
    report["throughput"] = rows
    json.dump(report, open(a.out, "w"), indent=1)

    def get(e, n, k):
        return next(r[k] for r in rows if r["engine"] == e and r["n"] == n)

    print(f"Load average before {' '.join(report['load_before'])}, after {' '.join(report['load_after'])}; "
          f"{a.rounds} interleaved rounds; {len(corpus)} sentences; {a.threads} threads.\n")
    print("| batch / concurrency | " + " | ".join(names) + " |")
    print("|---:|" + "---:|" * len(names))
    for n in SIZES:
        cells = [f"{get(e, n, 'best'):.1f} ({get(e, n, 'median'):.1f})" for e in names]
        print(f"| {n} | " + " | ".join(cells) + " |")
    print("\nsentences/s, best of rounds (median in parentheses).\n")
    ratios = [("concurrent", "st-corpus"), ("sorted", "st-corpus"), ("batched", "st-requests")]
    if "st-corpus-bf16" in names:
        ratios += [("concurrent", "st-corpus-bf16"), ("sorted", "st-corpus-bf16")]
    clients = [c for c in ("http", "rs") if f"{c}-batched" in names]
    print("Ratios, best over best:\n")
    print("| batch / concurrency | " + " | ".join(f"{c}-{x} / {y}" for c in clients for x, y in ratios) + " |")
    print("|---:|" + "---:|" * (len(clients) * len(ratios)))
    for n in SIZES:
        cells = [f"{get(f'{c}-{x}', n, 'best') / get(y, n, 'best'):.2f}x" for c in clients for x, y in ratios]
        print(f"| {n} | " + " | ".join(cells) + " |")
    print()
    print("CPU seconds per 256-sentence pass (median; serving side only: the hub process for HTTP, "
          "the PyTorch process for sentence-transformers):\n")
    print("| batch / concurrency | " + " | ".join(names) + " |")
    print("|---:|" + "---:|" * len(names))
    for n in SIZES:
        print(f"| {n} | " + " | ".join(f"{get(e, n, 'cpu_s'):.2f}" for e in names) + " |")
    print()
    if a.only == "throughput":
        print(f"* Cold start (POST to first embedding): {report['cold_start']}")
        print(f"* Embeddings agree with sentence-transformers: min cosine {report['min_cosine_vs_st']:.6f} over 16 sentences")
        return
    print_cold_wake(report)
    g = report["gateway"]
    for x in report["gateway_by_concurrency"]:
        print_gateway(x)
    print(f"* Engine serving the endpoint: {g.get('engine')} "
          f"(endpoint precision {a.precision})")
    print(f"* Embeddings agree with sentence-transformers: min cosine {report['min_cosine_vs_st']:.6f} over 16 sentences")


if __name__ == "__main__":
    main()
