"""Load generator for the text-generation benchmark (scripts/bench/generation.sh).

Streams OpenAI `/v1/completions` (SSE: `data: {json}` chunks, `data: [DONE]`) at a fixed
concurrency with httpx/asyncio and reports the metric set of vLLM's `bench serve`:

  TTFT   time from sending the request to the first chunk carrying text;
  ITL    the gaps between successive text-carrying chunks of one stream (all streams pooled);
  TPOT   per request (e2e - TTFT) / (output tokens - 1), then p50/p99 over requests;
  output tok/s   total output tokens / wall time from the first request sent to the last
         response finished (the benchmark duration);
  E2E    request latency.

Output tokens are the server's `usage.completion_tokens` when it streams usage
(`stream_options.include_usage`), else the number of text-carrying chunks (llama.cpp-based
servers send one chunk per token; the JSON says which was used).

Subcommands:
  prompts  make N distinct prompts of exactly T tokens from a GGUF's tokenizer (llama-cpp-python,
           vocab only), each starting differently so that no server reuses a cached prefix;
  run      one benchmark leg: --url, --path, --concurrency, --requests; prints JSON;
  first    one streamed request, retried until it answers; prints seconds to its first text
           chunk counted from --since (a unix time), for cold starts;
  table    the Markdown table from the JSON lines the runs wrote.
"""
import argparse
import asyncio
import json
import random
import statistics
import sys
import time

WORDS = (
    "river mountain city harbour market winter summer engine garden library window story "
    "teacher doctor farmer painter music letter bridge forest island village station road "
    "morning evening candle paper silver copper stone wooden ancient modern quiet busy "
    "small large bright dark early late north south east west old new slow fast warm cold"
).split()
TOPICS = [
    "the history of bridges", "a day at a fishing harbour", "how libraries keep old books",
    "the first railway stations", "farming in the mountains", "a winter market in a small city",
    "the life of a village teacher", "copper mining in the north", "building wooden boats",
    "the night sky over an island", "a painter who moved south", "letters between two cities",
]


def percentile(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def cmd_prompts(a):
    from llama_cpp import Llama
    llm = Llama(model_path=a.model, vocab_only=True, verbose=False)
    rng = random.Random(a.seed)
    out = []
    for i in range(a.n):
        topic = TOPICS[i % len(TOPICS)]
        parts = [f"Report {i + 1} of {a.n}, on {topic}. "]
        ids = []
        while True:
            sent = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16)))
            parts.append(sent.capitalize() + ". ")
            ids = llm.tokenize("".join(parts).encode(), add_bos=True, special=False)
            if len(ids) >= a.tokens + 8:
                break
        # Cut to exactly T tokens (BOS included) and end on text the model continues.
        text = llm.detokenize(ids[1:a.tokens]).decode(errors="ignore")
        n = len(llm.tokenize(text.encode(), add_bos=True, special=False))
        out.append({"prompt": text, "tokens": n})
    json.dump(out, open(a.out, "w"), indent=1)
    counts = [p["tokens"] for p in out]
    print(f"genload: {a.n} prompts, {min(counts)}..{max(counts)} tokens (with BOS)", file=sys.stderr)


