"""Is int8 worth an opt-in precision for encoder endpoints on OpenVINO? (issue 19)

Runs the graph the worker derives from MiniLM's safetensors (written by
`cargo run -p hub-worker --example export-graph -- MODEL_DIR minilm.onnx`) in
OpenVINO's CPU plugin, engine alone, single-threaded like one worker replica, in
these variants:

  fp32     the graph as the worker runs it
  wo8      weight-only int8: every MatMul/Attention weight as int8 with a per-output-
           channel scale (DequantizeLinear), the plugin's default dynamic activation
           quantization left on
  wo8dq0   the same with DYNAMIC_QUANTIZATION_GROUP_SIZE=0 (weights decompressed only)
  qdq      full int8: QuantizeLinear/DequantizeLinear (u8, per tensor, min/max over a
           calibration corpus) on every MatMul/Attention input, weights as in wo8; the
           plugin's low-precision transformations run int8 FullyConnected layers

and prints, per variant: the kernels the FullyConnected layers got, the min cosine of the
embeddings (mean pooling, L2) to sentence-transformers' reference embeddings
(fixtures/worker/minilm-reference.json) and to fp32 over the corpus, and sentences/s on
requests of 4 and 32 in corpus order (interleaved rounds, median). With --perf, the time
per layer type from OpenVINO's performance counters instead.

  python3 -m venv V && V/bin/pip install openvino==2026.4.1 onnx tokenizers numpy
  python3 scripts/worker/make-corpus.py corpus.txt
  sed 's/20261128/7/' scripts/worker/make-corpus.py | python3 - calib.txt   # another seed
  ONEDNN_MAX_CPU_ISA=AVX2 V/bin/python scripts/worker/int8-probe.py --model MODEL_DIR \
      --graph minilm.onnx --corpus corpus.txt --calib calib.txt [--variants fp32,wo8dq0,qdq] [--rounds 3] [--perf]
"""
import argparse
import collections
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import openvino as ov
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[2]
ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--graph", required=True)
ap.add_argument("--corpus", required=True)
ap.add_argument("--calib", required=True)
ap.add_argument("--variants", default="fp32,wo8,wo8dq0,qdq")
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--threads", default="1")
ap.add_argument("--perf", action="store_true")
args = ap.parse_args()

tok = Tokenizer.from_file(f"{args.model}/tokenizer.json")
tok.enable_truncation(256)
tok.no_padding()
core = ov.Core()


def feed(texts):
    """The worker's padded feed: ids, positions, token types and the 3-D mask."""
    enc = tok.encode_batch(texts)
    n, b = max(len(e.ids) for e in enc), len(enc)
    ids = np.zeros((b, n), np.int64)
    m = np.zeros((b, n), np.float32)
    for i, e in enumerate(enc):
        ids[i, : len(e.ids)] = e.ids
        m[i, : len(e.ids)] = 1
    pos = np.tile(np.arange(n, dtype=np.int64), (b, 1))
    m3 = np.broadcast_to(m[:, None, :], (b, n, n)).astype(np.int32).copy()
    return {"input_ids": ids, "position_ids": pos, "token_type_ids": np.zeros_like(ids),
            "attention_mask_3d": m3}, m


def pool(h, m):
    v = (h * m[:, :, None]).sum(1) / m.sum(1, keepdims=True)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def weighted(g):
    """Nodes whose input 1 is a weight initializer: MatMul and com.microsoft Attention."""
    inits = {t.name for t in g.initializer}
    return [n for n in g.node if n.op_type in ("MatMul", "Attention") and n.input[1] in inits]


def int8_weights(m):
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    for n in weighted(g):
        t = inits[n.input[1]]
        w = numpy_helper.to_array(t)  # [in, out]
        s = np.abs(w).max(0) / 127.0
        s[s == 0] = 1
        q = np.clip(np.round(w / s), -127, 127).astype(np.int8)
        g.initializer.remove(t)
        g.initializer.extend([numpy_helper.from_array(q, t.name + "_q"),
                              numpy_helper.from_array(s.astype(np.float32), t.name + "_s"),
                              numpy_helper.from_array(np.zeros(s.shape, np.int8), t.name + "_z")])
        g.node.append(helper.make_node("DequantizeLinear", [t.name + "_q", t.name + "_s", t.name + "_z"],
                                       [t.name], axis=1))
    return toposort(m)


def toposort(m):
    g = m.graph
    ready = {i.name for i in g.input} | {t.name for t in g.initializer}
    pending, ordered = list(g.node), []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready or i == "" for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        assert len(rest) < len(pending), "cycle"
        pending = rest
    del g.node[:]
    g.node.extend(ordered)
    return m


def compile_(m, extra=None):
    path = f"/tmp/int8-probe-{os.getpid()}.onnx"
    onnx.save(m, path)
    model = core.read_model(path)
    os.unlink(path)
    cfg = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": args.threads,
           "ENABLE_CPU_PINNING": "NO", "INFERENCE_PRECISION_HINT": "f32"}
    cfg.update(extra or {})
    return core.compile_model(model, "CPU", cfg)


def calibrate(texts, bs=16):
    """min/max over real tokens of every MatMul/Attention activation input, in fp32."""
    m = onnx.load(args.graph)
    names = sorted({n.input[0] for n in weighted(m.graph)})
    for nm in names:
        m.graph.output.append(helper.make_tensor_value_info(nm, TensorProto.FLOAT, None))
    c = compile_(m)
    lo, hi = {n: 0.0 for n in names}, {n: 0.0 for n in names}
    for i in range(0, len(texts), bs):
        f, mask = feed(texts[i : i + bs])
        r = c(f)
        for n in names:
            a = r[c.output(n)][mask.astype(bool)]
            lo[n], hi[n] = min(lo[n], float(a.min())), max(hi[n], float(a.max()))
    return {n: (lo[n], hi[n]) for n in names}


