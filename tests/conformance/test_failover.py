"""Two more workers join the hub as separate processes. `kill -9` the one
serving an endpoint while requests flow: the endpoint runs again on the
other within 15 s and no request hangs. A worker with a small admission
limit answers overload with 429, not an unbounded queue."""

import concurrent.futures
import os
import signal
import subprocess
import threading
import time

import httpx2 as httpx
import pytest
from conftest import ENDPOINT
from huggingface_hub import HfApi
from test_endpoints import MINILM, api_v1, wait_status

WORKER_BIN = os.environ.get("PADDOCK_WORKER_BIN")
pytestmark = pytest.mark.skipif(not (MINILM and WORKER_BIN), reason="needs PADDOCK_MINILM_DIR and PADDOCK_WORKER_BIN")


def start_worker(tmp_path, name, **env):
    log = open(tmp_path / f"{name}.log", "wb")
    e = dict(os.environ, HUB_WORKER_HUB_URL=ENDPOINT, HUB_WORKER_TOKEN=os.environ["PADDOCK_TOKEN_WORKER"],
             HUB_WORKER_NAME=name, HUB_WORKER_CACHE_DIR=str(tmp_path / f"{name}-cache"), HUB_WORKER_THREADS="1", **env)
    return subprocess.Popen([WORKER_BIN], env=e, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def repo(alice):
    api = HfApi(endpoint=ENDPOINT, token=alice)
    r = api.create_repo("alice/minilm-failover", exist_ok=True).repo_id
    api.upload_folder(repo_id=r, folder_path=MINILM)
    return r


# When this module's last worker processes stopped: the hub keeps a worker
# for `scheduler::LOST_AFTER_S` (6 s) after its last heartbeat, and could
# place a new endpoint on one that has just gone in that time.
STOPPED = [0.0]
LOST_AFTER_S = 6


def wait_for_gone_workers():
    time.sleep(max(0.0, STOPPED[0] + LOST_AFTER_S + 1 - time.time()))


@pytest.fixture(scope="module", autouse=True)
def occupied(alice, repo):
    """One replica on the suite's in-process worker for this whole module. The
    scheduler places a replica on the worker with the fewest, then the most free
    memory: with this one, the workers each test starts (none yet) always come
    first, whatever the modules before this one left running."""
    r = api_v1("POST", "/endpoints/alice", alice, json={"name": "failover-pin", "repository": repo, "access": "public"})
    assert r.status_code == 201, r.text
    wait_status("alice", "failover-pin", alice, {"running"}, timeout=180)
    yield
    api_v1("DELETE", "/endpoints/alice/failover-pin", alice)


def wait_registered(tmp_path, names, timeout=60):
    """Waits until each worker's log says it registered with the hub."""
    deadline = time.time() + timeout
    pending = set(names)
    while pending and time.time() < deadline:
        pending = {n for n in pending if b"registered with the hub" not in (tmp_path / f"{n}.log").read_bytes()}
        time.sleep(0.1)
    assert not pending, f"workers did not register: {pending}"


def test_kill_worker_while_serving(alice, repo, tmp_path):
    procs = {n: start_worker(tmp_path, n) for n in ("failover-a", "failover-b")}
    try:
        # Both must be known to the scheduler before the endpoint is placed.
        wait_registered(tmp_path, procs)
        r = api_v1("POST", "/endpoints/alice", alice, json={"name": "ha", "repository": repo, "access": "public"})
        assert r.status_code == 201, r.text
        ep = wait_status("alice", "ha", alice, {"running"}, timeout=180)
        serving = ep["replicas"]["items"][0]["worker"]
        assert serving in procs, f"expected a fresh worker to take the endpoint, got {serving}"

        stop = threading.Event()
        outcomes = []

        def traffic():
            while not stop.is_set():
                t0 = time.time()
                try:
                    resp = httpx.post(f"{ENDPOINT}/endpoints/alice/ha/v1/embeddings", json={"input": "failover"}, timeout=70)
                    outcomes.append((resp.status_code, time.time() - t0))
                except Exception as e:  # a hang would show up as a timeout here
                    outcomes.append((repr(e), time.time() - t0))
                time.sleep(0.05)

        threads = [threading.Thread(target=traffic) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1)
        killed_at = time.time()
        procs[serving].send_signal(signal.SIGKILL)
        procs[serving].wait()
        # Running again, on the other worker, within 15 s.
        deadline = killed_at + 15
        moved = None
        while time.time() < deadline:
            cur = api_v1("GET", "/endpoints/alice/ha", alice).json()
            items = [i for i in cur["replicas"]["items"] if i["status"] == "running" and i["worker"] != serving]
            if cur["status"] == "running" and items:
                moved = time.time() - killed_at
                break
            time.sleep(0.25)
        assert moved is not None, f"endpoint not running elsewhere 15 s after kill -9: {cur}"
        resp = httpx.post(f"{ENDPOINT}/endpoints/alice/ha/v1/embeddings", json={"input": "after"}, timeout=30)
        assert resp.status_code == 200
        stop.set()
        for t in threads:
            t.join()
        print(f"recovered in {moved:.1f} s; {len(outcomes)} requests during the fault")
        assert outcomes
        assert all(isinstance(code, int) for code, _ in outcomes), [o for o in outcomes if not isinstance(o[0], int)]
        assert max(d for _, d in outcomes) < 65, "a request hung"
        assert sum(1 for c, _ in outcomes if c == 200) > len(outcomes) // 2
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=20)
        STOPPED[0] = time.time()
        api_v1("DELETE", "/endpoints/alice/ha", alice)


def test_overload_answers_429(alice, repo, tmp_path):
    proc = start_worker(tmp_path, "tiny-admission", HUB_WORKER_MAX_CONCURRENT="2")
    try:
        wait_registered(tmp_path, ["tiny-admission"])
        wait_for_gone_workers()
        r = api_v1("POST", "/endpoints/alice", alice, json={"name": "busy", "repository": repo, "access": "public"})
        assert r.status_code == 201, r.text
        ep = wait_status("alice", "busy", alice, {"running"}, timeout=180)
        assert ep["replicas"]["items"][0]["worker"] == "tiny-admission"
        sentences = ["a fairly long sentence about overload and admission control " * 8] * 2

        def call(_):
            return httpx.post(f"{ENDPOINT}/endpoints/alice/busy/v1/embeddings", json={"input": sentences}, timeout=60)

        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            results = list(pool.map(call, range(64)))
        codes = [r.status_code for r in results]
        assert 429 in codes and 200 in codes, codes
        limited = next(r for r in results if r.status_code == 429)
        assert limited.headers.get("retry-after")
        assert set(codes) <= {200, 429}, codes
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        STOPPED[0] = time.time()
        api_v1("DELETE", "/endpoints/alice/busy", alice)
