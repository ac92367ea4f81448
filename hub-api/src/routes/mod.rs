//! The route table: every scope and route of the hub, on one screen.
//! Handlers are thin; the logic lives in `registry`, `auth`, `db` and `storage`.

pub mod body;
pub mod git;
pub mod health;
pub mod hf;
pub mod inference;
pub mod query;
pub mod v1;
pub mod viewer;
pub mod xet;

use crate::metrics::RouteLabel;
use actix_web::http::Method;
use actix_web::{web, FromRequest, Handler, HttpResponse, Responder, Route};

/// Repo id forms of API paths: `ns/name` and single-segment `name`.
fn api(suffix: &str) -> Vec<String> {
    let mut v = api_ns(suffix);
    v.extend(api_single(suffix));
    v
}

/// The two-segment (`ns/name`) form of an API path.
fn api_ns(suffix: &str) -> Vec<String> {
    vec![format!(
        "/api/{{kind:models|datasets}}/{{ns}}/{{name}}{suffix}"
    )]
}

/// The single-segment (`gpt2`) form of an API path.
fn api_single(suffix: &str) -> Vec<String> {
    vec![format!("/api/{{kind:models|datasets}}/{{name}}{suffix}")]
}

/// Repo id forms of download and git paths (datasets first: `datasets` is reserved).
fn web_paths(suffix: &str) -> Vec<String> {
    vec![
        format!("/datasets/{{ns}}/{{name}}{suffix}"),
        format!("/datasets/{{name}}{suffix}"),
        format!("/{{ns}}/{{name}}{suffix}"),
        format!("/{{name}}{suffix}"),
    ]
}

/// Repo id forms of git's smart HTTP paths: two-segment ids only (a
/// single-segment `/{name}/info/refs` would take the dashboard's refs page of
/// a repo named `info`), `name` with or without `.git`.
fn git_paths(suffix: &str) -> Vec<String> {
    vec![
        format!("/datasets/{{ns}}/{{name}}{suffix}"),
        format!("/{{ns}}/{{name}}{suffix}"),
    ]
}

/// Where the route table goes: actix, or a [`Table`] that records it (so a
/// test can walk every route the hub serves).
pub trait RouteSink {
    /// One resource: its path patterns and its (method, handler) routes.
    fn add(&mut self, paths: Vec<String>, routes: Vec<(Method, Route)>);
    /// A dashboard page: like [`RouteSink::add`], but other methods on its
    /// URL answer like an unknown route (404), not 405, since page patterns
    /// such as `/{ns}/{name}` cover URLs API clients may mistype.
    fn page(&mut self, paths: Vec<String>, routes: Vec<(Method, Route)>) {
        self.add(paths, routes);
    }
    /// A resource whose routes hand out file bytes or links to them: like
    /// [`RouteSink::add`], and recorded as such in the [`Table`]. Their
    /// handlers decide through `gating::load_repo_for_download`, and the
    /// access matrix checks them against gated repos.
    fn bytes(&mut self, paths: Vec<String>, routes: Vec<(Method, Route)>) {
        self.add(paths, routes);
    }
    /// Everything under the static `prefix`, to one handler that reads the
    /// rest of the path itself; `paths` are the patterns it serves (for the
    /// [`Table`]; the route label is the last, most general one). actix
    /// matches a static prefix by comparing strings, where every pattern with
    /// a parameter costs a regex run per request.
    fn prefix(&mut self, _prefix: &'static str, paths: Vec<String>, routes: Vec<(Method, Route)>) {
        self.add(paths, routes);
    }
    /// A dashboard page that shows file contents: [`RouteSink::page`] and
    /// [`RouteSink::bytes`] at once.
    fn bytes_page(&mut self, paths: Vec<String>, routes: Vec<(Method, Route)>) {
        self.page(paths, routes);
    }
    /// A resource that matches only the methods it serves: a request with
    /// another method goes on to the resources after it (instead of a 405).
    /// For patterns that share their shape with a later one, such as
    /// `/api/models/{name}/like` and `/api/models/{ns}/{name}`.
    fn by_method(&mut self, paths: Vec<String>, routes: Vec<(Method, Route)>) {
        self.add(paths, routes);
    }
}

