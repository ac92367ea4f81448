//! Logging for both binaries: text or JSON lines on stdout through `tracing`
//! (batched by [`crate::log_writer`]),
//! and, when an OTLP endpoint is given (`--otlp-endpoint`), every span
//! (above all each request's span, which carries its request id) exported
//! to an OpenTelemetry collector over OTLP/HTTP with protobuf bodies
//! (`POST {endpoint}/v1/traces`), in batches from a thread of its own, so a
//! slow or absent collector never holds up a request.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Whether spans are exported (set once by [`init`]).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported to an OTLP endpoint.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Names an exported request span once its route is known (`GET /healthz`):
/// the OpenTelemetry layer reads `otel.name` only before the span is first
/// entered, and a request's span is entered before routing. Nothing when
/// spans are not exported.
pub fn name_span(span: &tracing::Span, name: String) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if EXPORTING.load(Ordering::Relaxed) {
        opentelemetry::trace::TraceContextExt::span(&span.context()).update_name(name);
    }
}
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How a process logs.
pub struct Options<'a> {
    /// `service.name` of exported spans (`paddock-hub`, `paddock-worker`).
    pub service: &'static str,
    /// `text` or `json`.
    pub format: &'a str,
    /// The environment variable holding an `EnvFilter` directive.
    pub filter_env: &'static str,
    /// The filter when that variable is unset.
    pub default_filter: &'static str,
    /// Base URL of an OTLP/HTTP receiver (`http://collector:4318`); spans go to
    /// its `/v1/traces`. None: no export.
    pub otlp_endpoint: Option<&'a str>,
    /// How long a line below warning may wait to be written with the lines
    /// after it ([`crate::log_writer`]); zero writes each line at once.
    pub flush_interval: Duration,
}

/// Keeps the trace export running; dropping it sends the spans still buffered
/// (bounded by the export timeout) and stops it.
pub struct Guard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Dropped last, after anything the export's shutdown logs.
    lines: Option<crate::log_writer::Flusher<std::io::Stdout>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("paddock: flushing traces to the OTLP endpoint failed: {e}");
            }
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        drop(self.lines.take());
    }
}

/// The URL spans are posted to: `endpoint` when it already names `/v1/traces`,
/// else `endpoint` + `/v1/traces` (as `OTEL_EXPORTER_OTLP_ENDPOINT` is read).
pub fn traces_url(endpoint: &str) -> String {
    let e = endpoint.trim_end_matches('/');
    if e.ends_with("/v1/traces") {
        e.to_string()
    } else {
        format!("{e}/v1/traces")
    }
}

/// Checks an OTLP endpoint before anything starts.
pub fn validate_endpoint(endpoint: &str) -> Result<(), String> {
    match url_scheme(endpoint) {
        Some("http" | "https") => Ok(()),
        _ => Err(format!(
            "the OTLP endpoint {endpoint:?} must be an http:// or https:// URL (an OTLP/HTTP receiver, such as http://collector:4318)"
        )),
    }
}

fn url_scheme(u: &str) -> Option<&str> {
    let (scheme, rest) = u.split_once("://")?;
    (!rest.is_empty()).then_some(scheme)
}

/// Installs the process's subscriber (once; later calls keep the first) and
/// starts the trace export when asked.
pub fn init(o: &Options<'_>) -> Result<Guard, String> {
    let filter = tracing_subscriber::EnvFilter::try_from_env(o.filter_env)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(o.default_filter));
    let json = o.format == "json";
    // Colours only for a terminal: a log file or a collector gets plain
    // `key=value` text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let (writer, lines) =
        crate::log_writer::BatchedWriter::new(std::io::stdout(), o.flush_interval)
            .map_err(|e| format!("starting the log writer: {e}"))?;
    let (text_layer, json_layer) = if json {
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .with_target(false)
            .with_writer(writer);
        (None, Some(layer))
    } else {
        let layer = tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(ansi)
            .with_writer(writer);
        (Some(layer), None)
    };
    let mut guard = Guard {
        provider: None,
        runtime: None,
        lines: Some(lines),
    };
    let otel_layer = match o.otlp_endpoint {
        None => None,
        Some(endpoint) => {
            validate_endpoint(endpoint)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("otlp-export")
                .enable_all()
                .build()
                .map_err(|e| format!("starting the OTLP export: {e}"))?;
            let client = ExportClient {
                http: reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .build()
                    .map_err(|e| format!("starting the OTLP export: {e}"))?,
                runtime: runtime.handle().clone(),
            };
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(traces_url(endpoint))
                .with_timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| format!("the OTLP exporter: {e}"))?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(o.service)
                .build();
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build();
            let tracer = provider.tracer(o.service);
            guard.provider = Some(provider);
            guard.runtime = Some(runtime);
            EXPORTING.store(true, Ordering::Relaxed);
            Some(tracing_opentelemetry::layer().with_tracer(tracer))
        }
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(text_layer)
        .with(json_layer)
        .with(otel_layer)
        .try_init();
    Ok(guard)
}

/// The exporter's HTTP client: the workspace's `reqwest`, run on the export's
/// own small runtime (the batch processor calls it from a plain thread).
#[derive(Debug)]
struct ExportClient {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

type Exported = Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError>;

impl opentelemetry_http::HttpClient for ExportClient {
    fn send_bytes<'a, 'b>(
        &'a self,
        request: http::Request<bytes::Bytes>,
    ) -> Pin<Box<dyn Future<Output = Exported> + Send + 'b>>
    where
        'a: 'b,
    {
        let http = self.http.clone();
        let runtime = self.runtime.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let mut req = http.request(parts.method, parts.uri.to_string());
            for (name, value) in &parts.headers {
                req = req.header(name, value);
            }
            let (status, body) = runtime
                .spawn(async move {
                    let r = req.body(body).send().await?;
                    let status = r.status().as_u16();
                    Ok::<_, reqwest::Error>((status, r.bytes().await?))
                })
                .await??;
            Ok(http::Response::builder().status(status).body(body)?)
        })
    }
}
