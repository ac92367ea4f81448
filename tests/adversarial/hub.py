"""The hostile tenant's toolkit: a raw HTTP/1.1 client that counts every
request and every 5xx, the monitors (a `/healthz` prober and an RSS sampler of
the hub process), and helpers that drive the hub's own protocol (repos,
NDJSON commits, Git LFS uploads) without any client library in between.

Everything here talks to the real `hub-api` binary that `run.sh` started
(`HF_ENDPOINT`, `PADDOCK_HUB_PID`, `PADDOCK_HUB_BIN`, `PADDOCK_HUB_DATA`).
Only the standard library is used, so a request can be as malformed, slow or
large as an attack needs, and an early answer (a 413 before the body is sent)
is read instead of being lost to a broken pipe.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import select
import socket
import struct
import subprocess
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Iterable, Iterator

ENDPOINT = os.environ["HF_ENDPOINT"].rstrip("/")
_u = urllib.parse.urlsplit(ENDPOINT)
HOST, PORT = _u.hostname, _u.port or 80
HUB_PID = int(os.environ["PADDOCK_HUB_PID"])
HUB_BIN = os.environ["PADDOCK_HUB_BIN"]
HUB_DATA = os.environ["PADDOCK_HUB_DATA"]
OBJECTS = os.path.join(HUB_DATA, "objects")
TMP = os.environ.get("ADV_TMP", "/tmp")
# How long a test waits for a collector to remove the bytes of refused writes.
GC_WAIT_S = float(os.environ.get("ADV_GC_WAIT_S", "8"))
MiB = 1024 * 1024


# ---------------------------------------------------------------- statistics


@dataclass
class Stats:
    """What the whole run saw (the figures of the closing note)."""

    requests: int = 0
    probes: int = 0
    statuses: dict = field(default_factory=dict)
    bad_5xx: list = field(default_factory=list)  # (method, path, status, body) of 5xx other than 503
    no_answer: list = field(default_factory=list)  # (method, path, reason): connection closed without a status
    healthz_worst_ms: float = 0.0
    healthz_worst_where: str = ""
    rss_peak_kib: int = 0
    rss_peak_where: str = ""
    per_test: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, method: str, path: str, status: int, body: bytes):
        with self.lock:
            self.requests += 1
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status >= 500 and status != 503:
                self.bad_5xx.append((method, path[:120], status, body[:300]))

    def summary(self) -> dict:
        return {
            "requests": self.requests,
            "healthz_probes": self.probes,
            "5xx_non_503": len(self.bad_5xx),
            "no_answer": len(self.no_answer),
            "healthz_worst_ms": round(self.healthz_worst_ms, 1),
            "healthz_worst_during": self.healthz_worst_where,
            "peak_rss_mib": round(self.rss_peak_kib / 1024, 1),
            "peak_rss_during": self.rss_peak_where,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }


STATS = Stats()


# ---------------------------------------------------------------- raw HTTP


@dataclass
class Resp:
    status: int  # 0: the connection closed (or timed out) before a status line
    headers: dict  # lower-case names; repeated headers joined with ", "
    body: bytes
    elapsed: float
    reason: str = ""

    def json(self):
        return json.loads(self.body)

    def header(self, name: str, default=None):
        return self.headers.get(name.lower(), default)

    @property
    def code(self) -> str | None:
        """The stable error code: the JSON body's `code`, else `X-Error-Code`."""
        try:
            j = json.loads(self.body)
            if isinstance(j, dict) and isinstance(j.get("code"), str):
                return j["code"]
        except ValueError:
            pass
        return self.header("x-error-code")

    @property
    def error_message(self) -> str | None:
        try:
            j = json.loads(self.body)
            if isinstance(j, dict) and isinstance(j.get("error"), str):
                return j["error"]
        except ValueError:
            pass
        return self.header("x-error-message")

    def is_4xx_with_code(self) -> bool:
        return 400 <= self.status < 500 and bool(self.code) and bool(self.error_message)

    def __repr__(self):
        return f"<{self.status} {self.reason} {self.body[:200]!r} in {self.elapsed * 1000:.0f} ms>"


def _parse_response(raw: bytes) -> tuple[int, str, dict, bytes]:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return 0, "truncated head", {}, b""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    try:
        status = int(parts[1])
    except (IndexError, ValueError):
        return 0, f"bad status line {lines[0][:80]!r}", {}, b""
    headers: dict = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        k = k.strip().lower()
        headers[k] = f"{headers[k]}, {v.strip()}" if k in headers else v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out, rest = bytearray(), body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            try:
                n = int(size_line.split(b";")[0], 16)
            except ValueError:
                break
            if n == 0:
                break
            out += rest[:n]
            rest = rest[n + 2 :]
        body = bytes(out)
    return status, parts[2] if len(parts) > 2 else "", headers, body


