//! Command line and environment configuration of `hub-api`. Every setting has a
//! long flag and an environment variable; `hub-api --help` is the reference.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Paddock hub: HF-compatible model and dataset registry with inference endpoints.
#[derive(Parser, Debug)]
#[command(name = "hub-api", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the hub (the default when no subcommand is given).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Administration: users, organizations, members and tokens.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Create a user.
    CreateUser {
        name: String,
        /// Make the user a site administrator.
        #[arg(long)]
        admin: bool,
        /// Read a password for dashboard sign-in from standard input.
        #[arg(long)]
        password_stdin: bool,
        #[arg(long)]
        email: Option<String>,
        /// Full name shown by whoami and the dashboard (default: the name).
        #[arg(long)]
        fullname: Option<String>,
    },
    /// Create an organization owned by an existing user.
    CreateOrg {
        name: String,
        #[arg(long)]
        owner: String,
        /// Full name shown by whoami and the dashboard (default: the name).
        #[arg(long)]
        fullname: Option<String>,
        /// New repos in the organization are private unless created public
        /// (`visibility: "public"` or `private: false`).
        #[arg(long)]
        private_repos: bool,
    },
    /// Add a user to an organization (or change their role).
    AddMember {
        org: String,
        user: String,
        #[arg(long, value_parser = ["admin", "write", "read"])]
        role: String,
    },
    /// Create an access token for a user; the secret is the last line printed.
    CreateToken {
        user: String,
        /// Comma-separated scopes: read, write, inference, admin, worker.
        #[arg(long, default_value = "read,write", value_delimiter = ',')]
        scopes: Vec<String>,
        #[arg(long, default_value = "cli")]
        name: String,
        /// Expire the token after this many days.
        #[arg(long)]
        expires_in: Option<u32>,
    },
}

/// Settings shared by every subcommand.
#[derive(Args, Clone)]
pub struct Config {
    /// Address to listen on.
    #[arg(
        long,
        env = "HUB_BIND",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub bind: SocketAddr,

    /// Data directory: the private PostgreSQL cluster and the local object store live here.
    #[arg(long, env = "HUB_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,

    /// PostgreSQL URL. Unset: a private cluster under the data directory.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,

    /// Object store: a directory path or file:///path, s3://bucket/prefix (AWS_* variables,
    /// AWS_ENDPOINT_URL for MinIO), or memory:// (tests). Default: <data-dir>/objects.
    #[arg(long, env = "HUB_STORAGE_URL", global = true)]
    pub storage_url: Option<String>,

    /// Absolute base URL given to clients (repo URLs, commit URLs, LFS links, pagination).
    /// Default: http://<bind>.
    #[arg(long, env = "HUB_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,

    /// HTTP worker threads (default: number of cores).
    #[arg(long, env = "HUB_HTTP_WORKERS", global = true)]
    pub http_workers: Option<usize>,

    /// Maximum database connections in the pool.
    #[arg(long, env = "HUB_DB_POOL", default_value_t = 32, global = true)]
    pub db_pool: u32,

    /// Log format: text or json.
    #[arg(long, env = "HUB_LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: String,

    /// Milliseconds a log line below warning may wait to be written with the
    /// lines after it, in one write (the access log writes a line per request;
    /// 20 saves about 4% of the gateway's CPU per call); warnings and errors are
    /// written at once, and a clean exit writes everything. 0 (the default)
    /// writes each line as it is made, so a line is in the log before its
    /// response leaves.
    #[arg(long, env = "HUB_LOG_FLUSH_MS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000), global = true)]
    pub log_flush_ms: u64,

    /// Address of a second listener that serves only `GET /metrics` (Prometheus
    /// text format) without credentials, for a scraper inside the cluster; never
    /// expose it through the public load balancer. Unset: metrics are served
    /// only on the API listener, to site administrators (an admin-scoped token).
    #[arg(long, env = "HUB_METRICS_BIND", global = true)]
    pub metrics_bind: Option<SocketAddr>,

    /// Base URL of an OpenTelemetry collector's OTLP/HTTP receiver (such as
    /// http://otel-collector:4318): each request's span, with its request id,
    /// is exported to its /v1/traces (protobuf, in batches). Unset: no export.
    #[arg(long, env = "HUB_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,

    /// Do not run the in-process inference worker.
    #[arg(long, env = "HUB_NO_WORKER", global = true)]
    pub no_worker: bool,

    /// Compute threads of the in-process worker (default: the cores this process may use).
    #[arg(long, env = "HUB_WORKER_THREADS", global = true)]
    pub worker_threads: Option<usize>,

