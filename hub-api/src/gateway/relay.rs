//! The body of a proxied response: the worker's bytes streamed to the client as they
//! come (no buffering beyond what [`UsageFilter`] holds of a possible usage comment),
//! metered when the stream ends, whichever way it ends.
//!
//! Dropping the relay drops the worker's response stream, which closes the connection
//! to the worker, which cancels the request there: actix drops a response body as soon
//! as it sees the client gone.

use super::sse::UsageFilter;
use super::{InFlight, Metered};
use bytes::Bytes;
use futures::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};

/// How a relayed stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The worker finished its response.
    Complete,
    /// The worker's stream broke off (recorded as 502).
    WorkerBroke,
    /// The client went away first (recorded with the worker's status).
    ClientGone,
}

type Upstream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

pub(super) struct Relay {
    upstream: Upstream,
    /// For `text/event-stream` responses.
    filter: Option<UsageFilter>,
    /// Taken when the request is recorded (once).
    meter: Option<Metered>,
    done: bool,
    _in_flight: InFlight,
}

impl Relay {
    pub(super) fn new(upstream: Upstream, sse: bool, meter: Metered, in_flight: InFlight) -> Self {
        Self {
            upstream,
            filter: sse.then(UsageFilter::default),
            meter: Some(meter),
            done: false,
            _in_flight: in_flight,
        }
    }

    /// Records the request: a streamed response's counts come from its usage event, or
    /// (when it ended without one) the prompt tokens of the headers and one completion
    /// token per `data:` event forwarded.
    fn finish(&mut self, end: End) {
        let Some(mut m) = self.meter.take() else {
            return;
        };
        if let Some(f) = &self.filter {
            match f.usage() {
                Some(u) => {
                    m.input_tokens = u.prompt_tokens as i64;
                    m.output_tokens = u.completion_tokens as i64;
                }
                None => m.output_tokens = f.data_events() as i64,
            }
        }
        if end == End::WorkerBroke {
            m.status = 502;
        }
        if end == End::ClientGone {
            tracing::debug!(endpoint = %m.route.endpoint.name, "client went away; the worker's stream is dropped");
        }
        m.record();
    }
}

impl Stream for Relay {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match this.upstream.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    let out = match &mut this.filter {
                        Some(f) => Bytes::from(f.push(&chunk)),
                        None => chunk,
                    };
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    this.finish(End::WorkerBroke);
                    tracing::warn!(error = %e, "the worker broke off a response");
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    let tail = this.filter.as_mut().map(|f| f.finish()).unwrap_or_default();
                    this.finish(End::Complete);
                    if tail.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Bytes::from(tail))));
                }
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.finish(End::ClientGone);
    }
}
