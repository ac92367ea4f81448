//! Usage summed in memory before it is written. The gateway records every
//! call here ([`UsageBuffer::add`]); a flush ([`UsageBuffer::take`]) turns what
//! was recorded into one [`UsageBatch`]: a row per (namespace, endpoint,
//! token, status, second) with the calls' count, their tokens and a sparse
//! latency histogram ([`bucket_of`]), written to `usage_counts` in one
//! statement (`db::endpoints::insert_usage`). At 6,000 calls a second that is a
//! handful of rows per 100 ms flush instead of 600 (see migration
//! `20261206000002_usage_rolled_up.sql` for what the per-call rows cost).
//!
//! A batch keeps its id (`flush_id`, time-ordered) until it is written, so a
//! batch retried after an INSERT whose answer was lost counts once.

use chrono::{DateTime, Utc};
use std::collections::{HashMap, VecDeque};
use uuid::Uuid;

/// Latency buckets per doubling: a percentile read from the histogram is
/// within `2^(1/16) - 1` (4.4%) of the exact one.
pub const BUCKETS_PER_DOUBLING: f64 = 8.0;
/// The last bucket (2^50 us, far beyond any call): longer latencies land in it.
pub const LAST_BUCKET: i16 = 400;
/// Rows of batches the database refused that are kept for a retry; past it the
/// oldest batches go (and are logged).
pub const MAX_PENDING_ROWS: usize = 100_000;

/// One metered call, as the gateway records it.
#[derive(Debug, Clone)]
pub struct UsageRecord<'a> {
    pub namespace_id: i64,
    pub endpoint_id: i64,
    pub endpoint_name: &'a str,
    pub token_id: Option<i64>,
    /// Prompt tokens (what the worker counted as input).
    pub input_tokens: i32,
    /// Completion tokens (generation; 0 for encoders).
    pub output_tokens: i32,
    pub latency_ms: f32,
    pub status: i32,
}

/// The latency bucket of a call: bucket `b` spans `(2^((b-1)/8), 2^(b/8)]`
/// microseconds; bucket 0 holds everything up to 1 us. The migration that
/// rolled up the per-call rows computes the same in SQL.
pub fn bucket_of(latency_ms: f64) -> i16 {
    let us = latency_ms * 1000.0;
    if us.is_nan() || us <= 1.0 {
        return 0;
    }
    (BUCKETS_PER_DOUBLING * us.log2())
        .ceil()
        .min(LAST_BUCKET as f64) as i16
}

/// What a bucket's calls are reported as: the bucket's geometric middle, in ms.
pub fn bucket_ms(bucket: i16) -> f64 {
    2f64.powf((bucket as f64 - 0.5) / BUCKETS_PER_DOUBLING) / 1000.0
}

/// The `p` quantile (0..=1) of a histogram given as (bucket, calls) sorted by
/// bucket: the bucket of the call at rank `floor(p * (n - 1))`, as
/// [`bucket_ms`]; 0 for an empty histogram.
pub fn quantile_ms(hist: &[(i16, i64)], p: f64) -> f64 {
    let total: i64 = hist.iter().map(|(_, n)| n).sum();
    if total <= 0 {
        return 0.0;
    }
    let rank = (p.clamp(0.0, 1.0) * (total - 1) as f64).floor() as i64;
    let mut seen = 0;
    for &(b, n) in hist {
        seen += n;
        if seen > rank {
            return bucket_ms(b);
        }
    }
    bucket_ms(hist.last().map_or(0, |h| h.0))
}

/// One row of `usage_counts`: the calls of one group in one flush.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageCount {
    pub namespace_id: i64,
    pub endpoint_id: i64,
    pub endpoint_name: String,
    pub token_id: Option<i64>,
    /// The second the calls finished in.
    pub at: DateTime<Utc>,
    pub status: i32,
    pub requests: i32,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// (bucket, calls), sorted by bucket.
    pub latency: Vec<(i16, i32)>,
}

/// What one flush writes, under its id.
#[derive(Debug, Clone)]
pub struct UsageBatch {
    pub flush_id: Uuid,
    pub rows: Vec<UsageCount>,
}

