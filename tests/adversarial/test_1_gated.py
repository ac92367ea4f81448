"""Attack 1 (issue 13, item 1): gated bytes must not leak through any route.

A manually gated repo holds an inline file and an LFS file. Anonymous
callers, a user without a request, a pending and a rejected requester try
every route that hands out bytes or links: the LFS batch API
(`operation: download`, with the oid read from the public tree listing), the
signed object link, `/resolve` and the dashboard's file view. Only the
accepted requester and the owner get the bytes."""

import uuid

import hub
import pytest


@pytest.fixture(scope="module")
def gated():
    owner, otok = hub.new_user("owner")
    people = {k: hub.new_user(k) for k in ("nobody", "pending", "rejected", "accepted")}
    repo = hub.create_repo(otok, owner, "gated")
    marker = f"SECRET-{uuid.uuid4().hex}".encode()
    inline = b"inline weights " + marker + b"\n"
    lfs_bytes = b"\0LFS" + marker + bytes(range(256)) * 64
    src = hub.tmp_path("gated.bin")
    with open(src, "wb") as f:
        f.write(lfs_bytes)
    sha, size = hub.lfs_upload(otok, repo, src)
    r = hub.commit(otok, repo, [hub.file_op("w.txt", inline), hub.lfs_op("model.bin", sha, size)])
    assert r.status == 200, r
    r = hub.put(f"/api/models/{repo}/settings", token=otok, json_body={"gated": "manual"})
    assert r.status == 200, r
    for who in ("pending", "rejected", "accepted"):
        r = hub.post(f"/api/v1/repos/models/{repo}/access-requests", token=people[who][1],
                     json_body={"fields": {"why": "attack"}})
        assert r.status in (200, 201), r
    for who, status in (("rejected", "rejected"), ("accepted", "accepted")):
        r = hub.put(f"/api/v1/repos/models/{repo}/access-requests/{people[who][0]}", token=otok,
                    json_body={"status": status})
        assert r.status == 200, r
    tokens = {"anonymous": None, **{k: v[1] for k, v in people.items()}, "owner": otok}
    return {"repo": repo, "tokens": tokens, "sha": sha, "size": size, "inline": inline,
            "lfs": lfs_bytes, "marker": marker}


DENIED = ["anonymous", "nobody", "pending", "rejected"]
ALLOWED = ["accepted", "owner"]


def tree_oid(g, token):
    """The LFS oid as anyone can read it in the tree listing (metadata stays public)."""
    r = hub.get(f"/api/models/{g['repo']}/tree/main", token=token)
    assert r.status == 200, r
    entry = next(e for e in r.json() if e["path"] == "model.bin")
    return entry["lfs"]["oid"], entry["lfs"]["size"]


@pytest.mark.parametrize("who", DENIED)
def test_lfs_batch_download_gives_no_link_to_the_ungranted(gated, who):
    token = gated["tokens"][who]
    oid, size = tree_oid(gated, token)
    assert oid == gated["sha"]
    r = hub.lfs_batch(token, gated["repo"], "download", [(oid, size)])
    assert r.status < 500, r
    leaked = []
    if r.status == 200:
        for o in r.json().get("objects", []):
            href = o.get("actions", {}).get("download", {}).get("href")
            if href:
                got = hub.get(hub.path_of(href))
                leaked.append((got.status, gated["marker"] in got.body))
        assert not leaked, f"{who}: LFS batch handed out a download link (fetched: {leaked})"
        assert all("error" in o for o in r.json()["objects"]), r
    else:
        assert r.status in (401, 403), r
        assert r.code in ("gated_repo", "GatedRepo", "unauthorized"), r


