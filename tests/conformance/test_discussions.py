"""Discussions and pull requests with the real huggingface_hub client: open,
comment, rename, close and reopen a discussion; a pull request from
create_commit(create_pr=True) by someone without write access, its diff,
merged by the owner; a draft pull request that commits turn open; a merge
conflict refused with the conflicting file; who may do what."""

import pytest
from conftest import ENDPOINT
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError


@pytest.fixture
def repo(api, repo_name):
    api.create_repo(repo_name)
    api.create_commit(repo_name, operations=[
        CommitOperationAdd("README.md", b"# Model\n\nA card.\n"),
        CommitOperationAdd("config.json", b'{"architectures": ["BertModel"]}'),
        CommitOperationAdd("notes.txt", b"one\ntwo\nthree\n"),
    ], commit_message="initial")
    return repo_name


def status_code(e):
    return e.value.response.status_code


def test_discussion_lifecycle(api, bob, repo):
    bob_api = HfApi(endpoint=ENDPOINT, token=bob)
    d = bob_api.create_discussion(repo, title="Does it work on CPU?", description="Asking for a friend.")
    assert (d.num, d.title, d.status, d.author, d.is_pull_request) == (1, "Does it work on CPU?", "open", "bob", False)
    assert d.events[0].type == "comment" and d.events[0].content == "Asking for a friend."

    c = api.comment_discussion(repo, d.num, "Yes, with the ONNX engine.")
    assert c.content == "Yes, with the ONNX engine." and c.author == "alice"
    api.rename_discussion(repo, d.num, "Runs on CPU?")
    closed = bob_api.change_discussion_status(repo, d.num, "closed", comment="Thanks!")
    assert closed.new_status == "closed"

    listed = list(api.get_repo_discussions(repo))
    assert [(x.num, x.title, x.status) for x in listed] == [(1, "Runs on CPU?", "closed")]
    assert list(api.get_repo_discussions(repo, discussion_status="open")) == []
    assert [x.num for x in api.get_repo_discussions(repo, author="bob")] == [1]

    details = api.get_discussion_details(repo, d.num)
    kinds = [e.type for e in details.events]
    assert kinds == ["comment", "comment", "title-change", "comment", "status-change"], kinds
    assert details.events[2].old_title == "Does it work on CPU?" and details.events[2].new_title == "Runs on CPU?"

    # Edits keep the history; only the author edits; writers hide.
    edited = bob_api.edit_discussion_comment(repo, d.num, d.events[0].id, "Asking for two friends.")
    assert edited.content == "Asking for two friends." and edited.edited
    assert [h["raw"] for h in edited.edit_history] == ["Asking for two friends.", "Asking for a friend."]
    with pytest.raises(HfHubHTTPError) as e:
        api.edit_discussion_comment(repo, d.num, d.events[0].id, "not yours")
    assert status_code(e) == 403
    hidden = api.hide_discussion_comment(repo, d.num, c.id)
    assert hidden.hidden and hidden.content == ""

    # The discussion reopens.
    assert bob_api.change_discussion_status(repo, d.num, "open").new_status == "open"


def test_pull_request_from_a_reader_merged_by_the_owner(api, bob, repo, tmp_path):
    bob_api = HfApi(endpoint=ENDPOINT, token=bob)
    # bob cannot write to alice's repo, but can propose a change.
    with pytest.raises(HfHubHTTPError) as e:
        bob_api.create_commit(repo, operations=[CommitOperationAdd("README.md", b"vandalism")], commit_message="x")
    assert status_code(e) == 403
    info = bob_api.create_commit(repo, operations=[
        CommitOperationAdd("README.md", b"# Model\n\nA better card.\n"),
    ], commit_message="Improve the card", commit_description="Clearer wording.", create_pr=True)
    assert info.pr_num == 1 and info.pr_url.endswith("/discussions/1")
    pr = api.get_discussion_details(repo, info.pr_num)
    assert pr.is_pull_request and pr.status == "open" and pr.target_branch == "refs/heads/main"
    assert pr.git_reference == "refs/pr/1" and pr.conflicting_files == []
    assert "-A card.\n+A better card.\n" in pr.diff, pr.diff
    assert [e.type for e in pr.events] == ["comment", "commit"]
    assert pr.events[1].summary == "Improve the card" and pr.events[1].oid == info.oid

    # The PR revision reads like any other; main is unchanged until merged.
    assert open(hf_hub_download(repo, "README.md", revision=pr.git_reference, cache_dir=tmp_path)).read() == "# Model\n\nA better card.\n"
    assert open(hf_hub_download(repo, "README.md", cache_dir=tmp_path / "m0")).read() == "# Model\n\nA card.\n"

    with pytest.raises(HfHubHTTPError) as e:
        bob_api.merge_pull_request(repo, info.pr_num)
    assert status_code(e) == 403
    api.merge_pull_request(repo, info.pr_num, comment="Thanks!")
    merged = api.get_discussion_details(repo, info.pr_num)
    assert merged.status == "merged" and merged.merge_commit_oid
    assert api.list_repo_commits(repo)[0].commit_id == merged.merge_commit_oid
    assert open(hf_hub_download(repo, "README.md", cache_dir=tmp_path / "m1")).read() == "# Model\n\nA better card.\n"
    # A merged PR takes no more commits.
    with pytest.raises(HfHubHTTPError) as e:
        bob_api.create_commit(repo, operations=[CommitOperationAdd("x.txt", b"x")], commit_message="late", revision="refs/pr/1")
    assert status_code(e) == 409


