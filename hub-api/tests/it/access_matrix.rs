//! The cross-tenant access matrix (reliability test 20): every route of the
//! hub (walked from `routes::table()`, so a new route without a row fails this
//! test) × every actor, against tenant A's objects: a private repo with a
//! branch, tag, commit, file, LFS object and upload link; a gated public repo
//! with access requests; members, tokens, the audit log and the quota. The
//! expected answer of each cell is computed from the route's class and the
//! actor; a denied cell must also not leak tenant A's private names. The
//! dashboard's pages are routes too: a page must show nothing its viewer
//! could not read through the API.

use crate::common::*;
use actix_web::http::Method;
use actix_web::test::TestRequest;
use hub_testkit::{app, TestState};
use serde_json::{json, Value};
use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Actor {
    /// Created the org; its admin.
    Owner,
    /// Another admin of the org.
    OrgAdmin,
    /// Member with the write role.
    Writer,
    /// Member with the read role.
    Reader,
    /// Admin of another organization (another tenant).
    OtherAdmin,
    Anonymous,
    /// The owner's token, expired.
    Expired,
    /// The owner's token, revoked.
    Revoked,
    /// The owner's token, restricted to another repo of the org.
    Restricted,
}
use Actor::*;

const ACTORS: [Actor; 9] = [
    Owner, OrgAdmin, Writer, Reader, OtherAdmin, Anonymous, Expired, Revoked, Restricted,
];

/// What the private objects are called: a denied answer must never contain it.
const MARK: &str = "topsecret";

/// Route classes: what each actor gets.
#[derive(Debug, Clone, Copy)]
enum Class {
    /// No credentials needed, none checked (health, OpenAPI, signed-link routes without a link).
    Public(u16),
    /// Needs any valid credential.
    Authenticated(u16),
    /// Open to all, but bad credentials are refused.
    Open(u16),
    /// Reads a private repo's objects.
    RepoRead(u16),
    /// Writes a private repo (members with write).
    RepoWrite(u16),
    /// Administers a private repo (HF settings): org admins.
    RepoAdmin(u16),
    /// Administers a private repo through a body-addressed route that asks for credentials first.
    RepoAdminAuthFirst(u16),
    /// Creates a repo in the org.
    CreateInOrg(u16),
    /// Administers a public gated repo (access requests): org admins; everyone else can see it.
    GatedAdmin(u16),
    /// Asks for access to the public gated repo.
    GatedAsk(u16),
    /// Reads an org object for members (members list, quota).
    OrgMember(u16),
    /// Changes an org object, org admins only; outsiders get 404.
    OrgAdmin(u16),
    /// Org admins, but a conflict for them (deleting an org that holds repos).
    OrgAdminConflict,
    /// Site admins only (none of the actors is one).
    SiteAdmin,
    /// Site admins only; the namespace is checked first (quota PUT).
    SiteAdminInOrg,
    /// A new org: anyone with write scope and no restriction.
    NewOrg(u16),
    /// Mints or revokes tokens: unrestricted admin-scoped tokens.
    TokenAdmin(u16),
    /// Lists the caller's tokens: anyone signed in, except restricted tokens (403).
    TokenList(u16),
    /// The tokens page: like `TokenList`, anonymous visitors go to sign in.
    TokensPage(u16),
    /// Revokes the owner's token: only the owner; others see 404.
    OwnersToken(u16),
    /// Edits the owner's comment in a discussion of the private repo: only
    /// the owner; other members 403; outsiders 404.
    CommentAuthor(u16),
    /// Always the given status (login with a wrong password).
    Always(u16),
    /// Logout: idempotent for valid or no credentials.
    Logout,
    /// Reads a namespace's endpoints or usage: members; anonymous 401; outsiders 404.
    NsMember(u16),
    /// Changes a namespace's endpoints: write role; readers 403; outsiders 404.
    NsWrite(u16),
    /// The worker control plane: only `worker`-scoped credentials (no actor has one).
    WorkerOnly,
    /// Calls a protected (paused) endpoint through the gateway: members with
    /// inference/write scope get the endpoint's answer; outsiders 404.
    Gateway(u16),
    /// A dashboard page for anyone signed in; anonymous visitors are sent to
    /// the sign-in page (303).
    SignedInPage(u16),
    /// The sign-in page: signed-in visitors are sent on (303).
    SignInPage,
    /// Git over smart HTTP: members `ok`; a caller without credentials is
    /// asked for them (401, so git prompts); everyone else 404.
    GitRead(u16),
    /// `git push`: writers `ok`; readers 403; a caller without credentials
    /// is asked for them (401); everyone else 404.
    GitWrite(u16),
    /// A dashboard page of tenant A's namespace (its organization, its
    /// endpoints, deploying its private repo): members; anonymous 303;
    /// everyone else the same 404 as a missing one.
    MemberPage(u16),
    /// A dashboard page for org admins (the audit log): other members 403;
    /// anonymous 303; outsiders 404.
    OrgAdminPage(u16),
}

fn expected(class: Class, a: Actor) -> u16 {
    let dead = matches!(a, Expired | Revoked);
    let member = matches!(a, Owner | OrgAdmin | Writer | Reader);
    let admin = matches!(a, Owner | OrgAdmin);
    match class {
        Class::Public(ok) => ok,
        Class::Always(s) => s,
        _ if dead => 401,
        Class::Logout => 204,
        Class::Open(ok) => ok,
        Class::Authenticated(ok) => {
            if a == Anonymous {
                401
            } else {
                ok
            }
        }
        Class::RepoRead(ok) => {
            if member {
                ok
            } else {
                404
            }
        }
        Class::GitRead(ok) => match a {
            _ if member => ok,
            Anonymous => 401,
            _ => 404,
        },
        Class::GitWrite(ok) => match a {
            Owner | OrgAdmin | Writer => ok,
            Reader => 403,
            Anonymous => 401,
            _ => 404,
        },
        Class::RepoWrite(ok) => match a {
            Owner | OrgAdmin | Writer => ok,
            Reader => 403,
            _ => 404,
        },
        Class::RepoAdmin(ok) => match a {
            _ if admin => ok,
            Writer | Reader => 403,
            _ => 404,
        },
        Class::RepoAdminAuthFirst(ok) => match a {
            _ if admin => ok,
            Writer | Reader => 403,
            Anonymous => 401,
            _ => 404,
        },
        Class::CreateInOrg(ok) => match a {
            Owner | OrgAdmin | Writer => ok,
            Anonymous => 401,
            _ => 403,
        },
        Class::GatedAdmin(ok) => {
            if admin {
                ok
            } else {
                403
            }
        }
        Class::GatedAsk(ok) => match a {
            Anonymous => 401,
            Restricted => 403,
            _ => ok,
        },
        Class::OrgMember(ok) => {
            if member {
                ok
            } else {
                404
            }
        }
        Class::OrgAdmin(ok) => match a {
            _ if admin => ok,
            Writer | Reader => 403,
            _ => 404,
        },
        Class::OrgAdminConflict => match a {
            _ if admin => 409,
            Writer | Reader => 403,
            _ => 404,
        },
        Class::SiteAdmin => {
            if a == Anonymous {
                401
            } else {
                403
            }
        }
        Class::SiteAdminInOrg => match a {
            Anonymous => 401,
            _ if member => 403,
            _ => 404,
        },
        Class::NewOrg(ok) => match a {
            Anonymous => 401,
            Restricted => 403,
            _ => ok,
        },
        Class::TokenAdmin(ok) => match a {
            Anonymous => 401,
            Owner | OrgAdmin | OtherAdmin => ok,
            _ => 403,
        },
        Class::TokenList(ok) => match a {
            Anonymous => 401,
            Restricted => 403,
            _ => ok,
        },
        Class::TokensPage(ok) => match a {
            Anonymous => 303,
            Restricted => 403,
            _ => ok,
        },
        Class::NsMember(ok) => match a {
            Anonymous => 401,
            Restricted => 404,
            _ if member => ok,
            _ => 404,
        },
        Class::NsWrite(ok) => match a {
            Anonymous => 401,
            Owner | OrgAdmin | Writer => ok,
            Reader => 403,
            _ => 404,
        },
        Class::WorkerOnly => match a {
            Anonymous => 401,
            _ => 403,
        },
        Class::Gateway(ok) => match a {
            Anonymous => 401,
            Restricted => 404,
            _ if member => ok,
            _ => 404,
        },
        Class::SignedInPage(ok) => {
            if a == Anonymous {
                303
            } else {
                ok
            }
        }
        Class::SignInPage => {
            if a == Anonymous {
                200
            } else {
                303
            }
        }
        Class::MemberPage(ok) => match a {
            Anonymous => 303,
            Restricted => 404,
            _ if member => ok,
            _ => 404,
        },
        Class::OrgAdminPage(ok) => match a {
            Anonymous => 303,
            _ if admin => ok,
            Writer | Reader => 403,
            _ => 404,
        },
        Class::OwnersToken(ok) => match a {
            Anonymous => 401,
            Owner => ok,
            Restricted => 403,
            _ => 404,
        },
        Class::CommentAuthor(ok) => match a {
            Owner => ok,
            OrgAdmin | Writer | Reader => 403,
            _ => 404,
        },
    }
}

/// One row: a route, how to call it for actor `i`, and its class.
struct Row {
    method: Method,
    pattern: &'static str,
    class: Class,
    uri: Box<dyn Fn(usize) -> String>,
    body: Option<Box<dyn Fn(usize) -> Value>>,
    raw_body: Option<Box<dyn Fn(usize) -> String>>,
}

fn row(
    method: Method,
    pattern: &'static str,
    class: Class,
    uri: impl Fn(usize) -> String + 'static,
) -> Row {
    Row {
        method,
        pattern,
        class,
        uri: Box::new(uri),
        body: None,
        raw_body: None,
    }
}

impl Row {
    fn json(mut self, f: impl Fn(usize) -> Value + 'static) -> Row {
        self.body = Some(Box::new(f));
        self
    }
    fn raw(mut self, f: impl Fn(usize) -> String + 'static) -> Row {
        self.raw_body = Some(Box::new(f));
        self
    }
}

/// Tenant A's webhooks: one to read and change, one per actor to delete,
/// and a delivery of the first.
struct Hooks {
    main: String,
    doomed: Vec<String>,
    delivery: String,
}

