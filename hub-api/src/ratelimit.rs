//! Request rate limits: a token bucket per caller (API token, session user, or
//! anonymous client IP), kept in memory **per app** by default (in
//! `AppState`: a single node's fast path, no round trip), or with
//! `--shared-rate-limits` in PostgreSQL, shared by every hub-api replica
//! behind a load balancer (see [`RateLimiter::shared`]; without it N
//! replicas allow up to N times the rate). The caller is the one the
//! authentication middleware resolved; this middleware only rate-limits. Defaults come from the configuration; site admins set
//! per-namespace values (`PUT /api/v1/namespaces/{ns}/quota`).
//!
//! Which rate applies: the rate of the namespace the request targets (see
//! [`target_namespace`]: `acme` in `/api/models/acme/m` or
//! `/acme/m/resolve/...`) when that namespace has its own rate; else the
//! caller's own namespace (a token's user) when it has one; else the default
//! for tokens or for anonymous callers. A bucket is keyed by caller and the
//! namespace whose rate applies, so limits on one tenant never slow another.
//!
//! Signed LFS transfer links (`/lfs/...`) are not limited here: they are
//! handed out by a (limited) batch request and each is good for one object.
//!
//! The Xet CAS (`/cas/...`) has its own rate ([`RateLimiter::cas`], default
//! [`CAS_RATE`]): one hf_xet transfer runs up to 64 requests at once (xorb
//! uploads, reconstructions, data-link GETs), far past the anonymous per-IP
//! burst the hub's own credentials would otherwise leave it (the CAS takes
//! none: it has its own tokens). A call with a valid CAS access token counts
//! against a bucket of the token's namespace (`ns` claim; every repo and
//! client of the tenant shares it); a data link with a valid signature counts
//! against a bucket of its claims (xorb and expiry: replaying one link is
//! limited like one caller, and links are handed out only by limited
//! reconstruction calls). Per-namespace overrides do not apply to the CAS;
//! what a tenant stores is bounded by its storage quota. Anything else under
//! `/cas/` (no token, a bad one, a forged link) counts against the client IP
//! at the anonymous rate, like any unauthenticated call.

use crate::auth::authenticate::{self, Authenticated};
use crate::auth::{Credential, Principal};
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// A sustained rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests per second (0 = unlimited).
    pub per_s: u32,
    /// Bucket size: requests allowed at once after an idle period.
    pub burst: u32,
}

impl Rate {
    fn unlimited(&self) -> bool {
        self.per_s == 0
    }
}

/// The configured defaults.
#[derive(Debug, Clone, Copy)]
pub struct RateDefaults {
    pub token: Rate,
    pub anonymous: Rate,
    /// Take the client IP from `X-Forwarded-For` / `Forwarded` (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
}

struct Bucket {
    tokens: f64,
    last: Instant,
    rate: Rate,
}

/// How long per-namespace overrides are cached before re-reading Postgres.
const OVERRIDES_TTL: Duration = Duration::from_secs(10);
/// Above this many buckets, full (idle) ones are dropped.
const MAX_BUCKETS: usize = 50_000;

/// The default rate of a namespace's Xet CAS calls: a 1 GiB transfer is about
/// 16 xorbs (64 MiB each) and as many data-link GETs, so this is room for
/// dozens of concurrent transfers and folders of many files.
pub const CAS_RATE: Rate = Rate {
    per_s: 500,
    burst: 2000,
};

/// Tokens a replica leases from a shared bucket at once: this many seconds
/// of the rate (at least one, at most the burst).
const LEASE_S: f64 = 0.1;
/// Leased tokens not spent within this long are dropped.
const LEASE_TTL: Duration = Duration::from_secs(1);

/// Tokens leased from a shared bucket, spent locally.
struct Lease {
    tokens: u32,
    until: Instant,
}

