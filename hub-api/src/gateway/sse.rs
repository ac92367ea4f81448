//! The gateway's pass over a streamed (`text/event-stream`) worker response: it strips
//! the worker's usage event (`: paddock-usage {...}` and its blank line, see
//! [`hub_types::metering`]) wherever the chunks split it, reads the counts from it, and
//! counts the `data:` events it forwards (the completion-token estimate of a stream that
//! ends without the usage event).
//!
//! Nothing is held back but the start of a line that could still be the usage comment
//! (a line starting with `:` is held until it differs from the prefix; any other line
//! passes as it comes), so a token event reaches the client in the chunk it came in.

use hub_types::metering::{parse_usage_comment, StreamUsage, USAGE_COMMENT_PREFIX};

const MARKER: &[u8] = USAGE_COMMENT_PREFIX.as_bytes();
/// The longest usage comment line kept; a longer line starting with the marker is
/// dropped without being parsed (it is never forwarded either).
const MAX_COMMENT: usize = 1024;
/// Bytes of a line's start kept to classify it (`data: [DONE]` is 12).
const HEAD: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// At a line's start, or inside a line whose bytes so far are a prefix of the marker
    /// (those bytes are held).
    Undecided,
    /// Inside the usage comment line (held, then dropped).
    Comment,
    /// Inside any other line (forwarded as it comes).
    Pass,
}

/// Line-ending bytes dropped after the usage comment: the rest of its own line ending
/// and the blank line that ends its event (`\n`, `\r\n` or `\r`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    None,
    /// The comment ended with `\r`: a `\n` now still belongs to its line ending.
    AfterCr,
    /// The blank line.
    Blank,
    /// The blank line's `\r` was dropped: a `\n` now belongs to it.
    BlankCr,
}

/// The filter's state across chunks.
#[derive(Debug)]
pub struct UsageFilter {
    mode: Mode,
    held: Vec<u8>,
    head: Vec<u8>,
    /// After the usage comment: its blank line is dropped too.
    skip: Skip,
    usage: Option<StreamUsage>,
    data_events: u64,
}

impl Default for UsageFilter {
    fn default() -> Self {
        Self {
            mode: Mode::Undecided,
            held: Vec::new(),
            head: Vec::with_capacity(HEAD),
            skip: Skip::None,
            usage: None,
            data_events: 0,
        }
    }
}

impl UsageFilter {
    /// The usage event's counts, once it has passed.
    pub fn usage(&self) -> Option<StreamUsage> {
        self.usage
    }

    /// `data:` events forwarded, `data: [DONE]` excluded.
    pub fn data_events(&self) -> u64 {
        self.data_events
    }

