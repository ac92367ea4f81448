//! Tenancy, access control and the management API, through the real app in
//! process against a real PostgreSQL: sessions and CSRF, JWT attacks and key
//! rotation, tokens, members, quotas, rate limits, gated repos and the audit log.

use crate::common::*;
use actix_web::test::TestRequest;
use hub_testkit::{app, TestState};
use serde_json::{json, Value};

// ---------------------------------------------------------------- sessions

/// Signs in; returns (session cookie, csrf token, raw Set-Cookie headers).
pub(crate) async fn login(app: &impl App, user: &str, pw: &str) -> (String, String, Vec<String>) {
    let (st, h, b) = call(
        app,
        TestRequest::post()
            .uri("/api/v1/auth/login")
            .set_json(json!({"username": user, "password": pw})),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let set: Vec<String> = h
        .get_all("set-cookie")
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let session = set
        .iter()
        .find(|c| c.starts_with("paddock_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("paddock_session=")
        .to_string();
    let csrf = json_of(&b)["csrf_token"].as_str().unwrap().to_string();
    (session, csrf, set)
}

/// Signs alice in through a proxy that says the request came over https;
/// the raw Set-Cookie headers.
async fn login_forwarded(app: &impl App) -> Vec<String> {
    let (st, h, b) = call(
        app,
        TestRequest::post()
            .uri("/api/v1/auth/login")
            .insert_header(("X-Forwarded-Proto", "https"))
            .set_json(json!({"username": "alice", "password": "correct horse"})),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    h.get_all("set-cookie")
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn cookie(s: &str) -> (&'static str, String) {
    ("Cookie", format!("paddock_session={s}"))
}

#[actix_web::test]
async fn login_cookie_flags_session_and_logout() {
    let mut t = TestState::new().await;
    user_with_password(&t, "alice", "correct horse", false).await;
    {
        let app = app(&t.state).await;
        // Wrong password, unknown user and impossible names look the same
        // (a NUL byte in the name never reaches SQL: no 500).
        for (u, p) in [
            ("alice", "wrong password"),
            ("nobody", "correct horse"),
            ("\u{0}9\u{9c}q", "correct horse"),
            ("../alice", "correct horse"),
        ] {
            let (st, _, b) = call(
                &app,
                TestRequest::post()
                    .uri("/api/v1/auth/login")
                    .set_json(json!({"username": u, "password": p})),
            )
            .await;
            assert_eq!(st, 401);
            assert_eq!(json_of(&b)["error"], "invalid username or password");
        }
        // Malformed bodies are 400 and say why.
        let (st, _, b) = call(
            &app,
            TestRequest::post()
                .uri("/api/v1/auth/login")
                .set_payload("{\"username\": 3}"),
        )
        .await;
        assert_eq!(st, 400);
        assert_eq!(json_of(&b)["code"], "invalid_request");

        let (session, csrf, set) = login(&app, "alice", "correct horse").await;
        let sc = set
            .iter()
            .find(|c| c.starts_with("paddock_session="))
            .unwrap();
        assert!(sc.contains("HttpOnly"), "{sc}");
        assert!(sc.contains("SameSite=Lax"), "{sc}");
        assert!(
            !sc.contains("Secure"),
            "http public URL: no Secure flag: {sc}"
        );
        assert!(session.split('.').count() == 3, "a JWT");

        let (st, _, b) = call(
            &app,
            TestRequest::get()
                .uri("/api/v1/auth/session")
                .insert_header(cookie(&session)),
        )
        .await;
        assert_eq!(st, 200);
        assert_eq!(json_of(&b)["user"]["name"], "alice");
        assert_eq!(json_of(&b)["csrf_token"], csrf.as_str());

        // Logout (a POST: CSRF applies) ends the session server-side.
        let (st, h, _) = call(
            &app,
            TestRequest::post()
                .uri("/api/v1/auth/logout")
                .insert_header(cookie(&session))
                .insert_header(("Origin", "http://hub.test"))
                .insert_header(("X-CSRF-Token", csrf.as_str())),
        )
        .await;
        assert_eq!(st, 204);
        assert!(h
            .get_all("set-cookie")
            .any(|c| c.to_str().unwrap().starts_with("paddock_session=;")));
        // The old cookie, replayed, is refused.
        let (st, _, _) = call(
            &app,
            TestRequest::get()
                .uri("/api/v1/users/me")
                .insert_header(cookie(&session)),
        )
        .await;
        assert_eq!(st, 401);
    }
    // An http public URL behind a TLS proxy: Secure when a trusted proxy says
    // the request came over https; an untrusted header changes nothing.
    {
        let app = app(&t.state).await;
        for c in login_forwarded(&app).await {
            assert!(!c.contains("Secure"), "untrusted X-Forwarded-Proto: {c}");
        }
    }
    let rate = t.state.tenancy.rate.clone();
    let mut defaults = rate.defaults;
    defaults.trust_forwarded_for = true;
    t.state.tenancy.rate = std::sync::Arc::new(hub_api::ratelimit::RateLimiter::new(defaults));
    {
        let app = app(&t.state).await;
        let set = login_forwarded(&app).await;
        assert_eq!(set.len(), 2);
        for c in set {
            assert!(
                c.contains("Secure"),
                "trusted X-Forwarded-Proto: https: {c}"
            );
        }
    }
    t.state.tenancy.rate = rate;
    // Secure when the public URL is https.
    t.state.public_url = "https://hub.test".into();
    let app = app(&t.state).await;
    let (_, _, set) = login(&app, "alice", "correct horse").await;
    for c in set {
        assert!(c.contains("Secure"), "{c}");
        assert!(c.contains("SameSite=Lax"), "{c}");
    }
}

#[actix_web::test]
async fn csrf_cross_origin_posts_change_nothing() {
    let t = TestState::new().await;
    user_with_password(&t, "alice", "correct horse", false).await;
    let app = app(&t.state).await;
    let (session, csrf, _) = login(&app, "alice", "correct horse").await;
    let org = |name: &str| json!({"name": name});
    let attempts: Vec<(&str, Vec<(&str, String)>)> = vec![
        (
            "no token, own origin",
            vec![("Origin", "http://hub.test".into())],
        ),
        (
            "token, foreign origin",
            vec![
                ("Origin", "http://evil.test".into()),
                ("X-CSRF-Token", csrf.clone()),
            ],
        ),
        (
            "token, foreign referer",
            vec![
                ("Referer", "http://evil.test/page".into()),
                ("X-CSRF-Token", csrf.clone()),
            ],
        ),
        ("token, no origin", vec![("X-CSRF-Token", csrf.clone())]),
        (
            "wrong token",
            vec![
                ("Origin", "http://hub.test".into()),
                ("X-CSRF-Token", "0".repeat(48)),
            ],
        ),
        (
            "null origin",
            vec![("Origin", "null".into()), ("X-CSRF-Token", csrf.clone())],
        ),
    ];
    for (i, (what, headers)) in attempts.into_iter().enumerate() {
        let mut req = TestRequest::post()
            .uri("/api/v1/orgs")
            .insert_header(cookie(&session))
            .set_json(org(&format!("org{i}")));
        for h in headers {
            req = req.insert_header(h);
        }
        let (st, _, b) = call(&app, req).await;
        assert_eq!(st, 403, "{what}: {}", String::from_utf8_lossy(&b));
        assert_eq!(json_of(&b)["code"], "csrf_rejected", "{what}");
    }
    // Nothing was created.
    let n: (i64,) =
        sqlx::query_as("SELECT count(*) FROM namespaces WHERE kind = 'org' AND name LIKE 'org%'")
            .fetch_one(&t.state.db)
            .await
            .unwrap();
    assert_eq!(n.0, 0);
    // A form post from another site (what a browser would send) changes nothing either.
    let (st, _, _) = call(
        &app,
        TestRequest::post()
            .uri("/api/repos/create")
            .insert_header(cookie(&session))
            .insert_header(("Origin", "http://evil.test"))
            .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
            .set_payload("name=m"),
    )
    .await;
    assert_eq!(st, 403);
    // With the token and the hub's origin it works.
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/v1/orgs")
            .insert_header(cookie(&session))
            .insert_header(("Origin", "http://hub.test"))
            .insert_header(("X-CSRF-Token", csrf.as_str()))
            .set_json(org("okorg")),
    )
    .await;
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&b));
    // Safe methods need no token.
    let (st, _, _) = call(
        &app,
        TestRequest::get()
            .uri("/api/v1/orgs/okorg/members")
            .insert_header(cookie(&session)),
    )
    .await;
    assert_eq!(st, 200);
    // Bearer requests are not subject to CSRF.
    let (_, tok) = t.user("bob", false, &["write"]).await;
    let (st, _, _) = call(
        &app,
        TestRequest::post()
            .uri("/api/v1/orgs")
            .insert_header(bearer(&tok))
            .insert_header(("Origin", "http://evil.test"))
            .set_json(org("bobsorg")),
    )
    .await;
    assert_eq!(st, 201);
}

// ---------------------------------------------------------------- JWTs

fn b64(v: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

/// A JWT from raw header and claims JSON, signed (HS256) with `key`, or with
/// the given signature bytes.
fn raw_jwt(header: &Value, claims: &Value, key: Option<&[u8]>) -> String {
    use hmac::Mac;
    let head = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = match key {
        Some(k) => {
            let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(k).unwrap();
            m.update(head.as_bytes());
            m.finalize().into_bytes().to_vec()
        }
        None => vec![],
    };
    format!("{head}.{}", b64(&sig))
}

async fn signing_key(t: &TestState) -> (String, Vec<u8>) {
    sqlx::query_as("SELECT kid, secret FROM signing_keys WHERE retired_at IS NULL ORDER BY created_at DESC LIMIT 1")
        .fetch_one(&t.state.db)
        .await
        .unwrap()
}

#[actix_web::test]
async fn jwt_attacks_are_401() {
    let t = TestState::new().await;
    let uid = user_with_password(&t, "alice", "correct horse", false).await;
    let app = app(&t.state).await;
    let (kid, key) = signing_key(&t).await;
    let now = chrono::Utc::now().timestamp();
    let good = json!({"iss": "paddock-hub", "aud": "paddock-session", "sub": uid.to_string(),
                      "exp": now + 600, "iat": now, "sv": 0, "csrf": "c"});
    let hs = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
    // The control: a well-formed token works, as a bearer and as a cookie.
    let ok = raw_jwt(&hs, &good, Some(&key));
    for req in [
        TestRequest::get().insert_header(bearer(&ok)),
        TestRequest::get().insert_header(cookie(&ok)),
    ] {
        let (st, _, b) = call(&app, req.uri("/api/v1/users/me")).await;
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    }
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = good.clone();
        f(&mut c);
        raw_jwt(&hs, &c, Some(&key))
    };
    // Change the payload, keep the signature.
    let tampered = {
        let parts: Vec<&str> = ok.split('.').collect();
        let mut c = good.clone();
        c["sub"] = json!("1");
        format!(
            "{}.{}.{}",
            parts[0],
            b64(c.to_string().as_bytes()),
            parts[2]
        )
    };
    let rsa_public_pem = b"-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo\n-----END PUBLIC KEY-----\n";
    let attacks: Vec<(&str, String)> = vec![
        (
            "alg none",
            raw_jwt(&json!({"alg": "none", "kid": kid}), &good, None),
        ),
        (
            "alg none, no kid",
            raw_jwt(&json!({"alg": "none"}), &good, None),
        ),
        (
            "RS256 header (HS/RS confusion)",
            raw_jwt(
                &json!({"alg": "RS256", "kid": kid}),
                &good,
                Some(rsa_public_pem),
            ),
        ),
        (
            "HS256 keyed with a public key",
            raw_jwt(&hs, &good, Some(rsa_public_pem)),
        ),
        ("wrong key", raw_jwt(&hs, &good, Some(b"not the key"))),
        (
            "unknown kid",
            raw_jwt(&json!({"alg": "HS256", "kid": "nope"}), &good, Some(&key)),
        ),
        (
            "no kid",
            raw_jwt(&json!({"alg": "HS256"}), &good, Some(&key)),
        ),
        (
            "expired beyond leeway",
            with(&|c| c["exp"] = json!(now - 120)),
        ),
        (
            "missing exp",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        (
            "exp as string",
            with(&|c| c["exp"] = json!((now + 600).to_string())),
        ),
        (
            "nbf as string",
            with(&|c| c["nbf"] = json!(now.to_string())),
        ),
        ("nbf in the future", with(&|c| c["nbf"] = json!(now + 3600))),
        ("wrong aud", with(&|c| c["aud"] = json!("paddock-lfs"))),
        (
            "missing aud",
            with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
        ),
        ("wrong iss", with(&|c| c["iss"] = json!("someone-else"))),
        (
            "missing iss",
            with(&|c| {
                c.as_object_mut().unwrap().remove("iss");
            }),
        ),
        ("stale session version", with(&|c| c["sv"] = json!(7))),
        ("tampered payload", tampered),
        ("garbage", "a.b.c".into()),
    ];
    for (what, jwt) in &attacks {
        for (how, req) in [
            ("bearer", TestRequest::get().insert_header(bearer(jwt))),
            ("cookie", TestRequest::get().insert_header(cookie(jwt))),
        ] {
            let (st, _, b) = call(&app, req.uri("/api/v1/users/me")).await;
            assert_eq!(st, 401, "{what} ({how}): {}", String::from_utf8_lossy(&b));
            assert_eq!(json_of(&b)["code"], "unauthorized");
        }
    }
    // Expired within the leeway (60 s) is still accepted, as documented.
    let (st, _, _) = call(
        &app,
        TestRequest::get()
            .uri("/api/v1/users/me")
            .insert_header(bearer(&with(&|c| c["exp"] = json!(now - 20)))),
    )
    .await;
    assert_eq!(st, 200);
}

#[actix_web::test]
async fn signing_key_rotation_without_restart() {
    let t = TestState::new().await;
    let (_, admin_tok) = t.user("root", true, &["admin", "write"]).await;
    user_with_password(&t, "alice", "correct horse", false).await;
    let app = app(&t.state).await;
    let (s1, _, _) = login(&app, "alice", "correct horse").await;
    let me = |s: &str| {
        TestRequest::get()
            .uri("/api/v1/users/me")
            .insert_header(bearer(s))
    };
    // Rotate: key2 signs from now on, key1 tokens still verify.
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/v1/admin/signing-keys")
            .insert_header(bearer(&admin_tok)),
    )
    .await;
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&b));
    assert!(json_of(&b)["signing"].as_bool().unwrap());
    assert!(!String::from_utf8_lossy(&b).contains("secret"));
    let (st, _, b) = call(
        &app,
        TestRequest::get()
            .uri("/api/v1/admin/signing-keys")
            .insert_header(bearer(&admin_tok)),
    )
    .await;
    assert_eq!(st, 200);
    let keys = json_of(&b)["items"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 2);
    assert!(keys[0]["signing"].as_bool().unwrap());
    let key1 = keys[1]["kid"].as_str().unwrap().to_string();
    let (s2, _, _) = login(&app, "alice", "correct horse").await;
    assert_eq!(call(&app, me(&s1)).await.0, 200);
    assert_eq!(call(&app, me(&s2)).await.0, 200);
    // Non-admins cannot touch keys.
    let (_, user_tok) = t.user("bob", false, &["admin", "write"]).await;
    let (st, _, _) = call(
        &app,
        TestRequest::delete()
            .uri(&format!("/api/v1/admin/signing-keys/{key1}"))
            .insert_header(bearer(&user_tok)),
    )
    .await;
    assert_eq!(st, 403);
    // Retire key1: its tokens fail, key2's keep working; no restart.
    let (st, _, _) = call(
        &app,
        TestRequest::delete()
            .uri(&format!("/api/v1/admin/signing-keys/{key1}"))
            .insert_header(bearer(&admin_tok)),
    )
    .await;
    assert_eq!(st, 204);
    assert_eq!(call(&app, me(&s1)).await.0, 401);
    assert_eq!(call(&app, me(&s2)).await.0, 200);
    // The last active key cannot be retired.
    let key2 = t.state.keys.signing_kid().unwrap();
    let (st, _, b) = call(
        &app,
        TestRequest::delete()
            .uri(&format!("/api/v1/admin/signing-keys/{key2}"))
            .insert_header(bearer(&admin_tok)),
    )
    .await;
    assert_eq!(st, 409, "{}", String::from_utf8_lossy(&b));
    // Another replica (a second key ring on the same database) sees the retirement.
    let other = hub_api::auth::jwt::KeyRing::load(t.state.db.clone())
        .await
        .unwrap();
    let r: Result<hub_api::auth::session::SessionClaims, _> =
        other.verify(&s1, hub_api::auth::session::AUDIENCE).await;
    assert!(r.is_err());
}