async def one_request(client, url, headers, body, rec):
    t0 = time.perf_counter()
    rec["start"] = t0
    chunks = []  # perf_counter time of each text-carrying chunk
    usage = None
    finish = None
    text = []
    async with client.stream("POST", url, json=body, headers=headers) as r:
        if r.status_code != 200:
            raw = await r.aread()
            raise RuntimeError(f"HTTP {r.status_code}: {raw[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            ev = json.loads(data)
            if "error" in ev:
                raise RuntimeError(f"stream error: {ev['error']}")
            if ev.get("usage"):
                usage = ev["usage"]
            for ch in ev.get("choices") or []:
                piece = ch.get("text") or ""
                if piece:
                    chunks.append(time.perf_counter())
                    text.append(piece)
                if ch.get("finish_reason"):
                    finish = ch["finish_reason"]
    end = time.perf_counter()
    if not chunks:
        raise RuntimeError(f"no text streamed (finish {finish}, usage {usage})")
    rec.update({
        "ttft": chunks[0] - t0,
        "itl": [b - a for a, b in zip(chunks, chunks[1:])],
        "e2e": end - t0,
        "end": end,
        "chunks": len(chunks),
        "completion_tokens": (usage or {}).get("completion_tokens"),
        "prompt_tokens": (usage or {}).get("prompt_tokens"),
        "finish": finish,
        "chars": len("".join(text)),
    })


def make_body(a, prompt):
    body = {"prompt": prompt, "max_tokens": a.max_tokens, "temperature": 0, "stream": True}
    if a.model_name:
        body["model"] = a.model_name
    if a.include_usage:
        body["stream_options"] = {"include_usage": True}
    body.update(json.loads(a.extra))
    return body


def headers_of(a):
    h = {"Content-Type": "application/json"}
    if a.token:
        h["Authorization"] = f"Bearer {a.token}"
    return h


async def run_leg(a):
    import httpx
    prompts = [p["prompt"] for p in json.load(open(a.prompts))]
    # Each level sends its own prompts (from --offset; the warm-up takes the last ones), so
    # no server can answer from a prefix cached by an earlier level or the warm-up.
    if a.offset + a.requests > len(prompts) - a.warmup:
        sys.exit(f"genload: {a.requests} requests from offset {a.offset} need more than "
                 f"{len(prompts)} prompts (minus {a.warmup} for the warm-up)")
    url = a.url.rstrip("/") + a.path
    headers = headers_of(a)
    limits = httpx.Limits(max_connections=a.concurrency + 2, max_keepalive_connections=a.concurrency + 2)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:
        for i in range(a.warmup):  # not measured: page in weights, first-call allocations
            await one_request(client, url, headers, make_body(a, prompts[-1 - i]), {})
        queue = list(range(a.requests))
        recs = [dict() for _ in queue]

        async def worker():
            while queue:
                i = queue.pop(0)
                await one_request(client, url, headers, make_body(a, prompts[a.offset + i]), recs[i])

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(a.concurrency)))
        wall = max(r["end"] for r in recs) - t0
    use_usage = all(r["completion_tokens"] is not None for r in recs)
    out_tokens = [r["completion_tokens"] if use_usage else r["chunks"] for r in recs]
    itl = [x for r in recs for x in r["itl"]]
    tpot = [(r["e2e"] - r["ttft"]) / (n - 1) for r, n in zip(recs, out_tokens) if n > 1]
    res = {
        "server": a.label,
        "concurrency": a.concurrency,
        "requests": a.requests,
        "max_tokens": a.max_tokens,
        "tokens_counted_by": "usage" if use_usage else "chunks",
        "output_tokens_total": sum(out_tokens),
        "output_tokens_min": min(out_tokens),
        "output_tokens_max": max(out_tokens),
        "prompt_tokens": sorted({r["prompt_tokens"] for r in recs if r["prompt_tokens"]}),
        "finish_reasons": sorted({str(r["finish"]) for r in recs}),
        "duration_s": wall,
        "output_tok_s": sum(out_tokens) / wall,
        "request_s": a.requests / wall,
        "ttft_p50_ms": 1000 * percentile([r["ttft"] for r in recs], 0.5),
        "ttft_p99_ms": 1000 * percentile([r["ttft"] for r in recs], 0.99),
        "itl_p50_ms": 1000 * percentile(itl, 0.5),
        "itl_p99_ms": 1000 * percentile(itl, 0.99),
        "tpot_p50_ms": 1000 * percentile(tpot, 0.5),
        "tpot_p99_ms": 1000 * percentile(tpot, 0.99),
        "e2e_p50_ms": 1000 * percentile([r["e2e"] for r in recs], 0.5),
        "itl_mean_ms": 1000 * statistics.fmean(itl) if itl else float("nan"),
    }
    return res


def cmd_run(a):
    res = asyncio.run(run_leg(a))
    line = json.dumps(res)
    print(line)
    if a.append:
        with open(a.append, "a") as f:
            f.write(line + "\n")
    print(f"genload: {a.label} c={a.concurrency}: {res['output_tok_s']:.1f} tok/s, TTFT p50 "
          f"{res['ttft_p50_ms']:.0f} ms p99 {res['ttft_p99_ms']:.0f} ms, ITL p50 "
          f"{res['itl_p50_ms']:.1f} ms p99 {res['itl_p99_ms']:.1f} ms, out tokens "
          f"{res['output_tokens_min']}..{res['output_tokens_max']} ({res['tokens_counted_by']})",
          file=sys.stderr)