/// Patterns that are the same route as a row's, for another repo-id form
/// (single-segment canonical ids, dataset prefixes).
/// Tenant A's fine-tuning jobs: one per actor to cancel, then one to read.
fn job_id(i: usize) -> uuid::Uuid {
    uuid::Uuid::from_u128(0x5ca1_ab1e_0000 + i as u128)
}

fn canonical(p: &str) -> String {
    let p = p
        .replace("/datasets/{ns}/{name}", "/{ns}/{name}")
        .replace("/datasets/{name}", "/{ns}/{name}")
        .replace(
            "{kind:models|datasets}/{name}",
            "{kind:models|datasets}/{ns}/{name}",
        );
    if p.starts_with("/{name}") {
        p.replacen("/{name}", "/{ns}/{name}", 1)
    } else {
        p
    }
}

fn rows(
    lfs_sha: &str,
    lfs_size: usize,
    owners_token: i64,
    upload_session: &str,
    commit: &str,
    comment_id: &str,
    hooks: &Hooks,
) -> Vec<Row> {
    use Class::*;
    let get = Method::GET;
    let post = Method::POST;
    let put = Method::PUT;
    let del = Method::DELETE;
    const R: &str = "/api/models/acme/topsecret";
    let sha = lfs_sha.to_string();
    let sha2 = lfs_sha.to_string();
    let session = upload_session.to_string();
    let session2 = session.clone();
    let session3 = session.clone();
    let commit = commit.to_string();
    let git_want = commit.clone();
    let cid = comment_id.to_string();
    let cid2 = cid.clone();
    const P: &str = "/acme/topsecret";
    let hook = hooks.main.clone();
    let (h1, h2, h3, h4, h5, h6, h7, h8) = (
        hook.clone(),
        hook.clone(),
        hook.clone(),
        hook.clone(),
        hook.clone(),
        hook.clone(),
        hook.clone(),
        hook.clone(),
    );
    let doomed = hooks.doomed.clone();
    let delivery = hooks.delivery.clone();
    let delivery2 = hooks.delivery.clone();
    vec![
        // Webhooks: tenant A's organization owns one (its admins manage it).
        row(get.clone(), "/api/settings/webhooks", TokenList(200), |_| "/api/settings/webhooks".into()),
        row(post.clone(), "/api/settings/webhooks", OrgAdmin(200), |_| "/api/settings/webhooks".into())
            .json(|_| json!({"url": "http://93.184.216.34/hook", "owner": "acme", "watched": [{"type": "org", "name": "acme"}]})),
        row(get.clone(), "/api/settings/webhooks/{id}", OrgAdmin(200), move |_| format!("/api/settings/webhooks/{h1}")),
        row(post.clone(), "/api/settings/webhooks/{id}", OrgAdmin(200), move |_| format!("/api/settings/webhooks/{h2}"))
            .json(|_| json!({"watched": [], "domains": ["repo"]})),
        row(del.clone(), "/api/settings/webhooks/{id}", OrgAdmin(200), move |i| format!("/api/settings/webhooks/{}", doomed[i])),
        row(post.clone(), "/api/settings/webhooks/{id}/disable", OrgAdmin(200), move |_| format!("/api/settings/webhooks/{h3}/disable")),
        row(post.clone(), "/api/settings/webhooks/{id}/enable", OrgAdmin(200), move |_| format!("/api/settings/webhooks/{h4}/enable")),
        row(get.clone(), "/api/v1/webhooks/{id}/deliveries", OrgAdmin(200), move |_| format!("/api/v1/webhooks/{h5}/deliveries")),
        row(get.clone(), "/api/v1/webhooks/{id}/deliveries/{delivery}", OrgAdmin(200),
            move |_| format!("/api/v1/webhooks/{h6}/deliveries/{delivery}")),
        row(post.clone(), "/api/v1/webhooks/{id}/deliveries/{delivery}/redeliver", OrgAdmin(202),
            move |_| format!("/api/v1/webhooks/{h7}/deliveries/{delivery2}/redeliver")),
        row(get.clone(), "/healthz", Public(200), |_| "/healthz".into()),
        row(get.clone(), "/readyz", Public(200), |_| "/readyz".into()),
        row(get.clone(), "/metrics", SiteAdmin, |_| "/metrics".into()),
        row(get.clone(), "/api/v1/openapi.json", Public(200), |_| "/api/v1/openapi.json".into()),
        row(post.clone(), "/api/v1/auth/login", Always(401), |_| "/api/v1/auth/login".into())
            .json(|_| json!({"username": "alice", "password": "not the password"})),
        row(post.clone(), "/api/v1/auth/logout", Logout, |_| "/api/v1/auth/logout".into()),
        row(get.clone(), "/api/v1/auth/session", Authenticated(401), |_| "/api/v1/auth/session".into()),
        row(get.clone(), "/api/v1/users/me", Authenticated(200), |_| "/api/v1/users/me".into()),
        row(get.clone(), "/api/v1/users/me/audit", TokenList(200), |_| "/api/v1/users/me/audit".into()),
        row(get.clone(), "/api/v1/users", SiteAdmin, |_| "/api/v1/users".into()),
        row(post.clone(), "/api/v1/users", SiteAdmin, |_| "/api/v1/users".into())
            .json(|i| json!({"name": format!("newuser{i}")})),
        row(post.clone(), "/api/v1/orgs", NewOrg(201), |_| "/api/v1/orgs".into())
            .json(|i| json!({"name": format!("neworg{i}")})),
        row(get.clone(), "/api/v1/orgs/{org}", Open(200), |_| "/api/v1/orgs/acme".into()),
        row(del.clone(), "/api/v1/orgs/{org}", OrgAdminConflict, |_| "/api/v1/orgs/acme".into()),
        row(get.clone(), "/api/v1/orgs/{org}/members", OrgMember(200), |_| "/api/v1/orgs/acme/members".into()),
        row(post.clone(), "/api/v1/orgs/{org}/members", OrgAdmin(201), |_| "/api/v1/orgs/acme/members".into())
            .json(|i| json!({"user": format!("extra{i}"), "role": "read"})),
        row(Method::PATCH, "/api/v1/orgs/{org}/members/{user}", OrgAdmin(200), |_| "/api/v1/orgs/acme/members/dummy".into())
            .json(|i| json!({"role": if i % 2 == 0 { "write" } else { "read" }})),
        row(del.clone(), "/api/v1/orgs/{org}/members/{user}", OrgAdmin(204), |i| format!("/api/v1/orgs/acme/members/victim{i}")),
        row(get.clone(), "/api/v1/orgs/{org}/audit", OrgAdmin(200), |_| "/api/v1/orgs/acme/audit".into()),
        row(get.clone(), "/api/v1/tokens", TokenList(200), |_| "/api/v1/tokens".into()),
        row(post.clone(), "/api/v1/tokens", TokenAdmin(201), |_| "/api/v1/tokens".into())
            .json(|_| json!({"name": "m", "scopes": ["read"]})),
        row(del.clone(), "/api/v1/tokens/{id}", OwnersToken(204), move |_| format!("/api/v1/tokens/{owners_token}")),
        row(get.clone(), "/api/v1/namespaces/{ns}/quota", OrgMember(200), |_| "/api/v1/namespaces/acme/quota".into()),
        row(put.clone(), "/api/v1/namespaces/{ns}/quota", SiteAdminInOrg, |_| "/api/v1/namespaces/acme/quota".into())
            .json(|_| json!({"storage_bytes": 1})),
        row(get.clone(), "/api/v1/repos/{kind:models|datasets}/{ns}/{name}/access-requests", GatedAdmin(200),
            |_| "/api/v1/repos/models/acme/gated/access-requests".into()),
        row(post.clone(), "/api/v1/repos/{kind:models|datasets}/{ns}/{name}/access-requests", GatedAsk(201),
            |_| "/api/v1/repos/models/acme/gated/access-requests".into()).json(|_| json!({})),
        row(get.clone(), "/api/v1/repos/{kind:models|datasets}/{ns}/{name}/access-requests/me", GatedAsk(200),
            |_| "/api/v1/repos/models/acme/gated/access-requests/me".into()),
        row(put.clone(), "/api/v1/repos/{kind:models|datasets}/{ns}/{name}/access-requests/{user}", GatedAdmin(200),
            |i| format!("/api/v1/repos/models/acme/gated/access-requests/extra{i}")).json(|_| json!({"status": "accepted"})),
        row(get.clone(), "/api/v1/admin/signing-keys", SiteAdmin, |_| "/api/v1/admin/signing-keys".into()),
        row(post.clone(), "/api/v1/admin/signing-keys", SiteAdmin, |_| "/api/v1/admin/signing-keys".into()),
        row(del.clone(), "/api/v1/admin/signing-keys/{kid}", SiteAdmin, |_| "/api/v1/admin/signing-keys/whatever".into()),
        // Inference endpoints, usage, the worker control plane and the gateway.
        row(get.clone(), "/api/v1/endpoints/{ns}", NsMember(200), |_| "/api/v1/endpoints/acme".into()),
        row(post.clone(), "/api/v1/endpoints/{ns}", NsWrite(201), |_| "/api/v1/endpoints/acme".into())
            .json(|i| json!({"name": format!("ep{i}"), "repository": format!("acme/{MARK}"), "task": "feature-extraction"})),
        row(get.clone(), "/api/v1/endpoints/{ns}/{name}", NsMember(200), |_| format!("/api/v1/endpoints/acme/{MARK}-ep")),
        row(Method::PATCH, "/api/v1/endpoints/{ns}/{name}", NsWrite(200), |_| format!("/api/v1/endpoints/acme/{MARK}-ep"))
            .json(|i| json!({"max_replicas": 1 + (i % 2)})),
        row(del.clone(), "/api/v1/endpoints/{ns}/{name}", NsWrite(200), |i| format!("/api/v1/endpoints/acme/{MARK}-del{i}")),
        row(post.clone(), "/api/v1/endpoints/{ns}/{name}/pause", NsWrite(200), |_| format!("/api/v1/endpoints/acme/{MARK}-ep/pause")),
        row(post.clone(), "/api/v1/endpoints/{ns}/{name}/resume", NsWrite(200), |_| format!("/api/v1/endpoints/acme/{MARK}-ep/resume")),
        row(get.clone(), "/api/v1/usage", NsMember(200), |_| "/api/v1/usage?namespace=acme".into()),
        // Fine-tuning jobs (decided like endpoints) and the workers' side of them.
        row(get.clone(), "/api/v1/jobs/{ns}", NsMember(200), |_| "/api/v1/jobs/acme".into()),
        row(post.clone(), "/api/v1/jobs/{ns}", NsWrite(400), |_| "/api/v1/jobs/acme".into())
            .json(|_| json!({"task": "translation", "base_model": "acme/x", "dataset": "acme/x", "output_repo": "acme/out"})),
        row(get.clone(), "/api/v1/jobs/{ns}/{id}", NsMember(200), |_| format!("/api/v1/jobs/acme/{}", job_id(ACTORS.len()))),
        row(get.clone(), "/api/v1/jobs/{ns}/{id}/logs", NsMember(200), |_| format!("/api/v1/jobs/acme/{}/logs", job_id(ACTORS.len()))),
        row(post.clone(), "/api/v1/jobs/{ns}/{id}/cancel", NsWrite(200), |i| format!("/api/v1/jobs/acme/{}/cancel", job_id(i))),
        row(post.clone(), "/api/v1/job-runner/claim", WorkerOnly, |_| "/api/v1/job-runner/claim".into())
            .json(|_| json!({"runner": "w"})),
        row(post.clone(), "/api/v1/job-runner/{id}/progress", WorkerOnly, |_| format!("/api/v1/job-runner/{}/progress", job_id(ACTORS.len())))
            .json(|_| json!({"step": 0, "total_steps": 0, "cpu_seconds": 0})),
        row(put.clone(), "/api/v1/job-runner/{id}/files", WorkerOnly, |_| format!("/api/v1/job-runner/{}/files?path=a.txt", job_id(ACTORS.len()))),
        row(post.clone(), "/api/v1/job-runner/{id}/finish", WorkerOnly, |_| format!("/api/v1/job-runner/{}/finish", job_id(ACTORS.len())))
            .json(|_| json!({"outcome": "failed", "cpu_seconds": 0})),
        row(post.clone(), "/api/v1/workers/register", WorkerOnly, |_| "/api/v1/workers/register".into())
            .json(|_| json!({"name": "w", "url": "http://127.0.0.1:1", "capacity": {"memory_bytes": 1, "cores": 1}})),
        row(post.clone(), "/api/v1/workers/{id}/heartbeat", WorkerOnly, |_| format!("/api/v1/workers/{}/heartbeat", uuid::Uuid::nil()))
            .json(|_| json!({"free_memory_bytes": 1, "models": []})),
        row(get.clone(), "/api/v1/workers/{id}/assignments", WorkerOnly, |_| format!("/api/v1/workers/{}/assignments?wait_s=0", uuid::Uuid::nil())),
        row(Method::from_bytes(b"ANY").unwrap(), "/endpoints/{ns}/{name}", Gateway(503), |_| format!("/endpoints/acme/{MARK}-gw")),
        row(Method::from_bytes(b"ANY").unwrap(), "/endpoints/{ns}/{name}/{tail:.*}", Gateway(503), |_| format!("/endpoints/acme/{MARK}-gw/v1/embeddings")),
        row(get.clone(), "/api/whoami-v2", Authenticated(200), |_| "/api/whoami-v2".into()),
        row(get.clone(), "/api/users/{user}/likes", Open(200), |_| "/api/users/alice/likes".into()),
        row(post.clone(), "/api/repos/create", CreateInOrg(200), |_| "/api/repos/create".into())
            .json(|i| json!({"name": format!("new{i}"), "organization": "acme", "private": true})),
        row(del.clone(), "/api/repos/delete", RepoAdminAuthFirst(200), |_| "/api/repos/delete".into())
            .json(|i| json!({"name": format!("{MARK}-del{i}"), "organization": "acme"})),
        row(post.clone(), "/api/repos/move", RepoAdminAuthFirst(200), |_| "/api/repos/move".into())
            .json(|i| json!({"fromRepo": format!("acme/{MARK}-mv{i}"), "toRepo": format!("acme/moved{i}")})),
        row(post.clone(), "/api/validate-yaml", Public(200), |_| "/api/validate-yaml".into())
            .json(|_| json!({"content": "a: 1", "repoType": "model"})),
        row(get.clone(), "/api/{kind:models|datasets}", Open(200), |_| "/api/models?search=top".into()),
        row(get.clone(), "/api/{kind:models|datasets}/{ns}/{name}", RepoRead(200), |_| R.into()),
        row(get.clone(), "/api/{kind:models|datasets}/{ns}/{name}/revision/{rev}", RepoRead(200), |_| format!("{R}/revision/dev")),
        row(put.clone(), "/api/{kind:models|datasets}/{ns}/{name}/settings", RepoAdmin(200), |_| format!("{R}/settings"))
            .json(|_| json!({"private": true})),
        row(get.clone(), "/api/{kind:models|datasets}/{ns}/{name}/tree/{rev}", RepoRead(200), |_| format!("{R}/tree/main")),
        row(get.clone(), "/api/{kind:models|datasets}/{ns}/{name}/tree/{rev}/{path:.*}", RepoRead(200), |_| format!("{R}/tree/main/dir")),
        row(post.clone(), "/api/{kind:models|datasets}/{ns}/{name}/paths-info/{rev}", RepoRead(200), |_| format!("{R}/paths-info/main"))
            .json(|_| json!({"paths": ["dir/f.txt"]})),
        row(get.clone(), "/api/{kind:models|datasets}/{ns}/{name}/refs", RepoRead(200), |_| format!("{R}/refs")),
        row(get.clone(), "/api/{kind:models|datasets}/{ns}/{name}/auth-check", RepoRead(200), |_| format!("{R}/auth-check")),
        row(post.clone(), "/api/{kind:models|datasets}/{ns}/{name}/like", RepoRead(200), |_| format!("{R}/like")),
        row(del.clone(), "/api/{kind:models|datasets}/{ns}/{name}/like", RepoRead(200), |_| format!("{R}/like")),
        row(get.clone(), "/api/{kind:models|datasets}/{ns}/{name}/commits/{rev}", RepoRead(200), |_| format!("{R}/commits/main")),
        row(get.clone(), "/api/{kind:models|datasets}/{ns}/{name}/lfs-files", RepoWrite(200), |_| format!("{R}/lfs-files")),
        // Deleting needs admin first; an object the repo does not hold is then 400 (nothing deleted here).
        row(post.clone(), "/api/{kind:models|datasets}/{ns}/{name}/lfs-files/batch", RepoAdmin(400), |_| format!("{R}/lfs-files/batch"))
            .json(|i| json!({"deletions": {"sha": [format!("{i:064}")], "rewriteHistory": true}})),
        row(post.clone(), "/api/{kind:models|datasets}/{ns}/{name}/branch/{rev}", RepoWrite(200), |i| format!("{R}/branch/b{i}"))
            .json(|_| json!({})),
        row(del.clone(), "/api/{kind:models|datasets}/{ns}/{name}/branch/{rev}", RepoWrite(200), |i| format!("{R}/branch/d{i}")),
        row(post.clone(), "/api/{kind:models|datasets}/{ns}/{name}/tag/{rev}", RepoWrite(200), |_| format!("{R}/tag/main"))
            .json(|i| json!({"tag": format!("t{i}")})),
        row(del.clone(), "/api/{kind:models|datasets}/{ns}/{name}/tag/{rev}", RepoWrite(200), |i| format!("{R}/tag/dt{i}")),
        row(post.clone(), "/api/{kind:models|datasets}/{ns}/{name}/super-squash/{rev}", RepoWrite(200), |_| format!("{R}/super-squash/dev"))
            .json(|i| json!({"message": format!("squash {i}")})),
        row(post.clone(), "/api/{kind:models|datasets}/{ns}/{name}/preupload/{rev}", RepoWrite(200), |_| format!("{R}/preupload/main"))
            .json(|_| json!({"files": [{"path": "x.bin", "size": 10, "sample": ""}]})),
        row(get.clone(), "/api/{kind:models|datasets}/{ns}/{name}/xet-write-token/{rev}", RepoWrite(200), |_| format!("{R}/xet-write-token/main")),
        row(get.clone(), "/api/{kind:models|datasets}/{ns}/{name}/xet-read-token/{rev}", RepoRead(200), |_| format!("{R}/xet-read-token/main")),
        row(post.clone(), "/api/{kind:models|datasets}/{ns}/{name}/commit/{rev}", RepoWrite(200), |_| format!("{R}/commit/main"))
            .raw(|i| hub_testkit::ndjson("m", None, &[hub_testkit::file_op(&format!("c{i}.txt"), b"x")])),
        // Discussions: members see and take part; writers (and authors) moderate and merge.
        // Discussions 1..=9 and pull requests 10..=18 (one per actor) are the owner's.
        row(get.clone(), "/api/{kind:models|datasets}/{ns}/{name}/discussions", RepoRead(200), |_| format!("{R}/discussions")),
        row(post.clone(), "/api/{kind:models|datasets}/{ns}/{name}/discussions", RepoRead(200), |_| format!("{R}/discussions"))
            .json(|i| json!({"title": format!("new {i}"), "description": "d"})),
        row(get.clone(), "/api/{kind:models|datasets}/{ns}/{name}/discussions/{num}", RepoRead(200), |_| format!("{R}/discussions/10?diff=1")),
        row(post.clone(), "/api/{kind:models|datasets}/{ns}/{name}/discussions/{num}/comment", RepoRead(200), |_| format!("{R}/discussions/1/comment"))
            .json(|i| json!({"comment": format!("c{i}")})),
        row(post.clone(), "/api/{kind:models|datasets}/{ns}/{name}/discussions/{num}/title", RepoWrite(200), |_| format!("{R}/discussions/1/title"))
            .json(|i| json!({"title": format!("t{i}")})),
        row(post.clone(), "/api/{kind:models|datasets}/{ns}/{name}/discussions/{num}/status", RepoWrite(200), |i| format!("{R}/discussions/{}/status", i + 1))
            .json(|_| json!({"status": "closed"})),
        row(post.clone(), "/api/{kind:models|datasets}/{ns}/{name}/discussions/{num}/merge", RepoWrite(200), |i| format!("{R}/discussions/{}/merge", i + 10)),
        row(post.clone(), "/api/{kind:models|datasets}/{ns}/{name}/discussions/{num}/comment/{comment}/edit", CommentAuthor(200),
            move |_| format!("{R}/discussions/1/comment/{cid}/edit"))
            .json(|i| json!({"content": format!("e{i}")})),
        row(post.clone(), "/api/{kind:models|datasets}/{ns}/{name}/discussions/{num}/comment/{comment}/hide", RepoWrite(200),
            move |_| format!("{R}/discussions/1/comment/{cid2}/hide")),
        row(post.clone(), "/api/{kind:models|datasets}/{ns}/{name}/user-access-request/handle", GatedAdmin(200),
            |_| "/api/models/acme/gated/user-access-request/handle".into())
            .json(|i| json!({"user": "reed", "status": if i == 0 { "accepted" } else { "rejected" }})),
        row(post.clone(), "/api/{kind:models|datasets}/{ns}/{name}/user-access-request/grant", GatedAdmin(200),
            |_| "/api/models/acme/gated/user-access-request/grant".into())
            .json(|i| json!({"user": format!("victim{i}")})),
        row(get.clone(), "/api/{kind:models|datasets}/{ns}/{name}/user-access-request/{status:pending|accepted|rejected}", GatedAdmin(200),
            |_| "/api/models/acme/gated/user-access-request/pending".into()),
        row(post.clone(), "/{ns}/{name}.git/info/lfs/objects/batch", RepoRead(200), |_| format!("/acme/{MARK}.git/info/lfs/objects/batch"))
            .json(move |_| json!({"operation": "download", "objects": [{"oid": sha, "size": lfs_size}]})),
        row(post.clone(), "/{ns}/{name}.git/info/lfs/objects/batch", RepoWrite(200), |_| format!("/acme/{MARK}.git/info/lfs/objects/batch"))
            .json(|i| json!({"operation": "upload", "objects": [{"oid": format!("{i:064}"), "size": 5}]})),
        row(post.clone(), "/{ns}/{name}.git/info/lfs/objects/verify", RepoWrite(200), |_| format!("/acme/{MARK}.git/info/lfs/objects/verify"))
            .json(move |_| json!({"oid": sha2, "size": lfs_size})),
        // Git over smart HTTP: the ref advertisement and a clone's pack.
        row(get.clone(), "/{ns}/{name}/info/refs", GitRead(200), |_| format!("/acme/{MARK}.git/info/refs?service=git-upload-pack")),
        row(post.clone(), "/{ns}/{name}/git-upload-pack", GitRead(200), |_| format!("/acme/{MARK}/git-upload-pack"))
            .raw(move |_| format!("0032want {git_want}\n00000009done\n")),
        // git push: the receive-pack advertisement and an empty push (git's probe).
        row(get.clone(), "/{ns}/{name}/info/refs", GitWrite(200), |_| format!("/acme/{MARK}/info/refs?service=git-receive-pack")),
        row(post.clone(), "/{ns}/{name}/git-receive-pack", GitWrite(200), |_| format!("/acme/{MARK}.git/git-receive-pack"))
            .raw(|_| "0000".to_string()),
        // Signed links: another tenant's session ids are useless without the link's token.
        row(put.clone(), "/lfs/upload/{session}", Public(403), move |_| format!("/lfs/upload/{session}")),
        row(put.clone(), "/lfs/upload/{session}/part/{part}", Public(403), move |_| format!("/lfs/upload/{session2}/part/1")),
        row(post.clone(), "/lfs/upload/{session}/complete", Public(403), move |_| format!("/lfs/upload/{session3}/complete"))
            .json(|_| json!({"oid": "0", "parts": []})),
        row(get.clone(), "/lfs/objects/{sha}", Public(403), {
            let s = lfs_sha.to_string();
            move |_| format!("/lfs/objects/{s}")
        }),
        // The Xet CAS takes only its own access tokens: hub credentials are
        // no credentials there (401), and a data link needs its signature.
        row(post.clone(), "/cas/v1/xorbs/{prefix}/{hash}", Public(401), |_| format!("/cas/v1/xorbs/default/{}", "ab".repeat(32))),
        row(get.clone(), "/cas/v1/xorbs/{prefix}/{hash}", Public(403), |_| format!("/cas/v1/xorbs/default/{}", "ab".repeat(32))),
        row(post.clone(), "/cas/v1/shards", Public(401), |_| "/cas/v1/shards".into()),
        row(post.clone(), "/cas/shards", Public(401), |_| "/cas/shards".into()),
        row(get.clone(), "/cas/v1/reconstructions/{file}", Public(401), |_| format!("/cas/v1/reconstructions/{}", "ab".repeat(32))),
        row(get.clone(), "/cas/v2/reconstructions/{file}", Public(401), |_| format!("/cas/v2/reconstructions/{}", "ab".repeat(32))),
        row(get.clone(), "/cas/v1/chunks/{prefix}/{hash}", Public(401), |_| format!("/cas/v1/chunks/default/{}", "ab".repeat(32))),
        row(get.clone(), "/{ns}/{name}/resolve/{rev}/{path:.*}", RepoRead(200), |_| format!("/acme/{MARK}/resolve/main/dir/f.txt")),
        row(get.clone(), "/{ns}/{name}/resolve/{rev}/{path:.*}", RepoRead(200), |_| format!("/acme/{MARK}/resolve/main/w.bin")),
        row(Method::HEAD, "/{ns}/{name}/resolve/{rev}/{path:.*}", RepoRead(200), |_| format!("/acme/{MARK}/resolve/dev/dir/f.txt")),
        // The dataset viewer over tenant A's private dataset (converted in setup).
        row(get.clone(), "/api/datasets-server/is-valid", RepoRead(200), |_| format!("/api/datasets-server/is-valid?dataset=acme/{MARK}-ds")),
        row(get.clone(), "/api/datasets-server/splits", RepoRead(200), |_| format!("/api/datasets-server/splits?dataset=acme/{MARK}-ds")),
        row(get.clone(), "/api/datasets-server/info", RepoRead(200), |_| format!("/api/datasets-server/info?dataset=acme/{MARK}-ds")),
        row(get.clone(), "/api/datasets-server/first-rows", RepoRead(200), |_| format!("/api/datasets-server/first-rows?dataset=acme/{MARK}-ds&config=default&split=train")),
        row(get.clone(), "/api/datasets-server/rows", RepoRead(200), |_| format!("/api/datasets-server/rows?dataset=acme/{MARK}-ds&config=default&split=train&offset=0&length=5")),
        row(get.clone(), "/api/datasets-server/search", RepoRead(200), |_| format!("/api/datasets-server/search?dataset=acme/{MARK}-ds&config=default&split=train&query=row")),
        row(get.clone(), "/api/datasets-server/filter", RepoRead(200), |_| format!("/api/datasets-server/filter?dataset=acme/{MARK}-ds&config=default&split=train&where=id%3E0")),
        row(get.clone(), "/api/datasets-server/parquet", RepoRead(200), |_| format!("/api/datasets-server/parquet?dataset=acme/{MARK}-ds")),
        row(get.clone(), "/api/datasets-server/size", RepoRead(200), |_| format!("/api/datasets-server/size?dataset=acme/{MARK}-ds")),
        // (`canonical` form of `/api/datasets/{ns}/{name}/parquet/...`.)
        row(get.clone(), "/api/{ns}/{name}/parquet/{config}/{split}/{file}", RepoRead(200), |_| format!("/api/datasets/acme/{MARK}-ds/parquet/default/train/0000.parquet")),
        // Dashboard pages.
        row(get.clone(), "/static/{hash}/{file}", Public(200), |_| hub_api::dashboard::assets::urls().app_js.clone()),
        row(get.clone(), "/favicon.ico", Public(200), |_| "/favicon.ico".into()),
        row(get.clone(), "/", Open(200), |_| "/".into()),
        row(get.clone(), "/models", Open(200), |_| "/models?q=top&sort=likes".into()),
        row(get.clone(), "/datasets", Open(200), |_| "/datasets".into()),
        row(get.clone(), "/login", SignInPage, |_| "/login".into()),
        row(get.clone(), "/settings", SignedInPage(200), |_| "/settings".into()),
        row(get.clone(), "/settings/tokens", TokensPage(200), |_| "/settings/tokens".into()),
        row(get.clone(), "/settings/webhooks", TokensPage(200), |_| "/settings/webhooks".into()),
        row(get.clone(), "/settings/webhooks/{id}", OrgAdminPage(200), move |_| format!("/settings/webhooks/{h8}")),
        row(get.clone(), "/new", SignedInPage(200), |_| "/new".into()),
        row(get.clone(), "/organizations/{org}", MemberPage(200), |_| "/organizations/acme".into()),
        row(get.clone(), "/organizations/{org}/audit", OrgAdminPage(200), |_| "/organizations/acme/audit".into()),
        row(get.clone(), "/inference", SignedInPage(200), |_| "/inference".into()),
        row(get.clone(), "/inference/new", MemberPage(200), |_| format!("/inference/new?repo=acme/{MARK}")),
        row(get.clone(), "/inference/{ns}", MemberPage(200), |_| "/inference/acme".into()),
        row(get.clone(), "/inference/{ns}/{name}", MemberPage(200), |_| format!("/inference/acme/{MARK}-ep")),
        row(get.clone(), "/jobs", SignedInPage(200), |_| "/jobs".into()),
        row(get.clone(), "/jobs/new", SignedInPage(200), |_| "/jobs/new?ns=acme".into()),
        row(get.clone(), "/jobs/{ns}", MemberPage(200), |_| "/jobs/acme".into()),
        row(get.clone(), "/jobs/{ns}/{id}", MemberPage(200), |_| format!("/jobs/acme/{}", job_id(ACTORS.len()))),
        row(get.clone(), "/{ns}/{name}", RepoRead(200), |_| P.into()),
        // Only a redirect to `tree/{rev}`: nothing is looked up.
        row(get.clone(), "/{ns}/{name}/tree", Public(302), |_| format!("{P}/tree?rev=dev")),
        row(get.clone(), "/{ns}/{name}/tree/{rev}", RepoRead(200), |_| format!("{P}/tree/main")),
        row(get.clone(), "/{ns}/{name}/tree/{rev}/{path:.*}", RepoRead(200), |_| format!("{P}/tree/dev/dir")),
        row(get.clone(), "/{ns}/{name}/blob/{rev}/{path:.*}", RepoRead(200), |_| format!("{P}/blob/main/dir/f.txt")),
        row(get.clone(), "/{ns}/{name}/blob/{rev}/{path:.*}", RepoRead(200), |_| format!("{P}/blob/main/w.bin")),
        row(get.clone(), "/{ns}/{name}/commits/{rev}", RepoRead(200), |_| format!("{P}/commits/main")),
        row(get.clone(), "/{ns}/{name}/commit/{oid}", RepoRead(200), move |_| format!("{P}/commit/{commit}")),
        row(get.clone(), "/{ns}/{name}/refs", RepoRead(200), |_| format!("{P}/refs")),
        row(get.clone(), "/{ns}/{name}/discussions", RepoRead(200), |_| format!("{P}/discussions")),
        row(get.clone(), "/{ns}/{name}/discussions/{num}", RepoRead(200), |_| format!("{P}/discussions/10")),
        row(get.clone(), "/{ns}/{name}/upload", RepoWrite(200), |_| format!("{P}/upload")),
        row(get.clone(), "/{ns}/{name}/settings", RepoAdmin(200), |_| format!("{P}/settings")),
    ]
}

