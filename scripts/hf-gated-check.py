"""Gated and private repos through the real `huggingface_hub` client.

Run by scripts/hf-gated-check.sh against a live hub: HF_ENDPOINT, OWNER_TOKEN,
USER_TOKEN (read-only), USER_WRITE_TOKEN (the same user's, read and write),
OTHER_TOKEN, OTHER_NAME and USER_NAME come from the environment.
"""
import os
import tempfile
import sys

import json
import urllib.error
import urllib.request
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

EP = os.environ["HF_ENDPOINT"]
owner = HfApi(endpoint=EP, token=os.environ["OWNER_TOKEN"])
user = HfApi(endpoint=EP, token=os.environ["USER_TOKEN"])
user_name = os.environ["USER_NAME"]
other_name = os.environ["OTHER_NAME"]
me = owner.whoami()["name"]
repo = f"{me}/gated"
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    checks += 1
    print(f"ok: {what}")


check(owner.whoami()["auth"]["accessToken"]["role"] == "write", "whoami-v2 reports the write role")
check(user.whoami()["auth"]["accessToken"]["role"] == "read", "whoami-v2 reports the read role")

owner.create_repo(repo, exist_ok=True)
owner.upload_file(path_or_fileobj=b"weights", path_in_repo="w.txt", repo_id=repo)
owner.update_repo_settings(repo, gated="manual")


def download(token):
    # A fresh cache each time (force_download would wrap the error in a ValueError).
    cache = tempfile.mkdtemp(dir=os.environ["CACHE"])
    return hf_hub_download(repo, "w.txt", token=token, endpoint=EP, cache_dir=cache)


info = user.model_info(repo)
check(info.gated == "manual", "metadata stays visible on a gated repo")
try:
    download(os.environ["USER_TOKEN"])
    check(False, "download before approval raises GatedRepoError")
except GatedRepoError:
    check(True, "download before approval raises GatedRepoError")

def ask(token):
    return urllib.request.Request(
        f"{EP}/api/v1/repos/models/{repo}/access-requests",
        data=json.dumps({"fields": {"why": "tests"}}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )


# Asking changes state: the read-only token is refused, a write token asks.
try:
    urllib.request.urlopen(ask(os.environ["USER_TOKEN"]))
    check(False, "a read-only token cannot ask for access")
except urllib.error.HTTPError as e:
    check(e.code == 403, "a read-only token cannot ask for access")
with urllib.request.urlopen(ask(os.environ["USER_WRITE_TOKEN"])) as r:
    check(r.status == 201 and json.loads(r.read())["status"] == "pending", "a user asks for access")
pending = list(owner.list_pending_access_requests(repo))
check([p.username for p in pending] == [user_name], "list_pending_access_requests shows the request")
check(pending[0].fields == {"why": "tests"}, "the request carries its fields")
owner.accept_access_request(repo, user_name)
check(open(download(os.environ["USER_TOKEN"]), "rb").read() == b"weights", "after accept_access_request the download works")
check([p.username for p in owner.list_accepted_access_requests(repo)] == [user_name], "list_accepted_access_requests")
owner.reject_access_request(repo, user_name, rejection_reason="no")
try:
    download(os.environ["USER_TOKEN"])
    check(False, "after reject_access_request downloads are gated again")
except GatedRepoError:
    check(True, "after reject_access_request downloads are gated again")
owner.grant_access(repo, other_name)
check(open(download(os.environ["OTHER_TOKEN"]), "rb").read() == b"weights", "grant_access lets a user download")
try:
    list(user.list_pending_access_requests(repo))
    check(False, "a non-admin cannot list access requests")
except Exception as e:  # HfHubHTTPError 403
    check(getattr(getattr(e, "response", None), "status_code", None) == 403, "a non-admin cannot list access requests")

owner.create_repo(f"{me}/private", private=True, exist_ok=True)
try:
    user.model_info(f"{me}/private")
    check(False, "another user's private repo raises RepositoryNotFoundError")
except GatedRepoError:
    check(False, "another user's private repo is not reported as gated")
except RepositoryNotFoundError:
    check(True, "another user's private repo raises RepositoryNotFoundError")
print(f"{checks} passed, 0 failed")
