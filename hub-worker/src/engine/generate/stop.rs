//! Turning sampled token bytes into the text a client sees, for every engine: bytes are
//! released only as whole UTF-8 characters, and text that could be the start of a stop
//! string is held back until it is known not to be one.

/// The text state of one running sequence.
#[derive(Debug, Default)]
pub struct StopScan {
    stops: Vec<String>,
    /// Bytes of an incomplete UTF-8 character.
    partial: Vec<u8>,
    /// Decoded text not yet released (a possible stop-string prefix).
    held: String,
}

/// What one token's bytes did.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// Release this text (may be empty).
    Text(String),
    /// A stop string matched: release `before` (the text ahead of it) and end the
    /// sequence; the stop string itself is not released.
    Stopped { before: String, stop: String },
}

impl StopScan {
    /// `stops`: the request's stop strings (empty strings are ignored).
    pub fn new(stops: &[String]) -> StopScan {
        StopScan {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            ..StopScan::default()
        }
    }

    /// Feeds one token's bytes.
    pub fn push(&mut self, bytes: &[u8]) -> Scan {
        self.partial.extend_from_slice(bytes);
        let mut at = 0;
        loop {
            match std::str::from_utf8(&self.partial[at..]) {
                Ok(s) => {
                    self.held.push_str(s);
                    at = self.partial.len();
                    break;
                }
                Err(e) => {
                    let valid = at + e.valid_up_to();
                    self.held.push_str(
                        std::str::from_utf8(&self.partial[at..valid]).expect("validated prefix"),
                    );
                    match e.error_len() {
                        // A truncated character at the end: keep it for the next token.
                        None => {
                            at = valid;
                            break;
                        }
                        // Invalid bytes: one replacement character each run, as a
                        // lossy decode does, then go on after them.
                        Some(n) => {
                            self.held.push('\u{fffd}');
                            at = valid + n;
                        }
                    }
                }
            }
        }
        self.partial.drain(..at);
        self.scan()
    }

    fn scan(&mut self) -> Scan {
        // The earliest complete stop string wins.
        let hit = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|(at, _)| *at);
        if let Some((at, stop)) = hit {
            let stop = stop.clone();
            let before = self.held[..at].to_string();
            self.held.clear();
            return Scan::Stopped { before, stop };
        }
        // Hold back the longest suffix that is a proper prefix of some stop string.
        let keep = self
            .stops
            .iter()
            .map(|s| longest_suffix_prefix(&self.held, s))
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        Scan::Text(out)
    }

    /// The text still held back when the sequence ends without a stop string.
    pub fn finish(&mut self) -> String {
        let mut out = std::mem::take(&mut self.held);
        if !self.partial.is_empty() {
            out.push_str(&String::from_utf8_lossy(&std::mem::take(&mut self.partial)));
        }
        out
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`, on
/// character boundaries.
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    let max = text.len().min(stop.len().saturating_sub(1));
    (1..=max)
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n)
                && stop.is_char_boundary(n)
                && stop.as_bytes()[..n] == text.as_bytes()[text.len() - n..]
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn text_without_stops_passes_through() {
        let mut s = StopScan::new(&[]);
        assert_eq!(s.push(b"Hello"), Scan::Text("Hello".into()));
        assert_eq!(s.push(b" world"), Scan::Text(" world".into()));
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn multibyte_characters_are_released_whole() {
        let mut s = StopScan::new(&[]);
        let e = "é".as_bytes();
        assert_eq!(s.push(&e[..1]), Scan::Text(String::new()));
        assert_eq!(s.push(&e[1..]), Scan::Text("é".into()));
        let emoji = "🦀".as_bytes();
        assert_eq!(s.push(&emoji[..3]), Scan::Text(String::new()));
        assert_eq!(s.finish(), "\u{fffd}");
    }

    #[test]
    fn invalid_bytes_are_replaced_and_a_split_character_after_them_survives() {
        let mut s = StopScan::new(&[]);
        let e = "é".as_bytes();
        assert_eq!(s.push(&[0xff, b'a', e[0]]), Scan::Text("\u{fffd}a".into()));
        assert_eq!(s.push(&e[1..]), Scan::Text("é".into()));
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn a_stop_string_across_tokens_is_held_then_cut() {
        let mut s = StopScan::new(&stops(&["\n\nUser:"]));
        assert_eq!(s.push(b"Paris."), Scan::Text("Paris.".into()));
        assert_eq!(s.push(b"\n"), Scan::Text(String::new()));
        assert_eq!(s.push(b"\nUs"), Scan::Text(String::new()));
        assert_eq!(
            s.push(b"er: hi"),
            Scan::Stopped {
                before: String::new(),
                stop: "\n\nUser:".into()
            }
        );
    }

    #[test]
    fn a_false_start_is_released() {
        let mut s = StopScan::new(&stops(&["STOP"]));
        assert_eq!(s.push(b"ST"), Scan::Text(String::new()));
        assert_eq!(s.push(b"AR"), Scan::Text("STAR".into()));
        assert_eq!(s.push(b"S"), Scan::Text(String::new()));
        assert_eq!(s.finish(), "S");
    }

    #[test]
    fn the_earliest_stop_wins_and_text_before_it_is_kept() {
        let mut s = StopScan::new(&stops(&["cd", "b"]));
        assert_eq!(
            s.push(b"abcd"),
            Scan::Stopped {
                before: "a".into(),
                stop: "b".into()
            }
        );
    }
}
