#!/usr/bin/env python3
"""Drives scripts/worker/bench-embeddings.sh: sentence-transformers in this process and the
hub-worker engines as `bench-embeddings --stdin` subprocesses, in interleaved rounds (the
engine order rotates every round), so load from other processes on a shared machine hits
every engine alike. Reports best and median of the rounds and ratios vs sentence-transformers.

    python bench_driver.py --model DIR --corpus FILE --bin BENCH_BIN --engines candle,ort \
        --rounds 5 --threads 2 --out OUT.json
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BATCHES = (1, 4, 32)
MODES = ("corpus", "requests")


class RustEngine:
    def __init__(self, binary, model, corpus, engine, threads):
        self.proc = subprocess.Popen(
            [binary, "--stdin", "--model", model, "--corpus", corpus, "--engine", engine,
             "--threads", str(threads), "--batches", ",".join(map(str, BATCHES))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = json.loads(self.proc.stdout.readline())
        self.name = f"hub-worker/{ready['ready']}"

    def cpu_seconds(self):
        # utime + stime of the engine process (all threads), from /proc.
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def run(self, mode, batch):
        c0 = self.cpu_seconds()
        self.proc.stdin.write(f"{mode} {batch}\n")
        self.proc.stdin.flush()
        wall = json.loads(self.proc.stdout.readline())["seconds"]
        return wall, self.cpu_seconds() - c0

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


class SentenceTransformersEngine:
    def __init__(self, model, corpus, threads):
        import torch
        from sentence_transformers import SentenceTransformer
        torch.set_num_threads(threads)
        self.torch = torch
        self.model = SentenceTransformer(model, device="cpu")
        self.corpus = corpus
        self.name = f"sentence-transformers/torch-{torch.__version__}"
        self.model.encode(corpus, batch_size=32)  # warm-up

    def run(self, mode, batch):
        t = time.perf_counter()
        c0 = time.process_time()
        with self.torch.inference_mode():
            if mode == "corpus":
                self.model.encode(self.corpus, batch_size=batch, normalize_embeddings=True)
            else:
                for i in range(0, len(self.corpus), batch):
                    self.model.encode(self.corpus[i:i + batch], batch_size=batch,
                                      normalize_embeddings=True)
        return time.perf_counter() - t, time.process_time() - c0

    def close(self):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--engines", default="candle")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batches", default="1,4,32")
    ap.add_argument("--modes", default="corpus,requests")
    a = ap.parse_args()
    global BATCHES, MODES
    BATCHES = tuple(int(b) for b in a.batches.split(","))
    MODES = tuple(a.modes.split(","))
    corpus = [l for l in open(a.corpus).read().splitlines() if l.strip()]
    engines = [RustEngine(a.bin, a.model, a.corpus, e, a.threads) for e in a.engines.split(",") if e]
    try:
        engines.append(SentenceTransformersEngine(a.model, corpus, a.threads))
        peer = engines[-1].name
    except ImportError:
        print("bench: sentence-transformers not importable here; no peer", file=sys.stderr)
        peer = None
    times = {}
    cpu = {}
    for r in range(a.rounds):
        order = engines[r % len(engines):] + engines[:r % len(engines)]
        for batch in BATCHES:
            for mode in MODES:
                for e in order:
                    wall, cpu_s = e.run(mode, batch)
                    times.setdefault((e.name, mode, batch), []).append(wall)
                    cpu.setdefault((e.name, mode, batch), []).append(cpu_s)
        print(f"bench: round {r + 1}/{a.rounds} done", file=sys.stderr)
    for e in engines:
        e.close()
    rows = []
    for (name, mode, batch), ts in sorted(times.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0])):
        best, med = min(ts), statistics.median(ts)
        row = {"engine": name, "mode": mode, "batch": batch, "sentences": len(corpus),
               "rounds": len(ts), "best_sent_per_s": len(corpus) / best,
               "median_sent_per_s": len(corpus) / med, "threads": a.threads,
               "median_cpu_s": statistics.median(cpu[(name, mode, batch)])}
        if peer:
            pt = times[(peer, mode, batch)]
            row["ratio_best"] = min(pt) / best
            row["ratio_median"] = statistics.median(pt) / med
        rows.append(row)
    json.dump(rows, open(a.out, "w"), indent=1)
    print(f"{'engine':<34} {'mode':<9} {'batch':>5} {'best s/s':>9} {'med s/s':>9} "
          f"{'x best':>7} {'x med':>7} {'cpu s':>7}")
    for r in rows:
        print(f"{r['engine']:<34} {r['mode']:<9} {r['batch']:>5} {r['best_sent_per_s']:>9.1f} "
              f"{r['median_sent_per_s']:>9.1f} {r.get('ratio_best', 0):>6.2f}x "
              f"{r.get('ratio_median', 0):>6.2f}x {r['median_cpu_s']:>7.1f}")


if __name__ == "__main__":
    main()
