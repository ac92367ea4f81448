//! Friendly error pages. A page handler returns [`PageError`], which renders
//! the 404/403/401/500 page in HTML (API routes keep their JSON errors; the
//! unknown-route fallback picks by `Accept`).

use super::{html_response, Layout};
use crate::error::ApiError;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use askama::Template;

/// The error page.
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub l: Layout,
    pub status: u16,
    pub title: String,
    pub message: String,
    pub sign_in: bool,
}

/// A failure of a page, shown as an HTML page (or, for an API client that
/// strayed onto a page route, the API's JSON error).
#[derive(Debug)]
pub struct PageError(pub ApiError, pub bool);

impl PageError {
    /// The API's JSON error, for requests that do not want HTML.
    pub fn json(e: ApiError) -> Self {
        PageError(e, true)
    }
}

pub type PageResult<T> = Result<T, PageError>;

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError(e, false)
    }
}

impl From<sqlx::Error> for PageError {
    fn from(e: sqlx::Error) -> Self {
        PageError(e.into(), false)
    }
}

impl std::fmt::Display for PageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What the page says for an error (never an internal cause).
fn describe(e: &ApiError) -> (String, String) {
    use ApiError::*;
    match e {
        RepoNotFound => (
            "Repository not found".into(),
            "This repository does not exist, or you do not have access to it. If it is private, sign in with an account that can read it.".into(),
        ),
        RevisionNotFound(r) => (
            "Revision not found".into(),
            format!("There is no branch, tag or commit called {r:?} in this repository."),
        ),
        EntryNotFound { path, .. } => (
            "File not found".into(),
            format!("There is no file or folder {path:?} at this revision."),
        ),
        NotFound(what) => ("Page not found".into(), format!("That {what} does not exist, or you cannot see it.")),
        Unauthorized(m) => ("Sign in required".into(), m.clone()),
        Forbidden(m) => ("Not allowed".into(), m.clone()),
        Internal(_) => (
            "Something went wrong".into(),
            "The hub hit an unexpected error. It has been logged; please try again.".into(),
        ),
        e if e.status().is_server_error() => ("Temporarily unavailable".into(), e.to_string()),
        e => ("That did not work".into(), e.to_string()),
    }
}

/// The error page for an error.
pub fn render(e: &ApiError, l: Layout) -> HttpResponse {
    if let ApiError::Internal(cause) = e {
        tracing::error!(error = format!("{cause:#}"), "internal error on a page");
    }
    let status = e.status();
    let (title, message) = describe(e);
    let page = ErrorPage {
        l,
        status: status.as_u16(),
        title,
        message,
        sign_in: status == StatusCode::UNAUTHORIZED || matches!(e, ApiError::RepoNotFound),
    };
    match page.render() {
        Ok(body) => html_response(status, body),
        Err(_) => HttpResponse::build(status).body("error"),
    }
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        self.0.status()
    }
    fn error_response(&self) -> HttpResponse {
        if self.1 {
            return self.0.error_response();
        }
        render(&self.0, Layout::bare())
    }
}

/// The unknown-route answer: an HTML 404 page for browsers, JSON otherwise.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    let e = ApiError::NotFound("page");
    if super::wants_html(&req) {
        render(&e, Layout::bare())
    } else {
        ApiError::NotFound("route").error_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    /// A 500 is a friendly page that never shows its cause.
    #[test]
    fn internal_error_page_hides_the_cause() {
        let resp = render(
            &ApiError::internal(anyhow::anyhow!("connection string postgres://secret")),
            Layout::bare(),
        );
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = match resp.into_body().try_into_bytes() {
            Ok(b) => String::from_utf8(b.to_vec()).unwrap(),
            Err(_) => panic!("a complete body"),
        };
        assert!(body.contains("Something went wrong"));
        assert!(!body.contains("secret"));
        assert!(body.contains("<!doctype html>"));
    }
}
