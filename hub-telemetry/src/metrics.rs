//! Metric families (counters, gauges, histograms, each with a fixed list of
//! label names) and their exposition in the Prometheus text format (0.0.4),
//! which every Prometheus-compatible scraper reads.
//!
//! Hand-written rather than a metrics crate: the families are plain fields of
//! a struct per process (`hub_api::metrics::Metrics`,
//! `hub_worker::http::metrics::WorkerMetrics`), updated with one atomic add
//! under a read lock, and rendered in a fixed order. Label values of a series
//! are bounded by the caller: route *patterns*, status codes, endpoint names,
//! never raw paths or ids from a request.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Buckets (seconds) of request latency histograms: 1 ms to 1 min.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Separates label values in a series key (never in a bounded label value).
const SEP: char = '\u{1f}';

/// Something [`encode`] renders: its `# HELP` and `# TYPE` lines and its samples.
pub trait Family: Send + Sync {
    fn encode(&self, out: &mut String);
}

/// Renders `families` in order, in the Prometheus text format.
pub fn encode(families: &[&dyn Family]) -> String {
    let mut out = String::with_capacity(16 * 1024);
    for f in families {
        f.encode(&mut out);
    }
    out
}

struct Meta {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
}

impl Meta {
    fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        assert!(valid_name(name), "metric name {name:?}");
        for l in labels {
            assert!(
                valid_name(l) && !l.starts_with("__") && *l != "le",
                "label {l:?}"
            );
        }
        Self { name, help, labels }
    }

    fn header(&self, kind: &str, out: &mut String) {
        let help = self.help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(out, "# HELP {} {help}", self.name);
        let _ = writeln!(out, "# TYPE {} {kind}", self.name);
    }

    /// `{a="x",b="y"}` (with `extra` last), or nothing without labels.
    fn labels(&self, key: &str, extra: Option<(&str, &str)>, out: &mut String) {
        if self.labels.is_empty() && extra.is_none() {
            return;
        }
        out.push('{');
        let values = key.split(SEP);
        let mut first = true;
        let pairs = self
            .labels
            .iter()
            .copied()
            .zip(values)
            .chain(extra.iter().copied());
        for (name, value) in pairs {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(name);
            out.push_str("=\"");
            escape_value(value, out);
            out.push('"');
        }
        out.push('}');
    }
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn escape_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn key(labels: &'static [&'static str], values: &[&str]) -> String {
    let mut k = String::with_capacity(values.iter().map(|v| v.len() + 1).sum());
    key_into(labels, values, &mut k);
    k
}

fn key_into(labels: &'static [&'static str], values: &[&str], k: &mut String) {
    debug_assert_eq!(labels.len(), values.len(), "label values for {labels:?}");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            k.push(SEP);
        }
        // A separator inside a value would shift the labels after it.
        k.extend(v.chars().map(|c| if c == SEP { '_' } else { c }));
    }
}

thread_local! {
    /// Where a lookup builds its key: a series that exists is found without
    /// allocating (the gateway touches about ten series per call).
    static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Calls `f` with the key of `values`, built in this thread's buffer.
fn with_key<R>(labels: &'static [&'static str], values: &[&str], f: impl FnOnce(&str) -> R) -> R {
    KEY.with(|buf| match buf.try_borrow_mut() {
        Ok(mut k) => {
            k.clear();
            key_into(labels, values, &mut k);
            f(&k)
        }
        // Not reentered today (`f` only reads and writes a map); if it ever
        // is, the inner call allocates its own.
        Err(_) => f(&key(labels, values)),
    })
}

/// A family's series by label values (kept sorted: a stable exposition).
struct Series<T> {
    map: RwLock<BTreeMap<String, Arc<T>>>,
}

impl<T: Default> Series<T> {
    fn new() -> Self {
        Self {
            map: RwLock::new(BTreeMap::new()),
        }
    }

    fn entry(&self, meta: &Meta, values: &[&str]) -> Arc<T> {
        self.with(meta, values, Arc::clone)
    }

    /// Calls `f` with the series of `values` (made when it is new), under the lock.
    fn with<R>(&self, meta: &Meta, values: &[&str], f: impl FnOnce(&Arc<T>) -> R) -> R {
        with_key(meta.labels, values, |k| {
            if let Some(v) = self.map.read().expect("metrics lock").get(k) {
                return f(v);
            }
            let mut map = self.map.write().expect("metrics lock");
            f(map.entry(k.to_string()).or_default())
        })
    }

    fn get(&self, meta: &Meta, values: &[&str]) -> Option<Arc<T>> {
        with_key(meta.labels, values, |k| {
            self.map.read().expect("metrics lock").get(k).cloned()
        })
    }

