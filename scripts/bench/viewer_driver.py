"""Helper of scripts/bench/viewer.sh (issue 16).

  gen PATH MB            writes a deterministic CSV of about MB MiB (id, name, score, flag, text)
  upload URL TOKEN REPO PATH   creates the dataset REPO and commits PATH as train.csv (LFS)
  wait URL TOKEN REPO PID      polls is-valid until the viewer has converted; samples the
                               hub's RSS (VmRSS of PID) every 50 ms meanwhile; prints JSON
  pyarrow PATH OUT             pyarrow.csv.open_csv (streamed) -> pq.ParquetWriter (snappy);
                               prints JSON with seconds and peak RSS
"""

import json
import os
import resource
import sys
import time
import urllib.request


def gen(path, mb):
    target = int(mb) * 1024 * 1024
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    with open(path, "w", buffering=1 << 20) as f:
        f.write("id,name,score,flag,text\n")
        i = 0
        written = 0
        while written < target:
            lines = []
            for _ in range(10_000):
                w = words[i % 10]
                line = f"{i},user-{i % 99991},{(i % 1000) / 7:.4f},{'true' if i % 3 else 'false'},{w} {words[(i * 7) % 10]} row {i} of the benchmark {w}\n"
                lines.append(line)
                i += 1
            chunk = "".join(lines)
            f.write(chunk)
            written += len(chunk)
    print(json.dumps({"rows": i, "bytes": os.path.getsize(path)}))


def upload(url, token, repo, path):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=url, token=token)
    api.create_repo(repo, repo_type="dataset", exist_ok=True)
    t = time.time()
    api.upload_file(path_or_fileobj=path, path_in_repo="train.csv", repo_id=repo, repo_type="dataset")
    print(json.dumps({"upload_s": round(time.time() - t, 2)}))


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def wait(url, token, repo, pid):
    t0 = time.time()
    base = rss_kib(pid)
    peak = base
    last_poll = 0.0
    while True:
        peak = max(peak, rss_kib(pid))
        now = time.time()
        if now - last_poll >= 0.2:
            last_poll = now
            req = urllib.request.Request(f"{url}/api/datasets-server/is-valid?dataset={repo}",
                                         headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(req) as r:
                v = json.loads(r.read())
            if v["viewer"]:
                break
            if now - t0 > 7200:
                raise SystemExit("not converted after 2 h")
        time.sleep(0.05)
    elapsed = time.time() - t0
    req = urllib.request.Request(f"{url}/api/datasets-server/size?dataset={repo}",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req) as r:
        size = json.loads(r.read())["size"]["dataset"]
    print(json.dumps({"seconds": round(elapsed, 2), "rss_before_mib": round(base / 1024, 1),
                      "rss_peak_mib": round(peak / 1024, 1), "rows": size["num_rows"],
                      "parquet_bytes": size["num_bytes_parquet_files"]}))


def pyarrow_convert(path, out):
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    t = time.time()
    reader = pcsv.open_csv(path)
    writer = None
    rows = 0
    for batch in reader:
        if writer is None:
            writer = pq.ParquetWriter(out, batch.schema, compression="snappy")
        writer.write_batch(batch)
        rows += batch.num_rows
    writer.close()
    elapsed = time.time() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": round(elapsed, 2), "rss_peak_mib": round(peak / 1024, 1), "rows": rows,
                      "parquet_bytes": os.path.getsize(out)}))


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"gen": gen, "upload": upload, "wait": wait, "pyarrow": pyarrow_convert}[cmd](*args)