// ---------------------------------------------------------------- tokens

#[actix_web::test]
async fn tokens_create_list_revoke_and_whoami_roles() {
    let t = TestState::new().await;
    let (uid, admin_scoped) = t.user("alice", false, &["admin", "write"]).await;
    let (_, read_only) = token(&t, uid, &["read"], None, None).await;
    let app = app(&t.state).await;
    let create = |tok: &str, body: Value| {
        TestRequest::post()
            .uri("/api/v1/tokens")
            .insert_header(bearer(tok))
            .set_json(body)
    };
    // A read token cannot mint tokens.
    let (st, _, _) = call(
        &app,
        create(&read_only, json!({"name": "x", "scopes": ["read"]})),
    )
    .await;
    assert_eq!(st, 403);
    // Bad input: 4xx saying what, nothing created.
    for bad in [
        json!({"name": "x", "scopes": ["root"]}),
        json!({"name": "x", "scopes": []}),
        json!({"name": "", "scopes": ["read"]}),
        json!({"name": "x", "scopes": ["read"], "expires_in_days": 0}),
        json!({"name": "x", "scopes": ["read"], "repos": ["../etc"]}),
        json!({"name": "x", "scopes": ["read"], "namespaces": []}),
        json!({"name": "x", "scopes": ["worker"]}),
        json!({"name": "x", "scopes": ["read"], "extra": 1}),
        json!({"name": "x", "scopes": "read"}),
    ] {
        let (st, _, b) = call(&app, create(&admin_scoped, bad.clone())).await;
        assert!((400..500).contains(&st), "{bad}: {st}");
        assert!(json_of(&b)["code"].is_string());
    }
    let (st, _, b) = call(
        &app,
        create(
            &admin_scoped,
            json!({"name": "ci", "scopes": ["read", "write"], "repos": ["alice/m"], "expires_in_days": 30}),
        ),
    )
    .await;
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&b));
    let created = json_of(&b);
    let secret = created["secret"].as_str().unwrap().to_string();
    let id = created["token"]["id"].as_i64().unwrap();
    assert!(secret.starts_with("pdk_"));
    assert_eq!(created["token"]["prefix"], &secret[..8]);
    assert_eq!(created["token"]["repos"], json!(["model:alice/m"]));

    // whoami: restricted token is fineGrained; read is read; write is write.
    let who = |tok: &str| {
        TestRequest::get()
            .uri("/api/whoami-v2")
            .insert_header(bearer(tok))
    };
    let (_, _, b) = call(&app, who(&secret)).await;
    let w = json_of(&b);
    assert_eq!(w["auth"]["accessToken"]["role"], "fineGrained");
    assert_eq!(w["auth"]["accessToken"]["displayName"], "ci");
    assert!(w["auth"]["accessToken"]["expiration"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(
        json_of(&call(&app, who(&read_only)).await.2)["auth"]["accessToken"]["role"],
        "read"
    );
    assert_eq!(
        json_of(&call(&app, who(&admin_scoped)).await.2)["auth"]["accessToken"]["role"],
        "write"
    );

    // last_used_at is recorded.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (st, _, b) = call(
        &app,
        TestRequest::get()
            .uri("/api/v1/tokens?limit=1")
            .insert_header(bearer(&admin_scoped)),
    )
    .await;
    assert_eq!(st, 200);
    let page = json_of(&b);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let (_, _, b) = call(
        &app,
        TestRequest::get()
            .uri(&format!("/api/v1/tokens?limit=100&cursor={cursor}"))
            .insert_header(bearer(&admin_scoped)),
    )
    .await;
    let rest = json_of(&b);
    assert!(rest["next_cursor"].is_null());
    let ci = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id)
        .unwrap()
        .clone();
    assert!(ci["last_used_at"].is_string(), "{ci}");
    assert!(ci.get("secret").is_none());
    assert!(!String::from_utf8_lossy(&b).contains(&secret[8..]));
    for bad in ["?limit=0", "?limit=101", "?cursor=abc", "?limit=x"] {
        let (st, _, _) = call(
            &app,
            TestRequest::get()
                .uri(&format!("/api/v1/tokens{bad}"))
                .insert_header(bearer(&admin_scoped)),
        )
        .await;
        assert_eq!(st, 400, "{bad}");
    }

    // Someone else's token id is 404; revoking one's own works and the token
    // fails on its next request.
    let (_, bob) = t.user("bob", false, &["admin", "write"]).await;
    let (st, _, _) = call(
        &app,
        TestRequest::delete()
            .uri(&format!("/api/v1/tokens/{id}"))
            .insert_header(bearer(&bob)),
    )
    .await;
    assert_eq!(st, 404);
    assert_eq!(call(&app, who(&secret)).await.0, 200);
    let (st, _, _) = call(
        &app,
        TestRequest::delete()
            .uri(&format!("/api/v1/tokens/{id}"))
            .insert_header(bearer(&admin_scoped)),
    )
    .await;
    assert_eq!(st, 204);
    let (st, _, b) = call(&app, who(&secret)).await;
    assert_eq!(st, 401);
    assert_eq!(json_of(&b)["error"], "this token has been revoked");
    // Expired tokens fail too.
    let (_, old) = token(
        &t,
        uid,
        &["read"],
        None,
        Some(chrono::Utc::now() - chrono::Duration::seconds(1)),
    )
    .await;
    assert_eq!(call(&app, who(&old)).await.0, 401);
    // The caller's audit log has both events, newest first, and no secret.
    let (st, _, b) = call(
        &app,
        TestRequest::get()
            .uri("/api/v1/users/me/audit")
            .insert_header(bearer(&admin_scoped)),
    )
    .await;
    assert_eq!(st, 200);
    let log = json_of(&b);
    let actions: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["token.revoked", "token.created"]);
    assert_eq!(log["items"][0]["target"], format!("token:{id}"));
    assert_eq!(
        log["items"][1]["details"]["scopes"],
        json!(["read", "write"])
    );
    let text = String::from_utf8_lossy(&b);
    for s in [&secret, &admin_scoped, &read_only] {
        assert!(!text.contains(&s[4..]), "a secret in the audit log");
    }
    // Another user cannot read it.
    let (_, _, b) = call(
        &app,
        TestRequest::get()
            .uri("/api/v1/users/me/audit")
            .insert_header(bearer(&bob)),
    )
    .await;
    assert_eq!(json_of(&b)["items"], json!([]));
}

