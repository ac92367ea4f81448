//! `HEAD`/`GET /{repo}/resolve/{rev}/{path}`: file downloads as every HF client
//! expects them: `X-Repo-Commit`, a strong `ETag` (sha256 for LFS files),
//! `X-Linked-Size`, `Accept-Ranges`, single `Range` requests answered 206 with
//! the end clamped to the size (200 with the whole file when an `If-Range`
//! does not match), never compressed, streamed from storage. Files are read
//! through the read-and-gate decision (`gating::load_repo_for_download`).

use crate::auth::Auth;
use crate::db;
use crate::domain::{RepoPath, Sha256};
use crate::error::{ApiError, ApiResult};
use crate::registry::files::{self, entry_not_found};
use crate::registry::repo_ref::param;
use crate::registry::{self, RepoRef};
use crate::state::AppState;
use actix_web::http::{header, Method};
use actix_web::{web, HttpRequest, HttpResponse};

/// A parsed single byte range, or what to do instead.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeReq {
    /// No (usable) Range header: send everything with 200.
    Full,
    /// Send `start..=end` with 206.
    Part { start: u64, end: u64 },
    /// 416.
    Unsatisfiable,
}

/// Parses a `Range` header against a size. Several ranges or malformed syntax
/// fall back to the whole file (RFC 9110 allows ignoring Range); an end past
/// the size is clamped.
pub fn parse_range(h: Option<&str>, size: u64) -> RangeReq {
    let Some(h) = h else { return RangeReq::Full };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return RangeReq::Full;
    };
    if spec.contains(',') {
        return RangeReq::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeReq::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // Suffix: the last N bytes.
        let Ok(n) = b.parse::<u64>() else {
            return RangeReq::Full;
        };
        if n == 0 || size == 0 {
            return RangeReq::Unsatisfiable;
        }
        return RangeReq::Part {
            start: size.saturating_sub(n),
            end: size - 1,
        };
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeReq::Full;
    };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(e) => e,
            Err(_) => return RangeReq::Full,
        }
    };
    if end < start {
        return RangeReq::Full;
    }
    if start >= size {
        return RangeReq::Unsatisfiable;
    }
    RangeReq::Part {
        start,
        end: end.min(size - 1),
    }
}

/// The `Range` header to honour, after `If-Range` (RFC 9110 §13.1.5): with
/// an `If-Range` that does not match, the range is ignored and the whole file
/// is sent with 200. An entity-tag matches only by strong comparison with the
/// current `ETag` (a weak `W/` tag never does); an HTTP-date never matches,
/// since these responses carry no `Last-Modified` to compare it with.
pub fn effective_range<'a>(req: &'a HttpRequest, etag: &str) -> Option<&'a str> {
    let range = req.headers().get(header::RANGE)?.to_str().ok()?;
    match req.headers().get(header::IF_RANGE) {
        None => Some(range),
        Some(v) => if_range_matches(v.to_str().unwrap_or(""), etag).then_some(range),
    }
}

/// Whether an `If-Range` value matches the current strong `etag` (quoted).
pub fn if_range_matches(if_range: &str, etag: &str) -> bool {
    let v = if_range.trim();
    // An entity-tag is quoted (strong) or `W/`-prefixed (weak, never matches);
    // anything else is an HTTP-date.
    v.starts_with('"') && v == etag
}

/// Headers for a response whose bytes a tenant wrote (a repo file, an LFS
/// object, a Parquet shard): never sniffed into HTML or script by a browser,
/// and sandboxed with nothing allowed should one render it anyway, so a
/// file cannot run script on the hub's origin.
pub fn untrusted_bytes(
    resp: &mut actix_web::HttpResponseBuilder,
) -> &mut actix_web::HttpResponseBuilder {
    resp.insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "sandbox; default-src 'none'",
        ))
}

/// Whether the query asks for a download (`?download=true`, as on the HF Hub).
fn wants_download(req: &HttpRequest) -> bool {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .any(|(k, v)| k == "download" && (v == "true" || v == "1"))
}

fn content_disposition(path: &str, attachment: bool) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    let kind = if attachment { "attachment" } else { "inline" };
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

