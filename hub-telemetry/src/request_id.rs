//! Request ids: every response of the hub and of a worker carries one as
//! `X-Request-Id`, every log line of the request carries it (the request's
//! tracing span), and the gateway forwards it to the worker it calls, so one
//! id follows a call through both processes.

/// The header the id travels in (requests and responses).
pub const HEADER: &str = "x-request-id";

/// The id of a request: the first candidate (the caller's own `X-Request-Id`,
/// or another trace header) that is a short token of safe characters, else a
/// new UUID. A caller's id is kept so that its own logs and ours match; an
/// unsafe one (long, or with characters that could forge log fields) is
/// replaced, never echoed.
pub fn accept<'a>(candidates: impl IntoIterator<Item = &'a str>) -> String {
    candidates
        .into_iter()
        .find(|v| is_safe(v))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn is_safe(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.=;:".contains(&b))
}

/// The span of one HTTP request (hub and worker alike): its request id, and,
/// when spans are exported (`logging`), the method, route and status, the
/// last two recorded once known. Without an export the span carries the id
/// alone: the access line has method, path and status of its own, and every
/// field of a span is formatted again into each line logged inside it.
pub fn request_span(method: &str, request_id: &str) -> tracing::Span {
    if crate::logging::exporting() {
        tracing::info_span!(
            "request",
            request_id = %request_id,
            otel.kind = "server",
            http.request.method = %method,
            http.route = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        )
    } else {
        tracing::info_span!("request", request_id = %request_id)
    }
}

/// Names an exported request span by its route (`GET /healthz`) and records
/// route and status on it; nothing when spans are not exported.
pub fn finish_span(span: &tracing::Span, method: &str, route: &str, status: u16) {
    if crate::logging::exporting() {
        crate::logging::name_span(span, format!("{method} {route}"));
        span.record("http.route", route);
        span.record("http.response.status_code", i64::from(status));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_safe_ids_and_replaces_others() {
        assert_eq!(super::accept(["abc-123"]), "abc-123");
        assert_eq!(super::accept(["bad id\n", "Root=1-2"]), "Root=1-2");
        let fresh = super::accept(["x\"y"]);
        assert_eq!(fresh.len(), 36, "{fresh}");
        assert!(super::accept([&"a".repeat(129) as &str]).len() == 36);
    }

    /// Writes into a shared buffer (a `MakeWriter` by closure).
    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn without_an_export_a_line_in_the_request_span_carries_its_id_alone() {
        use tracing_subscriber::layer::SubscriberExt;
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = buf.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || Capture(out.clone())),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = super::request_span("POST", "rid-42");
            super::finish_span(&span, "POST", "/x/{y}", 201);
            span.in_scope(|| tracing::info!(http.status = 201, "request"));
        });
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        assert!(text.contains("request{request_id=rid-42}:"), "{text}");
        assert!(text.contains("http.status=201"), "{text}");
        assert!(
            !text.contains("otel.kind") && !text.contains("http.route"),
            "{text}"
        );
    }
}