def qdq(ranges):
    m = onnx.load(args.graph)
    names = {n.name for n in weighted(m.graph)}
    m = int8_weights(m)
    g = m.graph
    consumers = [n for n in g.node if n.name in names]
    for nm, (lo, hi) in ranges.items():
        s = (hi - lo) / 255.0
        zp = np.uint8(np.clip(round(-lo / s), 0, 255))
        g.initializer.extend([numpy_helper.from_array(np.array(s, np.float32), nm + "_as"),
                              numpy_helper.from_array(np.array(zp, np.uint8), nm + "_az")])
        g.node.append(helper.make_node("QuantizeLinear", [nm, nm + "_as", nm + "_az"], [nm + "_aq"]))
        g.node.append(helper.make_node("DequantizeLinear", [nm + "_aq", nm + "_as", nm + "_az"], [nm + "_adq"]))
        for n in consumers:
            if n.input[0] == nm:
                n.input[0] = nm + "_adq"
    return toposort(m)


def build(v):
    if v == "fp32":
        return compile_(onnx.load(args.graph))
    if v == "wo8":
        return compile_(int8_weights(onnx.load(args.graph)))
    if v == "wo8dq0":
        return compile_(int8_weights(onnx.load(args.graph)), {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"})
    if v == "qdq":
        return compile_(qdq(calibrate(calib)))
    raise SystemExit(f"unknown variant {v}")


def embed(c, texts, bs):
    return np.concatenate([pool(c(f)[0], m) for f, m in (feed(texts[i : i + bs]) for i in range(0, len(texts), bs))])


def lines(p):
    return [l for l in Path(p).read_text().splitlines() if l.strip()]


corpus, calib = lines(args.corpus), lines(args.calib)
ref = json.loads((ROOT / "fixtures/worker/minilm-reference.json").read_text())["sentences"]
rtexts = [s["text"] for s in ref]
rvecs = np.array([s["embedding"] for s in ref], np.float32)
rvecs /= np.linalg.norm(rvecs, axis=1, keepdims=True)
print(f"# ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '')} openvino {ov.__version__} threads {args.threads}")

variants = {}
for v in args.variants.split(","):
    t = time.time()
    c = build(v)
    c.create_infer_request().infer(feed(corpus[:4])[0])  # kernels are chosen on the first run
    kinds = collections.Counter()
    for op in c.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        if "FullyConnected" in rt["layerType"].astype(str):
            kinds[f"{rt['layerType'].astype(str)} {rt['runtimePrecision'].astype(str)}/{rt['primitiveType'].astype(str)}"] += 1
    print(f"# {v}: ready in {time.time() - t:.1f} s; {dict(kinds)}", flush=True)
    variants[v] = c

if args.perf:
    for v, c0 in variants.items():
        c = {"fp32": lambda: compile_(onnx.load(args.graph), {"PERF_COUNT": "YES"}),
             "wo8": lambda: compile_(int8_weights(onnx.load(args.graph)), {"PERF_COUNT": "YES"}),
             "wo8dq0": lambda: compile_(int8_weights(onnx.load(args.graph)), {"PERF_COUNT": "YES", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}),
             "qdq": lambda: compile_(qdq(calibrate(calib)), {"PERF_COUNT": "YES"})}[v]()
        r, acc = c.create_infer_request(), collections.Counter()
        for rep in range(2):
            for i in range(0, 128, 32):
                r.infer(feed(corpus[i : i + 32])[0])
                if rep:
                    for p in r.profiling_info:
                        acc[(p.node_type, p.exec_type)] += p.real_time.total_seconds() * 1e3
        tot = sum(acc.values())
        if not tot:
            print(f"perf {v}: no layer ran (the broken output above)")
            continue
        print(f"perf {v}: {tot:.0f} ms for 128 sentences in passes of 32")
        for (kind, ex), ms in acc.most_common(4):
            print(f"perf   {kind:26s} {ex:20s} {ms:8.1f} ms {100 * ms / tot:5.1f}%")
    raise SystemExit(0)

base = embed(variants["fp32"], corpus, 32) if "fp32" in variants else None
for v, c in list(variants.items()):
    e = embed(c, rtexts, 4)
    if e.shape[0] != len(rtexts) or not np.isfinite(e).all():
        print(f"acc {v}: broken output (shape {c(feed(rtexts[:4])[0])[0].shape}); left out")
        del variants[v]
        continue
    line = f"acc {v}: min cosine to sentence-transformers {(e * rvecs).sum(1).min():.6f}"
    if base is not None:
        cc = (embed(c, corpus, 32) * base).sum(1)
        line += f"; to fp32 over the corpus min {cc.min():.6f} mean {cc.mean():.6f}"
    print(line, flush=True)

res = collections.defaultdict(list)
for r in range(args.rounds):
    order = list(variants)
    order = order[r % len(order):] + order[: r % len(order)]
    for b in (4, 32):
        for v in order:
            t = time.perf_counter()
            embed(variants[v], corpus, b)
            res[(v, b)].append(len(corpus) / (time.perf_counter() - t))
for b in (4, 32):
    f = statistics.median(res[("fp32", b)]) if ("fp32", b) in res else None
    for v in variants:
        med = statistics.median(res[(v, b)])
        print(f"requests of {b:2d}  {v:7s} median {med:7.1f} s/s  best {max(res[(v, b)]):7.1f}"
              + (f"  {med / f:.2f}x fp32" if f else ""), flush=True)
