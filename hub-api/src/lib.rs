//! Paddock hub API: the HF-compatible registry, the management API, the
//! endpoint gateway and scheduler, and the dashboard, in one actix-web app.
//! See docs/ARCHITECTURE.md for the data flow.

pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod card;
pub mod config;
pub mod dashboard;
pub mod db;
pub mod diskspace;
pub mod domain;
pub mod endpoints;
pub mod error;
pub mod fuzzing;
pub mod gateway;
pub mod gating;
pub mod git;
pub mod health;
pub mod heavy;
pub mod jobs;
pub mod membudget;
pub mod metrics;
pub mod pgcluster;
pub mod quota;
pub mod ratelimit;
pub mod refresh_cache;
pub mod registry;
pub mod repo_cache;
pub mod repo_lookup;
pub mod resolve_cache;
pub mod routes;
pub mod scheduler;
pub mod server;
pub mod sha256_state;
pub mod signals;
pub mod state;
pub mod storage;
pub mod sweeper;
pub mod token_quota;
pub mod usage_rollup;
pub mod validate;
pub mod viewer;
pub mod webhooks;