/// Registers resources with actix. Those under `/api/` go into one
/// `web::scope("/api")`, registered where the first of them was: actix tries
/// resources in order and matches every pattern with parameters by a regex
/// (`regex_lite`'s PikeVM, with captures), so a download such as `HEAD
/// /{ns}/{name}/resolve/...` ran the ~70 `/api` regexes before its own (23% of
/// the hub's CPU in a profile of `scripts/bench/head.sh`). The scope skips
/// them with one prefix comparison. Nothing outside `/api` can serve a path
/// under it (`api` is a reserved namespace), so routing is unchanged; a path
/// under `/api` that no resource serves gets the app's default (404).
struct Actix<'a> {
    cfg: &'a mut web::ServiceConfig,
    api: Option<actix_web::Scope>,
    /// Resources registered after the first `/api` one, kept back until the
    /// scope is registered (so the order actix tries them in is the table's).
    after_api: Vec<actix_web::Resource>,
}

impl<'a> Actix<'a> {
    fn new(cfg: &'a mut web::ServiceConfig) -> Self {
        Actix {
            cfg,
            api: None,
            after_api: Vec::new(),
        }
    }

    fn register(&mut self, paths: &[String], res: impl FnOnce(Vec<String>) -> actix_web::Resource) {
        if paths.iter().all(|p| p.starts_with("/api/")) {
            let inner = paths
                .iter()
                .map(|p| p["/api".len()..].to_string())
                .collect();
            let scope = self.api.take().unwrap_or_else(|| web::scope("/api"));
            self.api = Some(scope.service(res(inner)));
        } else if self.api.is_some() {
            self.after_api.push(res(paths.to_vec()));
        } else {
            self.cfg.service(res(paths.to_vec()));
        }
    }

    fn finish(self) {
        if let Some(scope) = self.api {
            self.cfg.service(scope);
        }
        for r in self.after_api {
            self.cfg.service(r);
        }
    }
}

/// The answer to a method a resource does not serve: the JSON error body
/// (`method_not_allowed`) with `Allow`, not actix's empty 405.
fn method_not_allowed(methods: &[Method]) -> Route {
    let allow = methods
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    web::route().to(move |req: actix_web::HttpRequest| {
        let e = crate::error::ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            allow: allow.clone(),
        };
        async move { actix_web::ResponseError::error_response(&e) }
    })
}

impl RouteSink for Actix<'_> {
    fn add(&mut self, paths: Vec<String>, routes: Vec<(Method, Route)>) {
        let methods: Vec<Method> = routes.iter().map(|(m, _)| m.clone()).collect();
        let label = RouteLabel::new(&paths);
        self.register(&paths, move |p| {
            let mut res = web::resource(p)
                .app_data(label)
                .default_service(method_not_allowed(&methods));
            for (_, r) in routes {
                res = res.route(r);
            }
            res
        });
    }

    fn page(&mut self, paths: Vec<String>, routes: Vec<(Method, Route)>) {
        let label = RouteLabel::new(&paths);
        self.register(&paths, move |p| {
            let mut res = web::resource(p)
                .app_data(label)
                .default_service(web::to(not_found));
            for (_, r) in routes {
                res = res.route(r);
            }
            res
        });
    }

    fn prefix(
        &mut self,
        prefix: &'static str,
        paths: Vec<String>,
        mut routes: Vec<(Method, Route)>,
    ) {
        // Registered at once, so only before the `/api` scope (which keeps
        // later resources back to preserve the table's order).
        assert!(
            self.api.is_none() && routes.len() == 1,
            "a prefix route comes before the /api routes and has one handler"
        );
        let (_, route) = routes.pop().expect("one route");
        let label = RouteLabel::new(&paths[paths.len() - 1..]);
        self.cfg
            .service(web::scope(prefix).app_data(label).default_service(route));
    }

    fn by_method(&mut self, paths: Vec<String>, routes: Vec<(Method, Route)>) {
        let methods: Vec<Method> = routes.iter().map(|(m, _)| m.clone()).collect();
        let guard = actix_web::guard::fn_guard(move |ctx| methods.contains(&ctx.head().method));
        let label = RouteLabel::new(&paths);
        self.register(&paths, move |p| {
            let mut res = web::resource(p).app_data(label).guard(guard);
            for (_, r) in routes {
                res = res.route(r);
            }
            res
        });
    }
}

/// Every (method, path pattern) the hub serves, in routing order; then those
/// that hand out file bytes or links to them ([`RouteSink::bytes`]).
#[derive(Debug, Default)]
pub struct Table(pub Vec<(Method, String)>, pub Vec<(Method, String)>);

