//! The token-metering contract between a worker and the hub's gateway, declared once.
//!
//! * A non-streamed response carries [`INPUT_TOKENS_HEADER`] (the prompt's tokens) and,
//!   for generation, [`OUTPUT_TOKENS_HEADER`] (the completion's tokens).
//! * A streamed (`text/event-stream`) response carries [`INPUT_TOKENS_HEADER`] in its
//!   headers and, as the last event before `data: [DONE]`, the SSE comment written by
//!   [`usage_comment`]: `: paddock-usage {"prompt_tokens":N,"completion_tokens":M}` and a
//!   blank line. The gateway strips that event (clients never see it) and meters from it.

use serde::{Deserialize, Serialize};

/// Prompt tokens of a request (both kinds of response).
pub const INPUT_TOKENS_HEADER: &str = "x-input-tokens";
/// Completion tokens of a non-streamed generation response.
pub const OUTPUT_TOKENS_HEADER: &str = "x-output-tokens";
/// The start of the usage comment line of a streamed response (up to the JSON).
pub const USAGE_COMMENT_PREFIX: &str = ": paddock-usage ";

/// The counts a streamed response reports at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// The usage event of a streamed response, exactly as the worker writes it: the comment
/// line and the blank line that ends the event.
pub fn usage_comment(u: StreamUsage) -> String {
    format!(
        "{USAGE_COMMENT_PREFIX}{{\"prompt_tokens\":{},\"completion_tokens\":{}}}\n\n",
        u.prompt_tokens, u.completion_tokens
    )
}

/// Reads the usage out of one comment line (without its line ending); `None` when the
/// line is not a well-formed usage comment.
pub fn parse_usage_comment(line: &str) -> Option<StreamUsage> {
    serde_json::from_str(line.strip_prefix(USAGE_COMMENT_PREFIX)?.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let u = StreamUsage {
            prompt_tokens: 7,
            completion_tokens: 32,
        };
        let c = usage_comment(u);
        assert_eq!(
            c,
            ": paddock-usage {\"prompt_tokens\":7,\"completion_tokens\":32}\n\n"
        );
        assert_eq!(parse_usage_comment(c.trim_end()), Some(u));
        assert_eq!(parse_usage_comment(": ping"), None);
        assert_eq!(parse_usage_comment(": paddock-usage {\"x\":1}"), None);
    }
}
