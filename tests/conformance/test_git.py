"""Git over smart HTTP with Debian's real `git` and `git-lfs`: a repo made
with huggingface_hub is cloned (protocol v0 and v2) and compared byte for
byte, LFS file included after `git lfs pull`; `git fsck --full` is clean and
`git log` has the API's commit ids; a shallow clone fetches new commits and
deepens; private, gated and other tenants' repos are refused. `git push`
(with `git lfs push` of a new LFS file) is read back byte for byte with
huggingface_hub; a pointer to an LFS object never uploaded is refused, as
are what an API commit refuses or stores with LFS (case twins, binary files,
files an LFS rule covers); `git push --delete` deletes branches and tags,
never the default branch."""

import os
import subprocess
import tempfile
from urllib.parse import urlsplit, urlunsplit

import pytest
import httpx2 as httpx
from conftest import ENDPOINT, write_random
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download, snapshot_download


def url(repo_id, tok=None, dataset=False):
    u = urlsplit(ENDPOINT)
    netloc = f"git:{tok}@{u.netloc}" if tok else u.netloc
    path = ("/datasets/" if dataset else "/") + repo_id
    return urlunsplit((u.scheme, netloc, path, "", ""))


# git's own settings (git-lfs's filters) go in a home of this module's own.
GIT_HOME = tempfile.mkdtemp(prefix="paddock-git-home-")


def git(*args, cwd=None, check=True, env=None):
    e = dict(os.environ)
    # Never prompt: a refusal must fail the command.
    e.update({"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", "GCM_INTERACTIVE": "never",
              "GIT_CONFIG_NOSYSTEM": "1", "HOME": GIT_HOME})
    e.update(env or {})
    p = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=e, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="module", autouse=True)
def lfs_installed():
    git("lfs", "install", "--skip-repo")


@pytest.fixture
def model(api, repo_name, tmp_path):
    """Three commits: text files in folders, an executable-free tree, and a
    binary file the hub stores with LFS."""
    api.create_repo(repo_name)
    api.create_commit(repo_name, operations=[
        CommitOperationAdd("README.md", b"---\nlicense: mit\n---\n# Model\n"),
        CommitOperationAdd("config.json", b'{"architectures": ["BertModel"]}'),
    ], commit_message="card and config")
    weights = tmp_path / "model.bin"
    write_random(weights, 3 << 20, seed=7)
    api.create_commit(repo_name, operations=[
        CommitOperationAdd("model.bin", str(weights)),
        CommitOperationAdd("nested/deeper/notes.txt", b"one\ntwo\n"),
        CommitOperationAdd("nested/empty.txt", b""),
    ], commit_message="weights", commit_description="with a description\n\nof two paragraphs")
    api.create_commit(repo_name, operations=[
        CommitOperationAdd("nested/deeper/notes.txt", b"one\ntwo\nthree\n"),
    ], commit_message="more notes")
    return repo_name


def files_of(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in (".git", ".cache")]
        for f in filenames:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = fh.read()
    return out


def api_log(api, repo_id, **kw):
    return [c.commit_id for c in api.list_repo_commits(repo_id, **kw)]


@pytest.mark.parametrize("version", ["0", "2"])
def test_clone_is_byte_for_byte(api, alice, model, tmp_path, version):
    dest = tmp_path / "clone"
    git("-c", f"protocol.version={version}", "clone", url(model, alice), str(dest),
        env={"GIT_LFS_SKIP_SMUDGE": "1", "GIT_TRACE_PACKET": "0"})
    # Before `git lfs pull` the LFS file is its pointer, as stored in the tree.
    pointer = (dest / "model.bin").read_bytes()
    assert pointer.startswith(b"version https://git-lfs.github.com/spec/v1\noid sha256:"), pointer[:80]
    git("lfs", "pull", cwd=dest)
    snap = snapshot_download(model, token=alice, cache_dir=str(tmp_path / "hf"))
    got, want = files_of(dest), files_of(snap)
    assert sorted(got) == sorted(want)
    for path in want:
        assert got[path] == want[path], path
    assert len(got["model.bin"]) == 3 << 20

    git("fsck", "--full", "--strict", cwd=dest)
    log = git("log", "--format=%H", cwd=dest).stdout.split()
    assert log == api_log(api, model)
    assert len(log) == 4  # initial commit + 3
    # The commit message and author are the API's.
    body = git("log", "-1", "--skip=1", "--format=%B", cwd=dest).stdout
    assert body.startswith("weights\n\nwith a description\n\nof two paragraphs"), body
    # HEAD is main, and the remote has no other branch.
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=dest).stdout.strip() == "main"
    assert git("branch", "-r", cwd=dest).stdout.split() == ["origin/HEAD", "->", "origin/main", "origin/main"]


