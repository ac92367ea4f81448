//! The route table: every scope and route of the hub, on one screen.
//! Handlers are thin; the logic lives in `registry`, `auth`, `db` and `storage`.

pub mod body;
pub mod health;
pub mod hf;
pub mod inference;

use actix_web::{web, HttpResponse};

/// Repo id forms of API paths: `ns/name` and single-segment `name`.
fn api(suffix: &str) -> Vec<String> {
    vec![
        format!("/api/{{kind:models|datasets}}/{{ns}}/{{name}}{suffix}"),
        format!("/api/{{kind:models|datasets}}/{{name}}{suffix}"),
    ]
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

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    use hf::*;
    cfg
        // Health.
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        // Identity.
        .route("/api/whoami-v2", web::get().to(whoami::whoami))
        // Repo lifecycle.
        .route("/api/repos/create", web::post().to(repos::create))
        .route("/api/repos/delete", web::delete().to(repos::delete))
        .route("/api/repos/move", web::post().to(repos::move_repo))
        .route("/api/validate-yaml", web::post().to(upload::validate_yaml))
        // Listings.
        .route("/api/{kind:models|datasets}", web::get().to(info::list))
        // Per-repo API.
        .service(web::resource(api("")).route(web::get().to(info::repo_info)))
        .service(web::resource(api("/revision/{rev}")).route(web::get().to(info::repo_info)))
        .service(web::resource(api("/settings")).route(web::put().to(repos::settings)))
        .service(web::resource(api("/tree/{rev}")).route(web::get().to(tree::tree)))
        .service(web::resource(api("/tree/{rev}/{path:.*}")).route(web::get().to(tree::tree)))
        .service(web::resource(api("/paths-info/{rev}")).route(web::post().to(tree::paths_info)))
        .service(web::resource(api("/refs")).route(web::get().to(refs::list_refs)))
        .service(web::resource(api("/commits/{rev}")).route(web::get().to(refs::list_commits)))
        .service(
            web::resource(api("/branch/{rev}"))
                .route(web::post().to(refs::create_branch))
                .route(web::delete().to(refs::delete_branch)),
        )
        .service(
            web::resource(api("/tag/{rev}"))
                .route(web::post().to(refs::create_tag))
                .route(web::delete().to(refs::delete_tag)),
        )
        .service(web::resource(api("/preupload/{rev}")).route(web::post().to(upload::preupload)))
        .service(web::resource(api("/commit/{rev}")).route(web::post().to(commit::commit)))
        // LFS: batch API and the signed transfer links it hands out.
        .service(
            web::resource(web_paths(".git/info/lfs/objects/batch"))
                .route(web::post().to(lfs::batch)),
        )
        .service(
            web::resource(web_paths(".git/info/lfs/objects/verify"))
                .route(web::post().to(lfs::verify)),
        )
        .route("/lfs/upload/{session}", web::put().to(lfs::put_object))
        .route(
            "/lfs/upload/{session}/part/{part}",
            web::put().to(lfs::put_part),
        )
        .route(
            "/lfs/upload/{session}/complete",
            web::post().to(lfs::complete),
        )
        .route("/lfs/objects/{sha}", web::get().to(lfs::download))
        // Inference endpoints: management, worker control plane, usage, gateway.
        .service(
            web::resource("/api/v1/endpoints/{ns}")
                .route(web::get().to(inference::endpoints::list))
                .route(web::post().to(inference::endpoints::create)),
        )
        .service(
            web::resource("/api/v1/endpoints/{ns}/{name}")
                .route(web::get().to(inference::endpoints::get))
                .route(web::patch().to(inference::endpoints::patch))
                .route(web::delete().to(inference::endpoints::delete)),
        )
        .route(
            "/api/v1/endpoints/{ns}/{name}/pause",
            web::post().to(inference::endpoints::pause),
        )
        .route(
            "/api/v1/endpoints/{ns}/{name}/resume",
            web::post().to(inference::endpoints::resume),
        )
        .route("/api/v1/usage", web::get().to(inference::usage::usage))
        .route(
            "/api/v1/workers/register",
            web::post().to(inference::workers::register),
        )
        .route(
            "/api/v1/workers/{id}/heartbeat",
            web::post().to(inference::workers::heartbeat),
        )
        .route(
            "/api/v1/workers/{id}/assignments",
            web::get().to(inference::workers::assignments),
        )
        .service(
            web::resource(["/endpoints/{ns}/{name}", "/endpoints/{ns}/{name}/{tail:.*}"])
                .route(web::route().to(crate::gateway::proxy)),
        )
        // Downloads.
        .service(
            web::resource(web_paths("/resolve/{rev}/{path:.*}"))
                .route(web::get().to(resolve::resolve))
                .route(web::head().to(resolve::resolve)),
        );

    // ---- Dashboard (web/): server-rendered pages and embedded assets. ----
    // Registered last so every API, git, download and gateway route above
    // keeps priority; the fixed pages come before the repo patterns, whose
    // first segment can never be one of these reserved names. Other methods
    // on page URLs answer like unknown routes.
    {
        use crate::dashboard::*;
        fn page<F, Args>(paths: Vec<String>, handler: F) -> actix_web::Resource
        where
            F: actix_web::Handler<Args>,
            Args: actix_web::FromRequest + 'static,
            F::Output: actix_web::Responder + 'static,
        {
            web::resource(paths)
                .route(web::get().to(handler))
                .default_service(web::to(not_found))
        }
        let one = |p: &str| vec![p.to_string()];
        cfg.service(page(one("/static/{hash}/{file}"), assets::asset))
            .service(page(one("/favicon.ico"), assets::favicon))
            .service(page(one("/"), home::models))
            .service(page(one("/models"), home::models))
            .service(page(one("/datasets"), home::datasets))
            .service(page(one("/login"), account::login))
            .service(page(one("/settings"), account::account))
            .service(page(one("/settings/tokens"), account::tokens))
            .service(page(one("/new"), upload::new_repo))
            .service(page(one("/organizations/{org}"), orgs::org))
            .service(page(one("/organizations/{org}/audit"), orgs::audit))
            .service(page(one("/inference"), endpoints::list))
            .service(page(one("/inference/new"), endpoints::deploy))
            .service(page(one("/inference/{ns}"), endpoints::list))
            .service(page(one("/inference/{ns}/{name}"), endpoints::endpoint))
            .service(page(web_paths(""), repo::card))
            .service(page(web_paths("/tree"), blob::pick_revision))
            .service(page(web_paths("/tree/{rev}"), blob::tree))
            .service(page(web_paths("/tree/{rev}/{path:.*}"), blob::tree))
            .service(page(web_paths("/blob/{rev}/{path:.*}"), blob::blob))
            .service(page(web_paths("/commits/{rev}"), history::commits))
            .service(page(web_paths("/commit/{oid}"), history::commit))
            .service(page(web_paths("/refs"), repo::refs))
            .service(page(web_paths("/upload"), upload::upload))
            .service(page(web_paths("/settings"), settings::settings));
    }
}

/// The answer to every unknown route: JSON 404 for API clients, the
/// dashboard's 404 page for browsers (`Accept: text/html`).
pub async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    crate::dashboard::errors::not_found(req).await
}
