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
    // first segment can never be one of these reserved names.
    {
        use crate::dashboard::*;
        let page = |p: &str| web::resource(p.to_string());
        cfg.service(page("/static/{hash}/{file}").route(web::get().to(assets::asset)))
            .service(page("/favicon.ico").route(web::get().to(assets::favicon)))
            .service(page("/").route(web::get().to(home::models)))
            .service(page("/models").route(web::get().to(home::models)))
            .service(page("/datasets").route(web::get().to(home::datasets)))
            .service(page("/login").route(web::get().to(account::login)))
            .service(page("/settings").route(web::get().to(account::account)))
            .service(page("/settings/tokens").route(web::get().to(account::tokens)))
            .service(page("/new").route(web::get().to(upload::new_repo)))
            .service(page("/organizations/{org}").route(web::get().to(orgs::org)))
            .service(page("/organizations/{org}/audit").route(web::get().to(orgs::audit)))
            .service(page("/inference").route(web::get().to(endpoints::list)))
            .service(page("/inference/new").route(web::get().to(endpoints::deploy)))
            .service(page("/inference/{ns}").route(web::get().to(endpoints::list)))
            .service(page("/inference/{ns}/{name}").route(web::get().to(endpoints::endpoint)))
            .service(web::resource(web_paths("")).route(web::get().to(repo::card)))
            .service(web::resource(web_paths("/tree")).route(web::get().to(blob::pick_revision)))
            .service(web::resource(web_paths("/tree/{rev}")).route(web::get().to(blob::tree)))
            .service(
                web::resource(web_paths("/tree/{rev}/{path:.*}")).route(web::get().to(blob::tree)),
            )
            .service(
                web::resource(web_paths("/blob/{rev}/{path:.*}")).route(web::get().to(blob::blob)),
            )
            .service(
                web::resource(web_paths("/commits/{rev}")).route(web::get().to(history::commits)),
            )
            .service(
                web::resource(web_paths("/commit/{oid}")).route(web::get().to(history::commit)),
            )
            .service(web::resource(web_paths("/refs")).route(web::get().to(repo::refs)))
            .service(web::resource(web_paths("/upload")).route(web::get().to(upload::upload)))
            .service(
                web::resource(web_paths("/settings")).route(web::get().to(settings::settings)),
            );
    }
}

/// The answer to every unknown route: JSON 404 for API clients, the
/// dashboard's 404 page for browsers (`Accept: text/html`).
pub async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    crate::dashboard::errors::not_found(req).await
}