@pytest.mark.parametrize("version", ["0", "2"])
def test_shallow_clone_then_fetch_and_deepen(api, alice, model, tmp_path, version):
    dest = tmp_path / "shallow"
    v = ["-c", f"protocol.version={version}"]
    git(*v, "clone", "--depth", "1", url(model, alice), str(dest), env={"GIT_LFS_SKIP_SMUDGE": "1"})
    assert git("rev-parse", "--is-shallow-repository", cwd=dest).stdout.strip() == "true"
    log = git("log", "--format=%H", cwd=dest).stdout.split()
    assert log == api_log(api, model)[:1]
    git("fsck", "--full", cwd=dest)

    # New commits made through the API arrive with a fetch.
    api.create_commit(model, operations=[CommitOperationAdd("new.txt", b"fresh\n")],
                      commit_message="after the clone")
    api.create_commit(model, operations=[CommitOperationAdd("nested/newer.txt", b"fresher\n")],
                      commit_message="and another")
    git(*v, "fetch", "origin", cwd=dest)
    git("merge", "--ff-only", "origin/main", cwd=dest, env={"GIT_LFS_SKIP_SMUDGE": "1"})
    assert (dest / "new.txt").read_bytes() == b"fresh\n"
    assert (dest / "nested" / "newer.txt").read_bytes() == b"fresher\n"
    log = git("log", "--format=%H", cwd=dest).stdout.split()
    assert log == api_log(api, model)[:3]
    git("fsck", "--full", cwd=dest)

    # Deepening by one, then all of it.
    git(*v, "fetch", "--deepen", "1", "origin", cwd=dest)
    assert git("log", "--format=%H", cwd=dest).stdout.split() == api_log(api, model)[:4]
    git(*v, "fetch", "--unshallow", "origin", cwd=dest)
    assert git("rev-parse", "--is-shallow-repository", cwd=dest).stdout.strip() == "false"
    assert git("log", "--format=%H", cwd=dest).stdout.split() == api_log(api, model)
    git("fsck", "--full", "--strict", cwd=dest)


