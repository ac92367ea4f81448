//! The web dashboard: server-rendered pages (askama templates from `web/templates`,
//! checked at compile time) and embedded static assets (`web/static`).
//!
//! Pages read through the same code paths and authorization as the API
//! (`registry::load_repo`, `db::repos::list` with the viewer, ...), so a page
//! never shows what its viewer could not read. Pages never change state:
//! forms are submitted by `app.js` to the JSON API with the session's CSRF
//! token in `X-CSRF-Token`, and the API decides. Every page is sent with a
//! strict Content-Security-Policy (no inline script or style).

pub mod account;
pub mod assets;
pub mod blob;
pub mod charts;
pub mod discussions;
pub mod endpoints;
pub mod errors;
pub mod history;
pub mod home;
pub mod jobs;
pub mod markdown;
pub mod orgs;
pub mod repo;
pub mod repo_view;
pub mod settings;
pub mod snippets;
pub mod tensors;
pub mod text;
pub mod upload;
pub mod viewer;
pub mod webhooks;

use crate::auth::{Auth, Credential, Principal};
use crate::state::AppState;
use actix_web::{FromRequest, HttpRequest, HttpResponse};
pub use errors::{PageError, PageResult};

/// The session cookie (set by `POST /api/v1/auth/login`).
pub const SESSION_COOKIE: &str = crate::auth::session::COOKIE;

/// The Content-Security-Policy of every dashboard page.
pub const CSP: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Who is looking at a page.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub name: String,
    pub fullname: String,
    pub is_admin: bool,
}

/// What the layout of every page needs.
#[derive(Debug, Clone)]
pub struct Layout {
    pub viewer: Option<Viewer>,
    /// The session's CSRF token (empty without a cookie session).
    pub csrf: String,
    pub public_url: String,
    /// This page's path and query, for "sign in and come back".
    pub here: String,
    pub assets: &'static assets::Urls,
    /// The search box's current text.
    pub q: String,
}

impl Layout {
    pub fn new(state: &AppState, req: &HttpRequest, p: Option<&Principal>) -> Self {
        let csrf = match p.map(|p| &p.credential) {
            Some(Credential::Session { csrf, .. }) => csrf.clone(),
            _ => String::new(),
        };
        Self {
            viewer: p.map(|p| Viewer {
                name: p.name.clone(),
                fullname: p.fullname.clone(),
                is_admin: p.is_admin,
            }),
            csrf,
            public_url: state.public_url.clone(),
            here: req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into()),
            assets: assets::urls(),
            q: String::new(),
        }
    }

    /// An anonymous layout (error pages rendered without request context).
    pub fn bare() -> Self {
        Self {
            viewer: None,
            csrf: String::new(),
            public_url: String::new(),
            here: "/".into(),
            assets: assets::urls(),
            q: String::new(),
        }
    }

    pub fn viewer_name(&self) -> &str {
        self.viewer.as_ref().map(|v| v.name.as_str()).unwrap_or("")
    }
}

/// The caller of a page. A stale session cookie is not an error on a page:
/// the page is shown anonymously (the flag says so). Bad bearer
/// tokens are still refused (401).
pub async fn viewer(req: &HttpRequest) -> PageResult<(Auth, bool)> {
    match Auth::extract(req).await {
        Ok(a) => Ok((a, false)),
        Err(crate::error::ApiError::Unauthorized(_))
            if !req.headers().contains_key("authorization")
                && req.cookie(SESSION_COOKIE).is_some() =>
        {
            Ok((Auth(None), true))
        }
        Err(e) => Err(e.into()),
    }
}

/// Renders a template as a page with the dashboard's security headers.
pub fn page(t: &impl askama::Template) -> PageResult<HttpResponse> {
    page_with_status(t, actix_web::http::StatusCode::OK)
}

/// Renders a template with a status code.
pub fn page_with_status(
    t: &impl askama::Template,
    status: actix_web::http::StatusCode,
) -> PageResult<HttpResponse> {
    let body = t.render().map_err(crate::error::ApiError::internal)?;
    Ok(html_response(status, body))
}

/// An HTML response with the dashboard's headers.
pub fn html_response(status: actix_web::http::StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", CSP))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("Referrer-Policy", "same-origin"))
        .insert_header(("Cache-Control", "private, no-cache"))
        .body(body)
}

/// A redirect to the sign-in page that comes back here.
pub fn to_login(req: &HttpRequest) -> HttpResponse {
    let here = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    HttpResponse::SeeOther()
        .insert_header((
            "Location",
            format!("/login?next={}", text::query_escape(here)),
        ))
        .finish()
}

/// Whether a request prefers HTML (a browser) over JSON (an API client).
pub fn wants_html(req: &HttpRequest) -> bool {
    req.headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}