    /// Filters one chunk; answers the bytes to forward now (possibly none).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len());
        for &b in chunk {
            let (skip, drop) = match (self.skip, b) {
                (Skip::None, _) => (Skip::None, false),
                (Skip::AfterCr, b'\n') => (Skip::Blank, true),
                (Skip::AfterCr | Skip::Blank, b'\r') => (Skip::BlankCr, true),
                (Skip::Blank | Skip::BlankCr, b'\n') => (Skip::None, true),
                _ => (Skip::None, false),
            };
            self.skip = skip;
            if drop {
                continue;
            }
            if self.head.len() < HEAD {
                self.head.push(b);
            }
            match self.mode {
                Mode::Undecided => {
                    self.held.push(b);
                    if MARKER.starts_with(&self.held) {
                        if self.held.len() == MARKER.len() {
                            self.mode = Mode::Comment;
                        }
                    } else {
                        out.append(&mut self.held);
                        self.mode = Mode::Pass;
                        if b == b'\n' || b == b'\r' {
                            self.end_line();
                        }
                    }
                }
                Mode::Comment => {
                    if b == b'\n' || b == b'\r' {
                        let line = std::mem::take(&mut self.held);
                        if let Some(u) = std::str::from_utf8(&line)
                            .ok()
                            .and_then(parse_usage_comment)
                        {
                            self.usage = Some(u);
                        }
                        self.skip = if b == b'\r' {
                            Skip::AfterCr
                        } else {
                            Skip::Blank
                        };
                        self.head.clear();
                        self.mode = Mode::Undecided;
                    } else if self.held.len() < MAX_COMMENT {
                        self.held.push(b);
                    }
                }
                Mode::Pass => {
                    out.push(b);
                    if b == b'\n' || b == b'\r' {
                        self.end_line();
                    }
                }
            }
        }
        out
    }

    /// What is still held when the stream ends: a line that may have been the comment
    /// but never finished (forwarded unless it is the comment).
    pub fn finish(&mut self) -> Vec<u8> {
        let held = std::mem::take(&mut self.held);
        match self.mode {
            Mode::Comment => {
                if let Some(u) = std::str::from_utf8(&held)
                    .ok()
                    .and_then(parse_usage_comment)
                {
                    self.usage = Some(u);
                }
                Vec::new()
            }
            _ => held,
        }
    }

    fn end_line(&mut self) {
        let line = self
            .head
            .strip_suffix(b"\n")
            .or_else(|| self.head.strip_suffix(b"\r"))
            .unwrap_or(&self.head);
        if line.starts_with(b"data:") {
            let value = line[5..].strip_prefix(b" ").unwrap_or(&line[5..]);
            if value != b"[DONE]" {
                self.data_events += 1;
            }
        }
        self.head.clear();
        self.mode = Mode::Undecided;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "data: {\"a\":1}\n\n: keep-alive\n\ndata: {\"a\":2}\n\n: paddock-usage {\"prompt_tokens\":5,\"completion_tokens\":2}\n\ndata: [DONE]\n\n";
    const CLEAN: &str = "data: {\"a\":1}\n\n: keep-alive\n\ndata: {\"a\":2}\n\ndata: [DONE]\n\n";

    fn run(chunks: &[&[u8]]) -> (String, UsageFilter) {
        let mut f = UsageFilter::default();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(f.push(c));
        }
        out.extend(f.finish());
        (String::from_utf8(out).unwrap(), f)
    }

    #[test]
    fn strips_the_usage_event_at_every_split() {
        let bytes = STREAM.as_bytes();
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                let (out, f) = run(&[&bytes[..i], &bytes[i..j], &bytes[j..]]);
                assert_eq!(out, CLEAN, "split at {i}/{j}");
                assert_eq!(
                    f.usage(),
                    Some(StreamUsage {
                        prompt_tokens: 5,
                        completion_tokens: 2
                    })
                );
                assert_eq!(f.data_events(), 2);
            }
        }
    }

    #[test]
    fn holds_only_what_may_be_the_comment() {
        let mut f = UsageFilter::default();
        // A data line passes byte for byte, even unfinished.
        assert_eq!(f.push(b"data: {\"tok"), b"data: {\"tok");
        assert_eq!(f.push(b"en\"}\n\n"), b"en\"}\n\n");
        // A comment line is held while it could be the usage comment...
        assert_eq!(f.push(b": padd"), b"");
        // ...and released once it differs.
        assert_eq!(f.push(b"ing\n"), b": padding\n");
        assert_eq!(f.push(b"\n: paddock-usage {\"prompt_tokens\":1,"), b"\n");
        assert_eq!(f.push(b"\"completion_tokens\":9}\n"), b"");
        assert_eq!(f.push(b"\ndata: [DONE]\n\n"), b"data: [DONE]\n\n");
        assert_eq!(f.usage().unwrap().completion_tokens, 9);
        assert_eq!(f.data_events(), 1);
    }

    #[test]
    fn without_the_usage_event_data_events_are_counted() {
        let (out, f) = run(&[b"data: a\n\ndata:b\n\nevent: x\ndata: c\n\ndata: [DONE]\n\n"]);
        assert_eq!(
            out,
            "data: a\n\ndata:b\n\nevent: x\ndata: c\n\ndata: [DONE]\n\n"
        );
        assert_eq!(f.usage(), None);
        assert_eq!(f.data_events(), 3);
        // A stream cut inside a line forwards what it had; a cut usage line is dropped.
        let (out, _) = run(&[b"data: a\n\n: pad"]);
        assert_eq!(out, "data: a\n\n: pad");
        let (out, f) =
            run(&[b"data: a\n\n: paddock-usage {\"prompt_tokens\":1,\"completion_tokens\":1}"]);
        assert_eq!(out, "data: a\n\n");
        assert_eq!(f.usage().unwrap().prompt_tokens, 1);
        // CRLF line endings.
        let (out, f) = run(&[b"data: a\r\n\r\n: paddock-usage {\"prompt_tokens\":3,\"completion_tokens\":4}\r\n\r\ndata: [DONE]\r\n\r\n"]);
        assert_eq!(out, "data: a\r\n\r\ndata: [DONE]\r\n\r\n");
        assert_eq!(f.usage().unwrap().completion_tokens, 4);
        assert_eq!(f.data_events(), 1);
    }
}