def test_fetch_of_branches_tags_and_datasets(api, alice, model, tmp_path):
    api.create_branch(model, branch="dev")
    api.create_commit(model, operations=[CommitOperationAdd("dev.txt", b"dev\n")],
                      commit_message="on dev", revision="dev")
    api.create_tag(model, tag="v1")
    dest = tmp_path / "c"
    git("clone", "--no-checkout", url(model, alice) + ".git", str(dest))
    refs = git("ls-remote", url(model, alice), cwd=dest).stdout
    assert "refs/heads/dev" in refs and "refs/tags/v1" in refs
    assert git("rev-parse", "origin/dev", cwd=dest).stdout.strip() == api_log(api, model, revision="dev")[0]
    assert git("rev-parse", "v1", cwd=dest).stdout.strip() == api_log(api, model)[0]

    # A push to a tag name that exists is refused (tags do not move).
    git("checkout", "-q", "main", cwd=dest)
    (dest / "pushed.txt").write_text("tag\n")
    git("add", "pushed.txt", cwd=dest)
    git("-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "push me", cwd=dest)
    p = git("push", "--force", "origin", "HEAD:refs/tags/v1", cwd=dest, check=False)
    assert p.returncode != 0, p.stderr
    assert git("ls-remote", url(model, alice), "refs/tags/v1", cwd=dest).stdout.split()[0] == api_log(api, model)[0]

    ds = model.replace("/t-", "/d-")
    api.create_repo(ds, repo_type="dataset")
    api.create_commit(ds, repo_type="dataset", operations=[CommitOperationAdd("data/train.jsonl", b'{"a": 1}\n')],
                      commit_message="rows")
    dd = tmp_path / "ds"
    git("clone", url(ds, alice, dataset=True), str(dd))
    assert (dd / "data" / "train.jsonl").read_bytes() == b'{"a": 1}\n'
    # The dataset's name is not a model.
    assert git("ls-remote", url(ds, alice), check=False).returncode != 0


def test_private_repo_needs_a_token(api, alice, bob, repo_name, tmp_path):
    api.create_repo(repo_name, private=True)
    api.create_commit(repo_name, operations=[CommitOperationAdd("secret.txt", b"s3cret\n")],
                      commit_message="secret")
    # Without credentials: 401 with a Basic challenge, so git asks (and,
    # told not to prompt, fails).
    r = httpx.get(f"{ENDPOINT}/{repo_name}/info/refs", params={"service": "git-upload-pack"})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic"), r.headers
    p = git("clone", url(repo_name), str(tmp_path / "anon"), check=False)
    assert p.returncode != 0 and not (tmp_path / "anon" / "secret.txt").exists()
    assert "could not read Username" in p.stderr or "Authentication failed" in p.stderr, p.stderr
    # A wrong token is refused the same way.
    p = git("clone", url(repo_name, "pdk_" + "0" * 40), str(tmp_path / "bad"), check=False)
    assert p.returncode != 0 and "Authentication failed" in p.stderr, p.stderr
    # Another tenant's token: the repo does not exist for them.
    p = git("clone", url(repo_name, bob), str(tmp_path / "bob"), check=False)
    assert p.returncode != 0 and "not found" in p.stderr, p.stderr
    # The owner's token, as the password of any user name.
    git("clone", url(repo_name, alice), str(tmp_path / "ok"))
    assert (tmp_path / "ok" / "secret.txt").read_bytes() == b"s3cret\n"
    # A pack request is decided the same way as the advertisement.
    r = httpx.post(f"{ENDPOINT}/{repo_name}/git-upload-pack", content=b"0000",
                      headers={"Content-Type": "application/x-git-upload-pack-request"})
    assert r.status_code == 401


def test_gated_repo_serves_only_who_passed(api, alice, bob, repo_name, tmp_path):
    api.create_repo(repo_name)
    api.create_commit(repo_name, operations=[CommitOperationAdd("w.txt", b"weights\n")], commit_message="w")
    api.update_repo_settings(repo_name, gated="manual")
    p = git("clone", url(repo_name, bob), str(tmp_path / "bob"), check=False)
    assert p.returncode != 0 and "403" in p.stderr, p.stderr
    # Anonymous callers are asked for credentials.
    p = git("clone", url(repo_name), str(tmp_path / "anon"), check=False)
    assert p.returncode != 0 and "could not read Username" in p.stderr, p.stderr
    git("clone", url(repo_name, alice), str(tmp_path / "alice"))
    # Once bob's request is accepted, he clones.
    r = httpx.post(f"{ENDPOINT}/api/v1/repos/models/{repo_name}/access-requests",
                      headers={"Authorization": f"Bearer {bob}"}, json={"fields": {}})
    assert r.status_code == 201, r.text
    api.accept_access_request(repo_name, "bob")
    git("clone", url(repo_name, bob), str(tmp_path / "bob2"))
    assert (tmp_path / "bob2" / "w.txt").read_bytes() == b"weights\n"


def test_bad_requests_are_refused(api, alice, model):
    auth = ("git", alice)
    base = f"{ENDPOINT}/{model}"
    r = httpx.get(f"{base}/info/refs", auth=auth)
    assert r.status_code == 400 and "smart HTTP" in r.json()["error"], r.text
    r = httpx.get(f"{base}/info/refs", params={"service": "git-frobnicate"}, auth=auth)
    assert r.status_code == 400
    r = httpx.post(f"{base}/git-upload-pack", content=b"zzzz", auth=auth)
    assert r.status_code == 400
    # A want no commit of the repo has.
    body = b"0032want " + b"1" * 40 + b"\n00000009done\n"
    r = httpx.post(f"{base}/git-upload-pack", content=body, auth=auth)
    assert r.status_code == 400 and "not our ref" in r.text, r.text


def git_user(dest):
    git("config", "user.name", "Pat Pusher", cwd=dest)
    git("config", "user.email", "pat@example.com", cwd=dest)


def test_push_with_lfs_reads_back_byte_for_byte(api, alice, alice_ro, model, tmp_path):
    dest = tmp_path / "c"
    git("clone", url(model, alice), str(dest))
    git_user(dest)
    # A text change and a new LFS-tracked binary (the hub's .gitattributes
    # already tracks *.bin with LFS; git-lfs uploads it through the batch API
    # with the same Basic credentials before the ref update).
    (dest / "nested" / "deeper" / "notes.txt").write_text("one\ntwo\nthree\nfour\n")
    blob = tmp_path / "new.bin"
    write_random(blob, 1 << 20, seed=11)
    (dest / "extra").mkdir()
    (dest / "extra" / "new.bin").write_bytes(blob.read_bytes())
    git("add", "-A", cwd=dest)
    assert "new.bin" in git("lfs", "status", cwd=dest).stdout
    git("commit", "-qm", "pushed with git", cwd=dest)
    git("push", "origin", "main", cwd=dest)
    head = git("rev-parse", "HEAD", cwd=dest).stdout.strip()
    assert api_log(api, model)[0] == head
    assert git("log", "--format=%H", cwd=dest).stdout.split() == api_log(api, model)
    files = api.list_repo_files(model)
    assert "extra/new.bin" in files and "nested/deeper/notes.txt" in files
    got = open(hf_hub_download(model, "nested/deeper/notes.txt", token=alice, cache_dir=str(tmp_path / "hf")), "rb").read()
    assert got == b"one\ntwo\nthree\nfour\n"
    got = open(hf_hub_download(model, "extra/new.bin", token=alice, cache_dir=str(tmp_path / "hf")), "rb").read()
    assert got == blob.read_bytes()
    info = api.get_paths_info(model, ["extra/new.bin"])[0]
    assert info.lfs is not None and info.lfs.size == 1 << 20

    # A fresh clone is the pushed tree, fsck-clean.
    fresh = tmp_path / "fresh"
    git("clone", url(model, alice), str(fresh))
    git("fsck", "--full", "--strict", cwd=fresh)
    assert (fresh / "extra" / "new.bin").read_bytes() == blob.read_bytes()
    assert git("rev-parse", "HEAD", cwd=fresh).stdout.strip() == head

    # A read-only token is refused (403), and main does not move.
    (dest / "ro.txt").write_text("ro\n")
    git("add", "ro.txt", cwd=dest)
    git("commit", "-qm", "read only", cwd=dest)
    p = git("push", url(model, alice_ro), "HEAD:main", cwd=dest, check=False)
    assert p.returncode != 0 and "403" in p.stderr, p.stderr
    # Anonymous: asked for credentials (401), which git may not prompt for.
    p = git("push", url(model), "HEAD:main", cwd=dest, check=False)
    assert p.returncode != 0 and "could not read Username" in p.stderr, p.stderr
    assert api_log(api, model)[0] == head


def test_push_of_a_pointer_never_uploaded_is_refused(api, alice, model, tmp_path):
    dest = tmp_path / "c"
    git("clone", url(model, alice), str(dest), env={"GIT_LFS_SKIP_SMUDGE": "1"})
    git_user(dest)
    head = api_log(api, model)[0]
    # A pointer written by hand (no git-lfs clean filter, no pre-push hook).
    pointer = ("version https://git-lfs.github.com/spec/v1\n"
               f"oid sha256:{'ab' * 32}\nsize 12345\n")
    (dest / "ghost.txt").write_text(pointer)
    git("-c", "filter.lfs.clean=cat", "add", "ghost.txt", cwd=dest)
    git("commit", "-qm", "ghost pointer", "--no-verify", cwd=dest)
    p = git("push", "--no-verify", "origin", "main", cwd=dest, check=False, env={"GIT_LFS_SKIP_PUSH": "1"})
    assert p.returncode != 0, p.stderr
    assert "was not uploaded" in p.stderr, p.stderr
    assert api_log(api, model)[0] == head


def test_push_follows_the_api_rules(api, alice, model, tmp_path):
    """What an API commit refuses or stores with LFS is refused in a push,
    with a reason git prints: a path that differs from another only by case,
    a binary file or a file an LFS rule covers pushed without git-lfs."""
    dest = tmp_path / "c"
    git("clone", url(model, alice), str(dest), env={"GIT_LFS_SKIP_SMUDGE": "1"})
    git_user(dest)
    head = api_log(api, model)[0]
    cases = [
        ("README.MD", b"# twin\n", "differ only by case"),
        ("raw.dat", b"\0binary", "is a binary file"),
        ("weights.bin", b"not a pointer\n", "matches an LFS rule of .gitattributes"),
    ]
    for path, content, reason in cases:
        git("reset", "-q", "--hard", head, cwd=dest)
        (dest / path).write_bytes(content)
        # Without git-lfs's filter: the file goes in as it is.
        oid = git("hash-object", "-w", "--no-filters", path, cwd=dest).stdout.strip()
        git("update-index", "--add", "--cacheinfo", f"100644,{oid},{path}", cwd=dest)
        git("commit", "-qm", path, "--no-verify", cwd=dest)
        p = git("push", "--no-verify", "origin", "main", cwd=dest, check=False, env={"GIT_LFS_SKIP_PUSH": "1"})
        assert p.returncode != 0, p.stderr
        assert reason in p.stderr and "[remote rejected]" in p.stderr, p.stderr
        assert api_log(api, model)[0] == head


def test_push_deletes_branches_and_tags(api, alice, alice_ro, model, tmp_path):
    api.create_branch(model, branch="dev")
    api.create_branch(model, branch="keep")
    api.create_tag(model, tag="v1")
    dest = tmp_path / "c"
    git("clone", "--no-checkout", url(model, alice), str(dest))
    git("push", "origin", "--delete", "dev", "v1", cwd=dest)
    refs = api.list_repo_refs(model)
    assert sorted(b.name for b in refs.branches) == ["keep", "main"]
    assert not refs.tags
    # Never the default branch; never without write access.
    p = git("push", "origin", "--delete", "main", cwd=dest, check=False)
    assert p.returncode != 0 and "default branch" in p.stderr, p.stderr
    p = git("push", url(model, alice_ro), "--delete", "keep", cwd=dest, check=False)
    assert p.returncode != 0 and "403" in p.stderr, p.stderr
    assert sorted(b.name for b in api.list_repo_refs(model).branches) == ["keep", "main"]


def test_bad_pushes_are_refused(api, alice, model):
    auth = ("git", alice)
    base = f"{ENDPOINT}/{model}"
    head = api_log(api, model)[0]
    r = httpx.get(f"{base}/info/refs", params={"service": "git-receive-pack"}, auth=auth)
    assert r.status_code == 200 and b"report-status" in r.content, r.text
    r = httpx.get(f"{base}/info/refs", params={"service": "git-receive-pack"})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
    line = f"{head} {'1' * 40} refs/heads/main\0report-status\n".encode()
    body = b"%04x" % (len(line) + 4) + line + b"0000" + b"PACK\0\0\0\x02\0\0\0\x01corrupt"
    r = httpx.post(f"{base}/git-receive-pack", content=body, auth=auth)
    assert r.status_code == 200 and b"unpack ok" not in r.content and b"ng refs/heads/main" in r.content, r.content
    assert api_log(api, model)[0] == head