    /// Model cache of the in-process worker (default: <data-dir>/worker-cache).
    #[arg(long, env = "HUB_WORKER_CACHE_DIR", global = true)]
    pub worker_cache_dir: Option<PathBuf>,
    /// Requests per second allowed per API token or session (0: unlimited).
    #[arg(
        long,
        env = "HUB_RATE_LIMIT_TOKEN_RPS",
        default_value_t = 100,
        global = true
    )]
    pub rate_limit_token_rps: u32,

    /// Burst allowed per API token or session.
    #[arg(
        long,
        env = "HUB_RATE_LIMIT_TOKEN_BURST",
        default_value_t = 400,
        global = true
    )]
    pub rate_limit_token_burst: u32,

    /// Requests per second allowed per anonymous client IP (0: unlimited).
    #[arg(
        long,
        env = "HUB_RATE_LIMIT_ANON_RPS",
        default_value_t = 50,
        global = true
    )]
    pub rate_limit_anon_rps: u32,

    /// Burst allowed per anonymous client IP.
    #[arg(
        long,
        env = "HUB_RATE_LIMIT_ANON_BURST",
        default_value_t = 200,
        global = true
    )]
    pub rate_limit_anon_burst: u32,

    /// Xet CAS requests per second allowed per namespace (a CAS token's
    /// tenant) and per signed data link (0: unlimited).
    #[arg(
        long,
        env = "HUB_RATE_LIMIT_CAS_RPS",
        default_value_t = crate::ratelimit::CAS_RATE.per_s,
        global = true
    )]
    pub rate_limit_cas_rps: u32,

    /// Burst of Xet CAS requests allowed per namespace and per data link.
    #[arg(
        long,
        env = "HUB_RATE_LIMIT_CAS_BURST",
        default_value_t = crate::ratelimit::CAS_RATE.burst,
        global = true
    )]
    pub rate_limit_cas_burst: u32,

    /// Memory for Xet upload bodies being checked, all tenants together, in MiB
    /// (a xorb or shard is whole in memory until its hash is verified).
    #[arg(
        long,
        env = "HUB_XET_UPLOAD_MEMORY_MIB",
        default_value_t = 1024,
        global = true
    )]
    pub xet_upload_memory_mib: u64,

    /// Of which one namespace may hold at once, in MiB.
    #[arg(
        long,
        env = "HUB_XET_UPLOAD_MEMORY_PER_NAMESPACE_MIB",
        default_value_t = 512,
        global = true
    )]
    pub xet_upload_memory_per_namespace_mib: u64,

    /// Keep rate-limit buckets in PostgreSQL, shared by every hub replica
    /// (set it when several replicas serve behind a load balancer; a single
    /// node keeps them in memory).
    #[arg(long, env = "HUB_SHARED_RATE_LIMITS", global = true)]
    pub shared_rate_limits: bool,

    /// Take the client IP from X-Forwarded-For / Forwarded (only behind a trusted proxy).
    #[arg(long, env = "HUB_TRUST_FORWARDED_FOR", global = true)]
    pub trust_forwarded_for: bool,

    /// Lifetime of a dashboard session, in minutes.
    #[arg(long, env = "HUB_SESSION_TTL_MINUTES", default_value_t = 480, global = true,
          value_parser = clap::value_parser!(u32).range(1..=10080))]
    pub session_ttl_minutes: u32,

    /// Lifetime of the Xet CAS access tokens the `xet-read-token` and
    /// `xet-write-token` routes hand out, in seconds (clients refresh 30-60 s
    /// before expiry, so keep it well above a minute).
    #[arg(long, env = "HUB_XET_TOKEN_TTL_SECS", default_value_t = 3600, global = true,
          value_parser = clap::value_parser!(u32).range(300..=86400))]
    pub xet_token_ttl_secs: u32,

    /// MiB of inline files a contributor without write access may add, in
    /// all, to one repository's pull requests (they count toward the repo
    /// owner's storage quota; LFS and Xet uploads need write access).
    #[arg(
        long,
        env = "HUB_CONTRIBUTION_LIMIT_MB",
        default_value_t = 100,
        global = true
    )]
    pub contribution_limit_mb: u32,

    /// Seconds a resolved API token is cached (0: no cache). A revocation made
    /// on another replica takes effect within this long.
    #[arg(long, env = "HUB_AUTH_CACHE_TTL_SECS", default_value_t = 5, global = true,
          value_parser = clap::value_parser!(u32).range(0..=60))]
    pub auth_cache_ttl_secs: u32,

    /// Seconds `/resolve` may answer from a cached repo row (0: read it on
    /// every request). Changes are seen at once through this replica and
    /// within a NOTIFY's delivery through others; this bounds how long a row
    /// may live should the change notifications stop unnoticed.
    #[arg(long, env = "HUB_REPO_CACHE_TTL_SECS", default_value_t = 5, global = true,
          value_parser = clap::value_parser!(u32).range(0..=60))]
    pub repo_cache_ttl_secs: u32,

    /// Storage quota of namespaces without their own, in bytes (unset: unlimited).
    #[arg(long, env = "HUB_DEFAULT_STORAGE_QUOTA", global = true)]
    pub default_storage_quota: Option<u64>,

    /// Free disk space kept in reserve, in MiB, on the disks of the local object
    /// store and of the private PostgreSQL cluster: writes that would eat into it
    /// are refused with 507 `insufficient_storage`, so the database always has
    /// room for its WAL and its shutdown checkpoint (0: no reserve).
    #[arg(
        long,
        env = "HUB_DISK_RESERVE_MB",
        default_value_t = crate::diskspace::DEFAULT_RESERVE_MB,
        global = true
    )]
    pub disk_reserve_mb: u64,

    /// Let webhooks target loopback, private (RFC 1918), link-local, CGNAT and
    /// IPv6 unique-local addresses. Off: only public addresses, so a tenant
    /// cannot make the hub probe the internal network (checked when a webhook
    /// is saved and on the address each delivery connects to).
    #[arg(long, env = "HUB_WEBHOOK_ALLOW_PRIVATE", global = true)]
    pub webhook_allow_private: bool,

    /// Timeout of one webhook delivery attempt, in seconds.
    #[arg(long, env = "HUB_WEBHOOK_TIMEOUT_SECS", default_value_t = 10, global = true,
          value_parser = clap::value_parser!(u32).range(1..=120))]
    pub webhook_timeout_secs: u32,

    /// Attempts of a webhook delivery before it is marked failed (exponential
    /// backoff from 10 s between them, at most 1 h).
    #[arg(long, env = "HUB_WEBHOOK_MAX_ATTEMPTS", default_value_t = 8, global = true,
          value_parser = clap::value_parser!(u32).range(1..=50))]
    pub webhook_max_attempts: u32,

    /// How long a replica's claim holds a webhook delivery, in seconds (default:
    /// twice the timeout plus 30 s). Tests only: shorter than a send may take,
    /// a delivery is sent again while its first attempt is still running.
    #[arg(long, env = "HUB_WEBHOOK_LEASE_SECS", hide = true, global = true)]
    pub webhook_lease_secs: Option<u32>,

    /// Run the private PostgreSQL cluster with fsync off (tests only: not crash-safe).
    #[arg(long, env = "HUB_PG_UNSAFE_FAST", hide = true, global = true)]
    pub pg_unsafe_fast: bool,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &self.database_url.as_ref().map(|_| "<redacted>"),
            )
            .field("storage_url", &self.storage_url)
            .field("public_url", &self.public_url)
            .field("http_workers", &self.http_workers)
            .field("db_pool", &self.db_pool)
            .field("no_worker", &self.no_worker)
            .field("metrics_bind", &self.metrics_bind)
            .field("otlp_endpoint", &self.otlp_endpoint)
            .field("rate_limit_token_rps", &self.rate_limit_token_rps)
            .field("rate_limit_anon_rps", &self.rate_limit_anon_rps)
            .field("session_ttl_minutes", &self.session_ttl_minutes)
            .field("xet_token_ttl_secs", &self.xet_token_ttl_secs)
            .field("contribution_limit_mb", &self.contribution_limit_mb)
            .field("default_storage_quota", &self.default_storage_quota)
            .field("disk_reserve_mb", &self.disk_reserve_mb)
            .field("webhook_allow_private", &self.webhook_allow_private)
            .finish()
    }
}

impl Config {
    /// The public base URL without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.bind),
        }
    }

    /// Checks what can be checked before anything starts; the message says what to do.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(u) = &self.public_url {
            let parsed = url::Url::parse(u).map_err(|e| {
                anyhow::anyhow!("HUB_PUBLIC_URL {u:?} is not an absolute URL ({e}); set it like http://hub.example:8080")
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                anyhow::bail!("HUB_PUBLIC_URL must start with http:// or https://");
            }
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            anyhow::bail!("HUB_LOG_FORMAT must be text or json");
        }
        if let Some(e) = &self.otlp_endpoint {
            hub_telemetry::logging::validate_endpoint(e)
                .map_err(|e| anyhow::anyhow!("HUB_OTLP_ENDPOINT: {e}"))?;
        }
        if self
            .metrics_bind
            .is_some_and(|m| m == self.bind && m.port() != 0)
        {
            anyhow::bail!("HUB_METRICS_BIND must be another address than HUB_BIND");
        }
        Ok(())
    }
}