def raw_request(
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: bytes | Iterable[bytes] | None = None,
    headers: dict | None = None,
    content_length: int | None = None,
    timeout: float = 120.0,
    max_response: int = 512 * MiB,
    count: bool = True,
) -> Resp:
    """One request on a fresh connection (`Connection: close`).

    `body` may be bytes or an iterable of chunks (streamed; chunked unless
    `content_length` is given, which may also be a lie). Sending stops as soon
    as the server answers, so an early refusal is read, not lost."""
    t0 = time.monotonic()
    h = {"Host": f"{HOST}:{PORT}", "Connection": "close", "User-Agent": "paddock-adversarial/1"}
    if token:
        h["Authorization"] = f"Bearer {token}"
    if isinstance(body, (bytes, bytearray)):
        chunks: Iterator[bytes] = iter([bytes(body)]) if body else iter(())
        if content_length is None:
            content_length = len(body)
    elif body is None:
        chunks = iter(())
    else:
        chunks = iter(body)
    chunked = content_length is None and body is not None and not isinstance(body, (bytes, bytearray))
    if chunked:
        h["Transfer-Encoding"] = "chunked"
    elif content_length is not None and (content_length > 0 or method not in ("GET", "HEAD")):
        h["Content-Length"] = str(content_length)
    h.update(headers or {})
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"

    received = bytearray()
    reason = ""
    try:
        s = socket.create_connection((HOST, PORT), timeout=timeout)
    except OSError as e:
        r = Resp(0, {}, b"", time.monotonic() - t0, f"connect: {e}")
        if count:
            STATS.no_answer.append((method, path[:120], r.reason))
        return r
    try:
        s.setblocking(False)
        pending = memoryview(head.encode("latin-1"))
        deadline = t0 + timeout
        answered = False
        done_body = False
        while not answered:
            if not pending:
                if done_body:
                    break
                try:
                    c = next(chunks)
                    if chunked:
                        c = f"{len(c):x}\r\n".encode() + c + b"\r\n" if c else b""
                    pending = memoryview(c)
                except StopIteration:
                    done_body = True
                    pending = memoryview(b"0\r\n\r\n" if chunked else b"")
                    if not pending:
                        break
                    continue
            left = deadline - time.monotonic()
            if left <= 0:
                reason = "timeout while sending"
                break
            r, w, _ = select.select([s], [s], [], min(left, 1.0))
            if r:
                answered = True  # the server answered (or closed) before the body was all sent
                break
            if w and pending:
                try:
                    n = s.send(pending[: 256 * 1024])
                    pending = pending[n:]
                except (BrokenPipeError, ConnectionResetError) as e:
                    reason = f"send: {e.__class__.__name__}"
                    break
        # Read the answer until the server closes the connection.
        while len(received) < max_response:
            left = deadline - time.monotonic()
            if left <= 0:
                reason = reason or "timeout while reading"
                break
            r, _, _ = select.select([s], [], [], min(left, 1.0))
            if not r:
                continue
            try:
                data = s.recv(1024 * 1024)
            except ConnectionResetError:
                reason = reason or "reset"
                break
            except BlockingIOError:
                continue
            if not data:
                break
            received += data
            if _complete(received):
                break
    finally:
        s.close()
    elapsed = time.monotonic() - t0
    status, rsn, hdrs, rbody = _parse_response(bytes(received))
    resp = Resp(status, hdrs, rbody, elapsed, rsn if status else (reason or rsn))
    if count:
        if status:
            STATS.count(method, path, status, rbody)
        else:
            with STATS.lock:
                STATS.requests += 1
                STATS.no_answer.append((method, path[:120], resp.reason))
    return resp


def _complete(buf: bytearray) -> bool:
    """Whether a response with a Content-Length has fully arrived."""
    i = buf.find(b"\r\n\r\n")
    if i < 0:
        return False
    head = bytes(buf[:i]).decode("latin-1").lower()
    for line in head.split("\r\n")[1:]:
        if line.startswith("content-length:"):
            try:
                return len(buf) - i - 4 >= int(line.split(":", 1)[1])
            except ValueError:
                return False
    return False