def test_draft_pull_request_commits_and_lfs(api, repo, tmp_path):
    pr = api.create_pull_request(repo, title="Add weights")
    assert pr.status == "draft" and pr.num == 1
    blob = bytes(range(256)) * 4096  # binary: stored through LFS
    api.upload_file(path_or_fileobj=blob, path_in_repo="w.bin", repo_id=repo, revision=pr.git_reference,
                    commit_message="weights")
    # A draft is not merged until it is set open.
    assert api.get_discussion_details(repo, pr.num).status == "draft"
    with pytest.raises(HfHubHTTPError) as e:
        api.merge_pull_request(repo, pr.num)
    assert status_code(e) == 409 and "draft" in str(e.value)
    api.change_discussion_status(repo, pr.num, "open")
    api.merge_pull_request(repo, pr.num)
    files = {f.path: f for f in api.list_repo_tree(repo)}
    assert files["w.bin"].lfs is not None and files["w.bin"].size == len(blob)
    assert open(hf_hub_download(repo, "w.bin", cache_dir=tmp_path), "rb").read() == blob


def test_a_conflicting_pull_request_is_refused_and_nothing_changes(api, repo):
    info = api.create_commit(repo, operations=[CommitOperationAdd("notes.txt", b"one\nTWO\nthree\n")],
                             commit_message="pr change", create_pr=True)
    other = api.create_commit(repo, operations=[CommitOperationAdd("notes.txt", b"one\n2\nthree\n")],
                              commit_message="main change")
    details = api.get_discussion_details(repo, info.pr_num)
    assert details.conflicting_files == ["notes.txt"]
    with pytest.raises(HfHubHTTPError) as e:
        api.merge_pull_request(repo, info.pr_num)
    assert status_code(e) == 409 and "notes.txt" in str(e.value)
    assert api.list_repo_commits(repo)[0].commit_id == other.oid
    assert api.get_discussion_details(repo, info.pr_num).status == "open"


def test_a_non_conflicting_pull_request_merges_over_new_commits(api, repo, tmp_path):
    info = api.create_commit(repo, operations=[CommitOperationAdd("notes.txt", b"one\nTWO\nthree\n")],
                             commit_message="pr change", create_pr=True)
    api.create_commit(repo, operations=[CommitOperationAdd("other.txt", b"main moved on\n")], commit_message="main change")
    api.merge_pull_request(repo, info.pr_num)
    head = api.list_repo_commits(repo)[0]
    assert head.title.startswith("Merge pull request #1")
    snap = api.snapshot_download(repo, cache_dir=tmp_path)
    assert open(f"{snap}/notes.txt").read() == "one\nTWO\nthree\n"
    assert open(f"{snap}/other.txt").read() == "main moved on\n"


def test_who_may_see_and_take_part(api, bob, alice_ro, repo_name):
    api.create_repo(repo_name, private=True)
    d = api.create_discussion(repo_name, title="private talk")
    bob_api = HfApi(endpoint=ENDPOINT, token=bob)
    with pytest.raises(RepositoryNotFoundError):
        list(bob_api.get_repo_discussions(repo_name))
    with pytest.raises(RepositoryNotFoundError):
        bob_api.comment_discussion(repo_name, d.num, "let me in")
    # A read-only token reads but does not post.
    ro = HfApi(endpoint=ENDPOINT, token=alice_ro)
    assert [x.num for x in ro.get_repo_discussions(repo_name)] == [d.num]
    with pytest.raises(HfHubHTTPError) as e:
        ro.comment_discussion(repo_name, d.num, "hi")
    assert status_code(e) == 403
    with pytest.raises(HfHubHTTPError) as e:
        api.get_discussion_details(repo_name, 99)
    assert status_code(e) == 404
    # Bad input is a 400 that says what was wrong.
    with pytest.raises(HfHubHTTPError) as e:
        api.create_discussion(repo_name, title="x" * 201)
    assert status_code(e) == 400 and "title" in str(e.value)