/// The buckets and the per-namespace overrides of this process.
pub struct RateLimiter {
    pub defaults: RateDefaults,
    /// The rate of a Xet CAS bucket (see the module doc).
    pub cas: Rate,
    /// Buckets live in PostgreSQL, shared by every replica (see [`RateLimiter::shared`]).
    shared: bool,
    leases: Mutex<HashMap<String, Lease>>,
    buckets: Mutex<HashMap<String, Bucket>>,
    overrides: RwLock<(Option<Instant>, HashMap<String, Rate>)>,
    refreshing: AtomicBool,
}

/// A refusal: how long to wait, and the limit that applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Denied {
    pub retry_after_s: u64,
    pub limit: u64,
}

impl RateLimiter {
    pub fn new(defaults: RateDefaults) -> Self {
        Self {
            defaults,
            cas: CAS_RATE,
            shared: false,
            leases: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            overrides: RwLock::new((None, HashMap::new())),
            refreshing: AtomicBool::new(false),
        }
    }

    /// The same limiter with another Xet CAS rate.
    pub fn with_cas(mut self, cas: Rate) -> Self {
        self.cas = cas;
        self
    }

    /// The same limiter with its buckets in PostgreSQL (`rate_buckets`),
    /// shared by every hub replica: N replicas behind a load balancer allow
    /// the configured rate, not N times it. Each replica leases up to
    /// [`LEASE_S`] of the rate at a time and spends it locally, so a caller
    /// costs one round trip per lease, and all replicas together admit at
    /// most the rate plus the burst plus one lease per replica. If the
    /// database cannot be reached, the in-process bucket decides.
    pub fn shared(mut self) -> Self {
        self.shared = true;
        self
    }

    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Takes one request from the bucket `key`: the shared one when this
    /// limiter is [`RateLimiter::shared`], else this process's own.
    pub async fn take_from(&self, db: &sqlx::PgPool, key: &str, rate: Rate) -> Result<(), Denied> {
        if !self.shared || rate.unlimited() {
            return self.take(key, rate);
        }
        let now = Instant::now();
        {
            let mut leases = self.leases.lock().expect("rate lock");
            if let Some(l) = leases.get_mut(key) {
                if l.tokens > 0 && l.until > now {
                    l.tokens -= 1;
                    return Ok(());
                }
            }
        }
        let burst = rate.burst.max(1);
        let want = ((rate.per_s as f64 * LEASE_S).ceil() as u32).clamp(1, burst);
        let taken: Result<(i32, f64), sqlx::Error> =
            sqlx::query_as("SELECT granted, wait_s FROM rate_take($1, $2, $3, $4)")
                .bind(key)
                .bind(rate.per_s as f64)
                .bind(burst as f64)
                .bind(want as i32)
                .fetch_one(db)
                .await;
        match taken {
            Ok((granted, _)) if granted > 0 => {
                let mut leases = self.leases.lock().expect("rate lock");
                if leases.len() > MAX_BUCKETS {
                    leases.retain(|_, l| l.until > now);
                }
                leases.insert(
                    key.to_string(),
                    Lease {
                        tokens: granted as u32 - 1,
                        until: now + LEASE_TTL,
                    },
                );
                Ok(())
            }
            Ok((_, wait_s)) => Err(Denied {
                retry_after_s: wait_s.ceil().max(1.0) as u64,
                limit: rate.per_s as u64,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "shared rate limit unavailable; this replica's own bucket decides");
                self.take(key, rate)
            }
        }
    }