def request(method: str, path: str, *, retry_rate_limited: bool = True, json_body=None, **kw) -> Resp:
    """`raw_request`, plus JSON bodies and patience with `429 rate_limited`
    (setup calls of a test must not fail because the suite itself is fast)."""
    if json_body is not None:
        kw["body"] = json.dumps(json_body).encode()
        kw.setdefault("headers", {})
        kw["headers"] = {"Content-Type": "application/json", **kw["headers"]}
    for _ in range(20):
        r = raw_request(method, path, **kw)
        replayable = not isinstance(kw.get("body"), Iterator)
        if r.status == 429 and retry_rate_limited and replayable and r.code == "rate_limited":
            time.sleep(min(float(r.header("retry-after", "1") or 1), 5))
            continue
        return r
    return r


def get(path, **kw):
    return request("GET", path, **kw)


def post(path, **kw):
    return request("POST", path, **kw)


def put(path, **kw):
    return request("PUT", path, **kw)


# ---------------------------------------------------------------- monitors


class Monitor:
    """While an attack runs: probe `/healthz` every ~20 ms on a fresh
    connection (latency, or the timeout when it stalls) and sample the hub's
    VmRSS; the peak comes from VmHWM, reset at the start (clear_refs 5), so a
    spike between two samples is not missed."""

    def __init__(self, name: str, interval: float = 0.02):
        self.name = name
        self.interval = interval
        self.healthz_ms: list[float] = []
        self.healthz_failures = 0
        self.rss_kib: list[int] = []
        self.stop_ev = threading.Event()
        self.threads = [
            threading.Thread(target=self._probe, daemon=True),
            threading.Thread(target=self._sample, daemon=True),
        ]
        self.hwm_reset = False
        self.start_rss_kib = rss_kib()

    def __enter__(self):
        try:
            with open(f"/proc/{HUB_PID}/clear_refs", "w") as f:
                f.write("5")
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self.start_rss_kib = rss_kib()
        for t in self.threads:
            t.start()
        return self

    def _probe(self):
        while not self.stop_ev.is_set():
            t0 = time.monotonic()
            r = raw_request("GET", "/healthz", timeout=10, count=False)
            ms = (time.monotonic() - t0) * 1000
            with STATS.lock:
                STATS.probes += 1
            if r.status != 200:
                self.healthz_failures += 1
            self.healthz_ms.append(ms)
            self.stop_ev.wait(self.interval)

    def _sample(self):
        while not self.stop_ev.is_set():
            v = rss_kib()
            if v:
                self.rss_kib.append(v)
            self.stop_ev.wait(0.05)

    def __exit__(self, *exc):
        self.stop_ev.set()
        for t in self.threads:
            t.join(timeout=15)
        peak = max([self.peak_kib()] + self.rss_kib)
        worst = self.worst_ms()
        with STATS.lock:
            if worst > STATS.healthz_worst_ms:
                STATS.healthz_worst_ms, STATS.healthz_worst_where = worst, self.name
            if peak > STATS.rss_peak_kib:
                STATS.rss_peak_kib, STATS.rss_peak_where = peak, self.name
            STATS.per_test.append(
                {
                    "test": self.name,
                    "healthz_worst_ms": round(worst, 1),
                    "healthz_probes": len(self.healthz_ms),
                    "healthz_not_200": self.healthz_failures,
                    "rss_start_mib": round(self.start_rss_kib / 1024, 1),
                    "rss_peak_mib": round(peak / 1024, 1),
                }
            )
        return False

    def mark(self) -> tuple[int, int]:
        """Folds the peak so far into the record and restarts peak tracking
        (VmHWM), so `growth_since` measures one step of an attack; returns
        the mark (RSS now in KiB, sample index)."""
        self.rss_kib.append(status_kib("VmHWM") if self.hwm_reset else rss_kib())
        if self.hwm_reset:
            with open(f"/proc/{HUB_PID}/clear_refs", "w") as f:
                f.write("5")
        return rss_kib(), len(self.rss_kib)

    def growth_since(self, mark: tuple[int, int]) -> float:
        """Peak RSS above the mark's RSS since `mark` (MiB)."""
        start, i = mark
        peak = max([status_kib("VmHWM") if self.hwm_reset else 0] + self.rss_kib[i:])
        return (peak - start) / 1024

    def worst_ms(self) -> float:
        return max(self.healthz_ms, default=0.0)

    def peak_kib(self) -> int:
        hwm = status_kib("VmHWM")
        return max([hwm] + self.rss_kib) if self.hwm_reset else max(self.rss_kib, default=hwm)


