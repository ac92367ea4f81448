//! Signing in and out (`/login`; the forms call the tenancy routes
//! `POST /api/v1/auth/login` / `logout`), account settings (`/settings`) and
//! access tokens (`/settings/tokens`: list from `db::tokens`; create and
//! revoke through `/api/v1/tokens`, the secret shown once).

use super::{page, text, to_login, viewer, Layout, PageResult};
use crate::auth::Credential;
use crate::db;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub l: Layout,
    pub next: String,
}

/// A `next` that stays on this site (a path, never `//host`). Browsers drop
/// tabs and line breaks anywhere in a URL and read `\\` as `/`, so
/// `/\t/evil.com` would leave the site: a `next` holding a control
/// character, whitespace or a backslash is refused whole.
pub fn safe_next(req: &HttpRequest) -> String {
    let next = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let clean = !next
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '\\');
    if clean && next.starts_with('/') && !next.starts_with("//") {
        next
    } else {
        "/".into()
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_never_leaves_the_site() {
        let next = |q: &str| {
            safe_next(
                &actix_web::test::TestRequest::get()
                    .uri(&format!("/login?{q}"))
                    .to_http_request(),
            )
        };
        for (q, want) in [
            ("next=/acme/m", "/acme/m"),
            ("next=/settings/tokens%3Fx%3D1", "/settings/tokens?x=1"),
            ("", "/"),
            ("next=//evil.com", "/"),
            ("next=/%5Cevil.com", "/"),
            ("next=/%09/evil.com", "/"),
            ("next=/%0A/evil.com", "/"),
            ("next=/%0D%0A/evil.com", "/"),
            ("next=%09//evil.com", "/"),
            ("next=/%20/evil.com", "/"),
            ("next=https://evil.com", "/"),
            ("next=javascript:alert(1)", "/"),
            ("next=/a%5C..%5C/evil.com", "/"),
        ] {
            assert_eq!(next(q), want, "{q}");
        }
    }
}

/// `GET /login`.
pub async fn login(state: web::Data<AppState>, req: HttpRequest) -> PageResult<HttpResponse> {
    let (auth, _) = viewer(&req).await?;
    let next = safe_next(&req);
    if auth.principal().is_some() {
        return Ok(HttpResponse::SeeOther()
            .insert_header(("Location", next))
            .finish());
    }
    page(&LoginPage {
        l: Layout::new(&state, &req, None),
        next,
    })
}

/// An organization row of the account page.
pub struct OrgItem {
    pub name: String,
    pub role: &'static str,
}

#[derive(Template)]
#[template(path = "account.html")]
pub struct AccountPage {
    pub l: Layout,
    pub name: String,
    pub fullname: String,
    pub email: String,
    pub is_admin: bool,
    pub orgs: Vec<OrgItem>,
    pub session: bool,
}

/// `GET /settings`.
pub async fn account(state: web::Data<AppState>, req: HttpRequest) -> PageResult<HttpResponse> {
    let (auth, _) = viewer(&req).await?;
    let Some(p) = auth.principal() else {
        return Ok(to_login(&req));
    };
    let user = db::namespaces::user_by_id(&state.db, p.user_id)
        .await?
        .ok_or(crate::error::ApiError::NotFound("user"))?;
    let orgs = db::namespaces::user_orgs(&state.db, p.user_id)
        .await?
        .into_iter()
        .map(|(n, r)| OrgItem {
            name: n.name,
            role: r.as_str(),
        })
        .collect();
    page(&AccountPage {
        l: Layout::new(&state, &req, Some(p)),
        name: user.name,
        fullname: user.fullname,
        email: user.email.unwrap_or_default(),
        is_admin: user.is_admin,
        orgs,
        session: matches!(p.credential, Credential::Session { .. }),
    })
}

/// A token row (never the secret).
pub struct TokenItem {
    pub id: i64,
    pub name: String,
    pub prefix: String,
    pub scopes: String,
    pub restricted: String,
    pub created: String,
    pub last_used: String,
    pub expires: String,
    pub expired: bool,
}

#[derive(Template)]
#[template(path = "tokens.html")]
pub struct TokensPage {
    pub l: Layout,
    pub tokens: Vec<TokenItem>,
}

/// `GET /settings/tokens`.
pub async fn tokens(state: web::Data<AppState>, req: HttpRequest) -> PageResult<HttpResponse> {
    let (auth, _) = viewer(&req).await?;
    let Some(p) = auth.principal() else {
        return Ok(to_login(&req));
    };
    // The same rule as `GET /api/v1/tokens`: a restricted token sees no tokens.
    crate::auth::access::decide(
        Some(p),
        &crate::auth::access::Standing::none(),
        crate::auth::access::Action::ManageTokens(crate::auth::access::TokenAction::List),
    )
    .map_err(crate::error::ApiError::from)?;
    let now = chrono::Utc::now();
    let tokens = db::tokens::list_for_user(&state.db, p.user_id, None, 500)
        .await?
        .into_iter()
        .map(|t| {
            let mut restricted = Vec::new();
            if let Some(n) = &t.restrict_namespaces {
                restricted.extend(n.iter().cloned());
            }
            if let Some(r) = &t.restrict_repos {
                restricted.extend(r.iter().cloned());
            }
            TokenItem {
                id: t.id,
                prefix: format!("{}…", t.display_prefix),
                scopes: t.scopes.join(", "),
                restricted: restricted.join(", "),
                created: text::datetime(t.created_at),
                last_used: t
                    .last_used_at
                    .map(text::ago)
                    .unwrap_or_else(|| "never".into()),
                expires: t
                    .expires_at
                    .map(text::datetime)
                    .unwrap_or_else(|| "never".into()),
                expired: t.expires_at.is_some_and(|e| e <= now),
                name: t.name,
            }
        })
        .collect();
    page(&TokensPage {
        l: Layout::new(&state, &req, Some(p)),
        tokens,
    })
}
