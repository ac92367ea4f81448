"""Attack 2 (issue 13, item 2): refused writes must leave no bytes, and quotas
count what a namespace makes the hub store.

Commits answered 412 (stale `parentCommit`) or 400 (a bad NDJSON line, a
path clash between a file and a directory) carry ~900 KB inline files; after
the collector has had its chance (`ADV_GC_WAIT_S`; `run.sh` sets the
sweeper's interval and grace small) none of their bytes may remain in the
object store, and the quota API must report what is stored. A namespace with a
small quota must not pass it with LFS uploads (basic, or multipart parts) that
are never committed."""

import hashlib
import os
import time

import hub

INLINE = 900_000
SLACK = 64 * 1024  # small objects of the hub's own (an initial .gitattributes, ...)


def quota(token, ns):
    r = hub.get(f"/api/v1/namespaces/{ns}/quota", token=token)
    assert r.status == 200, r
    return r.json()


def wait_gone(shas: dict) -> dict:
    """Waits up to ADV_GC_WAIT_S for the given {sha: size} to leave the store;
    returns the ones still there, with where."""
    deadline = time.monotonic() + hub.GC_WAIT_S
    while True:
        left = {s: hub.stored_anywhere(s, n) for s, n in shas.items()}
        left = {s: w for s, w in left.items() if w}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def test_refused_commits_leave_no_bytes(tenant):
    ns, tok = tenant
    repo = hub.create_repo(tok, ns, "junk")
    r = hub.commit(tok, repo, [hub.file_op("clash", b"a file where a folder will be asked for\n")])
    assert r.status == 200, r
    stale = r.json()["commitOid"]
    r = hub.commit(tok, repo, [hub.file_op("moved.txt", b"the branch moved\n")])
    assert r.status == 200, r
    before = hub.objects_bytes()

    refused = {}
    seed = 1000
    for i in range(4):
        # 412: the branch moved since parentCommit.
        seed += 1
        data = hub.text_bytes(INLINE, seed)
        r = hub.commit(tok, repo, [hub.file_op(f"stale-{i}.txt", data)], parent=stale)
        assert r.status == 412 and r.code == "parent_commit_mismatch", r
        refused[hashlib.sha256(data).hexdigest()] = len(data)
        # 400: a malformed line after the file.
        seed += 1
        data = hub.text_bytes(INLINE, seed)
        body = hub.ndjson({"summary": "bad line"}, [hub.file_op(f"bad-{i}.txt", data)]) + b'{"key": "nope"}\n'
        r = hub.commit(tok, repo, [], raw=body)
        assert r.status == 400 and r.is_4xx_with_code(), r
        refused[hashlib.sha256(data).hexdigest()] = len(data)
        # 400: a folder where a file is.
        seed += 1
        data = hub.text_bytes(INLINE, seed)
        r = hub.commit(tok, repo, [hub.file_op(f"clash/inner-{i}.txt", data)])
        assert r.status == 400 and r.is_4xx_with_code(), r
        refused[hashlib.sha256(data).hexdigest()] = len(data)
        # 400: a file and a folder of the same name in one commit.
        seed += 1
        data = hub.text_bytes(INLINE, seed)
        r = hub.commit(tok, repo, [hub.file_op(f"twin-{i}.txt", data), hub.file_op(f"twin-{i}.txt/x", b"x")])
        assert r.status == 400 and r.is_4xx_with_code(), r
        refused[hashlib.sha256(data).hexdigest()] = len(data)

    # The control: an accepted commit's file is stored where the test looks.
    accepted = hub.text_bytes(INLINE, 7)
    r = hub.commit(tok, repo, [hub.file_op("kept.txt", accepted)])
    assert r.status == 200, r
    kept = hashlib.sha256(accepted).hexdigest()
    assert hub.blob_stored(kept), "the accepted file is not where the test expects blobs"

    left = wait_gone(refused)
    grown = hub.objects_bytes() - before
    used = quota(tok, ns)["storage_used_bytes"]
    print(f"refused {len(refused)} commits of {INLINE} bytes; store grew {grown} bytes "
          f"(accepted {len(accepted)}); quota API says {used} bytes used")
    assert not left, f"bytes of {len(left)} refused commits are still stored: {sorted(left.values())[:3]}"
    assert grown <= len(accepted) + SLACK, f"the store grew {grown} bytes for {len(accepted)} accepted"
    assert used >= len(accepted), f"usage {used} does not count the accepted file"
    assert used + SLACK >= grown, f"the store grew {grown} bytes but usage is {used}"


