"""The one command gives the fast engine: a second hub, started with an empty data
directory and no PADDOCK_OPENVINO_LIB / ORT_DYLIB_PATH, fetches the pinned OpenVINO
wheel on first use (here from a local mirror over the very wheel
scripts/worker/fetch-openvino.sh downloaded from PyPI, so CI fetches it from PyPI once),
checks its sha256, and serves the MiniLM endpoint on OpenVINO, matching
sentence-transformers."""

import http.server
import json
import os
import pathlib
import re
import signal
import subprocess
import threading
import time

import httpx2 as httpx
import pytest
from huggingface_hub import HfApi
from test_endpoints import MINILM, cosine, reference

ROOT = pathlib.Path(__file__).resolve().parents[2]
HUB_BIN = os.environ.get("PADDOCK_HUB_BIN")
PINS = dict(
    line.split("=", 1)
    for line in (ROOT / "hub-worker/runtime-pins.env").read_text().splitlines()
    if "=" in line and not line.startswith("#")
)
WHEELS = pathlib.Path(os.environ.get("PADDOCK_FIXTURES_DIR", ROOT / "target/fixtures")) / "wheels"
WHEEL = WHEELS / PINS["OPENVINO_WHEEL"]

pytestmark = pytest.mark.skipif(
    not (MINILM and HUB_BIN and WHEEL.is_file()),
    reason=f"needs PADDOCK_MINILM_DIR, PADDOCK_HUB_BIN and {WHEEL} (scripts/worker/fetch-openvino.sh keeps it)",
)


class Mirror(http.server.ThreadingHTTPServer):
    """A static server over the wheels directory that counts requests."""

    def __init__(self):
        self.requests = []
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(WHEELS), **kw)

            def do_GET(self):
                mirror.requests.append(self.path)
                super().do_GET()

            def log_message(self, *a):
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def test_fresh_hub_serves_minilm_on_fetched_openvino(tmp_path):
    mirror = Mirror()
    threading.Thread(target=mirror.serve_forever, daemon=True).start()
    data = tmp_path / "hub"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PADDOCK_OPENVINO_LIB", "ORT_DYLIB_PATH", "HUB_WORKER_ENGINE", "HUB_WORKER_FETCH_RUNTIME")}
    env["PADDOCK_RUNTIME_MIRROR"] = f"http://127.0.0.1:{mirror.server_address[1]}"
    log_path = tmp_path / "hub.log"
    log = open(log_path, "wb")
    hub = subprocess.Popen([HUB_BIN, "--data-dir", str(data), "--bind", "127.0.0.1:0"],
                           env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = None
        for _ in range(240):
            text = log_path.read_text(errors="replace")
            if "paddock: listening on" in text:
                url = text.split("listening on ", 1)[1].split()[0]
                break
            assert hub.poll() is None, text
            time.sleep(0.5)
        assert url, log_path.read_text(errors="replace")

        def admin(*args):
            out = subprocess.run([HUB_BIN, "--data-dir", str(data), *args], env=env,
                                 check=True, capture_output=True, text=True).stdout
            return out.strip().splitlines()[-1]

        admin("admin", "create-user", "carol")
        tok = admin("admin", "create-token", "carol", "--scopes", "read,write", "--name", "fetch")
        api = HfApi(endpoint=url, token=tok)
        repo = api.create_repo("carol/minilm", exist_ok=True).repo_id
        api.upload_folder(repo_id=repo, folder_path=MINILM)
        h = {"authorization": f"Bearer {tok}"}
        r = httpx.post(f"{url}/api/v1/endpoints/carol", headers=h, timeout=30, json={
            "name": "minilm", "repository": repo, "min_replicas": 1, "max_replicas": 1})
        assert r.status_code == 201, r.text
        deadline, ep = time.time() + 300, None
        while time.time() < deadline:
            ep = httpx.get(f"{url}/api/v1/endpoints/carol/minilm", headers=h, timeout=30).json()
            if ep["status"] in ("running", "failed"):
                break
            time.sleep(0.5)
        assert ep and ep["status"] == "running", (ep, log_path.read_text(errors="replace")[-4000:])

        # A fast start answers on candle while OpenVINO compiles, then moves to it.
        deadline = time.time() + 120
        while True:
            info = httpx.get(f"{url}/endpoints/carol/minilm/info", headers=h, timeout=30).json()
            if info.get("engine") == "openvino" or time.time() > deadline:
                break
            time.sleep(0.2)
        assert info["engine"] == "openvino", info
        ref = reference()
        r = httpx.post(f"{url}/endpoints/carol/minilm/v1/embeddings", headers=h, timeout=60,
                       json={"model": "minilm", "input": [s["text"] for s in ref]})
        assert r.status_code == 200, r.text
        for s, d in zip(ref, r.json()["data"]):
            assert cosine(s["embedding"], d["embedding"]) >= 0.9999, s["text"]

        # One download, from the mirror, logged with its size; the record in the data dir.
        assert mirror.requests == [f"/{PINS['OPENVINO_WHEEL']}"], mirror.requests
        text = re.sub(r"\x1b\[[0-9;]*m", "", log_path.read_text(errors="replace"))
        line = next(l for l in text.splitlines() if "fetched the engine runtime" in l)
        assert env["PADDOCK_RUNTIME_MIRROR"] in line and f"bytes={PINS['OPENVINO_WHEEL_BYTES']}" in line, line
        print(line)
        record = json.loads((data / "worker-cache/runtimes" / f"openvino-{PINS['OPENVINO_VERSION']}" / "FETCHED.json").read_text())
        assert record["sha256"] == PINS["OPENVINO_WHEEL_SHA256"]
    finally:
        hub.send_signal(signal.SIGTERM)
        try:
            hub.wait(timeout=60)
        except subprocess.TimeoutExpired:
            hub.kill()
        mirror.shutdown()
