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

/// The span of one HTTP request (hub and worker alike): its request id, and
/// the route and status, recorded once known. Exported spans carry them
/// (`logging`).
pub fn request_span(method: &str, request_id: &str) -> tracing::Span {
    tracing::info_span!(
        "request",
        request_id = %request_id,
        otel.kind = "server",
        http.request.method = %method,
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    )
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
}
