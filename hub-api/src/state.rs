//! Shared application state handed to every handler: the database, storage,
//! keys and settings, and every piece of per-app mutable state (rate-limit
//! buckets, the token cache, heavy-work slots, the gateway's routes, the
//! database circuit breaker, the scheduler's doorbell, the browse facets, the
//! metrics).
//! Nothing mutable lives in a process-wide static, so two apps in one process
//! (tests, replicas) share nothing but what they are given.

use crate::auth::jwt::KeyRing;
use crate::ratelimit::{Rate, RateDefaults, RateLimiter};
use crate::storage::Storage;
use sqlx::PgPool;
use std::sync::Arc;

/// Everything a request handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub storage: Storage,
    /// Absolute base URL without a trailing slash.
    pub public_url: String,
    pub keys: KeyRing,
    pub limits: Limits,
    /// Per-process routing state of the endpoint gateway.
    pub live: std::sync::Arc<crate::gateway::Live>,
    pub tenancy: Tenancy,
    /// Database circuit breaker and the disk reserve (see `health`).
    pub health: Arc<crate::health::Health>,
    /// Wakes this app's scheduler before its next tick (see `scheduler`).
    pub scheduler: crate::scheduler::Nudge,
    /// The browse pages' filter choices, for a few seconds (see `dashboard::home`).
    pub facets: Arc<crate::dashboard::home::FacetsCache>,
    /// What `/resolve` looked up, by keys that make it immutable (see `resolve_cache`).
    pub resolved: Arc<crate::resolve_cache::ResolveCache>,
    /// What `GET /metrics` exposes (see `metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Small blobs' deflated pack entries, by git id (see `git::pack::EntryCache`).
    pub pack_entries: Arc<crate::git::pack::EntryCache>,
}

/// Tenancy settings and the per-process rate-limit buckets.
#[derive(Clone)]
pub struct Tenancy {
    pub rate: Arc<RateLimiter>,
    /// Lifetime of a dashboard session, in seconds.
    pub session_ttl_s: i64,
    /// Storage quota of namespaces without their own, in bytes (None: unlimited).
    pub default_storage_quota: Option<i64>,
    /// Resolved API tokens, for a few seconds (see `auth::cache`).
    pub token_cache: Arc<crate::auth::cache::TokenCache>,
    /// Callers' roles in namespaces, as long as tokens (see `auth::cache`).
    pub roles: Arc<crate::auth::cache::RoleCache>,
    /// Read decisions made again for credentials minted from one (links,
    /// Xet tokens, pull tokens), as long as tokens (see `auth::grants`).
    pub grants: Arc<crate::auth::grants::GrantCache>,
    /// Slots of CPU- or memory-heavy work per tenant (see `heavy`).
    pub heavy: Arc<crate::heavy::Heavy>,
    /// Memory of Xet upload bodies per namespace (see `membudget`).
    pub upload_memory: Arc<crate::membudget::MemoryBudget>,
    /// Webhook delivery settings, with the SSRF allow-list (see `webhooks`).
    pub webhooks: Arc<crate::webhooks::Settings>,
}

impl Tenancy {
    /// From the command line / environment.
    pub fn from_config(c: &crate::config::Config) -> Self {
        let shared = c.shared_rate_limits;
        Self {
            rate: Arc::new({
                let limiter = RateLimiter::new(RateDefaults {
                    token: Rate {
                        per_s: c.rate_limit_token_rps,
                        burst: c.rate_limit_token_burst,
                    },
                    anonymous: Rate {
                        per_s: c.rate_limit_anon_rps,
                        burst: c.rate_limit_anon_burst,
                    },
                    trust_forwarded_for: c.trust_forwarded_for,
                })
                .with_cas(Rate {
                    per_s: c.rate_limit_cas_rps,
                    burst: c.rate_limit_cas_burst,
                });
                if shared {
                    limiter.shared()
                } else {
                    limiter
                }
            }),
            session_ttl_s: c.session_ttl_minutes as i64 * 60,
            default_storage_quota: c.default_storage_quota.map(|q| q as i64),
            token_cache: Arc::new(crate::auth::cache::TokenCache::new(
                std::time::Duration::from_secs(c.auth_cache_ttl_secs as u64),
            )),
            roles: Arc::new(crate::auth::cache::RoleCache::new(
                std::time::Duration::from_secs(c.auth_cache_ttl_secs as u64),
            )),
            grants: Arc::new(crate::auth::grants::GrantCache::new(
                std::time::Duration::from_secs(c.auth_cache_ttl_secs as u64),
            )),
            heavy: Arc::new(crate::heavy::Heavy::default()),
            upload_memory: Arc::new(crate::membudget::MemoryBudget::new(
                crate::membudget::BudgetLimits {
                    global: c.xet_upload_memory_mib.max(1) * 1024 * 1024,
                    per_namespace: c.xet_upload_memory_per_namespace_mib.max(1) * 1024 * 1024,
                    ..Default::default()
                },
            )),
            webhooks: Arc::new(crate::webhooks::Settings::from_config(c)),
        }
    }
}

impl Default for Tenancy {
    /// The defaults of the command line.
    fn default() -> Self {
        use clap::Parser;
        let cli = crate::config::Cli::parse_from(["hub-api"]);
        Self::from_config(&cli.config)
    }
}

/// Request limits (documented in docs/API.md).
#[derive(Debug, Clone)]
pub struct Limits {
    /// JSON bodies.
    pub json_body: usize,
    /// The NDJSON commit body.
    pub commit_body: u64,
    /// One NDJSON line (an inline file is base64 in one line; files over
    /// `lfs_threshold` go through LFS, so 10 MB files fit with room to spare).
    pub commit_line: usize,
    /// Operations in one commit.
    pub commit_ops: usize,
    /// Largest LFS object.
    pub lfs_object: u64,
    /// Files over this many bytes are stored with LFS.
    pub lfs_threshold: u64,
    /// Multipart chunk size offered to clients.
    pub multipart_chunk: u64,
    /// Objects above this size are offered multipart uploads.
    pub multipart_threshold: u64,
    /// Lifetime of a Xet CAS access token (`xet-*-token`), in seconds.
    pub xet_token_ttl_s: i64,
    /// Lifetime of a Xet xorb data link, in seconds.
    pub xet_data_link_ttl_s: i64,
    /// Largest xorb upload body (the client's own limit, §5.5).
    pub xet_xorb_body: usize,
    /// Largest shard upload body.
    pub xet_shard_body: usize,
    /// Inline bytes a contributor without write access may add, in all, to
    /// one repo's pull requests (they are stored in the repo and count
    /// toward its owner's quota).
    pub contribution: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            json_body: 2 * 1024 * 1024,
            commit_body: 2 * 1024 * 1024 * 1024,
            commit_line: 16 * 1024 * 1024,
            commit_ops: 25_000,
            lfs_object: 500 * 1024 * 1024 * 1024,
            lfs_threshold: 10_000_000,
            multipart_chunk: 16 * 1024 * 1024,
            multipart_threshold: 50 * 1024 * 1024,
            xet_token_ttl_s: 3600,
            xet_data_link_ttl_s: 3600,
            xet_xorb_body: hub_xet::xorb::XorbLimits::default().max_body_bytes,
            xet_shard_body: hub_xet::shard::DEFAULT_MAX_SHARD_BYTES,
            contribution: 100 << 20,
        }
    }
}
