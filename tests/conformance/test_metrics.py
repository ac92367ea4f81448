"""`/metrics` on the hub and on its worker, read with a real Prometheus parser
(`prometheus_client.parser.text_string_to_metric_families`), before and after
real client calls (huggingface_hub commits and an LFS upload, a 404, openai
calls through the gateway); the request id in the hub's log; and a second
hub with `--metrics-bind` (metrics without credentials on their own
listener) and `--otlp-endpoint` pointed at a receiver here that parses every
export with `opentelemetry-proto`."""

import http.server
import os
import pathlib
import re
import subprocess
import threading
import time
import uuid

import httpx2 as httpx
import pytest
from conftest import ENDPOINT, token, write_random
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from prometheus_client.parser import text_string_to_metric_families

HUB_BIN = os.environ.get("PADDOCK_HUB_BIN")
HUB_LOG = pathlib.Path(os.environ["PADDOCK_HUB_LOG"]) if os.environ.get("PADDOCK_HUB_LOG") else None
COMMIT_ROUTE = "/api/{kind}/{ns}/{name}/commit/{rev}"
RESOLVE_ROUTE = "/{ns}/{name}/resolve/{rev}/{path}"


def parse(text):
    """Every sample as {(name, frozenset(labels)): value}, and the families by
    name with their type, as the Prometheus parser reads them."""
    samples, families = {}, {}
    for fam in text_string_to_metric_families(text):
        families[fam.name] = fam.type
        for s in fam.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, families


def scrape(url, tok=None):
    headers = {"authorization": f"Bearer {tok}"} if tok else {}
    r = httpx.get(f"{url}/metrics", headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(r.text)


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_hub_metrics_move_with_real_client_calls(api, tmp_path):
    root = token("root")
    assert httpx.get(f"{ENDPOINT}/metrics", timeout=30).status_code == 401
    assert httpx.get(f"{ENDPOINT}/metrics", headers={"authorization": f"Bearer {token('alice')}"},
                     timeout=30).status_code == 403
    before, families = scrape(ENDPOINT, root)
    # The parser strips `_total` from counter family names.
    for name, kind in [
        ("paddock_http_requests", "counter"),
        ("paddock_http_request_duration_seconds", "histogram"),
        ("paddock_http_requests_in_flight", "gauge"),
        ("paddock_commits", "counter"),
        ("paddock_lfs_transfers", "counter"),
        ("paddock_xet_operations", "counter"),
        ("paddock_endpoint_requests", "counter"),
        ("paddock_endpoint_queued_requests", "gauge"),
        ("paddock_endpoint_requests_in_flight", "gauge"),
        ("paddock_endpoint_tokens", "counter"),
        ("paddock_scheduler_leader", "gauge"),
        ("paddock_scheduler_decisions", "counter"),
        ("paddock_workers", "gauge"),
        ("paddock_endpoint_replicas", "gauge"),
    ]:
        assert families.get(name) == kind, (name, families.get(name))
    # This hub leads its scheduler, which sees its in-process worker.
    assert value(before, "paddock_scheduler_leader") == 1
    assert value(before, "paddock_workers", state="ready") >= 1

    repo = f"alice/metrics-{uuid.uuid4().hex[:8]}"
    api.create_repo(repo)
    api.upload_file(path_or_fileobj=b"# metrics\n", path_in_repo="README.md", repo_id=repo)
    big = tmp_path / "weights.bin"
    size = 12_000_000
    write_random(big, size, seed=14)
    api.upload_file(path_or_fileobj=str(big), path_in_repo="weights.bin", repo_id=repo)
    path = hf_hub_download(repo, "weights.bin", cache_dir=tmp_path / "cache")
    assert os.path.getsize(path) == size
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo, "missing.txt", cache_dir=tmp_path / "cache")

    after, _ = scrape(ENDPOINT, root)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("paddock_commits_total", result="created") >= 2
    assert moved("paddock_http_requests_total", route=COMMIT_ROUTE, method="POST", status="200") >= 2
    assert moved("paddock_http_request_duration_seconds_count", route=COMMIT_ROUTE, method="POST") >= 2
    # Histogram buckets are cumulative and end at +Inf = count.
    buckets = sorted(
        (float(dict(labels)["le"]), v) for (n, labels), v in after.items()
        if n == "paddock_http_request_duration_seconds_bucket"
        and dict(labels).get("route") == COMMIT_ROUTE and dict(labels).get("method") == "POST"
    )
    assert buckets[-1][0] == float("inf")
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert buckets[-1][1] == value(after, "paddock_http_request_duration_seconds_count", route=COMMIT_ROUTE, method="POST")
    if os.environ.get("HF_HUB_DISABLE_XET") == "1":
        assert moved("paddock_lfs_transfers_total", operation="upload") + moved(
            "paddock_lfs_transfers_total", operation="multipart_upload") == 1
        assert moved("paddock_lfs_transfer_bytes_total", operation="upload") + moved(
            "paddock_lfs_transfer_bytes_total", operation="multipart_upload") == size
    else:
        assert moved("paddock_xet_operations_total", operation="shard_upload") >= 1
    # The download's bytes, and the missing file's 404, under the resolve pattern.
    assert moved("paddock_http_sent_bytes_total", route=RESOLVE_ROUTE) >= size
    assert moved("paddock_http_requests_total", route=RESOLVE_ROUTE, method="HEAD", status="404") + moved(
        "paddock_http_requests_total", route=RESOLVE_ROUTE, method="GET", status="404") >= 1
    # Labels are patterns: no repo name ever appears in one.
    assert not any(repo.split("/")[1] in v for (_, labels) in after for _, v in labels)


