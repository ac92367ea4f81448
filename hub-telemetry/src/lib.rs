//! Observability shared by `hub-api` and `hub-worker` (neither may depend on the
//! other): metric families and their Prometheus text exposition ([`metrics`]),
//! request ids ([`request_id`]), and logging with an optional OpenTelemetry
//! trace export over OTLP/HTTP ([`logging`]), its lines written in batches
//! ([`log_writer`]).

pub mod log_writer;
pub mod logging;
pub mod metrics;
pub mod request_id;
