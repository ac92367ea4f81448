//! The worker's HTTP API. Route table (everything a worker serves):
//!
//! | method | path | auth | handler |
//! |---|---|---|---|
//! | GET | `/health` | none | `health` |
//! | GET | `/metrics` | none | `metrics::serve` (Prometheus text format) |
//! | POST | `/models/{key}/v1/embeddings` | gateway | `openai::embeddings` |
//! | POST | `/models/{key}/v1/chat/completions` | gateway | `chat::chat_completions` |
//! | POST | `/models/{key}/v1/completions` | gateway | `completions::completions` |
//! | GET | `/models/{key}/v1/models` | gateway | `openai::models` |
//! | POST | `/models/{key}` and `/models/{key}/` | gateway | `tasks::infer` (HF task API; `tgi::generate` on decoders) |
//! | POST | `/models/{key}/pipeline/{task}` | gateway | `tasks::infer` |
//! | GET | `/models/{key}/info` | gateway | `tasks::info` |
//!
//! "gateway" means `Authorization: Bearer <gateway_secret>` (from worker registration).
//! Every inference response carries `X-Input-Tokens` for metering; non-streamed
//! generation also `X-Output-Tokens`, streamed generation ends with the
//! `: paddock-usage {...}` SSE comment ([`sse::usage_comment`]) the gateway strips.
//!
//! Every request passes [`metrics::middleware`] ([`app`]): its request id (the
//! gateway's `X-Request-Id`, echoed), its span, and its metrics.

mod chat;
mod choices;
mod completions;
pub mod error;
mod genparams;
mod logprobs;
pub mod metrics;
mod openai;
mod openai_error;
pub mod sse;
mod tasks;
mod tgi;

#[cfg(test)]
mod gen_tests;

use crate::engine::Model;
use crate::registry::{ModelRegistry, SlotStatus};
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use error::ApiError;
use futures::StreamExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The metering headers, declared once with the gateway that reads them
/// (`hub_types::metering`): prompt tokens, and generated tokens of a non-streamed answer.
pub use hub_types::metering::{INPUT_TOKENS_HEADER, OUTPUT_TOKENS_HEADER};

/// Who may call `/models/...`.
#[derive(Debug, Default)]
pub struct GatewayAuth {
    open: bool,
    secret: RwLock<Option<String>>,
}

impl GatewayAuth {
    /// No authentication (standalone engine servers, tests).
    pub fn open() -> GatewayAuth {
        GatewayAuth {
            open: true,
            secret: RwLock::new(None),
        }
    }

    /// Requires a secret that is not known yet (set after registration); until then every
    /// call is refused.
    pub fn pending() -> GatewayAuth {
        GatewayAuth::default()
    }

    /// Requires this secret.
    pub fn with_secret(secret: &str) -> GatewayAuth {
        let a = GatewayAuth::pending();
        a.set_secret(secret);
        a
    }

    /// Replaces the secret (after a re-registration).
    pub fn set_secret(&self, secret: &str) {
        *self.secret.write().expect("auth lock") = Some(secret.to_string());
    }

    fn check(&self, req: &HttpRequest) -> bool {
        if self.open {
            return true;
        }
        let guard = self.secret.read().expect("auth lock");
        let Some(secret) = guard.as_deref() else {
            return false;
        };
        let presented = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        presented.is_some_and(|p| constant_time_eq(p.as_bytes(), secret.as_bytes()))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Shared state of the HTTP routes.
#[derive(Clone)]
pub struct HttpState {
    pub registry: Arc<ModelRegistry>,
    pub auth: Arc<GatewayAuth>,
    /// What `GET /metrics` exposes.
    pub metrics: Arc<metrics::WorkerMetrics>,
}

/// A loaded, running model resolved from `/models/{key}`, after the gateway check.
pub struct Served {
    pub key: String,
    pub served_name: String,
    pub model: Model,
}

impl FromRequest for Served {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Served, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(resolve_served(req))
    }
}

fn resolve_served(req: &HttpRequest) -> Result<Served, ApiError> {
    let state = req
        .app_data::<web::Data<HttpState>>()
        .expect("HttpState is registered");
    if !state.auth.check(req) {
        return Err(ApiError::Unauthorized);
    }
    let key = req.match_info().get("key").unwrap_or_default().to_string();
    let slot = state
        .registry
        .by_key(&key)
        .ok_or_else(|| ApiError::ModelNotFound(key.clone()))?;
    match (slot.status, slot.model) {
        (SlotStatus::Running, Some(model)) => match model.failure() {
            Some(why) => Err(ApiError::ModelNotReady {
                key,
                status: SlotStatus::Failed.as_str(),
                message: Some(why),
            }),
            None => Ok(Served {
                key,
                served_name: slot.served_name,
                model,
            }),
        },
        (status, _) => Err(ApiError::ModelNotReady {
            key,
            status: status.as_str(),
            message: slot.message,
        }),
    }
}

/// The request body, read with a size limit, as JSON, and its text (for the fields that
/// must keep their declared key order, which the parsed value sorts).
pub struct JsonBody(pub serde_json::Value, pub String);

/// Reads the whole body, up to [`MAX_BODY_BYTES`].
async fn read_body(mut payload: Payload) -> Result<web::BytesMut, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::InvalidInput(e.to_string()))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            });
        }
        body.extend_from_slice(&chunk);
    }
    if body.is_empty() {
        return Err(ApiError::InvalidJson("the body is empty".to_string()));
    }
    Ok(body)
}