def test_uncommitted_lfs_uploads_count_against_the_quota(tenant, root):
    ns, tok = tenant
    limit = 1_000_000
    r = hub.put(f"/api/v1/namespaces/{ns}/quota", token=root[1], json_body={"storage_bytes": limit})
    assert r.status == 200, r
    repo = hub.create_repo(tok, ns, "hoard")
    before = hub.objects_bytes()
    size = 600_000
    # Ask for every upload first (each alone fits), then send them all; never commit.
    offers = []
    for i in range(4):
        src = hub.tmp_path(f"hoard-{i}.bin")
        with open(src, "wb") as f:
            f.write(b"\0" + os.urandom(size - 1))
        sha = hub.sha256_file(src)
        r = hub.lfs_batch(tok, repo, "upload", [(sha, size)])
        assert r.status in (200, 413), r
        if r.status == 413:
            assert r.code == "quota_exceeded", r
            continue
        obj = r.json()["objects"][0]
        if "error" in obj or "actions" not in obj:
            continue
        offers.append((obj, src))
    stored = 0
    for obj, src in offers:
        answers = hub.upload_action(obj, src)
        last = answers[-1]
        assert last.status < 500, last
        if last.status == 200:
            stored += size
        else:
            assert last.status == 413 and last.code == "quota_exceeded", last
    time.sleep(0.5)
    grown = hub.objects_bytes() - before
    q = quota(tok, ns)
    print(f"quota {limit}: {stored} bytes accepted in uploads, store grew {grown}, usage {q['storage_used_bytes']}")
    assert stored <= limit, f"{stored} bytes of uncommitted LFS uploads were accepted under a {limit}-byte quota"
    assert grown <= limit + SLACK, f"the store grew {grown} bytes under a {limit}-byte quota"
    assert q["storage_used_bytes"] <= limit, q


def test_multipart_parts_count_against_the_quota(tenant, root):
    ns, tok = tenant
    limit = 60 * hub.MiB
    r = hub.put(f"/api/v1/namespaces/{ns}/quota", token=root[1], json_body={"storage_bytes": limit})
    assert r.status == 200, r
    repo = hub.create_repo(tok, ns, "parts")
    size = 51 * hub.MiB  # multipart (over 50 MiB), under the quota
    src = hub.tmp_path("zeros.bin")
    with open(src, "wb") as f:
        f.truncate(size)
    before = hub.objects_bytes()
    offers = []
    for i in range(3):
        fake_sha = f"{i + 1:02x}" * 32  # parts are not verified until completion
        r = hub.lfs_batch(tok, repo, "upload", [(fake_sha, size)])
        assert r.status in (200, 413), r
        if r.status == 200 and "actions" in r.json()["objects"][0]:
            offers.append(r.json()["objects"][0])
        elif r.status == 413:
            assert r.code == "quota_exceeded", r
    refused = 0
    for obj in offers:
        assert "chunk_size" in obj["actions"]["upload"].get("header", {}), obj
        answers = hub.upload_action(obj, src, complete=False)
        for a in answers:
            assert a.status < 500, a
            if a.status != 200:
                assert a.status == 413 and a.code == "quota_exceeded", a
                refused += 1
    grown = hub.objects_bytes() - before
    q = quota(tok, ns)
    print(f"quota {limit}: {len(offers)} multipart sessions opened, {refused} parts refused, "
          f"store grew {grown}, usage {q['storage_used_bytes']}")
    assert grown <= limit + SLACK, f"parts of uncompleted uploads stored {grown} bytes under a {limit}-byte quota"
    assert q["storage_used_bytes"] + SLACK >= grown, f"{grown} bytes of parts are stored but usage says {q}"