impl RouteSink for Table {
    fn add(&mut self, paths: Vec<String>, routes: Vec<(Method, Route)>) {
        for p in paths {
            for (m, _) in &routes {
                self.0.push((m.clone(), p.clone()));
            }
        }
    }
    fn bytes(&mut self, paths: Vec<String>, routes: Vec<(Method, Route)>) {
        for p in &paths {
            for (m, _) in &routes {
                self.1.push((m.clone(), p.clone()));
            }
        }
        self.add(paths, routes);
    }
    fn bytes_page(&mut self, paths: Vec<String>, routes: Vec<(Method, Route)>) {
        self.bytes(paths, routes);
    }
}

/// The route table, recorded.
pub fn table() -> Table {
    let mut t = Table::default();
    build(&mut t);
    t
}

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // Query-string and path extractor failures answer with the same JSON
    // error body (`invalid_request`) as every other bad input, not
    // actix's plain-text default.
    cfg.app_data(web::QueryConfig::default().error_handler(|e, _| {
        crate::error::ApiError::from(query::QueryError::malformed(e)).into()
    }));
    cfg.app_data(web::PathConfig::default().error_handler(|e, _| {
        crate::error::ApiError::from(query::QueryError::PathParams(e.to_string())).into()
    }));
    let mut sink = Actix::new(cfg);
    build(&mut sink);
    sink.finish();
}

fn on<F, Args>(m: Method, h: F) -> (Method, Route)
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    (m.clone(), web::method(m).to(h))
}

/// A route for every method (proxies). The table records it as method `ANY`.
#[allow(dead_code)]
fn on_any<F, Args>(h: F) -> (Method, Route)
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    (
        Method::from_bytes(b"ANY").expect("a valid extension method"),
        web::route().to(h),
    )
}

fn one(p: &str) -> Vec<String> {
    vec![p.to_string()]
}

/// The management API's repo paths (two-segment repo ids).
fn v1_repo(suffix: &str) -> Vec<String> {
    one(&format!(
        "/api/v1/repos/{{kind:models|datasets}}/{{ns}}/{{name}}{suffix}"
    ))
}

