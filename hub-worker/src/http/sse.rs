//! Server-sent events for streamed generation: the framing (`data: {json}\n\n`, the
//! `data: [DONE]` end, the `: paddock-usage` metering comment) and the body stream that
//! owns the request's [`GenStream`]s.
//!
//! The body is pulled by actix: each poll waits for the next engine event of any choice
//! and turns it into frames through an [`Encoder`] (OpenAI chat, OpenAI completions or
//! TGI). Nothing is buffered beyond the frames of one event. When the client goes away
//! actix drops the body, which drops the `GenStream`s, which cancels the sequences in
//! the engine within a step.

use super::error::ApiError;
use super::openai_error::error_object;
use super::INPUT_TOKENS_HEADER;
use crate::engine::generate::{GenEvent, GenStream, Usage};
use crate::engine::EngineError;
use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::HttpResponse;
use futures::stream::{self, BoxStream, SelectAll, Stream, StreamExt};
use std::collections::VecDeque;
use std::convert::Infallible;

/// The last frame of an OpenAI (and TGI-compatible) stream.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// One `data:` event.
pub fn data(v: &serde_json::Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// The metering comment (`hub_types::metering`, what the gateway strips and meters).
pub fn usage_comment(prompt_tokens: usize, completion_tokens: usize) -> Bytes {
    Bytes::from(hub_types::metering::usage_comment(
        hub_types::metering::StreamUsage {
            prompt_tokens: prompt_tokens as u64,
            completion_tokens: completion_tokens as u64,
        },
    ))
}

/// The end of an OpenAI stream whose engine failed: the error event (OpenAI's error
/// shape), the usage comment for the gateway, `[DONE]`.
pub fn openai_failed(e: EngineError, u: &Usage, out: &mut Vec<Bytes>) {
    let e = ApiError::from(e);
    let code = e.code().1;
    out.push(data(
        &serde_json::json!({"error": error_object(&e), "error_type": code}),
    ));
    out.push(usage_comment(u.prompt_tokens, u.completion_tokens));
    out.push(Bytes::from_static(DONE));
}

/// The end of an OpenAI stream: the usage chunk of `object` (when the client asked for
/// `include_usage`), the usage comment for the gateway, `[DONE]`.
pub fn openai_finish(head: OpenAiHead<'_>, include_usage: bool, u: &Usage, out: &mut Vec<Bytes>) {
    if include_usage {
        out.push(data(&serde_json::json!({
            "id": head.id,
            "object": head.object,
            "created": head.created,
            "model": head.model,
            "system_fingerprint": null,
            "choices": [],
            "usage": super::choices::usage_json(u),
        })));
    }
    out.push(usage_comment(u.prompt_tokens, u.completion_tokens));
    out.push(Bytes::from_static(DONE));
}

/// What every chunk of one OpenAI stream repeats.
pub struct OpenAiHead<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
}

/// Turns engine events into frames, one protocol per implementation.
pub trait Encoder: 'static {
    /// Frames sent before any event (OpenAI chat: the `role` chunk of each choice).
    fn start(&mut self, out: &mut Vec<Bytes>);
    /// One event of choice `index`. Returns `false` to end the whole stream now (a
    /// failed choice): [`Encoder::finish`] is not called then, so write the end here.
    fn event(&mut self, index: usize, ev: GenEvent, out: &mut Vec<Bytes>) -> bool;
    /// Every choice ended (or the engine went away): the final frames.
    fn finish(&mut self, out: &mut Vec<Bytes>);
}

/// One event of one choice; `None`: the engine dropped the stream before `Done`.
type Tagged = (usize, Option<GenEvent>);

/// A choice's events, ending after its terminal event (or the engine hanging up, which
/// yields one `None`).
fn choice_events(index: usize, s: GenStream) -> BoxStream<'static, Tagged> {
    stream::unfold(Some(s), move |state| async move {
        let mut s = state?;
        match s.next().await {
            Some(ev @ (GenEvent::Done(_) | GenEvent::Failed(_))) => Some(((index, Some(ev)), None)),
            Some(ev) => Some(((index, Some(ev)), Some(s))),
            None => Some(((index, None), None)),
        }
    })
    .boxed()
}

struct BodyState<E> {
    events: SelectAll<BoxStream<'static, Tagged>>,
    enc: E,
    pending: VecDeque<Bytes>,
    started: bool,
    ended: bool,
}

/// The SSE body over `streams` (choice `i` is `streams[i]`).
pub fn body<E: Encoder>(
    streams: Vec<GenStream>,
    enc: E,
) -> impl Stream<Item = Result<Bytes, Infallible>> + 'static {
    let events = stream::select_all(
        streams
            .into_iter()
            .enumerate()
            .map(|(i, s)| choice_events(i, s)),
    );
    let state = BodyState {
        events,
        enc,
        pending: VecDeque::new(),
        started: false,
        ended: false,
    };
    stream::unfold(state, |mut st| async move {
        let mut out = Vec::new();
        loop {
            if let Some(b) = st.pending.pop_front() {
                return Some((Ok::<Bytes, Infallible>(b), st));
            }
            if st.ended {
                return None;
            }
            if !st.started {
                st.started = true;
                st.enc.start(&mut out);
            } else {
                match st.events.next().await {
                    Some((i, Some(ev))) => {
                        if !st.enc.event(i, ev, &mut out) {
                            st.ended = true;
                            // Drop the other choices now: their slots are freed.
                            st.events = SelectAll::new();
                        }
                    }
                    Some((i, None)) => {
                        let failed = GenEvent::Failed(crate::engine::EngineError::Unavailable);
                        if !st.enc.event(i, failed, &mut out) {
                            st.ended = true;
                            st.events = SelectAll::new();
                        }
                    }
                    None => {
                        st.ended = true;
                        st.enc.finish(&mut out);
                    }
                }
            }
            st.pending.extend(out.drain(..));
        }
    })
}

/// The streamed response: `text/event-stream`, not cached or buffered by proxies, with
/// the prompt's token count for metering up front.
pub fn response(
    input_tokens: usize,
    body: impl Stream<Item = Result<Bytes, Infallible>> + 'static,
) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .insert_header((INPUT_TOKENS_HEADER, input_tokens.to_string()))
        .streaming(body)
}