    /// Takes one request from this process's bucket `key` (created full at `rate`).
    pub fn take(&self, key: &str, rate: Rate) -> Result<(), Denied> {
        if rate.unlimited() {
            return Ok(());
        }
        let now = Instant::now();
        let burst = rate.burst.max(1) as f64;
        let mut map = self.buckets.lock().expect("rate lock");
        if map.len() > MAX_BUCKETS {
            map.retain(|_, b| {
                let refill = now.duration_since(b.last).as_secs_f64() * b.rate.per_s as f64;
                b.tokens + refill < b.rate.burst.max(1) as f64
            });
        }
        let b = map.entry(key.to_string()).or_insert(Bucket {
            tokens: burst,
            last: now,
            rate,
        });
        if b.rate != rate {
            b.rate = rate;
            b.tokens = b.tokens.min(burst);
        }
        let elapsed = now.duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate.per_s as f64).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - b.tokens) / rate.per_s as f64;
            Err(Denied {
                retry_after_s: wait.ceil().max(1.0) as u64,
                limit: rate.per_s as u64,
            })
        }
    }

    /// Drops the cached overrides (after a site admin changed one).
    pub fn invalidate(&self) {
        self.overrides.write().expect("rate lock").0 = None;
    }

    /// The override of a namespace (lowercase name), if any.
    fn override_for(&self, ns: &str) -> Option<Rate> {
        self.overrides
            .read()
            .expect("rate lock")
            .1
            .get(&ns.to_ascii_lowercase())
            .copied()
    }

    /// Reads the overrides again once they are [`OVERRIDES_TTL`] old: in the
    /// background (the request goes on with the ones it has), except the very
    /// first time, which the request waits for.
    async fn refresh_overrides(self: &Arc<Self>, db: &sqlx::PgPool) {
        let loaded = self.overrides.read().expect("rate lock").0;
        if loaded.is_some_and(|t| t.elapsed() <= OVERRIDES_TTL)
            || self.refreshing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        if loaded.is_none() {
            self.load_overrides(db).await;
        } else {
            let (me, db) = (self.clone(), db.clone());
            tokio::spawn(async move { me.load_overrides(&db).await });
        }
    }

    async fn load_overrides(&self, db: &sqlx::PgPool) {
        let rows: Result<Vec<(String, i32, Option<i32>)>, _> = sqlx::query_as(
            "SELECT lower(n.name), q.rate_per_s, q.rate_burst FROM namespace_quotas q
             JOIN namespaces n ON n.id = q.namespace_id WHERE q.rate_per_s IS NOT NULL",
        )
        .fetch_all(db)
        .await;
        match rows {
            Ok(rows) => {
                let map = rows
                    .into_iter()
                    .map(|(n, r, b)| {
                        let per_s = r.max(0) as u32;
                        let burst = b.map(|b| b.max(1) as u32).unwrap_or(per_s.max(1) * 2);
                        (n, Rate { per_s, burst })
                    })
                    .collect();
                *self.overrides.write().expect("rate lock") = (Some(Instant::now()), map);
            }
            Err(e) => tracing::warn!(error = %e, "loading rate-limit overrides failed"),
        }
        self.refreshing.store(false, Ordering::Release);
    }
}

/// The namespace a request path targets, if it names one: repo routes
/// (`/api/{models|datasets}/{ns}/{name}/...`, `/{ns}/{name}/resolve/...`,
/// `/{ns}/{name}.git/...`, `/datasets/{ns}/{name}/...`) and the management
/// API's `/api/v1/{orgs|namespaces}/{ns}/...` and `/api/v1/repos/{kind}/{ns}/...`.
pub fn target_namespace(path: &str) -> Option<&str> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["api", "v1", "orgs" | "namespaces" | "endpoints", ns, ..] => Some(ns),
        ["api", "v1", "repos", _, ns, _, ..] => Some(ns),
        ["api", "v1", ..] => None,
        ["api", "models" | "datasets", ns, _, ..] => Some(ns),
        ["api", ..] | ["lfs", ..] => None,
        ["datasets", ns, _, ..] => Some(ns),
        ["endpoints", ns, _, ..] => Some(ns),
        [ns, _, ..] => Some(ns),
        _ => None,
    }
}