impl UsageBatch {
    /// The records summed as one flush would (for tests and tools).
    pub fn of(records: &[UsageRecord<'_>]) -> UsageBatch {
        let mut b = UsageBuffer::default();
        for r in records {
            b.add(r);
        }
        b.take().pop().unwrap_or_else(|| UsageBatch {
            flush_id: time_ordered_id(),
            rows: Vec::new(),
        })
    }

    /// Calls the batch counts.
    pub fn calls(&self) -> usize {
        self.rows.iter().map(|r| r.requests as usize).sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    namespace_id: i64,
    endpoint_id: i64,
    token_id: Option<i64>,
    status: i32,
    second: i64,
}

#[derive(Debug)]
struct Group {
    endpoint_name: String,
    requests: i32,
    input_tokens: i64,
    output_tokens: i64,
    latency: Vec<(i16, i32)>,
}

/// Calls recorded and not yet written: the open groups, and batches a flush
/// could not write (kept, in order, for the next one).
#[derive(Debug, Default)]
pub struct UsageBuffer {
    open: HashMap<Key, Group>,
    open_calls: usize,
    failed: VecDeque<UsageBatch>,
}

impl UsageBuffer {
    /// Counts a call in its group (the current second's).
    pub fn add(&mut self, r: &UsageRecord<'_>) {
        let second = Utc::now().timestamp();
        let key = Key {
            namespace_id: r.namespace_id,
            endpoint_id: r.endpoint_id,
            token_id: r.token_id,
            status: r.status,
            second,
        };
        let g = self.open.entry(key).or_insert_with(|| Group {
            endpoint_name: r.endpoint_name.to_owned(),
            requests: 0,
            input_tokens: 0,
            output_tokens: 0,
            latency: Vec::new(),
        });
        // 2^31 calls between two flushes 100 ms apart cannot happen; saturate
        // rather than wrap.
        if g.requests == i32::MAX {
            return;
        }
        g.requests += 1;
        g.input_tokens += r.input_tokens.max(0) as i64;
        g.output_tokens += r.output_tokens.max(0) as i64;
        let b = bucket_of(r.latency_ms as f64);
        match g.latency.binary_search_by_key(&b, |h| h.0) {
            Ok(i) => g.latency[i].1 += 1,
            Err(i) => g.latency.insert(i, (b, 1)),
        }
        self.open_calls += 1;
    }

    /// Calls recorded and not yet written.
    pub fn pending_calls(&self) -> usize {
        self.open_calls + self.failed.iter().map(UsageBatch::calls).sum::<usize>()
    }

    /// Everything to write now, oldest first: the batches a flush could not
    /// write (with their ids), then the open groups as a new batch.
    pub fn take(&mut self) -> Vec<UsageBatch> {
        let mut out: Vec<UsageBatch> = self.failed.drain(..).collect();
        if !self.open.is_empty() {
            let mut rows: Vec<UsageCount> = self
                .open
                .drain()
                .map(|(k, g)| UsageCount {
                    namespace_id: k.namespace_id,
                    endpoint_id: k.endpoint_id,
                    endpoint_name: g.endpoint_name,
                    token_id: k.token_id,
                    at: DateTime::from_timestamp(k.second, 0).unwrap_or_default(),
                    status: k.status,
                    requests: g.requests,
                    input_tokens: g.input_tokens,
                    output_tokens: g.output_tokens,
                    latency: g.latency,
                })
                .collect();
            rows.sort_by_key(|r| (r.at, r.namespace_id, r.endpoint_id, r.status));
            out.push(UsageBatch {
                flush_id: time_ordered_id(),
                rows,
            });
            self.open_calls = 0;
        }
        out
    }

    /// Keeps batches a flush could not write, ahead of any newer ones, for the
    /// next flush. Past [`MAX_PENDING_ROWS`] the oldest go: answers the calls
    /// dropped.
    pub fn put_back(&mut self, batches: Vec<UsageBatch>) -> usize {
        for b in batches.into_iter().rev() {
            self.failed.push_front(b);
        }
        let mut rows: usize = self.failed.iter().map(|b| b.rows.len()).sum();
        let mut dropped = 0;
        while rows > MAX_PENDING_ROWS {
            let Some(b) = self.failed.pop_front() else {
                break;
            };
            rows -= b.rows.len();
            dropped += b.calls();
        }
        dropped
    }
}

/// A version 7 UUID (milliseconds since the epoch, then random bits): flush
/// ids in the order they are made, so the primary key of `usage_counts` grows
/// at its right edge.
pub fn time_ordered_id() -> Uuid {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let random = Uuid::new_v4();
    let tail: &[u8; 10] = random.as_bytes()[6..].try_into().expect("10 bytes");
    uuid::Builder::from_unix_timestamp_millis(ms, tail).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(ep: i64, status: i32, ms: f32) -> UsageRecord<'static> {
        UsageRecord {
            namespace_id: 1,
            endpoint_id: ep,
            endpoint_name: "e",
            token_id: Some(9),
            input_tokens: 3,
            output_tokens: 2,
            latency_ms: ms,
            status,
        }
    }

    #[test]
    fn flush_ids_are_version_7_and_ordered_by_time() {
        let a = time_ordered_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = time_ordered_id();
        assert_eq!(a.get_version_num(), 7);
        assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
        assert!(a < b, "{a} then {b}");
        assert_ne!(time_ordered_id(), time_ordered_id());
    }

    #[test]
    fn buckets_bound_the_error_of_a_percentile() {
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(-1.0), 0);
        assert_eq!(bucket_of(f64::NAN), 0);
        assert_eq!(bucket_of(0.001), 0);
        assert_eq!(bucket_of(0.002), 8);
        assert_eq!(bucket_of(1e30), LAST_BUCKET);
        for ms in [0.01, 0.3, 1.0, 7.5, 42.0, 1234.5, 600_000.0] {
            let b = bucket_of(ms);
            let lo = 2f64.powf((b as f64 - 1.0) / 8.0) / 1000.0;
            let hi = 2f64.powf(b as f64 / 8.0) / 1000.0;
            assert!(lo < ms && ms <= hi * (1.0 + 1e-12), "{ms} in ({lo}, {hi}]");
            let err = (bucket_ms(b) - ms).abs() / ms;
            assert!(err < 0.0443, "{ms}: reported {} ({err})", bucket_ms(b));
        }
    }