fn build(r: &mut impl RouteSink) {
    use hf::*;
    use v1::*;
    const GET: Method = Method::GET;
    const POST: Method = Method::POST;
    const PUT: Method = Method::PUT;
    const PATCH: Method = Method::PATCH;
    const DELETE: Method = Method::DELETE;
    const HEAD: Method = Method::HEAD;

    // Health.
    r.add(one("/healthz"), vec![on(GET, health::healthz)]);
    r.add(one("/readyz"), vec![on(GET, health::readyz)]);
    // Prometheus metrics: site admins here; `--metrics-bind` serves them without credentials.
    r.add(one("/metrics"), vec![on(GET, crate::metrics::serve)]);

    // The inference gateway, first and as a static prefix: actix tries resources in
    // order and matches every pattern with parameters by a regex, so behind the ~100
    // API resources a call ran dozens of regexes before reaching its own (11% of the
    // hub's CPU time in a profile of `scripts/bench/gateway_overhead.sh`), and its own
    // two patterns still cost two runs (5%). `endpoints` is a reserved name, so the
    // prefix shadows no repo page; `gateway::proxy` splits the rest of the path.
    r.prefix(
        "/endpoints",
        vec![
            "/endpoints/{ns}/{name}".to_string(),
            "/endpoints/{ns}/{name}/{tail:.*}".to_string(),
        ],
        vec![on_any(crate::gateway::proxy)],
    );

    // Management API (/api/v1).
    r.add(one("/api/v1/openapi.json"), vec![on(GET, openapi::serve)]);
    r.add(one("/api/v1/auth/login"), vec![on(POST, session::login)]);
    r.add(one("/api/v1/auth/logout"), vec![on(POST, session::logout)]);
    r.add(one("/api/v1/auth/session"), vec![on(GET, session::current)]);
    r.add(one("/api/v1/users/me"), vec![on(GET, users::me)]);
    r.add(one("/api/v1/users/me/audit"), vec![on(GET, audit::me)]);
    r.add(
        one("/api/v1/users"),
        vec![on(GET, users::list), on(POST, users::create)],
    );
    r.add(one("/api/v1/orgs"), vec![on(POST, orgs::create)]);
    r.add(
        one("/api/v1/orgs/{org}"),
        vec![on(GET, orgs::get), on(DELETE, orgs::delete)],
    );
    r.add(
        one("/api/v1/orgs/{org}/members"),
        vec![on(GET, orgs::members), on(POST, orgs::add_member)],
    );
    r.add(
        one("/api/v1/orgs/{org}/members/{user}"),
        vec![on(PATCH, orgs::set_role), on(DELETE, orgs::remove_member)],
    );
    r.add(one("/api/v1/orgs/{org}/audit"), vec![on(GET, audit::org)]);
    r.add(
        one("/api/v1/tokens"),
        vec![on(GET, tokens::list), on(POST, tokens::create)],
    );
    r.add(one("/api/v1/tokens/{id}"), vec![on(DELETE, tokens::revoke)]);
    r.add(
        one("/api/v1/namespaces/{ns}/quota"),
        vec![on(GET, quotas::get), on(PUT, quotas::put)],
    );
    r.add(
        v1_repo("/access-requests"),
        vec![
            on(GET, access_requests::list),
            on(POST, access_requests::request),
        ],
    );
    r.add(
        v1_repo("/access-requests/me"),
        vec![on(GET, access_requests::mine)],
    );
    r.add(
        v1_repo("/access-requests/{user}"),
        vec![on(PUT, access_requests::decide)],
    );
    r.add(
        one("/api/v1/webhooks/{id}/deliveries"),
        vec![on(GET, v1::webhooks::list)],
    );
    r.add(
        one("/api/v1/webhooks/{id}/deliveries/{delivery}"),
        vec![on(GET, v1::webhooks::get)],
    );
    r.add(
        one("/api/v1/webhooks/{id}/deliveries/{delivery}/redeliver"),
        vec![on(POST, v1::webhooks::redeliver)],
    );
    r.add(
        one("/api/v1/admin/signing-keys"),
        vec![on(GET, keys::list), on(POST, keys::rotate)],
    );
    r.add(
        one("/api/v1/admin/signing-keys/{kid}"),
        vec![on(DELETE, keys::retire)],
    );

    // Identity.
    r.add(one("/api/whoami-v2"), vec![on(GET, whoami::whoami)]);
    r.add(one("/api/users/{user}/likes"), vec![on(GET, likes::list)]);
    // Repo lifecycle.
    r.add(one("/api/repos/create"), vec![on(POST, repos::create)]);
    r.add(one("/api/repos/delete"), vec![on(DELETE, repos::delete)]);
    r.add(one("/api/repos/move"), vec![on(POST, repos::move_repo)]);
    // Webhooks (`huggingface_hub`'s webhook API).
    r.add(
        one("/api/settings/webhooks"),
        vec![on(GET, hf::webhooks::list), on(POST, hf::webhooks::create)],
    );
    r.add(
        one("/api/settings/webhooks/{id}"),
        vec![
            on(GET, hf::webhooks::get),
            on(POST, hf::webhooks::update),
            on(DELETE, hf::webhooks::delete),
        ],
    );
    r.add(
        one("/api/settings/webhooks/{id}/enable"),
        vec![on(POST, hf::webhooks::enable)],
    );
    r.add(
        one("/api/settings/webhooks/{id}/disable"),
        vec![on(POST, hf::webhooks::disable)],
    );
    r.add(
        one("/api/validate-yaml"),
        vec![on(POST, upload::validate_yaml)],
    );
    // Listings.
    r.add(
        one("/api/{kind:models|datasets}"),
        vec![on(GET, info::list)],
    );
    // Per-repo API. A single-segment repo's one-word action
    // (`/api/models/gpt2/like`) has the shape of a two-segment repo's info
    // (`/api/models/{ns}/{name}`), so it comes first, matched by its methods
    // only; the GET ones (`refs`, `auth-check`) answer as the info of a repo
    // `gpt2/refs` when the caller can read one (`info::or_single`).
    r.by_method(api_single("/settings"), vec![on(PUT, repos::settings)]);
    r.by_method(
        api_single("/like"),
        vec![on(POST, likes::like), on(DELETE, likes::like)],
    );
    r.by_method(api_single("/refs"), vec![on(GET, info::refs_or_info)]);
    r.by_method(
        api_single("/auth-check"),
        vec![on(GET, info::auth_check_or_info)],
    );
    r.by_method(
        api_single("/lfs-files"),
        vec![on(GET, info::lfs_files_or_info)],
    );
    r.add(api(""), vec![on(GET, info::repo_info)]);
    r.add(api("/revision/{rev}"), vec![on(GET, info::repo_info)]);
    r.add(api_ns("/settings"), vec![on(PUT, repos::settings)]);
    r.add(
        api_ns("/like"),
        vec![on(POST, likes::like), on(DELETE, likes::like)],
    );
    r.add(api("/tree/{rev}"), vec![on(GET, tree::tree)]);
    r.add(api("/tree/{rev}/{path:.*}"), vec![on(GET, tree::tree)]);
    r.add(api("/paths-info/{rev}"), vec![on(POST, tree::paths_info)]);
    r.add(api_ns("/refs"), vec![on(GET, refs::list_refs)]);
    r.add(api("/commits/{rev}"), vec![on(GET, refs::list_commits)]);
    r.add(
        api("/branch/{rev}"),
        vec![
            on(POST, refs::create_branch),
            on(DELETE, refs::delete_branch),
        ],
    );
    r.add(
        api("/tag/{rev}"),
        vec![on(POST, refs::create_tag), on(DELETE, refs::delete_tag)],
    );
    r.add(
        api("/super-squash/{rev}"),
        vec![on(POST, refs::super_squash)],
    );
    r.add(api_ns("/lfs-files"), vec![on(GET, lfs_files::list)]);
    r.add(
        api("/lfs-files/batch"),
        vec![on(POST, lfs_files::delete_batch)],
    );
    r.add(api("/preupload/{rev}"), vec![on(POST, upload::preupload)]);
    r.add(api("/commit/{rev}"), vec![on(POST, commit::commit)]);
    // Discussions and pull requests.
    r.add(
        api_ns("/discussions"),
        vec![on(GET, discussions::list), on(POST, discussions::create)],
    );
    // (Its `?diff=1` shows file contents: a byte route, gated.)
    r.bytes(
        api_ns("/discussions/{num}"),
        vec![on(GET, discussions::get)],
    );
    r.add(
        api_ns("/discussions/{num}/comment"),
        vec![on(POST, discussions::comment)],
    );
    r.add(
        api_ns("/discussions/{num}/title"),
        vec![on(POST, discussions::title)],
    );
    r.add(
        api_ns("/discussions/{num}/status"),
        vec![on(POST, discussions::status)],
    );
    r.add(
        api_ns("/discussions/{num}/merge"),
        vec![on(POST, discussions::merge)],
    );
    r.add(
        api_ns("/discussions/{num}/comment/{comment}/edit"),
        vec![on(POST, discussions::edit_comment)],
    );
    r.add(
        api_ns("/discussions/{num}/comment/{comment}/hide"),
        vec![on(POST, discussions::hide_comment)],
    );
    // Xet: CAS access tokens (the read token leads to file bytes).
    r.add(
        api("/xet-write-token/{rev}"),
        vec![on(GET, xet::token::write_token)],
    );
    r.bytes(
        api("/xet-read-token/{rev}"),
        vec![on(GET, xet::token::read_token)],
    );
    // Gated repos: may the caller download? And the access-request routes.
    r.add(api_ns("/auth-check"), vec![on(GET, access::auth_check)]);
    r.add(
        api("/user-access-request/handle"),
        vec![on(POST, access::handle)],
    );
    r.add(
        api("/user-access-request/grant"),
        vec![on(POST, access::grant)],
    );
    r.add(
        api("/user-access-request/{status:pending|accepted|rejected}"),
        vec![on(GET, access::list)],
    );
    // LFS: batch API and the signed transfer links it hands out.
    r.bytes(
        web_paths(".git/info/lfs/objects/batch"),
        vec![on(POST, lfs::batch)],
    );
    r.add(
        web_paths(".git/info/lfs/objects/verify"),
        vec![on(POST, lfs::verify)],
    );
    // Git over smart HTTP (`routes::git`): clone and fetch hand out file bytes.
    r.bytes(git_paths("/info/refs"), vec![on(GET, git::info_refs)]);
    r.bytes(
        git_paths("/git-upload-pack"),
        vec![on(POST, git::upload_pack)],
    );
    r.add(
        git_paths("/git-receive-pack"),
        vec![on(POST, git::receive_pack)],
    );
    r.add(one("/lfs/upload/{session}"), vec![on(PUT, lfs::put_object)]);
    r.add(
        one("/lfs/upload/{session}/part/{part}"),
        vec![on(PUT, lfs::put_part)],
    );
    r.add(
        one("/lfs/upload/{session}/complete"),
        vec![on(POST, lfs::complete)],
    );
    r.bytes(one("/lfs/objects/{sha}"), vec![on(GET, lfs::download)]);
    // Inference endpoints: management, worker control plane, usage, gateway.
    r.add(
        one("/api/v1/endpoints/{ns}"),
        vec![
            on(GET, inference::endpoints::list),
            on(POST, inference::endpoints::create),
        ],
    );
    r.add(
        one("/api/v1/endpoints/{ns}/{name}"),
        vec![
            on(GET, inference::endpoints::get),
            on(PATCH, inference::endpoints::patch),
            on(DELETE, inference::endpoints::delete),
        ],
    );
    r.add(
        one("/api/v1/endpoints/{ns}/{name}/pause"),
        vec![on(POST, inference::endpoints::pause)],
    );
    r.add(
        one("/api/v1/endpoints/{ns}/{name}/resume"),
        vec![on(POST, inference::endpoints::resume)],
    );
    r.add(one("/api/v1/usage"), vec![on(GET, inference::usage::usage)]);
    r.add(
        one("/api/v1/workers/register"),
        vec![on(POST, inference::workers::register)],
    );
    r.add(
        one("/api/v1/workers/{id}/heartbeat"),
        vec![on(POST, inference::workers::heartbeat)],
    );
    r.add(
        one("/api/v1/workers/{id}/assignments"),
        vec![on(GET, inference::workers::assignments)],
    );
    // Fine-tuning jobs (`routes::v1::jobs`), and the workers that run them
    // (`routes::inference::job_runner`, worker scope).
    r.add(
        one("/api/v1/jobs/{ns}"),
        vec![on(GET, v1::jobs::list), on(POST, v1::jobs::create)],
    );
    r.add(one("/api/v1/jobs/{ns}/{id}"), vec![on(GET, v1::jobs::get)]);
    r.add(
        one("/api/v1/jobs/{ns}/{id}/logs"),
        vec![on(GET, v1::jobs::logs)],
    );
    r.add(
        one("/api/v1/jobs/{ns}/{id}/cancel"),
        vec![on(POST, v1::jobs::cancel)],
    );
    r.add(
        one("/api/v1/job-runner/claim"),
        vec![on(POST, inference::job_runner::claim)],
    );
    r.add(
        one("/api/v1/job-runner/{id}/progress"),
        vec![on(POST, inference::job_runner::progress)],
    );
    r.add(
        one("/api/v1/job-runner/{id}/files"),
        vec![on(PUT, inference::job_runner::put_file)],
    );
    r.add(
        one("/api/v1/job-runner/{id}/finish"),
        vec![on(POST, inference::job_runner::finish)],
    );
    // The dataset viewer (`routes::viewer`): rows are file contents, so
    // every route is a byte route (gated like a download).
    for (path, h) in [
        ("is-valid", on(GET, viewer::is_valid)),
        ("splits", on(GET, viewer::splits)),
        ("info", on(GET, viewer::info)),
        ("first-rows", on(GET, viewer::first_rows)),
        ("rows", on(GET, viewer::rows)),
        ("search", on(GET, viewer::search)),
        ("filter", on(GET, viewer::filter)),
        ("parquet", on(GET, viewer::parquet)),
        ("size", on(GET, viewer::size)),
    ] {
        r.bytes(one(&format!("/api/datasets-server/{path}")), vec![h]);
    }
    r.bytes(
        one("/api/datasets/{ns}/{name}/parquet/{config}/{split}/{file}"),
        vec![on(GET, viewer::parquet_file)],
    );
    // Downloads.
    r.bytes(
        web_paths("/resolve/{rev}/{path:.*}"),
        vec![on(GET, resolve::resolve), on(HEAD, resolve::resolve)],
    );

    cas(r);
    dashboard(r);
}