@pytest.mark.parametrize("who", DENIED)
def test_resolve_and_dashboard_refuse_the_ungranted(gated, who):
    token = gated["tokens"][who]
    for path in ("w.txt", "model.bin"):
        for method in ("GET", "HEAD"):
            r = hub.request(method, f"/{gated['repo']}/resolve/main/{path}", token=token)
            assert r.status in (401, 403), f"{who} {method} {path}: {r}"
            assert gated["marker"] not in r.body
        r = hub.get(f"/{gated['repo']}/resolve/main/{path}", token=token, headers={"Range": "bytes=0-"})
        assert r.status in (401, 403) and gated["marker"] not in r.body, r
    for page in ("blob/main/w.txt", "blob/main/model.bin", "tree/main"):
        r = hub.get(f"/{gated['repo']}/{page}", token=token, headers={"Accept": "text/html"})
        assert r.status < 500, r
        assert gated["marker"] not in r.body, f"{who}: the dashboard page {page} shows gated bytes"


def test_object_link_needs_a_signature(gated):
    r = hub.get(f"/lfs/objects/{gated['sha']}")
    assert 400 <= r.status < 500 and gated["marker"] not in r.body, r
    r = hub.get(f"/lfs/objects/{gated['sha']}?token=forged")
    assert 400 <= r.status < 500 and gated["marker"] not in r.body, r


@pytest.mark.parametrize("who", ALLOWED)
def test_granted_callers_get_the_bytes(gated, who):
    token = gated["tokens"][who]
    oid, size = tree_oid(gated, token)
    r = hub.lfs_batch(token, gated["repo"], "download", [(oid, size)])
    assert r.status == 200, r
    href = r.json()["objects"][0]["actions"]["download"]["href"]
    got = hub.get(hub.path_of(href))
    assert got.status == 200 and got.body == gated["lfs"], got
    r = hub.get(f"/{gated['repo']}/resolve/main/model.bin", token=token)
    assert r.status == 200 and r.body == gated["lfs"], r
    r = hub.get(f"/{gated['repo']}/resolve/main/w.txt", token=token)
    assert r.status == 200 and r.body == gated["inline"], r
    r = hub.get(f"/{gated['repo']}/blob/main/w.txt", token=token, headers={"Accept": "text/html"})
    assert r.status == 200 and gated["marker"] in r.body, r


def _git_clone(gated, token, dest):
    """`git clone` of the gated repo with the token as the HTTP password (no prompt)."""
    import os
    import subprocess
    from urllib.parse import urlsplit, urlunsplit

    u = urlsplit(hub.ENDPOINT)
    netloc = f"git:{token}@{u.netloc}" if token else u.netloc
    url = urlunsplit((u.scheme, netloc, "/" + gated["repo"], "", ""))
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="/bin/false", GIT_LFS_SKIP_SMUDGE="1",
               GIT_CONFIG_NOSYSTEM="1", HOME=hub.TMP)
    return subprocess.run(["git", "clone", url, dest], capture_output=True, env=env, timeout=120)


@pytest.mark.parametrize("who", DENIED)
def test_git_clone_refuses_the_ungranted(gated, who):
    token = gated["tokens"][who]
    dest = hub.tmp_path(f"git-{who}-{uuid.uuid4().hex[:6]}")
    p = _git_clone(gated, token, dest)
    assert p.returncode != 0, f"{who}: git clone of the gated repo succeeded"
    import os
    assert not os.path.exists(os.path.join(dest, "w.txt"))
    # The pack route itself, asked directly for the head commit.
    head = hub.head(gated["tokens"]["owner"], gated["repo"])
    body = f"0032want {head}\n00000009done\n".encode()
    r = hub.post(f"/{gated['repo']}/git-upload-pack", token=token, body=body)
    assert r.status in (401, 403) and b"PACK" not in r.body, r


@pytest.mark.parametrize("who", ALLOWED)
def test_git_clone_serves_the_granted(gated, who):
    dest = hub.tmp_path(f"git-{who}-{uuid.uuid4().hex[:6]}")
    p = _git_clone(gated, gated["tokens"][who], dest)
    assert p.returncode == 0, p.stderr
    import os
    with open(os.path.join(dest, "w.txt"), "rb") as f:
        assert f.read() == gated["inline"]
