"""Webhooks with the real huggingface_hub client: create, list, get, update,
disable, enable and delete through HfApi, and a delivery for an upload_file
received by a Python http.server on loopback (run.sh starts the hub with
--webhook-allow-private)."""

import hashlib
import hmac
import http.server
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request

import pytest
from huggingface_hub import HfApi, WebhookWatchedItem
from huggingface_hub.errors import HfHubHTTPError

from conftest import ENDPOINT


class Receiver:
    def __init__(self):
        self.hits = []
        hits = self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                hits.append((self.headers, body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, pred, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = [h for h in self.hits if pred(json.loads(h[1]))]
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"no matching delivery; got {[json.loads(b) for _, b in self.hits]}")

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_webhook_lifecycle_and_delivery(api: HfApi, repo_name, receiver, bob):
    api.create_repo(repo_name)
    hook = api.create_webhook(
        url=receiver.url,
        watched=[WebhookWatchedItem(type="model", name=repo_name)],
        domains=["repo"],
        secret="conformance-secret",
    )
    assert hook.url == receiver.url
    assert hook.watched == [WebhookWatchedItem(type="model", name=repo_name)]
    assert hook.domains == ["repo"]
    assert hook.disabled is False
    assert hook.secret is None  # write-only
    assert any(w.id == hook.id for w in api.list_webhooks())
    assert api.get_webhook(hook.id).url == receiver.url

    # A delivery for an upload.
    info = api.upload_file(path_or_fileobj=b"hello hooks", path_in_repo="a.txt", repo_id=repo_name)
    headers, body = receiver.wait(lambda p: p["event"]["scope"] == "repo.content")[0]
    payload = json.loads(body)
    assert payload["event"]["action"] == "update"
    assert payload["repo"]["name"] == repo_name
    assert payload["repo"]["type"] == "model"
    assert payload["repo"]["headSha"] == info.oid
    assert payload["repo"]["url"]["web"] == f"{ENDPOINT}/{repo_name}"
    assert payload["updatedRefs"][0]["ref"] == "refs/heads/main"
    assert payload["updatedRefs"][0]["newSha"] == info.oid
    assert payload["webhook"] == {"id": hook.id, "version": 3}
    assert headers["X-Webhook-Secret"] == "conformance-secret"
    expected = "sha256=" + hmac.new(b"conformance-secret", body, hashlib.sha256).hexdigest()
    assert headers["X-Webhook-Signature"] == expected

    # The delivery log (management API) shows it, delivered.
    req = urllib.request.Request(
        f"{ENDPOINT}/api/v1/webhooks/{hook.id}/deliveries", headers=api._build_hf_headers()
    )
    with urllib.request.urlopen(req) as r:
        log = json.loads(r.read())
    assert log["items"][0]["event_id"] == payload["event"]["id"]

    # Update, disable, enable.
    updated = api.update_webhook(hook.id, url=receiver.url + "?v=2", domains=["repo", "discussion"])
    assert updated.url == receiver.url + "?v=2"
    assert updated.domains == ["repo", "discussion"]
    assert updated.watched == [WebhookWatchedItem(type="model", name=repo_name)]
    assert api.disable_webhook(hook.id).disabled is True
    # Disabled: a change sends nothing.
    before = len(receiver.hits)
    api.update_repo_settings(repo_name, private=True)
    time.sleep(2)
    assert len(receiver.hits) == before
    assert api.enable_webhook(hook.id).disabled is False
    api.update_repo_settings(repo_name, private=False)
    cfg = receiver.wait(lambda p: p["event"]["scope"] == "repo.config")
    assert json.loads(cfg[0][1])["updatedConfig"] == {"private": False}

    # Another user sees nothing of it.
    other = HfApi(endpoint=ENDPOINT, token=bob)
    assert all(w.id != hook.id for w in other.list_webhooks())
    with pytest.raises(HfHubHTTPError) as e:
        other.get_webhook(hook.id)
    assert e.value.response.status_code == 404

    api.delete_webhook(hook.id)
    with pytest.raises(HfHubHTTPError) as e:
        api.get_webhook(hook.id)
    assert e.value.response.status_code == 404


def test_webhook_validation(api: HfApi, repo_name, bob):
    api.create_repo(repo_name, private=True)
    with pytest.raises(HfHubHTTPError) as e:
        api.create_webhook(url="ftp://example.com/", watched=[{"type": "user", "name": "alice"}])
    assert e.value.response.status_code == 400
    # Bob cannot watch alice's private repo.
    other = HfApi(endpoint=ENDPOINT, token=bob)
    with pytest.raises(HfHubHTTPError) as e:
        other.create_webhook(url="http://93.184.216.34/", watched=[{"type": "model", "name": repo_name}])
    assert e.value.response.status_code == 400
    assert "does not exist or you cannot read it" in e.value.response.text


def _start_hub(hub_bin, data, log):
    proc = subprocess.Popen(
        [hub_bin, "--data-dir", str(data), "--bind", "127.0.0.1:0", "--no-worker",
         "--webhook-allow-private", "--webhook-timeout-secs", "2", "--webhook-lease-secs", "4", "serve"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        text = open(log.name, "rb").read().decode(errors="replace")
        m = re.search(r"listening on (http://[0-9.:]+)", text)
        if m:
            url = m.group(1)
            for _ in range(300):
                try:
                    with urllib.request.urlopen(url + "/readyz") as r:
                        if r.status == 200:
                            return proc, url
                except Exception:
                    pass
                time.sleep(0.1)
        assert proc.poll() is None, text[-2000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    raise AssertionError("hub did not start")


@pytest.mark.skipif(not os.environ.get("PADDOCK_HUB_BIN"), reason="needs PADDOCK_HUB_BIN")
def test_delivery_survives_kill_9_of_the_hub(tmp_path):
    """A hub of its own, killed with SIGKILL while a delivery is in flight (the
    receiver holds the request): the restarted hub sends the event again, with
    the same event id, once the dead hub's lease ends."""
    hub_bin = os.environ["PADDOCK_HUB_BIN"]
    data = tmp_path / "hub"
    holding = threading.Event()
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            hits.append(json.loads(body))
            if len(hits) == 1:
                holding.set()
                time.sleep(30)  # held: the hub dies meanwhile
                return
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    proc, endpoint = _start_hub(hub_bin, data, open(tmp_path / "hub-1.log", "wb"))
    try:
        admin = lambda *a: subprocess.run([hub_bin, "--data-dir", str(data), "admin", *a],
                                          check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        admin("create-user", "carol")
        tok = admin("create-token", "carol", "--scopes", "read,write")
        api = HfApi(endpoint=endpoint, token=tok)
        repo = api.create_repo("carol/hooked").repo_id
        api.create_webhook(url=url, watched=[{"type": "model", "name": repo}], domains=["repo"])
        info = api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo)
        assert holding.wait(20), "the first delivery never arrived"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc, endpoint = _start_hub(hub_bin, data, open(tmp_path / "hub-2.log", "wb"))
        deadline = time.time() + 30
        while len(hits) < 2 and time.time() < deadline:
            time.sleep(0.1)
        assert len(hits) == 2, hits
        assert hits[1]["event"]["id"] == hits[0]["event"]["id"]
        assert hits[1]["repo"]["headSha"] == info.oid
        time.sleep(1)
        assert len(hits) == 2, "sent once more, not again after that"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        server.shutdown()