def hub_log():
    """The hub's log without its color codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", HUB_LOG.read_text(errors="replace"))


def worker_url():
    """The in-process worker's address, from its "worker listening" log line."""
    text = hub_log()
    m = re.search(r"worker listening addr=(\S+)", text)
    assert m, "no worker listening line in the hub log"
    return f"http://{m.group(1)}"


@pytest.mark.skipif(not os.environ.get("PADDOCK_MINILM_DIR") or HUB_LOG is None,
                    reason="needs PADDOCK_MINILM_DIR (scripts/test.sh sets it) and PADDOCK_HUB_LOG")
def test_gateway_and_worker_metrics_after_openai_calls(alice):
    from test_endpoints import api_v1, wait_status

    root = token("root")
    minilm = os.environ["PADDOCK_MINILM_DIR"]
    model = HfApi(endpoint=ENDPOINT, token=alice).create_repo("alice/minilm-metrics", exist_ok=True).repo_id
    HfApi(endpoint=ENDPOINT, token=alice).upload_folder(repo_id=model, folder_path=minilm)
    r = api_v1("POST", "/endpoints/alice", alice, json={
        "name": "metrics", "repository": model, "min_replicas": 1, "max_replicas": 1})
    assert r.status_code == 201, r.text
    try:
        ep = wait_status("alice", "metrics", alice, {"running"})
        assert ep["replicas"]["items"][0]["worker"] == "embedded", ep
        check_gateway_and_worker(alice, root, model)
    finally:
        api_v1("DELETE", "/endpoints/alice/metrics", alice)