pub async fn resolve(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let dl = crate::gating::load_repo_for_resolve(&state, &auth, repo.kind, &repo.id).await?;
    let ctx = dl.ctx();
    let rev = param(&req, "rev").unwrap_or_default();
    // What the revision, the path and the LFS check resolve to is cached by
    // keys that make it immutable (`resolve_cache`): the repo's
    // `resolve_version`, in the repo row above (`repo_cache`), and the tree id.
    let cache = &state.resolved;
    let version = ctx.repo.resolve_version;
    let rev_key = (ctx.repo.id, version, rev.clone());
    let resolved = match cache.revisions.get(&rev_key) {
        Some(r) => r,
        None => {
            let r = registry::resolve_str(&state, ctx.repo.id, &rev).await?;
            cache.revisions.put(rev_key, r.clone());
            r
        }
    };
    let commit = resolved.commit.oid.clone();
    let raw_path = param(&req, "path").unwrap_or_default();
    let path = RepoPath::parse(&raw_path).map_err(|_| entry_not_found(&raw_path, &commit))?;
    let entry_key = (resolved.commit.tree_oid.clone(), path.as_str().to_string());
    let entry = match cache.entries.get(&entry_key) {
        Some(e) => e,
        None => {
            let e = files::entry_at(&state, &resolved.commit.tree_oid, path.as_str()).await?;
            cache.entries.put(entry_key, e.clone());
            e
        }
    }
    .ok_or_else(|| entry_not_found(path.as_str(), &commit))?;
    let Some(blob) = entry.blob.clone() else {
        return Err(entry_not_found(path.as_str(), &commit));
    };
    // An LFS object is the repo's while it holds the link (as for the LFS
    // batch API): a permanently deleted one (`routes::hf::lfs_files`) is gone
    // from every revision, whoever else still stores the bytes.
    let still_linked = || async {
        let key = (ctx.repo.id, version, blob.sha256.clone());
        if let Some(linked) = cache.lfs_linked.get(&key) {
            return Ok::<_, ApiError>(linked);
        }
        let linked = !db::lfs::linked(&state.db, ctx.repo.id, std::slice::from_ref(&blob.sha256))
            .await?
            .is_empty();
        cache.lfs_linked.put(key, linked);
        Ok(linked)
    };
    if blob.is_lfs && !still_linked().await? {
        return Err(entry_not_found(
            &format!(
                "{} (its LFS object was permanently deleted from this repository)",
                path.as_str()
            ),
            &commit,
        ));
    }
    let size = blob.size as u64;
    let etag = if blob.is_lfs {
        format!("\"{}\"", blob.sha256)
    } else {
        format!("\"{}\"", entry.oid)
    };

    let mut resp = HttpResponse::Ok();
    if let Some(xet) = &blob.xet_hash {
        // Stored through Xet: `hf_xet` downloads it from the CAS with a read
        // token of this commit (xet-protocol §2.5; the link must be absolute);
        // every other client reads the bytes below, reassembled by the hub.
        resp.insert_header(("X-Xet-Hash", xet.as_str()))
            .insert_header((
                header::LINK,
                format!(
                    "<{}/api/{}/{}/xet-read-token/{commit}>; rel=\"xet-auth\"",
                    state.public_url,
                    repo.kind.plural(),
                    repo.id
                ),
            ));
    }
    untrusted_bytes(&mut resp);
    resp.insert_header(("X-Repo-Commit", commit.as_str()))
        .insert_header((header::ETAG, etag.as_str()))
        .insert_header(("X-Linked-Size", size.to_string()))
        .insert_header(("X-Linked-Etag", etag.as_str()))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::CONTENT_TYPE, "application/octet-stream"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            content_disposition(path.as_str(), wants_download(&req)),
        ))
        .insert_header((
            header::CACHE_CONTROL,
            if resolved.ref_name.is_none() {
                "private, max-age=31536000, immutable"
            } else {
                "private, no-cache"
            },
        ));

    let matches_etag = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag)
        });
    if matches_etag {
        return Ok(resp
            .status(actix_web::http::StatusCode::NOT_MODIFIED)
            .finish());
    }
    let range = effective_range(&req, &etag);
    let (start, len) = match parse_range(range, size) {
        RangeReq::Full => (0, size),
        RangeReq::Part { start, end } => {
            resp.status(actix_web::http::StatusCode::PARTIAL_CONTENT);
            resp.insert_header((header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}")));
            (start, end - start + 1)
        }
        RangeReq::Unsatisfiable => return Err(ApiError::RangeNotSatisfiable { size }),
    };
    let sha = Sha256::parse(&blob.sha256)?;
    if req.method() == Method::HEAD {
        // actix sends the Content-Length of a sized body on HEAD without the body.
        let empty = futures::stream::empty::<Result<web::Bytes, std::io::Error>>();
        return Ok(resp.no_chunking(len).streaming(empty));
    }
    if start == 0
        && (path.as_str() == "config.json"
            || path.as_str().ends_with(".gguf")
            || repo.kind == crate::domain::RepoType::Dataset && path.as_str() != "README.md")
    {
        let db = state.db.clone();
        let id = ctx.repo.id;
        tokio::spawn(async move {
            let _ = db::repos::add_download(&db, id).await;
        });
    }
    let stream = dl.stream(&state, &sha, Some(start..start + len)).await?;
    Ok(resp.no_chunking(len).streaming(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), RangeReq::Full);
        assert_eq!(
            parse_range(Some("bytes=0-0"), 10),
            RangeReq::Part { start: 0, end: 0 }
        );
        assert_eq!(
            parse_range(Some("bytes=2-"), 10),
            RangeReq::Part { start: 2, end: 9 }
        );
        // hf-hub asks one byte past the end on the last chunk: clamp.
        assert_eq!(
            parse_range(Some("bytes=5-10"), 10),
            RangeReq::Part { start: 5, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-3"), 10),
            RangeReq::Part { start: 7, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-30"), 10),
            RangeReq::Part { start: 0, end: 9 }
        );
        assert_eq!(parse_range(Some("bytes=10-"), 10), RangeReq::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), RangeReq::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-0"), 0), RangeReq::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-,0-,0-"), 10), RangeReq::Full);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), RangeReq::Full);
        assert_eq!(
            parse_range(Some("bytes=99999999999999999999999-"), 10),
            RangeReq::Full
        );
        assert_eq!(parse_range(Some("items=0-1"), 10), RangeReq::Full);
    }

    #[test]
    fn if_range() {
        let etag = "\"abc\"";
        assert!(if_range_matches("\"abc\"", etag));
        assert!(if_range_matches(" \"abc\" ", etag));
        assert!(!if_range_matches("\"abd\"", etag));
        assert!(!if_range_matches("W/\"abc\"", etag));
        assert!(!if_range_matches("Wed, 21 Oct 2015 07:28:00 GMT", etag));
        assert!(!if_range_matches("", etag));
        assert!(!if_range_matches("\"abc\", \"def\"", etag));
    }
}
