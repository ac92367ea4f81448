//! The gateway's HTTP/1.1 client to workers: hyper's pooled client with a
//! connect timeout and a read timeout (before the response head, and between
//! two chunks of its body), nothing else.
//!
//! A general client (reqwest) parses every request's URL twice more for its
//! redirect policy and wraps each call in redirect and retry layers the
//! gateway never uses (a worker does not redirect; a retry is the gateway's
//! own decision, on another replica); measured, those were about a tenth of
//! the hub's CPU per proxied call. One client per thread (see
//! [`super::Live`]): a pooled connection's task runs on the runtime that
//! opened it.

use bytes::Bytes;
use futures::Stream;
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// How long connecting to a worker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an idle pooled connection to a worker is kept: less than a
/// worker keeps it open, so the gateway never sends on one the worker is
/// closing.
const POOL_IDLE: Duration = Duration::from_secs(30);
const _: () = assert!(POOL_IDLE.as_secs() < hub_types::control::SERVER_KEEP_ALIVE.as_secs());

/// Why a call to a worker failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// No connection: the worker is not there (another replica may be).
    Connect(String),
    /// Connected and sent, then nothing for the read timeout.
    Timeout,
    /// The connection broke before a response head came.
    Broken(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "connecting: {e}"),
            Failure::Timeout => f.write_str("no response head in time"),
            Failure::Broken(e) => write!(f, "{e}"),
        }
    }
}

pub(super) struct Upstream {
    client: Client<Connector, Full<Bytes>>,
    read_timeout: Duration,
}

impl Upstream {
    pub(super) fn new(read_timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        // The TLS layer below takes https:// URLs.
        http.enforce_http(false);
        // The provider named: the build has both ring and aws-lc-rs, so
        // rustls has no default of its own.
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .expect("ring supports the default TLS versions")
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        Self {
            client,
            read_timeout,
        }
    }

    /// Sends `req` and waits (up to the read timeout) for the response head.
    pub(super) async fn send(
        &self,
        req: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<Incoming>, Failure> {
        match tokio::time::timeout(self.read_timeout, self.client.request(req)).await {
            Err(_) => Err(Failure::Timeout),
            Ok(Err(e)) if e.is_connect() => Err(Failure::Connect(error_chain(&e))),
            Ok(Err(e)) => Err(Failure::Broken(error_chain(&e))),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    /// A response body as a stream of chunks, failing after the read timeout
    /// of silence.
    pub(super) fn body(&self, body: Incoming) -> TimedBody {
        TimedBody {
            body,
            timeout: self.read_timeout,
            last: tokio::time::Instant::now(),
            silence: None,
        }
    }
}

/// An error with its causes (hyper's own message is only the outermost).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        s.push_str(": ");
        s.push_str(&c.to_string());
        source = c.source();
    }
    s
}

/// A worker's response body, chunk by chunk, with a read timeout.
pub(super) struct TimedBody {
    body: Incoming,
    timeout: Duration,
    /// When the head or the last chunk came.
    last: tokio::time::Instant,
    /// Armed the first time the body has to be waited for: a small response
    /// whose bytes came with its head (an embedding) needs no timer at all.
    silence: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Stream for TimedBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers are not relayed.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    this.last = tokio::time::Instant::now();
                    if !data.is_empty() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(Err(std::io::Error::other(error_chain(&e)))));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {
                    let deadline = this.last + this.timeout;
                    let silence = match &mut this.silence {
                        Some(s) => {
                            if s.deadline() != deadline {
                                s.as_mut().reset(deadline);
                            }
                            s
                        }
                        None => this
                            .silence
                            .insert(Box::pin(tokio::time::sleep_until(deadline))),
                    };
                    return match silence.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Some(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("the worker sent nothing for {} s", this.timeout.as_secs()),
                        )))),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}
