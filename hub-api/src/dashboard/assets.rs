//! Static assets embedded in the binary (`web/static`), served at
//! `/static/{hash}/{name}` with a year-long immutable cache: the hash is the
//! content's sha256 prefix, so a new build changes every URL it must.

use crate::error::ApiError;
use actix_web::{web, HttpRequest, HttpResponse};
use sha2::Digest;
use std::sync::OnceLock;

/// One embedded file.
struct Asset {
    name: &'static str,
    mime: &'static str,
    bytes: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.css",
        mime: "text/css; charset=utf-8",
        bytes: include_bytes!("../../../web/static/app.css"),
    },
    Asset {
        name: "app.js",
        mime: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../../web/static/app.js"),
    },
    Asset {
        name: "sha256.js",
        mime: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../../web/static/sha256.js"),
    },
    Asset {
        name: "upload.js",
        mime: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../../web/static/upload.js"),
    },
    Asset {
        name: "endpoints.js",
        mime: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../../web/static/endpoints.js"),
    },
    Asset {
        name: "jobs.js",
        mime: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../../web/static/jobs.js"),
    },
    Asset {
        name: "chat.js",
        mime: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../../web/static/chat.js"),
    },
    Asset {
        name: "favicon.svg",
        mime: "image/svg+xml",
        bytes: include_bytes!("../../../web/static/favicon.svg"),
    },
];

/// The versioned URL of each asset, for templates.
#[derive(Debug)]
pub struct Urls {
    pub css: String,
    pub app_js: String,
    pub sha256_js: String,
    pub upload_js: String,
    pub endpoints_js: String,
    pub chat_js: String,
    pub jobs_js: String,
    pub favicon: String,
}

fn hash(bytes: &[u8]) -> String {
    hex::encode(&sha2::Sha256::digest(bytes)[..6])
}

fn url(name: &str) -> String {
    let a = ASSETS
        .iter()
        .find(|a| a.name == name)
        .expect("asset is embedded");
    format!("/static/{}/{}", hash(a.bytes), a.name)
}

/// The URLs (computed once).
pub fn urls() -> &'static Urls {
    static URLS: OnceLock<Urls> = OnceLock::new();
    URLS.get_or_init(|| Urls {
        css: url("app.css"),
        app_js: url("app.js"),
        sha256_js: url("sha256.js"),
        upload_js: url("upload.js"),
        endpoints_js: url("endpoints.js"),
        chat_js: url("chat.js"),
        jobs_js: url("jobs.js"),
        favicon: url("favicon.svg"),
    })
}

fn serve(a: &Asset, immutable: bool) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(a.mime)
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header((
            "Cache-Control",
            if immutable {
                "public, max-age=31536000, immutable"
            } else {
                "public, max-age=300"
            },
        ))
        .body(a.bytes)
}

/// `GET /static/{hash}/{name}`. A stale hash still gets the current file, but
/// without the long cache (a page from an older build stays usable). An
/// unknown file is the standard JSON 404 (`not_found`), like every error.
pub async fn asset(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let (Some(h), Some(name)) = (req.match_info().get("hash"), req.match_info().get("file")) else {
        return Err(ApiError::NotFound("static asset"));
    };
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => Ok(serve(a, hash(a.bytes) == h)),
        None => Err(ApiError::NotFound("static asset")),
    }
}

/// `GET /favicon.ico` (browsers ask for it whatever the page links).
pub async fn favicon(_: web::Data<crate::state::AppState>) -> HttpResponse {
    serve(
        ASSETS
            .iter()
            .find(|a| a.name == "favicon.svg")
            .expect("favicon embedded"),
        false,
    )
}