#[actix_web::test]
async fn cross_tenant_access_matrix() {
    let mut t = TestState::new().await;
    // This test is about who may do what, not how often (tests/tenancy.rs
    // covers rate limits): anonymous, expired and revoked callers share one
    // anonymous bucket, and ~100 rows each would drain its burst.
    t.state.tenancy.rate = std::sync::Arc::new(hub_api::ratelimit::RateLimiter::new(
        hub_api::ratelimit::RateDefaults {
            anonymous: hub_api::ratelimit::Rate { per_s: 0, burst: 0 },
            ..t.state.tenancy.rate.defaults
        },
    ));
    let (alice_id, alice) = t.user("alice", false, &["read", "write", "admin"]).await;
    let (adam_id, _) = t.user("adam", false, &["read"]).await;
    let (_, adam) = token(&t, adam_id, &["read", "write", "admin"], None, None).await;
    let (wendy_id, wendy) = t.user("wendy", false, &["read", "write"]).await;
    let (reed_id, reed) = t.user("reed", false, &["read", "write"]).await;
    let (mallory_id, mallory) = t.user("mallory", false, &["read", "write", "admin"]).await;
    let (_, expired) = token(
        &t,
        alice_id,
        &["read", "write", "admin"],
        None,
        Some(chrono::Utc::now() - chrono::Duration::hours(1)),
    )
    .await;
    let (revoked_id, revoked) = token(&t, alice_id, &["read", "write", "admin"], None, None).await;
    let (_, restricted) = token(
        &t,
        alice_id,
        &["read", "write", "admin"],
        Some(&["model:acme/other"]),
        None,
    )
    .await;
    let (victim_token, _) = token(&t, alice_id, &["read"], None, None).await;
    hub_api::db::tokens::revoke(&t.state.db, alice_id, revoked_id)
        .await
        .unwrap();
    let acme = t.org("acme", alice_id).await;
    let evil = t.org("evil", mallory_id).await;
    let _ = evil;
    use hub_api::db::namespaces::{set_member, Role};
    set_member(&t.state.db, acme, adam_id, Role::Admin)
        .await
        .unwrap();
    set_member(&t.state.db, acme, wendy_id, Role::Write)
        .await
        .unwrap();
    set_member(&t.state.db, acme, reed_id, Role::Read)
        .await
        .unwrap();
    for i in 0..ACTORS.len() {
        let (extra, _) = t.user(&format!("extra{i}"), false, &["read"]).await;
        let _ = extra;
        let (victim, _) = t.user(&format!("victim{i}"), false, &["read"]).await;
        set_member(&t.state.db, acme, victim, Role::Read)
            .await
            .unwrap();
    }
    let (dummy, _) = t.user("dummy", false, &["read"]).await;
    set_member(&t.state.db, acme, dummy, Role::Read)
        .await
        .unwrap();

    let app = app(&t.state).await;
    // Tenant A's objects.
    create_repo(&app, &alice, &format!("acme/{MARK}"), true).await;
    create_repo(&app, &alice, "acme/other", true).await;
    create_repo(&app, &alice, "acme/gated", false).await;

    // Tenant A's webhooks (a public target: nothing is sent in this test).
    let new_hook = |i: usize| {
        TestRequest::post()
            .uri("/api/settings/webhooks")
            .insert_header(bearer(&alice))
            .set_json(
                json!({"url": format!("http://93.184.216.34/{i}"), "owner": "acme",
                             "watched": [{"type": "org", "name": "acme"}], "secret": "k"}),
            )
    };
    let mut hook_ids = vec![];
    for i in 0..=ACTORS.len() {
        let (st, _, b) = call(&app, new_hook(i)).await;
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
        hook_ids.push(json_of(&b)["webhook"]["id"].as_str().unwrap().to_string());
    }
    let private_commit = commit_files(
        &app,
        &alice,
        &format!("acme/{MARK}"),
        &[("dir/f.txt", b"private bytes")],
    )
    .await;
    commit_files(&app, &alice, "acme/gated", &[("g.txt", b"gated bytes")]).await;
    // A private dataset, converted for the viewer.
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/repos/create")
            .insert_header(bearer(&alice))
            .set_json(json!({"name": format!("{MARK}-ds"), "organization": "acme", "private": true, "type": "dataset"})),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri(&format!("/api/datasets/acme/{MARK}-ds/commit/main"))
            .insert_header(bearer(&alice))
            .set_payload(hub_testkit::ndjson(
                "data",
                None,
                &[hub_testkit::file_op(
                    "train.csv",
                    b"id,text\n1,row one\n2,row two\n",
                )],
            )),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    hub_api::viewer::jobs::run_pending(&t.state).await.unwrap();
    let post = |uri: String, body: Value| {
        TestRequest::post()
            .uri(&uri)
            .insert_header(bearer(&alice))
            .set_json(body)
    };
    // Endpoints of tenant A: one to read and change, one per actor to delete,
    // and a paused one behind the gateway.
    let mut names = vec![format!("{MARK}-ep"), format!("{MARK}-gw")];
    names.extend((0..ACTORS.len()).map(|i| format!("{MARK}-del{i}")));
    for name in names {
        let (st, _, b) = call(
            &app,
            post(
                "/api/v1/endpoints/acme".to_string(),
                json!({"name": name, "repository": format!("acme/{MARK}"), "task": "feature-extraction"}),
            ),
        )
        .await;
        assert_eq!(st, 201, "{}", String::from_utf8_lossy(&b));
    }
    assert_eq!(
        call(
            &app,
            post(format!("/api/v1/endpoints/acme/{MARK}-gw/pause"), json!({}))
        )
        .await
        .0,
        200
    );
    // Fine-tuning jobs of tenant A (queued; nothing runs them here).
    let model = hub_api::db::repos::find(&t.state.db, "model", "acme", MARK)
        .await
        .unwrap()
        .unwrap();
    let ds = hub_api::db::repos::find(&t.state.db, "dataset", "acme", &format!("{MARK}-ds"))
        .await
        .unwrap()
        .unwrap();
    for i in 0..=ACTORS.len() {
        hub_api::db::jobs::insert(
            &t.state.db,
            &hub_api::db::jobs::NewJob {
                id: job_id(i),
                namespace_id: acme,
                created_by: alice_id,
                task: "text-classification",
                base_repo_id: model.id,
                base_model: &model.full_id(),
                base_revision: &private_commit,
                dataset_repo_id: ds.id,
                dataset: &ds.full_id(),
                dataset_revision: &private_commit,
                train_files: &["train.csv".to_string()],
                test_files: &["test.csv".to_string()],
                hyperparameters: &json!({}),
                output_repo_id: model.id,
                output_repo: &model.full_id(),
                max_wall_seconds: 60,
            },
        )
        .await
        .unwrap();
    }
    let r = format!("/api/models/acme/{MARK}");
    assert_eq!(
        call(&app, post(format!("{r}/branch/dev"), json!({})))
            .await
            .0,
        200
    );
    for i in 0..ACTORS.len() {
        assert_eq!(
            call(&app, post(format!("{r}/branch/d{i}"), json!({})))
                .await
                .0,
            200
        );
        assert_eq!(
            call(
                &app,
                post(format!("{r}/tag/main"), json!({"tag": format!("dt{i}")}))
            )
            .await
            .0,
            200
        );
        create_repo(&app, &alice, &format!("acme/{MARK}-del{i}"), true).await;
        create_repo(&app, &alice, &format!("acme/{MARK}-mv{i}"), true).await;
    }
    // Discussions 1..=9, then pull requests 10..=18, one of each per actor.
    for i in 0..ACTORS.len() {
        let (st, _, b) = call(
            &app,
            post(
                format!("{r}/discussions"),
                json!({"title": format!("d{i}")}),
            ),
        )
        .await;
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    }
    for i in 0..ACTORS.len() {
        let (st, _, b) = call(
            &app,
            TestRequest::post()
                .uri(&format!("{r}/commit/main?create_pr=1"))
                .insert_header(bearer(&alice))
                .set_payload(hub_testkit::ndjson(
                    &format!("pr {i}"),
                    None,
                    &[hub_testkit::file_op(&format!("pr{i}.txt"), b"proposed")],
                )),
        )
        .await;
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    }
    let (_, _, b) = call(
        &app,
        TestRequest::get()
            .uri(&format!("{r}/discussions/1"))
            .insert_header(bearer(&alice)),
    )
    .await;
    let comment_id = json_of(&b)["events"][0]["id"].as_str().unwrap().to_string();
    // An LFS object in the private repo, and an open upload session id.
    let content: Vec<u8> = (0..20_000u32).map(|i| (i % 7) as u8).collect();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&content))
    };
    let (st, _, b) = call(
        &app,
        post(
            format!("/acme/{MARK}.git/info/lfs/objects/batch"),
            json!({"operation": "upload", "objects": [{"oid": sha, "size": content.len()}]}),
        ),
    )
    .await;
    assert_eq!(st, 200);
    let href = json_of(&b)["objects"][0]["actions"]["upload"]["href"]
        .as_str()
        .unwrap()
        .to_string();
    let path = href.trim_start_matches("http://hub.test").to_string();
    assert_eq!(
        call(
            &app,
            TestRequest::put().uri(&path).set_payload(content.clone())
        )
        .await
        .0,
        200
    );
    let lfs_line = json!({"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": sha, "size": content.len()}});
    let (st, _, _) = call(
        &app,
        TestRequest::post()
            .uri(&format!("{r}/commit/main"))
            .insert_header(bearer(&alice))
            .set_payload(hub_testkit::ndjson("lfs", None, &[lfs_line])),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _, b) = call(
        &app,
        post(
            format!("/acme/{MARK}.git/info/lfs/objects/batch"),
            json!({"operation": "upload", "objects": [{"oid": "b".repeat(64), "size": 3}]}),
        ),
    )
    .await;
    assert_eq!(st, 200);
    let open_session = json_of(&b)["objects"][0]["actions"]["upload"]["href"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://hub.test/lfs/upload/")
        .split('?')
        .next()
        .unwrap()
        .to_string();
    // Gated (manual) with a pending request from reed.
    assert_eq!(
        call(
            &app,
            TestRequest::put()
                .uri("/api/models/acme/gated/settings")
                .insert_header(bearer(&alice))
                .set_json(json!({"gated": "manual"}))
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(
            &app,
            TestRequest::post()
                .uri("/api/v1/repos/models/acme/gated/access-requests")
                .insert_header(bearer(&reed))
                .set_json(json!({}))
        )
        .await
        .0,
        201
    );

    let creds = |a: Actor| -> Option<String> {
        match a {
            Owner => Some(alice.clone()),
            OrgAdmin => Some(adam.clone()),
            Writer => Some(wendy.clone()),
            Reader => Some(reed.clone()),
            OtherAdmin => Some(mallory.clone()),
            Anonymous => None,
            Expired => Some(expired.clone()),
            Revoked => Some(revoked.clone()),
            Restricted => Some(restricted.clone()),
        }
    };

    let (st, _, b) = call(
        &app,
        TestRequest::get()
            .uri(&format!("/api/v1/webhooks/{}/deliveries", hook_ids[0]))
            .insert_header(bearer(&alice)),
    )
    .await;
    assert_eq!(st, 200);
    let hooks = Hooks {
        main: hook_ids[0].clone(),
        doomed: hook_ids[1..].to_vec(),
        delivery: json_of(&b)["items"][0]["id"].as_str().unwrap().to_string(),
    };
    let table = rows(
        &sha,
        content.len(),
        victim_token,
        &open_session,
        &private_commit,
        &comment_id,
        &hooks,
    );
    // Every route has a row (and every row names a real route).
    let routes: BTreeSet<(String, String)> = hub_api::routes::table()
        .0
        .into_iter()
        .map(|(m, p)| (m.to_string(), canonical(&p)))
        .collect();
    let covered: BTreeSet<(String, String)> = table
        .iter()
        .map(|r| (r.method.to_string(), r.pattern.to_string()))
        .collect();
    let missing: Vec<_> = routes.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "routes without a row in the access matrix: {missing:?}"
    );
    let unknown: Vec<_> = covered.difference(&routes).collect();
    assert!(
        unknown.is_empty(),
        "rows for routes that do not exist: {unknown:?}"
    );

    let mut failures = vec![];
    for row in &table {
        for (i, actor) in ACTORS.iter().enumerate() {
            let uri = (row.uri)(i);
            let mut req = TestRequest::default().method(row.method.clone()).uri(&uri);
            if let Some(tok) = creds(*actor) {
                req = req.insert_header(bearer(&tok));
            }
            if let Some(b) = &row.body {
                req = req.set_json(b(i));
            }
            if let Some(b) = &row.raw_body {
                req = req.set_payload(b(i));
            }
            let (st, _, body) = call(&app, req).await;
            let want = expected(row.class, *actor);
            if st != want {
                failures.push(format!(
                    "{} {uri} as {actor:?}: got {st}, expected {want}: {}",
                    row.method,
                    String::from_utf8_lossy(&body)
                        .chars()
                        .take(200)
                        .collect::<String>()
                ));
            }
            let denied = !(200..300).contains(&st);
            let outsider = matches!(
                actor,
                OtherAdmin | Anonymous | Expired | Revoked | Restricted
            );
            let text = String::from_utf8_lossy(&body);
            if (denied || outsider) && text.contains(MARK) {
                failures.push(format!(
                    "{} {uri} as {actor:?} leaks {MARK:?}: {text}",
                    row.method
                ));
            }
            if denied
                && st == 403
                && outsider
                && row.pattern.contains("{ns}/{name}")
                && uri.contains(MARK)
            {
                failures.push(format!(
                    "{} {uri} as {actor:?}: 403 reveals a private repo",
                    row.method
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cells differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---- Gated repos: every route that hands out bytes or links asks one question ----

/// Callers of the gated matrix: who may read a public, manually gated repo's
/// file contents, and who only its metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gatee {
    Anonymous,
    /// A user who never asked for access.
    Stranger,
    /// Asked; not decided yet.
    Pending,
    Rejected,
    Accepted,
    /// The accepted user's token restricted to another repo: acts as anonymous.
    AcceptedRestricted,
    /// The accepted user's token without the read scope: acts as anonymous.
    AcceptedNoRead,
    /// A member of the repo's organization with the read role.
    MemberRead,
    /// A member with the write role.
    Writer,
    /// A worker pull token for the gated repo.
    Pull,
    /// A worker pull token for another repo.
    PullOther,
}

const GATEES: [Gatee; 11] = [
    Gatee::Anonymous,
    Gatee::Stranger,
    Gatee::Pending,
    Gatee::Rejected,
    Gatee::Accepted,
    Gatee::AcceptedRestricted,
    Gatee::AcceptedNoRead,
    Gatee::MemberRead,
    Gatee::Writer,
    Gatee::Pull,
    Gatee::PullOther,
];

impl Gatee {
    /// Whether the read-and-gate decision lets this caller read file contents.
    fn may_download(self) -> bool {
        matches!(
            self,
            Gatee::Accepted | Gatee::MemberRead | Gatee::Writer | Gatee::Pull
        )
    }
    /// The user whose own namespace the caller may create endpoints in.
    fn own_namespace(self) -> Option<&'static str> {
        match self {
            Gatee::Stranger => Some("stan"),
            Gatee::Pending => Some("pete"),
            Gatee::Rejected => Some("rita"),
            Gatee::Accepted | Gatee::AcceptedRestricted | Gatee::AcceptedNoRead => Some("ada"),
            Gatee::MemberRead => Some("reed"),
            Gatee::Writer => Some("wendy"),
            _ => None,
        }
    }
}

/// What the file contents of the gated repo contain; no answer to a caller
/// the gate refuses may contain it.
const GATED_MARK: &str = "gatedcontent-7f3a";

/// Gated matrix classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GClass {
    /// Metadata (info, listings, pages): `ok` for everyone, contents for nobody refused.
    Meta(u16),
    /// Hands out file contents or links (a byte route): callers who pass get
    /// `ok` and the contents (or a link); the rest 403 `GatedRepo`.
    Bytes(u16),
    /// The dashboard's file view: 200 for everyone; contents only for callers who pass.
    BytesPage,
    /// The signed LFS link from a batch answer, opened without credentials:
    /// callers who got a link read the object; the rest have none (403).
    SignedLink,
    /// Creating an endpoint on the gated model in the caller's own namespace:
    /// 201 for callers who pass, 403 `GatedRepo` for signed-in users who do not.
    Endpoint,
    /// Called, but the status is another test's business (admin and writer
    /// views); the answer must still not carry contents to a refused caller.
    Unchecked,
    /// Not called: a write, covered by `cross_tenant_access_matrix`.
    Write,
    /// Git over smart HTTP (a byte route): callers who pass get `ok` (and a
    /// pack); anonymous callers are asked for credentials (401); the rest
    /// 403 `GatedRepo`.
    GitPack(u16),
    /// The dataset viewer over the gated dataset: a byte route whose callers
    /// who pass get `ok` (with the rows when `.1`); the rest 403 `GatedRepo`.
    /// (A worker pull token is for the gated model, not this dataset.)
    Viewer(u16, bool),
}

struct GRow {
    method: Method,
    pattern: &'static str,
    class: GClass,
    uri: Box<dyn Fn(Gatee) -> String>,
    body: Option<Value>,
    raw: Option<String>,
}

fn grow(
    method: Method,
    pattern: &'static str,
    class: GClass,
    uri: impl Fn(Gatee) -> String + 'static,
) -> GRow {
    GRow {
        method,
        pattern,
        class,
        uri: Box::new(uri),
        body: None,
        raw: None,
    }
}

fn gated_rows(
    sha: &str,
    size: usize,
    commit: &str,
    links: std::collections::HashMap<String, String>,
) -> Vec<GRow> {
    use GClass::*;
    let get = Method::GET;
    let post = Method::POST;
    const R: &str = "/api/models/acme/gated";
    const P: &str = "/acme/gated";
    let sha_s = sha.to_string();
    let batch = |op: &str| json!({"operation": op, "objects": [{"oid": sha, "size": size}]});
    let ep = |g: Gatee| format!("/api/v1/endpoints/{}", g.own_namespace().unwrap_or("acme"));
    let mut rows = vec![
        grow(get.clone(), "/api/{kind:models|datasets}/{ns}/{name}", Meta(200), |_| R.into()),
        grow(get.clone(), "/api/{kind:models|datasets}/{ns}/{name}/revision/{rev}", Meta(200), |_| format!("{R}/revision/main?blobs=true")),
        grow(get.clone(), "/api/{kind:models|datasets}/{ns}/{name}/tree/{rev}", Meta(200), |_| format!("{R}/tree/main?recursive=true&expand=true")),
        grow(get.clone(), "/api/{kind:models|datasets}/{ns}/{name}/tree/{rev}/{path:.*}", Meta(200), |_| format!("{R}/tree/main/d")),
        GRow { body: Some(json!({"paths": ["d/g.txt", "w.bin"], "expand": true})), ..grow(post.clone(), "/api/{kind:models|datasets}/{ns}/{name}/paths-info/{rev}", Meta(200), |_| format!("{R}/paths-info/main")) },
        grow(get.clone(), "/api/{kind:models|datasets}/{ns}/{name}/refs", Meta(200), |_| format!("{R}/refs")),
        grow(get.clone(), "/api/{kind:models|datasets}/{ns}/{name}/commits/{rev}", Meta(200), |_| format!("{R}/commits/main")),
        grow(get.clone(), "/api/{kind:models|datasets}/{ns}/{name}/discussions", Meta(200), |_| format!("{R}/discussions")),
        // A pull request's diff shows the gated file it adds: for callers who pass only.
        grow(get.clone(), "/api/{kind:models|datasets}/{ns}/{name}/discussions/{num}", BytesPage, |_| format!("{R}/discussions/1?diff=1")),
        // Writers and admins only (the cross-tenant matrix checks who).
        grow(get.clone(), "/api/{kind:models|datasets}/{ns}/{name}/lfs-files", Unchecked, |_| format!("{R}/lfs-files")),
        // The gate's verdict without contents (hf_compat::auth_check_is_the_download_decision).
        grow(get.clone(), "/api/{kind:models|datasets}/{ns}/{name}/auth-check", Unchecked, |_| format!("{R}/auth-check")),
        grow(get.clone(), "/api/{kind:models|datasets}/{ns}/{name}/user-access-request/{status:pending|accepted|rejected}", Unchecked, |_| format!("{R}/user-access-request/accepted")),
        grow(get.clone(), "/api/v1/repos/{kind:models|datasets}/{ns}/{name}/access-requests", Unchecked, |_| "/api/v1/repos/models/acme/gated/access-requests".into()),
        grow(get.clone(), "/api/v1/repos/{kind:models|datasets}/{ns}/{name}/access-requests/me", Unchecked, |_| "/api/v1/repos/models/acme/gated/access-requests/me".into()),
        GRow { body: Some(batch("download")), ..grow(post.clone(), "/{ns}/{name}.git/info/lfs/objects/batch", Bytes(200), |_| format!("{P}.git/info/lfs/objects/batch")) },
        GRow { body: Some(batch("upload")), ..grow(post.clone(), "/{ns}/{name}.git/info/lfs/objects/batch", Write, |_| format!("{P}.git/info/lfs/objects/batch")) },
        grow(get.clone(), "/lfs/objects/{sha}", SignedLink, move |g| {
            links.get(&format!("{g:?}")).cloned().unwrap_or_else(|| format!("/lfs/objects/{sha_s}"))
        }),
        grow(get.clone(), "/api/{kind:models|datasets}/{ns}/{name}/xet-write-token/{rev}", Write, |_| format!("{R}/xet-write-token/main")),
        grow(get.clone(), "/api/{kind:models|datasets}/{ns}/{name}/xet-read-token/{rev}", Bytes(200), |_| format!("{R}/xet-read-token/main")),
        grow(get.clone(), "/{ns}/{name}/resolve/{rev}/{path:.*}", Bytes(200), |_| format!("{P}/resolve/main/d/g.txt")),
        grow(get.clone(), "/{ns}/{name}/resolve/{rev}/{path:.*}", Bytes(200), |_| format!("{P}/resolve/main/w.bin")),
        grow(get.clone(), "/{ns}/{name}/resolve/{rev}/{path:.*}", Bytes(200), |_| format!("{P}/resolve/main/README.md")),
        grow(Method::HEAD, "/{ns}/{name}/resolve/{rev}/{path:.*}", Bytes(200), |_| format!("{P}/resolve/main/w.bin")),
        grow(get.clone(), "/{ns}/{name}/info/refs", GitPack(200), |_| format!("{P}/info/refs?service=git-upload-pack")),
        GRow { raw: Some(format!("0032want {commit}\n00000009done\n")), ..grow(post.clone(), "/{ns}/{name}/git-upload-pack", GitPack(200), |_| format!("{P}.git/git-upload-pack")) },
        GRow { body: Some(json!({"name": "gep", "repository": "acme/gated", "task": "feature-extraction"})), ..grow(post.clone(), "/api/v1/endpoints/{ns}", Endpoint, ep) },
        // Dashboard pages.
        grow(get.clone(), "/{ns}/{name}", Meta(200), |_| P.into()),
        grow(get.clone(), "/{ns}/{name}/tree", Meta(302), |_| format!("{P}/tree?rev=main")),
        grow(get.clone(), "/{ns}/{name}/tree/{rev}", Meta(200), |_| format!("{P}/tree/main")),
        grow(get.clone(), "/{ns}/{name}/tree/{rev}/{path:.*}", Meta(200), |_| format!("{P}/tree/main/d")),
        grow(get.clone(), "/{ns}/{name}/blob/{rev}/{path:.*}", BytesPage, |_| format!("{P}/blob/main/d/g.txt")),
        grow(get.clone(), "/{ns}/{name}/blob/{rev}/{path:.*}", BytesPage, |_| format!("{P}/blob/main/w.bin")),
        grow(get.clone(), "/{ns}/{name}/blob/{rev}/{path:.*}", BytesPage, |_| format!("{P}/blob/main/m.safetensors")),
        grow(get.clone(), "/{ns}/{name}/commits/{rev}", Meta(200), |_| format!("{P}/commits/main")),
        grow(get.clone(), "/{ns}/{name}/refs", Meta(200), |_| format!("{P}/refs")),
        grow(get.clone(), "/{ns}/{name}/discussions", Meta(200), |_| format!("{P}/discussions")),
        // A pull request's page shows its diff: for callers who pass only.
        grow(get.clone(), "/{ns}/{name}/discussions/{num}", BytesPage, |_| format!("{P}/discussions/1")),
        grow(get.clone(), "/{ns}/{name}/upload", Unchecked, |_| format!("{P}/upload")),
        grow(get.clone(), "/{ns}/{name}/settings", Unchecked, |_| format!("{P}/settings")),
        grow(get.clone(), "/inference/new", Unchecked, |_| "/inference/new?repo=acme/gated".into()),
    ];
    // The dataset viewer over the gated dataset `acme/gated-ds`.
    const D: &str = "dataset=acme/gated-ds";
    const S: &str = "dataset=acme/gated-ds&config=default&split=train";
    for (route, q, rows_shown) in [
        ("is-valid", D, false),
        ("splits", D, false),
        ("info", D, false),
        ("first-rows", S, true),
        ("rows", S, true),
        (
            "search",
            "dataset=acme/gated-ds&config=default&split=train&query=gatedcontent",
            true,
        ),
        (
            "filter",
            "dataset=acme/gated-ds&config=default&split=train&where=id%3E%3D1",
            true,
        ),
        ("parquet", D, false),
        ("size", D, false),
    ] {
        let pattern: &'static str =
            Box::leak(format!("/api/datasets-server/{route}").into_boxed_str());
        rows.push(grow(
            get.clone(),
            pattern,
            Viewer(200, rows_shown),
            move |_| format!("{pattern}?{q}"),
        ));
    }
    rows.push(grow(
        get.clone(),
        // (`canonical` form of `/api/datasets/{ns}/{name}/parquet/...`.)
        "/api/{ns}/{name}/parquet/{config}/{split}/{file}",
        Viewer(200, false),
        |_| "/api/datasets/acme/gated-ds/parquet/default/train/0000.parquet".into(),
    ));
    // The commit page lists the paths a commit changed, never contents.
    let commit = commit.to_string();
    rows.push(grow(
        get.clone(),
        "/{ns}/{name}/commit/{oid}",
        Meta(200),
        move |_| format!("{P}/commit/{commit}"),
    ));
    rows
}

/// Uploads `content` as an LFS object of `repo` and commits it at `path`.
async fn commit_lfs(app: &impl App, tok: &str, repo: &str, path: &str, content: &[u8]) -> String {
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(content));
    let (st, _, b) = call(
        app,
        TestRequest::post()
            .uri(&format!("/{repo}.git/info/lfs/objects/batch"))
            .insert_header(bearer(tok))
            .set_json(
                json!({"operation": "upload", "objects": [{"oid": sha, "size": content.len()}]}),
            ),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    if let Some(href) = json_of(&b)["objects"][0]["actions"]["upload"]["href"].as_str() {
        let path = href.trim_start_matches("http://hub.test").to_string();
        let (st, _, _) = call(
            app,
            TestRequest::put().uri(&path).set_payload(content.to_vec()),
        )
        .await;
        assert_eq!(st, 200);
    }
    let line = json!({"key": "lfsFile", "value": {"path": path, "algo": "sha256", "oid": sha, "size": content.len()}});
    let (st, _, b) = call(
        app,
        TestRequest::post()
            .uri(&format!("/api/models/{repo}/commit/main"))
            .insert_header(bearer(tok))
            .set_payload(hub_testkit::ndjson("lfs", None, &[line])),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    sha
}

/// A tiny valid safetensors file whose metadata holds `note`.
pub fn safetensors_with_note(note: &str) -> Vec<u8> {
    let header = json!({"__metadata__": {"note": note}, "t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).to_string();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&[0, 0, 128, 63]);
    out
}

/// A worker pull token for `repo` (of the org `ns`), minted the way the
/// control plane does: from the decision for an endpoint of that org.
pub async fn pull_token_for(
    t: &TestState,
    app: &impl App,
    owner: &str,
    ns: &str,
    repo: &str,
    ep: &str,
) -> String {
    let (st, _, b) = call(
        app,
        TestRequest::post()
            .uri(&format!("/api/v1/endpoints/{ns}"))
            .insert_header(bearer(owner))
            .set_json(json!({"name": ep, "repository": repo, "task": "feature-extraction"})),
    )
    .await;
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&b));
    let e = hub_api::db::endpoints::get(&t.state.db, ns, ep)
        .await
        .unwrap()
        .unwrap();
    let dl = hub_api::gating::endpoint_download(&t.state, &e)
        .await
        .unwrap();
    hub_api::auth::service_tokens::pull_token(&t.state, &dl, 600)
        .await
        .unwrap()
}

#[actix_web::test]
async fn gated_byte_routes_matrix() {
    let t = TestState::new().await;
    let (alice_id, alice) = t.user("alice", false, &["read", "write", "admin"]).await;
    let rw = &["read", "write"];
    let (_, stan) = t.user("stan", false, rw).await;
    let (_, pete) = t.user("pete", false, rw).await;
    let (_, rita) = t.user("rita", false, rw).await;
    let (ada_id, ada) = t.user("ada", false, rw).await;
    let (reed_id, reed) = t.user("reed", false, rw).await;
    let (wendy_id, wendy) = t.user("wendy", false, rw).await;
    let (_, ada_restricted) = token(
        &t,
        ada_id,
        &["read", "write"],
        Some(&["model:acme/other"]),
        None,
    )
    .await;
    let (_, ada_noread) = token(&t, ada_id, &["inference"], None, None).await;
    let acme = t.org("acme", alice_id).await;
    use hub_api::db::namespaces::{set_member, Role};
    set_member(&t.state.db, acme, reed_id, Role::Read)
        .await
        .unwrap();
    set_member(&t.state.db, acme, wendy_id, Role::Write)
        .await
        .unwrap();
    let app = app(&t.state).await;
    create_repo(&app, &alice, "acme/gated", false).await;
    create_repo(&app, &alice, "acme/other", false).await;
    commit_files(&app, &alice, "acme/other", &[("x.txt", b"other")]).await;
    let gated_commit = commit_files(
        &app,
        &alice,
        "acme/gated",
        &[
            (
                "README.md",
                b"---\nlicense: mit\n---\n# A gated model\nAsk for access.\n".as_slice(),
            ),
            ("d/g.txt", format!("{GATED_MARK} small file").as_bytes()),
            ("m.safetensors", &safetensors_with_note(GATED_MARK)),
        ],
    )
    .await;
    let lfs_content: Vec<u8> = format!("{GATED_MARK} ")
        .bytes()
        .cycle()
        .take(30_000)
        .collect();
    let sha = commit_lfs(&app, &alice, "acme/gated", "w.bin", &lfs_content).await;
    // Pull request #1 adds a file with the mark (its diff shows it).
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/models/acme/gated/commit/main?create_pr=1")
            .insert_header(bearer(&alice))
            .set_payload(hub_testkit::ndjson(
                "pr",
                None,
                &[hub_testkit::file_op(
                    "d/pr.txt",
                    format!("{GATED_MARK} proposed").as_bytes(),
                )],
            )),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    // A gated dataset, converted for the viewer.
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/repos/create")
            .insert_header(bearer(&alice))
            .set_json(json!({"name": "gated-ds", "organization": "acme", "type": "dataset"})),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let csv = format!("id,text\n1,{GATED_MARK} one\n2,{GATED_MARK} two\n");
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/datasets/acme/gated-ds/commit/main")
            .insert_header(bearer(&alice))
            .set_payload(hub_testkit::ndjson(
                "data",
                None,
                &[hub_testkit::file_op("train.csv", csv.as_bytes())],
            )),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    hub_api::viewer::jobs::run_pending(&t.state).await.unwrap();
    let pull = pull_token_for(&t, &app, &alice, "acme", "acme/gated", "own").await;
    let pull_other = pull_token_for(&t, &app, &alice, "acme", "acme/other", "own-other").await;
    let put = |uri: &str, tok: &str, body: Value| {
        TestRequest::put()
            .uri(uri)
            .insert_header(bearer(tok))
            .set_json(body)
    };
    for kind in ["models", "datasets"] {
        let repo = if kind == "models" {
            "gated"
        } else {
            "gated-ds"
        };
        assert_eq!(
            call(
                &app,
                put(
                    &format!("/api/{kind}/acme/{repo}/settings"),
                    &alice,
                    json!({"gated": "manual"})
                )
            )
            .await
            .0,
            200
        );
        for tok in [&pete, &rita, &ada] {
            let (st, _, _) = call(
                &app,
                TestRequest::post()
                    .uri(&format!("/api/v1/repos/{kind}/acme/{repo}/access-requests"))
                    .insert_header(bearer(tok))
                    .set_json(json!({})),
            )
            .await;
            assert_eq!(st, 201);
        }
        for (user, status) in [("rita", "rejected"), ("ada", "accepted")] {
            let uri = format!("/api/v1/repos/{kind}/acme/{repo}/access-requests/{user}");
            assert_eq!(
                call(&app, put(&uri, &alice, json!({"status": status})))
                    .await
                    .0,
                200
            );
        }
    }
    let creds = |g: Gatee| -> Option<String> {
        Some(match g {
            Gatee::Anonymous => return None,
            Gatee::Stranger => stan.clone(),
            Gatee::Pending => pete.clone(),
            Gatee::Rejected => rita.clone(),
            Gatee::Accepted => ada.clone(),
            Gatee::AcceptedRestricted => ada_restricted.clone(),
            Gatee::AcceptedNoRead => ada_noread.clone(),
            Gatee::MemberRead => reed.clone(),
            Gatee::Writer => wendy.clone(),
            Gatee::Pull => pull.clone(),
            Gatee::PullOther => pull_other.clone(),
        })
    };
    // Each caller's own LFS download link, when the batch API gives one.
    let mut links = std::collections::HashMap::new();
    for g in GATEES {
        let mut req = TestRequest::post()
            .uri("/acme/gated.git/info/lfs/objects/batch")
            .set_json(json!({"operation": "download", "objects": [{"oid": sha, "size": lfs_content.len()}]}));
        if let Some(tok) = creds(g) {
            req = req.insert_header(bearer(&tok));
        }
        let (_, _, b) = call(&app, req).await;
        if let Some(href) = serde_json::from_slice::<Value>(&b).ok().and_then(|v| {
            v["objects"][0]["actions"]["download"]["href"]
                .as_str()
                .map(str::to_string)
        }) {
            links.insert(
                format!("{g:?}"),
                href.trim_start_matches("http://hub.test").to_string(),
            );
        }
    }
    let rows = gated_rows(&sha, lfs_content.len(), &gated_commit, links);

    // The route table marks the byte routes; the rows that expect the gate
    // are exactly those (so a new byte route needs the mark and a row here,
    // and a marked route is checked against every gated caller).
    let table = hub_api::routes::table();
    let marked: BTreeSet<(String, String)> = table
        .1
        .iter()
        .map(|(m, p)| (m.to_string(), canonical(p)))
        .collect();
    let gated_rows_set: BTreeSet<(String, String)> = rows
        .iter()
        .filter(|r| {
            matches!(
                r.class,
                GClass::Bytes(_)
                    | GClass::BytesPage
                    | GClass::SignedLink
                    | GClass::GitPack(_)
                    | GClass::Viewer(..)
            )
        })
        .map(|r| (r.method.to_string(), r.pattern.to_string()))
        .collect();
    assert_eq!(
        marked, gated_rows_set,
        "byte-marked routes (left) and byte rows of the gated matrix (right) differ"
    );
    // Every read route of a repo has a row here too.
    let covered: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| (r.method.to_string(), r.pattern.to_string()))
        .collect();
    let reads: BTreeSet<(String, String)> = table
        .0
        .iter()
        .map(|(m, p)| (m.to_string(), canonical(p)))
        .filter(|(m, p)| {
            (m == "GET" || m == "HEAD")
                && p.contains("{ns}/{name}")
                && !p.starts_with("/api/v1/endpoints")
                && !p.starts_with("/endpoints/")
                && !p.starts_with("/inference/")
        })
        .collect();
    let missing: Vec<_> = reads.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "repo read routes without a row in the gated matrix: {missing:?}"
    );

    let mut failures = vec![];
    for row in &rows {
        if row.class == GClass::Write {
            continue;
        }
        for g in GATEES {
            let uri = (row.uri)(g);
            let mut req = TestRequest::default().method(row.method.clone()).uri(&uri);
            if row.class != GClass::SignedLink {
                if let Some(tok) = creds(g) {
                    req = req.insert_header(bearer(&tok));
                }
            }
            if let Some(b) = &row.body {
                req = req.set_json(b.clone());
            }
            if let Some(b) = &row.raw {
                req = req.set_payload(b.clone());
            }
            let (st, h, body) = call(&app, req).await;
            let text = String::from_utf8_lossy(&body).to_string();
            let ok = g.may_download();
            let gated_403 = st == 403 && h.get("x-error-code").is_some_and(|v| v == "GatedRepo");
            // A Xet read token is a key to the bytes, like a link.
            let shows = text.contains(GATED_MARK)
                || text.contains("/lfs/objects/")
                || text.contains("\"accessToken\"");
            let fail = match row.class {
                GClass::Meta(want) => st != want,
                // (README.md carries no mark: the card page shows it to everyone.)
                GClass::Bytes(want) if ok => {
                    st != want
                        || (row.method == Method::GET && !uri.ends_with("README.md") && !shows)
                }
                GClass::Bytes(_) => !gated_403,
                GClass::BytesPage => st != 200 || shows != ok,
                GClass::SignedLink if ok => st != 200 || !text.contains(GATED_MARK),
                GClass::SignedLink => st != 403,
                GClass::Endpoint => match (ok, g.own_namespace()) {
                    (true, Some(_)) => st != 201,
                    (false, Some(_))
                        if matches!(g, Gatee::Stranger | Gatee::Pending | Gatee::Rejected) =>
                    {
                        !gated_403
                    }
                    _ => !(400..500).contains(&st),
                },
                // The pack is deflated: its "PACK" header says it was sent.
                GClass::GitPack(want) if ok => {
                    st != want || (row.method == Method::POST && !text.contains("PACK"))
                }
                GClass::GitPack(_) if g == Gatee::Anonymous => {
                    st != 401 || !h.contains_key("www-authenticate") || text.contains("PACK")
                }
                GClass::GitPack(_) => !gated_403 || text.contains("PACK"),
                GClass::Viewer(want, rows) if ok && g != Gatee::Pull => {
                    st != want || (rows && !shows)
                }
                GClass::Viewer(..) => !gated_403,
                GClass::Unchecked | GClass::Write => false,
            };
            if fail {
                failures.push(format!(
                    "{} {uri} as {g:?}: got {st} ({}): {}",
                    row.method,
                    h.get("x-error-code")
                        .map(|v| v.to_str().unwrap_or(""))
                        .unwrap_or("-"),
                    text.chars().take(160).collect::<String>()
                ));
            }
            let ok = ok && !(matches!(row.class, GClass::Viewer(..)) && g == Gatee::Pull);
            if !ok && shows {
                failures.push(format!(
                    "{} {uri} as {g:?} leaks the gated file's contents or a link",
                    row.method
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cells differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