async def first_token(a):
    import httpx
    url = a.url.rstrip("/") + a.path
    body = make_body(a, "The capital of France is")
    body["max_tokens"] = 4
    deadline = time.time() + a.timeout
    async with httpx.AsyncClient(timeout=httpx.Timeout(a.timeout)) as client:
        while True:
            rec = {}
            try:
                await one_request(client, url, headers_of(a), body, rec)
                # rec["ttft"] is measured from this attempt's send; convert to wall clock.
                return time.time() - (rec["end"] - rec["start"] - rec["ttft"]) - a.since
            except (RuntimeError, httpx.HTTPError) as e:
                if time.time() > deadline:
                    raise
                print(f"genload: first-token retry after {e}", file=sys.stderr)
                await asyncio.sleep(0.05)


def cmd_first(a):
    print(f"{asyncio.run(first_token(a)):.3f}")


def cmd_table(a):
    rows = [json.loads(line) for line in open(a.results) if line.strip()]
    servers = []
    for r in rows:
        if r["server"] not in servers:
            servers.append(r["server"])
    by = {(r["server"], r["concurrency"]): r for r in rows}
    concs = sorted({r["concurrency"] for r in rows})
    print("| server | conc | output tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms "
          "| TPOT p50 ms | out tokens/req | requests |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for c in concs:
        for s in servers:
            r = by.get((s, c))
            if not r:
                continue
            toks = f"{r['output_tokens_min']}..{r['output_tokens_max']} ({r['tokens_counted_by']})"
            print(f"| {s} | {c} | {r['output_tok_s']:.1f} | {r['ttft_p50_ms']:.0f} | "
                  f"{r['ttft_p99_ms']:.0f} | {r['itl_p50_ms']:.1f} | {r['itl_p99_ms']:.1f} | "
                  f"{r['tpot_p50_ms']:.1f} | {toks} | {r['requests']} |")
    if a.base and a.base in servers:
        others = [s for s in servers if s != a.base]
        print()
        print(f"Ratios {a.base} / peer (output tok/s: higher is better for {a.base}; "
              "TTFT and ITL: lower is better for it):")
        print()
        print("| vs | conc | output tok/s | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for c in concs:
            p = by.get((a.base, c))
            for s in others:
                q = by.get((s, c))
                if not p or not q:
                    continue
                print(f"| {s} | {c} | {p['output_tok_s'] / q['output_tok_s']:.2f}x | "
                      f"{p['ttft_p50_ms'] / q['ttft_p50_ms']:.2f}x | "
                      f"{p['ttft_p99_ms'] / q['ttft_p99_ms']:.2f}x | "
                      f"{p['itl_p50_ms'] / q['itl_p50_ms']:.2f}x | "
                      f"{p['itl_p99_ms'] / q['itl_p99_ms']:.2f}x |")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prompts")
    p.add_argument("--model", required=True)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--out", required=True)
    for name in ("run", "first"):
        p = sub.add_parser(name)
        p.add_argument("--url", required=True)
        p.add_argument("--path", default="/v1/completions")
        p.add_argument("--token")
        p.add_argument("--label", default="server")
        p.add_argument("--model-name", help="the request's `model` field")
        p.add_argument("--max-tokens", type=int, default=128)
        p.add_argument("--include-usage", action="store_true",
                       help="send stream_options.include_usage (count tokens from usage)")
        p.add_argument("--extra", default="{}", help="JSON merged into each request body")
        if name == "run":
            p.add_argument("--prompts", required=True)
            p.add_argument("--concurrency", type=int, default=1)
            p.add_argument("--requests", type=int, default=8)
            p.add_argument("--offset", type=int, default=0,
                           help="the first prompt this run sends (levels use disjoint prompts)")
            p.add_argument("--warmup", type=int, default=1)
            p.add_argument("--append", help="also append the JSON line to this file")
        else:
            p.add_argument("--since", type=float, required=True, help="unix time of the POST")
            p.add_argument("--timeout", type=float, default=300)
    p = sub.add_parser("table")
    p.add_argument("--results", required=True)
    p.add_argument("--base", help="the server the ratios are for (e.g. paddock)")
    a = ap.parse_args()
    {"prompts": cmd_prompts, "run": cmd_run, "first": cmd_first, "table": cmd_table}[a.cmd](a)


if __name__ == "__main__":
    main()