// ---------------------------------------------------------------- orgs and members

#[actix_web::test]
async fn members_roles_and_last_admin() {
    let t = TestState::new().await;
    let (_, alice) = t.user("alice", false, &["write"]).await;
    let (_, bob) = t.user("bob", false, &["write"]).await;
    let (_, carol) = t.user("carol", false, &["write"]).await;
    let app = app(&t.state).await;
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/v1/orgs")
            .insert_header(bearer(&alice))
            .set_json(json!({"name": "acme", "fullname": "Acme"})),
    )
    .await;
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json_of(&b)["role"], "admin");
    // Names: taken (any case), reserved, malformed.
    for (name, code) in [
        ("ACME", 409),
        ("alice", 409),
        ("api", 409),
        ("a--b", 400),
        ("../x", 400),
        ("", 400),
    ] {
        let (st, _, _) = call(
            &app,
            TestRequest::post()
                .uri("/api/v1/orgs")
                .insert_header(bearer(&bob))
                .set_json(json!({"name": name})),
        )
        .await;
        assert_eq!(st, code, "{name:?}");
    }
    let add = |tok: &str, user: &str, role: &str| {
        TestRequest::post()
            .uri("/api/v1/orgs/acme/members")
            .insert_header(bearer(tok))
            .set_json(json!({"user": user, "role": role}))
    };
    assert_eq!(call(&app, add(&alice, "bob", "write")).await.0, 201);
    assert_eq!(call(&app, add(&alice, "bob", "read")).await.0, 409);
    assert_eq!(call(&app, add(&alice, "nobody", "read")).await.0, 404);
    assert_eq!(call(&app, add(&alice, "carol", "owner")).await.0, 400);
    // A write member cannot add members; an outsider sees nothing.
    assert_eq!(call(&app, add(&bob, "carol", "read")).await.0, 403);
    assert_eq!(call(&app, add(&carol, "carol", "admin")).await.0, 404);
    let (st, _, _) = call(
        &app,
        TestRequest::get()
            .uri("/api/v1/orgs/acme/members")
            .insert_header(bearer(&carol)),
    )
    .await;
    assert_eq!(st, 404);
    let (st, _, b) = call(
        &app,
        TestRequest::get()
            .uri("/api/v1/orgs/acme/members")
            .insert_header(bearer(&bob)),
    )
    .await;
    assert_eq!(st, 200);
    let names: Vec<String> = json_of(&b)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["alice", "bob"]);

    let role = |tok: &str, user: &str, role: &str| {
        TestRequest::patch()
            .uri(&format!("/api/v1/orgs/acme/members/{user}"))
            .insert_header(bearer(tok))
            .set_json(json!({"role": role}))
    };
    // The last admin can be neither demoted nor removed.
    let (st, _, b) = call(&app, role(&alice, "alice", "write")).await;
    assert_eq!(st, 409);
    assert_eq!(json_of(&b)["code"], "last_admin");
    let (st, _, b) = call(
        &app,
        TestRequest::delete()
            .uri("/api/v1/orgs/acme/members/alice")
            .insert_header(bearer(&alice)),
    )
    .await;
    assert_eq!(st, 409);
    assert_eq!(json_of(&b)["code"], "last_admin");
    // Promote bob, then alice may step down.
    assert_eq!(call(&app, role(&alice, "bob", "admin")).await.0, 200);
    assert_eq!(call(&app, role(&alice, "alice", "read")).await.0, 200);
    assert_eq!(call(&app, role(&alice, "bob", "read")).await.0, 403);
    assert_eq!(call(&app, role(&bob, "bob", "read")).await.0, 409);
    assert_eq!(
        call(
            &app,
            TestRequest::delete()
                .uri("/api/v1/orgs/acme/members/alice")
                .insert_header(bearer(&bob))
        )
        .await
        .0,
        204
    );
    assert_eq!(
        call(
            &app,
            TestRequest::delete()
                .uri("/api/v1/orgs/acme/members/nobody")
                .insert_header(bearer(&bob))
        )
        .await
        .0,
        404
    );

    // Audit: every change, newest first, for org admins only, no secrets.
    let (st, _, _) = call(
        &app,
        TestRequest::get()
            .uri("/api/v1/orgs/acme/audit")
            .insert_header(bearer(&alice)),
    )
    .await;
    assert_eq!(st, 404, "alice left the org");
    let (st, _, b) = call(
        &app,
        TestRequest::get()
            .uri("/api/v1/orgs/acme/audit")
            .insert_header(bearer(&bob)),
    )
    .await;
    assert_eq!(st, 200);
    let actions: Vec<String> = json_of(&b)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        actions,
        [
            "member.removed",
            "member.role_changed",
            "member.role_changed",
            "member.added",
            "org.created"
        ]
    );
    let e = &json_of(&b)["items"][0];
    assert_eq!(e["actor"], "bob");
    assert_eq!(e["target"], "user:alice");
    assert!(e["at"].as_str().unwrap().ends_with('Z'));
    for s in [&alice, &bob, &carol] {
        assert!(!String::from_utf8_lossy(&b).contains(s.as_str()));
    }

    // Delete: admins only; refused while repos exist.
    create_repo(&app, &bob, "acme/m", false).await;
    assert_eq!(
        call(
            &app,
            TestRequest::delete()
                .uri("/api/v1/orgs/acme")
                .insert_header(bearer(&carol))
        )
        .await
        .0,
        404
    );
    assert_eq!(
        call(
            &app,
            TestRequest::delete()
                .uri("/api/v1/orgs/acme")
                .insert_header(bearer(&bob))
        )
        .await
        .0,
        409
    );
    let (st, _, _) = call(
        &app,
        TestRequest::delete()
            .uri("/api/repos/delete")
            .insert_header(bearer(&bob))
            .set_json(json!({"name": "m", "organization": "acme"})),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        call(
            &app,
            TestRequest::delete()
                .uri("/api/v1/orgs/acme")
                .insert_header(bearer(&bob))
        )
        .await
        .0,
        204
    );
    assert_eq!(
        call(&app, TestRequest::get().uri("/api/v1/orgs/acme"))
            .await
            .0,
        404
    );
}