    fn snapshot(&self) -> Vec<(String, Arc<T>)> {
        self.map
            .read()
            .expect("metrics lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// A counter family (`..._total`): only goes up, from 0 at process start.
pub struct Counter {
    meta: Meta,
    series: Series<AtomicU64>,
}

impl Counter {
    pub fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        debug_assert!(
            name.ends_with("_total"),
            "counter {name} must end in _total"
        );
        let c = Self {
            meta: Meta::new(name, help, labels),
            series: Series::new(),
        };
        if labels.is_empty() {
            c.add(&[], 0);
        }
        c
    }

    pub fn inc(&self, values: &[&str]) {
        self.add(values, 1);
    }

    pub fn add(&self, values: &[&str], n: u64) {
        self.series.with(&self.meta, values, |c| {
            c.fetch_add(n, Ordering::Relaxed);
        });
    }

    /// The series' value (0 when it was never touched).
    pub fn get(&self, values: &[&str]) -> u64 {
        self.series
            .get(&self.meta, values)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// The series itself, for a hot path that adds to it repeatedly.
    pub fn series(&self, values: &[&str]) -> Arc<AtomicU64> {
        self.series.entry(&self.meta, values)
    }
}

impl Family for Counter {
    fn encode(&self, out: &mut String) {
        self.meta.header("counter", out);
        for (k, v) in self.series.snapshot() {
            out.push_str(self.meta.name);
            self.meta.labels(&k, None, out);
            let _ = writeln!(out, " {}", v.load(Ordering::Relaxed));
        }
    }
}

/// A gauge family: a value that goes up and down.
pub struct Gauge {
    meta: Meta,
    series: Series<AtomicI64>,
}

impl Gauge {
    pub fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        let g = Self {
            meta: Meta::new(name, help, labels),
            series: Series::new(),
        };
        if labels.is_empty() {
            g.set(&[], 0);
        }
        g
    }

    pub fn set(&self, values: &[&str], v: i64) {
        self.series
            .with(&self.meta, values, |g| g.store(v, Ordering::Relaxed));
    }

    pub fn add(&self, values: &[&str], n: i64) {
        self.series.with(&self.meta, values, |g| {
            g.fetch_add(n, Ordering::Relaxed);
        });
    }

    /// The series' value (0 when it was never set).
    pub fn get(&self, values: &[&str]) -> i64 {
        self.series
            .get(&self.meta, values)
            .map_or(0, |g| g.load(Ordering::Relaxed))
    }

    /// Adds one now and takes it away when the guard is dropped (requests in
    /// flight, requests waiting).
    pub fn track(&self, values: &[&str]) -> Tracked {
        let g = self.series.entry(&self.meta, values);
        g.fetch_add(1, Ordering::Relaxed);
        Tracked(g)
    }

    /// Replaces every series with `values` (a gauge computed from a snapshot:
    /// series that are no longer in it go).
    pub fn replace(&self, values: impl IntoIterator<Item = (Vec<String>, i64)>) {
        let mut map = BTreeMap::new();
        for (labels, v) in values {
            let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
            map.insert(key(self.meta.labels, &refs), Arc::new(AtomicI64::new(v)));
        }
        *self.series.map.write().expect("metrics lock") = map;
    }
}

impl Family for Gauge {
    fn encode(&self, out: &mut String) {
        self.meta.header("gauge", out);
        for (k, v) in self.series.snapshot() {
            out.push_str(self.meta.name);
            self.meta.labels(&k, None, out);
            let _ = writeln!(out, " {}", v.load(Ordering::Relaxed));
        }
    }
}

/// One unit of a [`Gauge`] series, given back when dropped.
pub struct Tracked(Arc<AtomicI64>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A histogram family: observations counted into cumulative `le` buckets,
/// with their sum and count.
pub struct Histogram {
    meta: Meta,
    bounds: &'static [f64],
    series: RwLock<BTreeMap<String, Arc<Cells>>>,
}

struct Cells {
    /// Per bucket (not cumulative), the last one `+Inf`.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// An `f64`, as bits.
    sum: AtomicU64,
}

impl Cells {
    fn new(n: usize) -> Self {
        Self {
            buckets: (0..=n).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }
}

impl Histogram {
    pub fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        bounds: &'static [f64],
    ) -> Self {
        assert!(
            bounds.windows(2).all(|w| w[0] < w[1]) && bounds.iter().all(|b| b.is_finite()),
            "buckets of {name} must be finite and increasing"
        );
        Self {
            meta: Meta::new(name, help, labels),
            bounds,
            series: RwLock::new(BTreeMap::new()),
        }
    }

    pub fn observe(&self, values: &[&str], v: f64) {
        let cells = with_key(self.meta.labels, values, |k| {
            let found = self.series.read().expect("metrics lock").get(k).cloned();
            found.unwrap_or_else(|| {
                self.series
                    .write()
                    .expect("metrics lock")
                    .entry(k.to_string())
                    .or_insert_with(|| Arc::new(Cells::new(self.bounds.len())))
                    .clone()
            })
        });
        let i = self.bounds.partition_point(|b| *b < v);
        cells.buckets[i].fetch_add(1, Ordering::Relaxed);
        cells.count.fetch_add(1, Ordering::Relaxed);
        let _ = cells
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }

    /// Observations in the series so far.
    pub fn count(&self, values: &[&str]) -> u64 {
        let k = key(self.meta.labels, values);
        self.series
            .read()
            .expect("metrics lock")
            .get(&k)
            .map_or(0, |c| c.count.load(Ordering::Relaxed))
    }
}

impl Family for Histogram {
    fn encode(&self, out: &mut String) {
        self.meta.header("histogram", out);
        let snapshot: Vec<(String, Arc<Cells>)> = self
            .series
            .read()
            .expect("metrics lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, c) in snapshot {
            let mut cumulative = 0u64;
            for (i, n) in c.buckets.iter().enumerate() {
                cumulative += n.load(Ordering::Relaxed);
                let le = match self.bounds.get(i) {
                    Some(b) => format!("{b}"),
                    None => "+Inf".to_string(),
                };
                let _ = write!(out, "{}_bucket", self.meta.name);
                self.meta.labels(&k, Some(("le", &le)), out);
                let _ = writeln!(out, " {cumulative}");
            }
            let _ = write!(out, "{}_sum", self.meta.name);
            self.meta.labels(&k, None, out);
            let _ = writeln!(out, " {}", f64::from_bits(c.sum.load(Ordering::Relaxed)));
            let _ = write!(out, "{}_count", self.meta.name);
            self.meta.labels(&k, None, out);
            // The count of the +Inf bucket, read above: consistent with it.
            let _ = writeln!(out, " {cumulative}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_exposition() {
        let c = Counter::new(
            "t_requests_total",
            "Requests.\nSecond line",
            &["route", "status"],
        );
        c.inc(&["/a/{b}", "200"]);
        c.add(&["/a/{b}", "200"], 2);
        c.inc(&["say \"hi\"\\", "404"]);
        let g = Gauge::new("t_in_flight", "In flight.", &[]);
        let held = g.track(&[]);
        assert_eq!(g.get(&[]), 1);
        drop(held);
        g.add(&[], 5);
        let h = Histogram::new("t_seconds", "Latency.", &["route"], &[0.1, 1.0]);
        h.observe(&["/a"], 0.05);
        h.observe(&["/a"], 0.1);
        h.observe(&["/a"], 3.0);
        let text = encode(&[&c, &g, &h]);
        assert_eq!(
            text,
            "# HELP t_requests_total Requests.\\nSecond line\n\
             # TYPE t_requests_total counter\n\
             t_requests_total{route=\"/a/{b}\",status=\"200\"} 3\n\
             t_requests_total{route=\"say \\\"hi\\\"\\\\\",status=\"404\"} 1\n\
             # HELP t_in_flight In flight.\n\
             # TYPE t_in_flight gauge\n\
             t_in_flight 5\n\
             # HELP t_seconds Latency.\n\
             # TYPE t_seconds histogram\n\
             t_seconds_bucket{route=\"/a\",le=\"0.1\"} 2\n\
             t_seconds_bucket{route=\"/a\",le=\"1\"} 2\n\
             t_seconds_bucket{route=\"/a\",le=\"+Inf\"} 3\n\
             t_seconds_sum{route=\"/a\"} 3.15\n\
             t_seconds_count{route=\"/a\"} 3\n"
        );
        assert_eq!(c.get(&["/a/{b}", "200"]), 3);
        assert_eq!(h.count(&["/a"]), 3);
    }

    #[test]
    fn replace_drops_series_not_in_the_snapshot() {
        let g = Gauge::new("t_models", "Models.", &["state"]);
        g.replace([(vec!["running".into()], 2), (vec!["loading".into()], 1)]);
        g.replace([(vec!["running".into()], 3)]);
        assert_eq!(
            encode(&[&g]),
            "# HELP t_models Models.\n# TYPE t_models gauge\nt_models{state=\"running\"} 3\n"
        );
    }
}