    #[test]
    fn quantiles_pick_the_ranked_calls_bucket() {
        // 100 calls: 1..=100 ms.
        let mut b = UsageBuffer::default();
        for ms in 1..=100 {
            b.add(&call(1, 200, ms as f32));
        }
        let batch = b.take().pop().unwrap();
        let hist: Vec<(i16, i64)> = batch.rows[0]
            .latency
            .iter()
            .map(|&(b, n)| (b, n as i64))
            .collect();
        for (p, exact) in [
            (0.5, 50.0),
            (0.95, 95.0),
            (0.99, 99.0),
            (0.0, 1.0),
            (1.0, 100.0),
        ] {
            let got = quantile_ms(&hist, p);
            assert!(
                (got - exact).abs() / exact < 0.045,
                "p{p}: {got} vs {exact}"
            );
        }
        assert_eq!(quantile_ms(&[], 0.5), 0.0);
    }

    #[test]
    fn calls_sum_per_group_and_a_failed_batch_keeps_its_id() {
        let mut b = UsageBuffer::default();
        for _ in 0..5 {
            b.add(&call(1, 200, 2.0));
        }
        b.add(&call(1, 500, 2.0));
        b.add(&call(2, 200, 2.0));
        assert_eq!(b.pending_calls(), 7);
        let first = b.take();
        assert_eq!(first.len(), 1);
        assert_eq!(b.pending_calls(), 0);
        let rows = &first[0].rows;
        // A second boundary may split a group in two: count per group.
        let sum = |ep: i64, st: i32| -> (i32, i64, i64) {
            rows.iter()
                .filter(|r| r.endpoint_id == ep && r.status == st)
                .fold((0, 0, 0), |a, r| {
                    (
                        a.0 + r.requests,
                        a.1 + r.input_tokens,
                        a.2 + r.output_tokens,
                    )
                })
        };
        assert_eq!(sum(1, 200), (5, 15, 10));
        assert_eq!(sum(1, 500), (1, 3, 2));
        assert_eq!(sum(2, 200), (1, 3, 2));
        assert!(rows.len() <= 6);

        // Refused: kept ahead of what comes next, under the same id.
        let id = first[0].flush_id;
        assert_eq!(b.put_back(first), 0);
        b.add(&call(1, 200, 2.0));
        assert_eq!(b.pending_calls(), 8);
        let again = b.take();
        assert_eq!(again.len(), 2);
        assert_eq!(again[0].flush_id, id);
        assert_ne!(again[1].flush_id, id);
        assert_eq!(again[1].calls(), 1);
    }

    #[test]
    fn refused_batches_are_bounded_oldest_first() {
        let mut b = UsageBuffer::default();
        let big = |n: usize| UsageBatch {
            flush_id: time_ordered_id(),
            rows: (0..n)
                .map(|i| UsageCount {
                    namespace_id: 1,
                    endpoint_id: i as i64,
                    endpoint_name: "e".into(),
                    token_id: None,
                    at: Utc::now(),
                    status: 200,
                    requests: 2,
                    input_tokens: 0,
                    output_tokens: 0,
                    latency: vec![(1, 2)],
                })
                .collect(),
        };
        // Each batch put back is older than those kept: it goes ahead of them.
        let first = big(MAX_PENDING_ROWS / 2);
        let first_id = first.flush_id;
        assert_eq!(b.put_back(vec![first]), 0);
        assert_eq!(b.put_back(vec![big(MAX_PENDING_ROWS / 2)]), 0);
        // Over the bound: the oldest (the last put back) goes.
        assert_eq!(b.put_back(vec![big(10)]), 20);
        let kept = b.take();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[1].flush_id, first_id);
    }
}
