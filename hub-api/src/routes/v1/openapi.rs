//! The OpenAPI document of `/api/v1`, generated from the handlers' and DTOs'
//! annotations. Every operation also documents the error statuses any request
//! can get (bad input, authentication, not found, limits, unavailability).

use super::*;
use actix_web::HttpResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Paddock management API", version = "1",
         description = "Users, organizations, members, tokens, quotas, audit log, access requests, signing keys, inference endpoints, usage, fine-tuning jobs and the worker control plane. Errors are `{\"error\": \"...\", \"code\": \"...\"}` with the stable codes of docs/API-v1.md."),
    paths(
        session::login, session::logout, session::current,
        users::me, users::list, users::create,
        orgs::create, orgs::get, orgs::delete,
        orgs::members, orgs::add_member, orgs::set_role, orgs::remove_member,
        tokens::list, tokens::create, tokens::revoke,
        quotas::get, quotas::put,
        audit::org, audit::me,
        access_requests::request, access_requests::mine, access_requests::list, access_requests::decide,
        keys::list, keys::rotate, keys::retire,
        webhooks::list, webhooks::get, webhooks::redeliver,
        crate::routes::inference::endpoints::create, crate::routes::inference::endpoints::list,
        crate::routes::inference::endpoints::get, crate::routes::inference::endpoints::patch,
        crate::routes::inference::endpoints::delete, crate::routes::inference::endpoints::pause,
        crate::routes::inference::endpoints::resume, crate::routes::inference::usage::usage,
        crate::routes::inference::workers::register, crate::routes::inference::workers::heartbeat,
        crate::routes::inference::workers::assignments,
        jobs::create, jobs::list, jobs::get, jobs::logs, jobs::cancel,
        crate::routes::inference::job_runner::claim, crate::routes::inference::job_runner::progress,
        crate::routes::inference::job_runner::put_file, crate::routes::inference::job_runner::finish,
    ),
    components(schemas(ErrorDto)),
    modifiers(&Security, &CommonErrors),
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        c.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                crate::auth::session::COOKIE,
            ))),
        );
        api.security = Some(vec![
            utoipa::openapi::security::SecurityRequirement::new("bearer", Vec::<String>::new()),
            utoipa::openapi::security::SecurityRequirement::new("session", Vec::<String>::new()),
            utoipa::openapi::security::SecurityRequirement::default(),
        ]);
    }
}

/// Statuses every operation may answer with, and why.
const COMMON: &[(&str, &str)] = &[
    ("400", "The request is malformed (see `code` and `error`)"),
    ("401", "Missing, invalid, expired or revoked credentials"),
    (
        "403",
        "Authenticated but not allowed, or a CSRF check failed",
    ),
    ("404", "No such object, or not visible to the caller"),
    ("409", "Conflicts with the current state"),
    ("413", "The body is too large"),
    (
        "429",
        "Rate limited: see Retry-After, RateLimit and RateLimit-Policy",
    ),
    ("503", "The database or object store is unavailable; retry"),
];

struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        for item in api.paths.paths.values_mut() {
            let ops = [
                item.get.as_mut(),
                item.put.as_mut(),
                item.post.as_mut(),
                item.delete.as_mut(),
                item.patch.as_mut(),
            ];
            for op in ops.into_iter().flatten() {
                for (status, why) in COMMON {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| {
                            ResponseBuilder::new()
                                .description(*why)
                                .content(
                                    "application/json",
                                    ContentBuilder::new()
                                        .schema(Some(Ref::from_schema_name("ErrorDto")))
                                        .build(),
                                )
                                .build()
                                .into()
                        });
                }
            }
        }
    }
}

/// `GET /api/v1/openapi.json`.
pub async fn serve() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
