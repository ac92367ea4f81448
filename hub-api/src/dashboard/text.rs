//! How values read on a page: sizes, counts, dates, short ids, URL pieces.

use chrono::{DateTime, Utc};

/// `1.5 MB`, `532 Bytes` (decimal units, as on the Hugging Face Hub).
pub fn size(n: i64) -> String {
    let n = n.max(0) as f64;
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if n < 1000.0 {
        return format!("{} Bytes", n as i64);
    }
    let mut v = n;
    let mut unit = "";
    for u in UNITS {
        v /= 1000.0;
        unit = u;
        if v < 1000.0 {
            break;
        }
    }
    if v < 10.0 {
        format!("{v:.2} {unit}")
    } else if v < 100.0 {
        format!("{v:.1} {unit}")
    } else {
        format!("{v:.0} {unit}")
    }
}

/// `1,234,567`.
pub fn count(n: i64) -> String {
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// `124M`, `1.3B`, `22.7k` parameters.
pub fn params(n: i64) -> String {
    let v = n as f64;
    if v >= 1e9 {
        format!("{:.1}B", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.0}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        n.to_string()
    }
}

/// `3 days ago`, relative to `now`.
pub fn ago_from(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds();
    let (n, unit) = match s {
        i64::MIN..=44 => return "just now".into(),
        45..=3599 => ((s + 30) / 60, "minute"),
        3600..=86_399 => ((s + 1800) / 3600, "hour"),
        86_400..=2_591_999 => ((s + 43_200) / 86_400, "day"),
        2_592_000..=31_535_999 => (s / 2_592_000, "month"),
        _ => (s / 31_536_000, "year"),
    };
    let n = n.max(1);
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// Relative to now.
pub fn ago(t: DateTime<Utc>) -> String {
    ago_from(t, Utc::now())
}

/// `2026-11-28 14:03 UTC`.
pub fn datetime(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// ISO-8601 for `<time datetime>`.
pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The first 7 characters of a commit id.
pub fn short(oid: &str) -> String {
    oid.chars().take(7).collect()
}

/// Percent-encodes a query parameter value.
pub fn query_escape(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Characters a path segment keeps as they are in a URL.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes one path segment (a revision with `/` becomes `%2F`).
pub fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// Percent-encodes a file path, keeping its `/` separators.
pub fn path(p: &str) -> String {
    p.split('/').map(segment).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(size(532), "532 Bytes");
        assert_eq!(size(1_500_000), "1.50 MB");
        assert_eq!(size(62_914_560), "62.9 MB");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(12), "12");
        assert_eq!(params(124_000_000), "124M");
        assert_eq!(segment("feature/x"), "feature%2Fx");
        assert_eq!(path("a b/c.txt"), "a%20b/c.txt");
        let now = Utc::now();
        assert_eq!(ago_from(now - chrono::Duration::days(3), now), "3 days ago");
        assert_eq!(ago_from(now, now), "just now");
    }
}