def check_gateway_and_worker(alice, root, model):
    from openai import OpenAI

    hub_before, _ = scrape(ENDPOINT, root)
    worker_before, _ = scrape(worker_url())

    rid = f"conformance-{uuid.uuid4().hex}"
    client = OpenAI(base_url=f"{ENDPOINT}/endpoints/alice/metrics/v1", api_key=alice,
                    default_headers={"X-Request-Id": rid})
    for _ in range(3):
        resp = client.embeddings.create(model="metrics", input=["metrics are counted", "twice"])
        assert resp.usage.prompt_tokens > 0
    prompt = resp.usage.prompt_tokens

    hub_after, _ = scrape(ENDPOINT, root)
    worker_after, worker_families = scrape(worker_url())

    def moved(after, before, name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    ep_label = "alice/metrics"
    assert moved(hub_after, hub_before, "paddock_endpoint_requests_total", endpoint=ep_label, status="200") == 3
    assert moved(hub_after, hub_before, "paddock_endpoint_tokens_total", endpoint=ep_label, kind="prompt") == 3 * prompt
    assert value(hub_after, "paddock_endpoint_requests_in_flight", endpoint=ep_label) == 0
    assert value(hub_after, "paddock_endpoint_replicas", state="running") >= 1

    for name, kind in [("paddock_worker_http_requests", "counter"), ("paddock_worker_tokens", "counter"),
                       ("paddock_worker_models", "gauge"), ("paddock_worker_requests_in_flight", "gauge"),
                       ("paddock_worker_queue_depth", "gauge"),
                       ("paddock_worker_http_request_duration_seconds", "histogram")]:
        assert worker_families.get(name) == kind, (name, worker_families.get(name))
    assert moved(worker_after, worker_before, "paddock_worker_http_requests_total",
                 route="/models/{key}/v1/embeddings", method="POST", status="200") == 3
    assert moved(worker_after, worker_before, "paddock_worker_tokens_total", model=model, kind="prompt") == 3 * prompt
    assert value(worker_after, "paddock_worker_models", state="running") >= 1
    assert value(worker_after, "paddock_worker_requests_in_flight", model=model) == 0

    # The caller's request id is on the hub's log line of each call.
    deadline = time.time() + 5
    while time.time() < deadline and hub_log().count(rid) < 3:
        time.sleep(0.1)
    lines = [line for line in hub_log().splitlines() if rid in line]
    assert len(lines) >= 3, lines
    assert all("/endpoints/alice/metrics/v1/embeddings" in line for line in lines), lines


class Receiver(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP receiver: parses each POST /v1/traces as an
    ExportTraceServiceRequest (protobuf) and keeps the spans."""

    def __init__(self):
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest, ExportTraceServiceResponse)

        self.spans, self.errors = [], []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    assert self.path == "/v1/traces", self.path
                    assert self.headers.get("content-type") == "application/x-protobuf", self.headers
                    req = ExportTraceServiceRequest()
                    req.ParseFromString(body)
                    for rs in req.resource_spans:
                        service = {a.key: a.value.string_value for a in rs.resource.attributes}.get("service.name")
                        for ss in rs.scope_spans:
                            for span in ss.spans:
                                receiver.spans.append((service, span))
                except Exception as e:  # noqa: BLE001 - reported by the test
                    receiver.errors.append(repr(e))
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a):
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def attrs(span):
    out = {}
    for a in span.attributes:
        v = a.value
        out[a.key] = v.string_value if v.HasField("string_value") else v.int_value
    return out


@pytest.mark.skipif(not HUB_BIN, reason="needs PADDOCK_HUB_BIN (run.sh exports it)")
def test_metrics_listener_and_otlp_trace_export(tmp_path):
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    log_path = tmp_path / "hub.log"
    env = dict(os.environ, HUB_PG_UNSAFE_FAST="true", HUB_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.server_address[1]}")
    hub = subprocess.Popen(
        [HUB_BIN, "--data-dir", str(tmp_path / "hub"), "--bind", "127.0.0.1:0", "--no-worker",
         "--metrics-bind", "127.0.0.1:0", "serve"],
        env=env, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
    try:
        url = metrics_url = None
        for _ in range(240):
            text = log_path.read_text(errors="replace")
            m = re.search(r"paddock: metrics on (http://\S+)/metrics", text)
            if m and "paddock: listening on" in text:
                metrics_url = m.group(1)
                url = text.split("paddock: listening on ", 1)[1].split()[0]
                break
            assert hub.poll() is None, text
            time.sleep(0.25)
        assert url and metrics_url, log_path.read_text(errors="replace")
        rid = f"otlp-{uuid.uuid4().hex}"
        assert httpx.get(f"{url}/healthz", headers={"X-Request-Id": rid}, timeout=30).status_code == 200
        assert httpx.get(f"{url}/api/models/nobody/nothing", timeout=30).status_code == 404
        # The API listener still wants an admin; the metrics listener wants nothing
        # and serves nothing else.
        assert httpx.get(f"{url}/metrics", timeout=30).status_code == 401
        assert httpx.get(f"{metrics_url}/healthz", timeout=30).status_code == 404
        samples, _ = scrape(metrics_url)
        assert value(samples, "paddock_http_requests_total", route="/healthz", method="GET", status="200") == 1
        assert value(samples, "paddock_http_requests_total", route="/api/{kind}/{ns}/{name}", method="GET",
                     status="404") == 1
        assert [v for (n, lbl), v in samples.items() if n == "paddock_build_info" and dict(lbl)["service"] == "hub"] == [1]

        # Spans leave in batches (every 5 s); stopping the hub flushes the rest.
        deadline = time.time() + 8
        while time.time() < deadline and not any(attrs(s).get("request_id") == rid for _, s in receiver.spans):
            time.sleep(0.2)
    finally:
        hub.terminate()
        hub.wait(timeout=60)
    assert not receiver.errors, receiver.errors
    mine = [(svc, s) for svc, s in receiver.spans if attrs(s).get("request_id") == rid]
    assert mine, f"no span with request_id {rid} among {len(receiver.spans)} spans"
    svc, span = mine[0]
    a = attrs(span)
    assert svc == "paddock-hub"
    assert span.name == "GET /healthz"
    assert a["http.route"] == "/healthz" and a["http.response.status_code"] == 200
    assert span.kind == span.SPAN_KIND_SERVER
    assert len(span.trace_id) == 16 and span.end_time_unix_nano >= span.start_time_unix_nano
    names = {s.name for _, s in receiver.spans}
    assert "GET /api/{kind}/{ns}/{name}" in names, names