// ---------------------------------------------------------------- quotas

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[actix_web::test]
async fn quota_refuses_push_before_storing_bytes() {
    let t = TestState::new().await;
    let (_, root) = t.user("root", true, &["admin", "write"]).await;
    let (_, alice) = t.user("alice", false, &["write"]).await;
    let (_, bob) = t.user("bob", false, &["write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/m", false).await;
    // Site admins set quotas; users cannot.
    let put = |tok: &str, body: Value| {
        TestRequest::put()
            .uri("/api/v1/namespaces/alice/quota")
            .insert_header(bearer(tok))
            .set_json(body)
    };
    assert_eq!(
        call(&app, put(&alice, json!({"storage_bytes": 1_000_000_000})))
            .await
            .0,
        403
    );
    assert_eq!(
        call(&app, put(&bob, json!({"storage_bytes": 1}))).await.0,
        404
    );
    assert_eq!(
        call(&app, put(&root, json!({"storage_bytes": -1}))).await.0,
        400
    );
    assert_eq!(
        call(&app, put(&root, json!({"storage_bytes": "many"})))
            .await
            .0,
        400
    );
    let (st, _, b) = call(&app, put(&root, json!({"storage_bytes": 5000}))).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json_of(&b)["storage_limit_bytes"], 5000);
    commit_files(&app, &alice, "alice/m", &[("a.txt", &[b'a'; 3000])]).await;
    let (st, _, b) = call(
        &app,
        TestRequest::get()
            .uri("/api/v1/namespaces/alice/quota")
            .insert_header(bearer(&alice)),
    )
    .await;
    assert_eq!(st, 200);
    let used = json_of(&b)["storage_used_bytes"].as_i64().unwrap();
    assert!(used >= 3000, "{used}");
    assert_eq!(
        call(
            &app,
            TestRequest::get()
                .uri("/api/v1/namespaces/alice/quota")
                .insert_header(bearer(&bob))
        )
        .await
        .0,
        404
    );

    let blobs = |db: sqlx::PgPool| async move {
        sqlx::query_as::<_, (i64,)>("SELECT count(*) FROM blobs")
            .fetch_one(&db)
            .await
            .unwrap()
            .0
    };
    let dir = t.storage_dir.as_ref().unwrap().path().to_path_buf();
    let before_files = files_under(&dir).len();
    let before_blobs = blobs(t.state.db.clone()).await;

    // LFS: refused in the batch, before any upload link exists.
    let sha = "a".repeat(64);
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/alice/m.git/info/lfs/objects/batch")
            .insert_header(bearer(&alice))
            .set_json(json!({"operation": "upload", "objects": [{"oid": sha, "size": 4000}]})),
    )
    .await;
    assert_eq!(st, 413, "{}", String::from_utf8_lossy(&b));
    let msg = json_of(&b)["error"].as_str().unwrap().to_string();
    assert_eq!(json_of(&b)["code"], "quota_exceeded");
    assert!(
        msg.contains("5000") && msg.contains(&used.to_string()),
        "{msg}"
    );
    // Inline: refused as the line is read, before the bytes are stored.
    let ops = vec![hub_testkit::file_op("b.txt", &[b'b'; 2500])];
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/models/alice/m/commit/main")
            .insert_header(bearer(&alice))
            .set_payload(hub_testkit::ndjson("too big", None, &ops)),
    )
    .await;
    assert_eq!(st, 413, "{}", String::from_utf8_lossy(&b));
    assert!(json_of(&b)["error"].as_str().unwrap().contains("5000"));
    assert_eq!(
        files_under(&dir).len(),
        before_files,
        "no staging or blob objects"
    );
    assert_eq!(
        blobs(t.state.db.clone()).await,
        before_blobs,
        "no blob rows"
    );
    let sessions: (i64,) = sqlx::query_as("SELECT count(*) FROM upload_sessions")
        .fetch_one(&t.state.db)
        .await
        .unwrap();
    assert_eq!(sessions.0, 0);
    // Within the quota it works; the change is audited.
    commit_files(&app, &alice, "alice/m", &[("c.txt", &[b'c'; 100])]).await;
    let log = hub_api::audit::list(
        &t.state.db,
        hub_api::db::namespaces::by_name(&t.state.db, "alice")
            .await
            .unwrap()
            .unwrap()
            .id,
        None,
        50,
    )
    .await
    .unwrap();
    assert!(log
        .iter()
        .any(|e| e.action == "quota.changed" && e.actor_name.as_deref() == Some("root")));
}

