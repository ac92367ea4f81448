"""Attack 4 (issue 13, item 7): the smaller holes."""

import hub


def test_repo_restricted_token_cannot_list_its_owners_tokens(tenant):
    ns, _ = tenant
    # An unrestricted admin-scoped token may mint restricted tokens.
    admin_tok = hub.admin("create-token", ns, "--scopes", "read,write,admin", "--name", "owner-admin")
    repo = hub.create_repo(admin_tok, ns, "one")
    r = hub.post("/api/v1/tokens", token=admin_tok,
                 json_body={"name": "only-one-repo", "scopes": ["read", "write"], "repos": [repo]})
    assert r.status in (200, 201), r
    restricted = r.json()["secret"]
    # It works on its repo ...
    assert hub.get(f"/api/models/{repo}", token=restricted).status == 200
    # ... but may not read the account's tokens.
    r = hub.get("/api/v1/tokens", token=restricted)
    print(f"restricted token lists tokens: {r.status} {r.code}")
    assert r.status in (401, 403, 404), f"a repo-restricted token listed its owner's tokens: {r}"
    assert b"owner-admin" not in r.body and b"adversarial" not in r.body
    assert r.is_4xx_with_code(), r


def test_if_range_with_a_stale_validator_sends_the_whole_file(tenant):
    ns, tok = tenant
    repo = hub.create_repo(tok, ns, "ranges")
    data = hub.text_bytes(5000, 3)
    assert hub.commit(tok, repo, [hub.file_op("f.txt", data)]).status == 200
    url = f"/{repo}/resolve/main/f.txt"
    full = hub.get(url, token=tok)
    assert full.status == 200 and full.body == data
    etag = full.header("etag")
    fresh = hub.get(url, token=tok, headers={"Range": "bytes=10-19", "If-Range": etag})
    assert fresh.status == 206 and fresh.body == data[10:20], fresh
    stale = hub.get(url, token=tok, headers={"Range": "bytes=10-19", "If-Range": '"0000stale0000"'})
    print(f"If-Range with a stale ETag: {stale.status}, {len(stale.body)} bytes")
    assert stale.status == 200 and stale.body == data, f"stale If-Range must send the whole file: {stale}"
    weak = hub.get(url, token=tok, headers={"Range": "bytes=10-19", "If-Range": "W/" + etag})
    assert weak.status == 200 and weak.body == data, f"a weak validator never matches If-Range: {weak}"
    dated = hub.get(url, token=tok, headers={"Range": "bytes=10-19", "If-Range": "Thu, 01 Jan 1970 00:00:00 GMT"})
    assert dated.status == 200 and dated.body == data, f"an old date in If-Range must send the whole file: {dated}"


def test_recursive_must_be_a_boolean(tenant):
    ns, tok = tenant
    repo = hub.create_repo(tok, ns, "listing")
    assert hub.commit(tok, repo, [hub.file_op("d/f.txt", b"x")]).status == 200
    for ok in ("true", "false", "1", "0", "True"):
        r = hub.get(f"/api/models/{repo}/tree/main?recursive={ok}", token=tok)
        assert r.status == 200, (ok, r)
    for bad in ("maybe", "yes please", "2", ""):
        r = hub.get(f"/api/models/{repo}/tree/main?recursive={bad.replace(' ', '%20')}", token=tok)
        print(f"recursive={bad!r}: {r.status} {r.code}")
        if bad == "":
            assert r.status in (200, 400), r
            continue
        assert r.status == 400 and r.is_4xx_with_code(), f"recursive={bad!r} was accepted: {r}"


def test_missing_static_asset_is_a_json_404():
    for path in ("/static/000000000000/nope.js", "/static/x/missing.css", "/static/0/app.css.map",
                 "/static/x/%2e%2e%2fapp.css"):
        r = hub.get(path)
        print(f"{path}: {r.status} {r.body[:80]!r}")
        assert r.status == 404, r
        assert r.header("content-type", "").startswith("application/json"), f"{path}: {r.headers}"
        assert r.is_4xx_with_code(), f"{path}: a 404 without a JSON error body: {r}"