def status_kib(field_name: str) -> int:
    try:
        with open(f"/proc/{HUB_PID}/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib() -> int:
    return status_kib("VmRSS")


def hub_alive() -> bool:
    return os.path.exists(f"/proc/{HUB_PID}") and status_kib("VmRSS") > 0


# ---------------------------------------------------------------- admin and tenants


def admin(*args: str) -> str:
    """`hub-api admin ...` against the running hub's data directory; the last line."""
    out = subprocess.run(
        [HUB_BIN, "--data-dir", HUB_DATA, "admin", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return out.stdout.strip().splitlines()[-1]


def new_user(prefix: str, scopes: str = "read,write", admin_user: bool = False) -> tuple[str, str]:
    """A fresh user (its own namespace) and a token for it."""
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    admin("create-user", name, *(["--admin"] if admin_user else []))
    return name, admin("create-token", name, "--scopes", scopes, "--name", "adversarial")


# ---------------------------------------------------------------- the hub's protocol


def create_repo(token: str, ns: str, name: str | None = None, **extra) -> str:
    name = name or f"r-{uuid.uuid4().hex[:8]}"
    r = post("/api/repos/create", token=token, json_body={"name": name, "organization": ns, **extra})
    assert r.status == 200, f"create {ns}/{name}: {r}"
    return f"{ns}/{name}"


def ndjson(header: dict, ops: list[tuple[str, dict]]) -> bytes:
    lines = [json.dumps({"key": "header", "value": header})]
    lines += [json.dumps({"key": k, "value": v}) for k, v in ops]
    return ("\n".join(lines) + "\n").encode()


def file_op(path: str, content: bytes) -> tuple[str, dict]:
    return ("file", {"path": path, "content": base64.b64encode(content).decode(), "encoding": "base64"})


def lfs_op(path: str, sha: str, size: int) -> tuple[str, dict]:
    return ("lfsFile", {"path": path, "algo": "sha256", "oid": sha, "size": size})


def commit(token: str, repo: str, ops: list, *, parent: str | None = None, summary: str = "adversarial",
           raw: bytes | Iterable[bytes] | None = None, rev: str = "main", **kw) -> Resp:
    header = {"summary": summary, "description": ""}
    if parent:
        header["parentCommit"] = parent
    body = raw if raw is not None else ndjson(header, ops)
    return post(f"/api/models/{repo}/commit/{rev}", token=token, body=body,
                headers={"Content-Type": "application/x-ndjson"}, **kw)


def head(token: str | None, repo: str) -> str:
    r = get(f"/api/models/{repo}", token=token)
    assert r.status == 200, r
    return r.json()["sha"]


def lfs_batch(token: str | None, repo: str, operation: str, objects: list[tuple[str, int]], **kw) -> Resp:
    return post(
        f"/{repo}.git/info/lfs/objects/batch",
        token=token,
        json_body={
            "operation": operation,
            "transfers": ["basic", "multipart"],
            "hash_algo": "sha256",
            "objects": [{"oid": o, "size": s} for o, s in objects],
        },
        headers={"Accept": "application/vnd.git-lfs+json", "Content-Type": "application/vnd.git-lfs+json"},
        **kw,
    )


def path_of(url: str) -> str:
    u = urllib.parse.urlsplit(url)
    return u.path + (f"?{u.query}" if u.query else "")


def file_chunks(path: str, start: int = 0, length: int | None = None, chunk: int = MiB) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(start)
        left = length if length is not None else os.path.getsize(path) - start
        while left > 0:
            b = f.read(min(chunk, left))
            if not b:
                return
            left -= len(b)
            yield b


def upload_action(obj: dict, src: str, *, complete: bool = True) -> list[Resp]:
    """Performs one object's `actions.upload` from the batch answer (basic or
    multipart), streaming from the file `src`; returns every answer."""
    up = obj["actions"]["upload"]
    size = obj["size"]
    hdr = up.get("header") or {}
    if "chunk_size" in hdr:
        chunk = int(hdr["chunk_size"])
        out, parts = [], []
        for k in sorted((k for k in hdr if k.isdigit()), key=int):
            n = int(k)
            start = (n - 1) * chunk
            length = min(chunk, size - start)
            r = put(path_of(hdr[k]), body=file_chunks(src, start, length), content_length=length)
            out.append(r)
            if r.status != 200:
                return out
            parts.append({"partNumber": n, "etag": r.header("etag", "")})
        if complete:
            out.append(post(path_of(up["href"]), json_body={"oid": obj["oid"], "parts": parts}))
        return out
    return [put(path_of(up["href"]), body=file_chunks(src), content_length=size)]


def lfs_upload(token: str, repo: str, src: str, sha: str | None = None) -> tuple[str, int]:
    """Uploads a file with Git LFS (batch, then basic or multipart transfer)."""
    size = os.path.getsize(src)
    sha = sha or sha256_file(src)
    r = lfs_batch(token, repo, "upload", [(sha, size)])
    assert r.status == 200, f"lfs batch: {r}"
    obj = r.json()["objects"][0]
    assert "error" not in obj, obj
    if "actions" in obj:
        for a in upload_action(obj, src):
            assert a.status == 200, f"lfs transfer: {a}"
    return sha, size


# ---------------------------------------------------------------- data


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(4 * MiB), b""):
            h.update(b)
    return h.hexdigest()


def text_bytes(n: int, seed: int) -> bytes:
    """n bytes of printable text (stored inline: no NUL), distinct per seed."""
    rng = random.Random(seed)
    return base64.b64encode(rng.randbytes(n * 3 // 4 + 3))[:n]


def tmp_path(name: str) -> str:
    os.makedirs(TMP, exist_ok=True)
    return os.path.join(TMP, f"{uuid.uuid4().hex[:8]}-{name}")


def write_gguf_tiny_header(path: str, total: int) -> None:
    """A valid GGUF v3 file of `total` bytes: one metadata key and one I8
    tensor that fills the data section. The header is a few dozen bytes; the
    rest is a hole (sparse), never held in memory."""

    def s(x: str) -> bytes:
        b = x.encode()
        return struct.pack("<Q", len(b)) + b

    kv = s("general.architecture") + struct.pack("<I", 8) + s("llama")
    def header(n_elems: int) -> bytes:
        t = s("w") + struct.pack("<I", 1) + struct.pack("<Q", n_elems) + struct.pack("<I", 24) + struct.pack("<Q", 0)
        return b"GGUF" + struct.pack("<IQQ", 3, 1, 1) + kv + t

    base = len(header(0))
    data_offset = (base + 31) // 32 * 32
    h = header(total - data_offset)
    with open(path, "wb") as f:
        f.write(h)
        f.write(b"\0" * (data_offset - len(h)))
        f.truncate(total)


def write_safetensors_big_header(path: str, header_bytes: int) -> int:
    """A well-formed safetensors file whose JSON header is `header_bytes`
    long (streamed to disk): as many 1-element U8 tensors as fit, tiling a
    small data section, padded with spaces as the format allows. Returns the
    number of tensors."""
    entry = '"t{:08d}":{{"dtype":"U8","shape":[1],"data_offsets":[{},{}]}}'
    one = len(entry.format(0, 0, 0)) + 12  # offsets grow to at most ~8 digits each
    n = (header_bytes - 64) // (one + 1)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", header_bytes))
        written = 1
        f.write(b"{")
        buf = []
        for i in range(n):
            e = ("," if i else "") + entry.format(i, i, i + 1)
            buf.append(e)
            if len(buf) == 4096:
                chunk = "".join(buf).encode()
                f.write(chunk)
                written += len(chunk)
                buf = []
        chunk = "".join(buf).encode() + b"}"
        f.write(chunk)
        written += len(chunk)
        assert written <= header_bytes, (written, header_bytes)
        f.write(b" " * (header_bytes - written))
        f.write(bytes(n))  # data: one byte per tensor
    return n


def objects_bytes(sub: str = "") -> int:
    """Bytes of every file under the object store (or one of its prefixes)."""
    total = 0
    for root, _, files in os.walk(os.path.join(OBJECTS, sub)):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except FileNotFoundError:
                pass
    return total


def blob_stored(sha: str) -> bool:
    return os.path.exists(os.path.join(OBJECTS, "blobs", "sha256", sha[:2], sha[2:4], sha))


def stored_anywhere(sha: str, size: int) -> list[str]:
    """Files of exactly `size` bytes under the object store whose content hashes to `sha`."""
    hits = []
    for root, _, files in os.walk(OBJECTS):
        for f in files:
            p = os.path.join(root, f)
            try:
                if os.stat(p).st_size == size and sha256_file(p) == sha:
                    hits.append(os.path.relpath(p, OBJECTS))
            except FileNotFoundError:
                pass
    return hits