// ---------------------------------------------------------------- rate limits

#[actix_web::test]
async fn rate_limit_per_token_and_per_ip() {
    let mut t = TestState::new().await;
    t.state.tenancy.rate = std::sync::Arc::new(hub_api::ratelimit::RateLimiter::new(
        hub_api::ratelimit::RateDefaults {
            token: hub_api::ratelimit::Rate { per_s: 1, burst: 5 },
            anonymous: hub_api::ratelimit::Rate { per_s: 1, burst: 3 },
            trust_forwarded_for: false,
        },
    ));
    let (_, a) = t.user("alice", false, &["read"]).await;
    let (_, b) = t.user("bob", false, &["read"]).await;
    let app = app(&t.state).await;
    let who = |tok: &str| {
        TestRequest::get()
            .uri("/api/whoami-v2")
            .insert_header(bearer(tok))
    };
    let mut codes = vec![];
    for _ in 0..8 {
        codes.push(call(&app, who(&a)).await.0);
    }
    assert_eq!(&codes[..5], &[200; 5]);
    assert!(codes[5..].iter().all(|c| *c == 429), "{codes:?}");
    let (st, h, body) = call(&app, who(&a)).await;
    assert_eq!(st, 429);
    assert_eq!(json_of(&body)["code"], "rate_limited");
    let retry: u64 = h
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry));
    assert!(h
        .get("ratelimit")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("r=0"));
    assert!(h
        .get("ratelimit-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("q=1"));
    // Another token is unaffected.
    assert_eq!(call(&app, who(&b)).await.0, 200);
    // Anonymous callers are keyed by IP.
    let anon = |ip: &str| {
        TestRequest::get()
            .uri("/api/models")
            .peer_addr(format!("{ip}:1000").parse().unwrap())
    };
    let codes: Vec<u16> = {
        let mut v = vec![];
        for _ in 0..4 {
            v.push(call(&app, anon("10.0.0.1")).await.0);
        }
        v
    };
    assert_eq!(codes, [200, 200, 200, 429]);
    assert_eq!(call(&app, anon("10.0.0.2")).await.0, 200);
    // Refill: after a second, one more.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(call(&app, who(&a)).await.0, 200);
    // Health checks are never limited.
    for _ in 0..10 {
        assert_eq!(call(&app, TestRequest::get().uri("/healthz")).await.0, 200);
    }
}

#[actix_web::test]
async fn rate_limit_per_namespace_override() {
    let t = TestState::new().await;
    let (_, root) = t.user("root", true, &["admin", "write"]).await;
    let (_, alice) = t.user("alice", false, &["write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/m", false).await;
    let (st, _, _) = call(
        &app,
        TestRequest::put()
            .uri("/api/v1/namespaces/alice/quota")
            .insert_header(bearer(&root))
            .set_json(json!({"rate_per_second": 1, "rate_burst": 2})),
    )
    .await;
    assert_eq!(st, 200);
    let info = || {
        TestRequest::get()
            .uri("/api/models/alice/m")
            .insert_header(bearer(&root))
    };
    let codes = [
        call(&app, info()).await.0,
        call(&app, info()).await.0,
        call(&app, info()).await.0,
    ];
    assert_eq!(codes, [200, 200, 429]);
    // Other namespaces keep the default.
    assert_eq!(
        call(
            &app,
            TestRequest::get()
                .uri("/api/v1/users/me")
                .insert_header(bearer(&root))
        )
        .await
        .0,
        200
    );
}

// ---------------------------------------------------------------- gated repos

#[actix_web::test]
async fn gated_manual_and_auto() {
    let t = TestState::new().await;
    let (_, owner) = t.user("alice", false, &["write"]).await;
    let (bob_id, user) = t.user("bob", false, &["read", "write"]).await;
    let (_, user_ro) = token(&t, bob_id, &["read"], None, None).await;
    let (_, other) = t.user("carol", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &owner, "alice/g", false).await;
    commit_files(&app, &owner, "alice/g", &[("w.txt", b"weights")]).await;
    let gate = |mode: Value| {
        TestRequest::put()
            .uri("/api/models/alice/g/settings")
            .insert_header(bearer(&owner))
            .set_json(json!({"gated": mode}))
    };
    assert_eq!(call(&app, gate(json!("sometimes"))).await.0, 400);
    assert_eq!(call(&app, gate(json!("manual"))).await.0, 200);
    let dl = |tok: &str| {
        TestRequest::get()
            .uri("/alice/g/resolve/main/w.txt")
            .insert_header(bearer(tok))
    };
    // Metadata stays visible; downloads are GatedRepo until accepted.
    let (st, _, b) = call(
        &app,
        TestRequest::get()
            .uri("/api/models/alice/g")
            .insert_header(bearer(&user)),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(json_of(&b)["gated"], "manual");
    for req in [
        dl(&user),
        TestRequest::get().uri("/alice/g/resolve/main/w.txt"),
    ] {
        let (st, h, _) = call(&app, req).await;
        assert_eq!(st, 403);
        assert_eq!(h.get("x-error-code").unwrap(), "GatedRepo");
    }
    assert_eq!(call(&app, dl(&owner)).await.0, 200);
    let ask = |tok: &str| {
        TestRequest::post()
            .uri("/api/v1/repos/models/alice/g/access-requests")
            .insert_header(bearer(tok))
            .set_json(json!({"fields": {"company": "Bob Inc"}}))
    };
    // Asking changes state: a read-only token is refused, and records nothing
    // (it may still read its own request).
    let (st, _, b) = call(&app, ask(&user_ro)).await;
    assert_eq!(
        (st, json_of(&b)["code"].as_str()),
        (403, Some("forbidden")),
        "{}",
        String::from_utf8_lossy(&b)
    );
    assert!(json_of(&b)["error"]
        .as_str()
        .unwrap()
        .contains("write scope"));
    let mine = |tok: &str| {
        TestRequest::get()
            .uri("/api/v1/repos/models/alice/g/access-requests/me")
            .insert_header(bearer(tok))
    };
    assert_eq!(call(&app, mine(&user_ro)).await.0, 404);
    let (st, _, b) = call(&app, ask(&user)).await;
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json_of(&b)["status"], "pending");
    let (st, _, b) = call(&app, mine(&user_ro)).await;
    assert_eq!((st, json_of(&b)["status"].as_str()), (200, Some("pending")));
    assert_eq!(call(&app, dl(&user)).await.0, 403);
    // Bad fields are refused (nested values, NUL bytes).
    for bad in [
        json!({"x": {"nested": true}}),
        json!({"x": "a\u{0}b"}),
        json!({"a\u{0}": "x"}),
    ] {
        let (st, _, _) = call(
            &app,
            TestRequest::post()
                .uri("/api/v1/repos/models/alice/g/access-requests")
                .insert_header(bearer(&other))
                .set_json(json!({ "fields": bad })),
        )
        .await;
        assert_eq!(st, 400);
    }
    // Only the repo's admins list and decide.
    let list = |tok: &str| {
        TestRequest::get()
            .uri("/api/v1/repos/models/alice/g/access-requests?status=pending")
            .insert_header(bearer(tok))
    };
    assert_eq!(call(&app, list(&user)).await.0, 403);
    let (st, _, b) = call(&app, list(&owner)).await;
    assert_eq!(st, 200);
    assert_eq!(json_of(&b)["items"][0]["user"], "bob");
    assert_eq!(json_of(&b)["items"][0]["fields"]["company"], "Bob Inc");
    // The HF-compatible listing.
    let (st, _, b) = call(
        &app,
        TestRequest::get()
            .uri("/api/models/alice/g/user-access-request/pending")
            .insert_header(bearer(&owner)),
    )
    .await;
    assert_eq!(st, 200);
    let hf = json_of(&b);
    assert_eq!(hf[0]["user"]["user"], "bob");
    assert!(hf[0]["timestamp"].as_str().unwrap().ends_with('Z'));
    let decide = |who: &str, status: &str| {
        TestRequest::put()
            .uri(&format!(
                "/api/v1/repos/models/alice/g/access-requests/{who}"
            ))
            .insert_header(bearer(&owner))
            .set_json(json!({"status": status}))
    };
    assert_eq!(call(&app, decide("bob", "maybe")).await.0, 400);
    assert_eq!(call(&app, decide("bob", "accepted")).await.0, 200);
    assert_eq!(call(&app, dl(&user)).await.0, 200);
    // HF handle: reject; then downloads are gated again.
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/models/alice/g/user-access-request/handle")
            .insert_header(bearer(&owner))
            .set_json(json!({"user": "bob", "status": "rejected", "rejectionReason": "no"})),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(call(&app, dl(&user)).await.0, 403);
    // HF grant for someone who never asked.
    let (st, _, _) = call(
        &app,
        TestRequest::post()
            .uri("/api/models/alice/g/user-access-request/grant")
            .insert_header(bearer(&owner))
            .set_json(json!({"user": "carol"})),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(call(&app, dl(&other)).await.0, 200);
    let (st, _, _) = call(
        &app,
        TestRequest::post()
            .uri("/api/models/alice/g/user-access-request/grant")
            .insert_header(bearer(&owner))
            .set_json(json!({"user": "carol"})),
    )
    .await;
    assert_eq!(st, 400, "already has access");

    // Auto gating accepts at once.
    assert_eq!(call(&app, gate(json!("auto"))).await.0, 200);
    let (_, dave) = t.user("dave", false, &["read", "write"]).await;
    assert_eq!(call(&app, dl(&dave)).await.0, 403);
    let (st, _, b) = call(&app, ask(&dave)).await;
    assert_eq!(st, 201);
    assert_eq!(json_of(&b)["status"], "accepted");
    assert_eq!(call(&app, dl(&dave)).await.0, 200);
    // Not gated: requests are a 400.
    assert_eq!(call(&app, gate(json!(false))).await.0, 200);
    let (_, erin) = t.user("erin", false, &["read", "write"]).await;
    assert_eq!(call(&app, ask(&erin)).await.0, 400);
    assert_eq!(call(&app, dl(&erin)).await.0, 200);

    // Gate decisions are in the audit log.
    let ns = hub_api::db::namespaces::by_name(&t.state.db, "alice")
        .await
        .unwrap()
        .unwrap();
    let actions: Vec<String> = hub_api::audit::list(&t.state.db, ns.id, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    for a in [
        "access_request.created",
        "access_request.accepted",
        "access_request.rejected",
        "access_request.granted",
        "access_request.auto_accepted",
        "repo.gating_changed",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} missing from {actions:?}"
        );
    }
}

// ---------------------------------------------------------------- OpenAPI

#[actix_web::test]
async fn openapi_documents_every_v1_route() {
    let t = TestState::in_memory().await;
    let app = app(&t.state).await;
    let (st, _, b) = call(&app, TestRequest::get().uri("/api/v1/openapi.json")).await;
    assert_eq!(st, 200);
    let doc = json_of(&b);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (m, p) in hub_api::routes::table().0 {
        if !p.starts_with("/api/v1/") || p == "/api/v1/openapi.json" {
            continue;
        }
        let doc_path = p.replace("{kind:models|datasets}", "{kind}");
        let op = paths
            .get(&doc_path)
            .and_then(|i| i.get(m.as_str().to_ascii_lowercase()))
            .unwrap_or_else(|| panic!("{m} {p} is not in the OpenAPI document"));
        assert!(op["responses"]["429"].is_object());
    }
    // Every error code of the table is documented.
    let doc_text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/API-v1.md")).unwrap();
    for code in hub_api::error::ALL_CODES {
        assert!(
            doc_text.contains(&format!("`{code}`")),
            "{code} missing from docs/API-v1.md"
        );
    }
}

#[actix_web::test]
async fn password_guessing_is_throttled_per_ip() {
    let t = TestState::new().await;
    user_with_password(&t, "alice", "correct horse", false).await;
    let app = app(&t.state).await;
    let attempt = |ip: &str, pw: &str| {
        TestRequest::post()
            .uri("/api/v1/auth/login")
            .peer_addr(format!("{ip}:4000").parse().unwrap())
            .set_json(json!({"username": "alice", "password": pw}))
    };
    // At once (argon2 takes long enough for the bucket to refill between serial tries).
    let guesses = (0..14).map(|i| call(&app, attempt("10.9.9.9", &format!("guess {i}"))));
    let mut codes: Vec<u16> = futures::future::join_all(guesses)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    codes.sort();
    assert_eq!(codes.iter().filter(|c| **c == 401).count(), 10, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 429).count(), 4, "{codes:?}");
    // Another client is not affected.
    assert_eq!(
        call(&app, attempt("10.9.9.10", "correct horse")).await.0,
        200
    );
}

#[actix_web::test]
async fn token_cache_ttl_bounds_revocation_elsewhere() {
    let mut t = TestState::new().await;
    t.state.tenancy.token_cache = std::sync::Arc::new(hub_api::auth::cache::TokenCache::new(
        std::time::Duration::from_secs(1),
    ));
    let (uid, tok) = t.user("alice", false, &["read"]).await;
    let app = app(&t.state).await;
    let who = || {
        TestRequest::get()
            .uri("/api/whoami-v2")
            .insert_header(bearer(&tok))
    };
    assert_eq!(call(&app, who()).await.0, 200);
    // Revoked by another replica (straight in the database): cached here for at most the TTL.
    sqlx::query("UPDATE tokens SET revoked_at = now() WHERE user_id = $1")
        .bind(uid)
        .execute(&t.state.db)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(call(&app, who()).await.0, 401);
}

#[actix_web::test]
async fn csrf_form_field_for_html_forms() {
    let t = TestState::new().await;
    user_with_password(&t, "alice", "correct horse", false).await;
    let app = app(&t.state).await;
    let (session, csrf, _) = login(&app, "alice", "correct horse").await;
    let form = |uri: &str, body: String| {
        TestRequest::post()
            .uri(uri)
            .insert_header(cookie(&session))
            .insert_header(("Origin", "http://hub.test"))
            .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
            .set_payload(body)
    };
    // A wrong field is refused.
    let (st, _, b) = call(&app, form("/api/v1/auth/logout", "csrf_token=nope".into())).await;
    assert_eq!(st, 403);
    assert_eq!(json_of(&b)["code"], "csrf_rejected");
    // The right field passes the check, and the handler still reads the body.
    let (st, _, b) = call(
        &app,
        form("/api/v1/orgs", format!("name=x&csrf_token={csrf}")),
    )
    .await;
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&b));
    assert!(json_of(&b)["error"]
        .as_str()
        .unwrap()
        .contains("invalid JSON body: expected ident at line 1 column 2"));
    let (st, _, _) = call(
        &app,
        form("/api/v1/auth/logout", format!("csrf_token={csrf}")),
    )
    .await;
    assert_eq!(st, 204);
    let (st, _, _) = call(
        &app,
        TestRequest::get()
            .uri("/api/v1/users/me")
            .insert_header(cookie(&session)),
    )
    .await;
    assert_eq!(st, 401, "logged out");
}