/// The client IP of a request (the peer, or the forwarded-for client behind a trusted proxy).
pub fn request_ip(req: &actix_web::HttpRequest, trust_forwarded_for: bool) -> String {
    if trust_forwarded_for {
        if let Some(ip) = req.connection_info().realip_remote_addr() {
            return ip.to_string();
        }
    }
    req.peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Password attempts per client IP: a burst of 10, then one a second (argon2
/// is expensive on purpose; this keeps guessing and CPU burn bounded).
pub const LOGIN_RATE: Rate = Rate {
    per_s: 1,
    burst: 10,
};

/// Who a request's bucket belongs to: the key, the caller's own namespace and
/// the default rate. The caller is the one the authentication middleware
/// recorded (a token, session, pull or worker credential); anyone else
/// (anonymous, bad credentials, a rejected cross-site request) is counted by
/// client IP at the anonymous rate.
fn bucket_owner(
    caller: Option<&Principal>,
    defaults: &RateDefaults,
    ip: impl FnOnce() -> String,
) -> (String, Option<String>, Rate) {
    match caller {
        Some(p) => {
            let key = match &p.credential {
                Credential::Token { id, .. } => format!("t:{id}"),
                Credential::Session { .. } => format!("s:{}", p.user_id),
                Credential::RepoPull { repo_id, .. } => format!("pull:{repo_id}"),
                Credential::Worker => "worker".to_string(),
            };
            (key, Some(p.name.clone()), defaults.token)
        }
        None => (format!("ip:{}", ip()), None, defaults.anonymous),
    }
}

/// The bucket of a `/cas/` request with a valid CAS token or data-link
/// signature (see the module doc), None for anything else. A verified token
/// is kept in the request for the handler's `CasToken` extractor.
async fn cas_bucket(state: &AppState, req: &ServiceRequest) -> Option<String> {
    use actix_web::HttpMessage;
    let sig = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "sig")
        .map(|(_, v)| v.into_owned());
    if let Some(sig) = sig {
        return crate::routes::xet::download::link_bucket(state, &sig).await;
    }
    let token = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .split_once(' ')
        .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string())?;
    let claims = crate::routes::xet::verify_cas_token(state, &token).await?;
    let key = format!("xet-ns:{}", claims.ns);
    req.extensions_mut()
        .insert(crate::routes::xet::CasToken(claims));
    Some(key)
}

/// Takes one call from the bucket of `caller` (as the authentication step
/// decided; `None`: anonymous, counted by client IP) for `req`: the target
/// namespace's override, else the caller's own namespace's, else the default
/// rate. `Err` is the 429 to answer. The middleware and the gateway's short
/// path (`gateway::front`) both call this.
pub async fn check(
    state: &AppState,
    req: &actix_web::HttpRequest,
    caller: Option<&Principal>,
) -> Result<(), ApiError> {
    let limiter = &state.tenancy.rate;
    limiter.refresh_overrides(&state.db).await;
    let (caller_key, own_ns, default) = bucket_owner(caller, &limiter.defaults, || {
        request_ip(req, limiter.defaults.trust_forwarded_for)
    });
    let target = target_namespace(req.path()).and_then(|ns| {
        limiter
            .override_for(ns)
            .map(|r| (ns.to_ascii_lowercase(), r))
    });
    let (scope, rate) = match target {
        Some((ns, r)) => (ns, r),
        None => match own_ns.and_then(|n| limiter.override_for(&n).map(|r| (n, r))) {
            Some((ns, r)) => (ns.to_ascii_lowercase(), r),
            None => ("-".to_string(), default),
        },
    };
    if let Err(d) = limiter
        .take_from(&state.db, &format!("{caller_key}|{scope}"), rate)
        .await
    {
        tracing::info!(
            rate.scope = %scope,
            rate.limit = d.limit,
            "rate limited"
        );
        return Err(ApiError::RateLimited {
            retry_after_s: d.retry_after_s,
            limit: d.limit,
        });
    }
    Ok(())
}