impl FromRequest for JsonBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<JsonBody, ApiError>>>>;

    fn from_request(_: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let payload = payload.take();
        Box::pin(async move {
            let body = read_body(payload).await?;
            let value =
                serde_json::from_slice(&body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
            // Valid JSON is valid UTF-8.
            let text = String::from_utf8(body.to_vec()).unwrap_or_default();
            Ok(JsonBody(value, text))
        })
    }
}

/// The request body as JSON and as its text (for fields that must reach a chat
/// template in their original key order). Its rejections are OpenAI-shaped.
pub struct RawJsonBody {
    pub text: String,
    pub value: serde_json::Value,
}

impl FromRequest for RawJsonBody {
    type Error = openai_error::OpenAiError;
    type Future = Pin<Box<dyn Future<Output = Result<RawJsonBody, Self::Error>>>>;

    fn from_request(_: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let payload = payload.take();
        Box::pin(async move {
            let body = read_body(payload).await?;
            let text = String::from_utf8(body.to_vec())
                .map_err(|e| ApiError::InvalidJson(e.to_string()))?;
            let value =
                serde_json::from_str(&text).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
            Ok(RawJsonBody { text, value })
        })
    }
}

/// A JSON response with the metering header.
pub fn metered(tokens: usize, body: &impl serde::Serialize) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((INPUT_TOKENS_HEADER, tokens.to_string()))
        .json(body)
}

async fn health(state: web::Data<HttpState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "status": "ok",
        "models_running": state.registry.running(),
    }))
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::UnknownRoute)
}

/// Registers every route (the table above) with `state`.
pub fn configure(cfg: &mut web::ServiceConfig, state: HttpState) {
    cfg.app_data(web::Data::new(state))
        .route("/health", web::get().to(health))
        .route("/metrics", web::get().to(metrics::serve))
        .route(
            "/models/{key}/v1/embeddings",
            web::post().to(openai::embeddings),
        )
        .route(
            "/models/{key}/v1/chat/completions",
            web::post().to(chat::chat_completions),
        )
        .route(
            "/models/{key}/v1/completions",
            web::post().to(completions::completions),
        )
        .route("/models/{key}/v1/models", web::get().to(openai::models))
        .route("/models/{key}/info", web::get().to(tasks::info))
        .route(
            "/models/{key}/pipeline/{task}",
            web::post().to(tasks::infer),
        )
        .route("/models/{key}", web::post().to(tasks::infer))
        .route("/models/{key}/", web::post().to(tasks::infer))
        .default_service(web::to(not_found));
}

/// The worker's app: every route, behind the request middleware
/// ([`metrics::middleware`]).
pub fn app(
    state: HttpState,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    actix_web::App::new()
        .wrap(actix_web::middleware::from_fn(metrics::middleware))
        .configure(move |c| configure(c, state))
}

/// A running HTTP server.
pub struct Server {
    /// Address it listens on.
    pub addr: std::net::SocketAddr,
    handle: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Binds `addr` and starts serving on `workers` threads.
    pub fn start(addr: &str, state: HttpState, workers: usize) -> std::io::Result<Server> {
        let server = actix_web::HttpServer::new(move || app(state.clone()))
            .workers(workers.max(1))
            // Notice at once when the gateway closes a connection (a client left), so a
            // streamed generation is dropped and its slot freed instead of running on until
            // the next write.
            .h1_allow_half_closed(false)
            // Longer than the gateway keeps an idle pooled connection to us.
            .keep_alive(hub_types::control::SERVER_KEEP_ALIVE)
            .disable_signals()
            .shutdown_timeout(5)
            .bind(addr)?;
        let bound = server.addrs();
        let addr = *bound.first().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, "bound no address")
        })?;
        let server = server.run();
        let handle = server.handle();
        let task = tokio::spawn(server);
        Ok(Server { addr, handle, task })
    }

    /// Stops accepting, lets in-flight requests finish (up to the shutdown timeout).
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod keep_alive_tests {
    use super::{GatewayAuth, HttpState, Server};
    use crate::registry::ModelRegistry;
    use std::sync::Arc;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    /// One `GET /health` on `conn`: the status line, after reading the whole response.
    async fn health(conn: &mut BufReader<tokio::net::TcpStream>) -> String {
        conn.get_mut()
            .write_all(b"GET /health HTTP/1.1\r\nhost: worker\r\n\r\n")
            .await
            .unwrap();
        let mut status = String::new();
        conn.read_line(&mut status).await.unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            conn.read_line(&mut line).await.unwrap();
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let mut body = vec![0; length];
        conn.read_exact(&mut body).await.unwrap();
        status.trim_end().to_string()
    }

    /// The gateway reuses a pooled connection idle for up to its pool timeout
    /// (30 s): the worker must not be closing it then. actix's default (5 s)
    /// fails this.
    #[actix_web::test]
    async fn an_idle_connection_outlives_the_gateways_reuse_of_it() {
        let state = HttpState {
            registry: Arc::new(ModelRegistry::new()),
            auth: Arc::new(GatewayAuth::open()),
            metrics: Default::default(),
        };
        let server = Server::start("127.0.0.1:0", state, 1).unwrap();
        let mut conn = BufReader::new(tokio::net::TcpStream::connect(server.addr).await.unwrap());
        assert_eq!(health(&mut conn).await, "HTTP/1.1 200 OK");
        tokio::time::sleep(std::time::Duration::from_secs(6)).await;
        assert_eq!(health(&mut conn).await, "HTTP/1.1 200 OK");
        server.stop().await;
    }
}