/// The Xet CAS (`routes::xet`, xet-protocol.md §7) under `/cas`, the path
/// part of the `casUrl` the token routes hand out. Its resources answer
/// other methods with 404 (like pages), not 405: hf_xet falls back from an
/// optional route only on 404, and every unlisted path (`/v1/xorb-grants`,
/// `/v2/shards`, ...) is the app's 404.
fn cas(r: &mut impl RouteSink) {
    use xet::{download, upload};
    const GET: Method = Method::GET;
    const POST: Method = Method::POST;
    r.page(
        one("/cas/v1/xorbs/{prefix}/{hash}"),
        vec![on(POST, upload::xorb), on(GET, download::data)],
    );
    r.page(
        vec!["/cas/v1/shards".into(), "/cas/shards".into()],
        vec![on(POST, upload::shard)],
    );
    r.page(
        one("/cas/v1/reconstructions/{file}"),
        vec![on(GET, download::reconstruction_v1)],
    );
    r.page(
        one("/cas/v2/reconstructions/{file}"),
        vec![on(GET, download::reconstruction_v2)],
    );
    r.page(
        one("/cas/v1/chunks/{prefix}/{hash}"),
        vec![on(GET, download::chunk)],
    );
}

/// The dashboard (web/, `crate::dashboard`): server-rendered pages and
/// embedded assets, GET only. Registered after every API, git, download and
/// gateway route, so those keep priority; the fixed pages come before the
/// repo patterns, whose first segment can never be one of these reserved
/// names (`domain::names`). Pages are in the table like every route, so the
/// access matrix checks that a page shows nothing its viewer could not read.
fn dashboard(r: &mut impl RouteSink) {
    use crate::dashboard::*;
    const GET: Method = Method::GET;
    let mut page = |paths: Vec<String>, route| r.page(paths, vec![route]);
    page(one("/static/{hash}/{file}"), on(GET, assets::asset));
    page(one("/favicon.ico"), on(GET, assets::favicon));
    page(one("/"), on(GET, home::models));
    page(one("/models"), on(GET, home::models));
    page(one("/datasets"), on(GET, home::datasets));
    page(one("/login"), on(GET, account::login));
    page(one("/settings"), on(GET, account::account));
    page(one("/settings/tokens"), on(GET, account::tokens));
    page(one("/settings/webhooks"), on(GET, webhooks::list));
    page(one("/settings/webhooks/{id}"), on(GET, webhooks::webhook));
    page(one("/new"), on(GET, upload::new_repo));
    page(one("/organizations/{org}"), on(GET, orgs::org));
    page(one("/organizations/{org}/audit"), on(GET, orgs::audit));
    page(one("/inference"), on(GET, endpoints::list));
    page(one("/inference/new"), on(GET, endpoints::deploy));
    page(one("/inference/{ns}"), on(GET, endpoints::list));
    page(one("/inference/{ns}/{name}"), on(GET, endpoints::endpoint));
    page(one("/jobs"), on(GET, jobs::list));
    page(one("/jobs/new"), on(GET, jobs::new_job));
    page(one("/jobs/{ns}"), on(GET, jobs::list));
    page(one("/jobs/{ns}/{id}"), on(GET, jobs::job));
    page(web_paths(""), on(GET, repo::card));
    page(web_paths("/tree"), on(GET, blob::pick_revision));
    page(web_paths("/tree/{rev}"), on(GET, blob::tree));
    page(web_paths("/tree/{rev}/{path:.*}"), on(GET, blob::tree));
    r.bytes_page(
        web_paths("/blob/{rev}/{path:.*}"),
        vec![on(GET, blob::blob)],
    );
    let mut page = |paths: Vec<String>, route| r.page(paths, vec![route]);
    page(web_paths("/commits/{rev}"), on(GET, history::commits));
    page(web_paths("/commit/{oid}"), on(GET, history::commit));
    page(web_paths("/refs"), on(GET, repo::refs));
    page(web_paths("/discussions"), on(GET, discussions::list));
    page(web_paths("/upload"), on(GET, upload::upload));
    page(web_paths("/settings"), on(GET, settings::settings));
    // A pull request's page shows its diff: gated like a file view.
    r.bytes_page(
        web_paths("/discussions/{num}"),
        vec![on(GET, discussions::thread)],
    );
}

/// The answer to every unknown route: JSON 404 for API clients, the
/// dashboard's 404 page for browsers (`Accept: text/html`).
pub async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    crate::dashboard::errors::not_found(req).await
}