/// The actix middleware (`middleware::from_fn(ratelimit::middleware)`). Runs
/// after authentication and the CSRF check, and only rate-limits.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let path = req.path();
    if path.starts_with("/lfs/") || path == "/healthz" || path == "/readyz" {
        return next.call(req).await.map(|r| r.map_into_boxed_body());
    }
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next.call(req).await.map(|r| r.map_into_boxed_body());
    };
    let limiter = &state.tenancy.rate;
    if path.starts_with("/cas/") {
        if let Some(key) = cas_bucket(&state, &req).await {
            if let Err(d) = limiter.take_from(&state.db, &key, limiter.cas).await {
                tracing::info!(rate.scope = "cas", rate.limit = d.limit, "rate limited");
                let err = ApiError::RateLimited {
                    retry_after_s: d.retry_after_s,
                    limit: d.limit,
                };
                let resp = actix_web::ResponseError::error_response(&err);
                return Ok(req.into_response(resp));
            }
            return next.call(req).await.map(|r| r.map_into_boxed_body());
        }
    }
    let decided = authenticate::recorded(req.request());
    if let Err(err) = check(
        &state,
        req.request(),
        decided.as_ref().and_then(Authenticated::principal),
    )
    .await
    {
        let resp = actix_web::ResponseError::error_response(&err);
        return Ok(req.into_response(resp));
    }
    next.call(req).await.map(|r| r.map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_and_denies() {
        let l = RateLimiter::new(RateDefaults {
            token: Rate { per_s: 1, burst: 3 },
            anonymous: Rate { per_s: 1, burst: 1 },
            trust_forwarded_for: false,
        });
        let r = Rate { per_s: 1, burst: 3 };
        for _ in 0..3 {
            l.take("a", r).unwrap();
        }
        let d = l.take("a", r).unwrap_err();
        assert_eq!(d.retry_after_s, 1);
        l.take("b", r).unwrap();
        assert!(l.take("c", Rate { per_s: 0, burst: 0 }).is_ok());
    }

    /// The bucket belongs to the caller the authentication middleware
    /// resolved; without one, to the client IP.
    #[test]
    fn buckets_belong_to_the_resolved_caller() {
        let defaults = RateDefaults {
            token: Rate { per_s: 5, burst: 9 },
            anonymous: Rate { per_s: 1, burst: 2 },
            trust_forwarded_for: false,
        };
        let p = Principal {
            user_id: 3,
            name: "alice".into(),
            fullname: String::new(),
            is_admin: false,
            credential: Credential::Session {
                csrf: "x".into(),
                expires_at: 0,
                version: None,
            },
        };
        let (key, ns, rate) = bucket_owner(Some(&p), &defaults, || unreachable!());
        assert_eq!(
            (key.as_str(), ns.as_deref(), rate),
            ("s:3", Some("alice"), defaults.token)
        );
        let (key, ns, rate) = bucket_owner(None, &defaults, || "10.0.0.1".into());
        assert_eq!(
            (key.as_str(), ns, rate),
            ("ip:10.0.0.1", None, defaults.anonymous)
        );
    }

    #[test]
    fn target_namespaces() {
        assert_eq!(
            target_namespace("/api/models/acme/m/tree/main"),
            Some("acme")
        );
        assert_eq!(target_namespace("/acme/m/resolve/main/x"), Some("acme"));
        assert_eq!(target_namespace("/datasets/acme/d"), Some("acme"));
        assert_eq!(target_namespace("/acme/m.git/info/lfs"), Some("acme"));
        assert_eq!(target_namespace("/api/v1/orgs/acme/members"), Some("acme"));
        assert_eq!(target_namespace("/api/v1/endpoints/acme/e"), Some("acme"));
        assert_eq!(
            target_namespace("/endpoints/acme/e/v1/embeddings"),
            Some("acme")
        );
        assert_eq!(
            target_namespace("/api/v1/namespaces/acme/quota"),
            Some("acme")
        );
    }
}
