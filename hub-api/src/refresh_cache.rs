//! A per-process cache that is refreshed ahead of expiry, off the request path:
//! the building block of the gateway's hot path (tokens, roles, routes), which
//! must not wait on PostgreSQL for a warm endpoint and a known caller.
//!
//! An entry answers for [`RefreshCache::expire_after`]. Once it is older than
//! [`RefreshCache::refresh_after`], the next lookup still answers from it but
//! hands the caller the job of reloading it in the background ([`Lookup::Stale`];
//! one reload per entry at a time). So under steady traffic no request waits on
//! the database, and a change made elsewhere is seen within `expire_after` at the
//! latest (within `refresh_after` plus one reload under traffic).
//!
//! Invalidation is exact on this process: [`RefreshCache::forget`] drops entries
//! and bumps an epoch, and a load that started before the bump cannot put its
//! (possibly stale) answer back ([`RefreshCache::put`] takes the epoch the load
//! began at). Without that, a revocation racing a reload could be undone.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Slot<V> {
    at: Instant,
    value: V,
    /// A background reload is under way.
    refreshing: bool,
}

struct Inner<K, V> {
    epoch: u64,
    map: HashMap<K, Slot<V>>,
}

/// See the module docs.
pub struct RefreshCache<K, V> {
    refresh_after: Duration,
    expire_after: Duration,
    max_entries: usize,
    inner: Mutex<Inner<K, V>>,
}

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<V> {
    /// A fresh entry.
    Fresh(V),
    /// An entry still good to answer with, which the caller should reload in the
    /// background (it was marked as reloading: the next lookups answer `Fresh`
    /// until the reload puts, fails or the entry expires).
    Stale { value: V, epoch: u64 },
    /// Nothing usable: load it now.
    Miss { epoch: u64 },
}

impl<K: Eq + Hash + Clone, V: Clone> RefreshCache<K, V> {
    /// A cache whose entries are reloaded after `refresh_after` and dropped after
    /// `expire_after` (a zero `expire_after` turns the cache off).
    pub fn new(refresh_after: Duration, expire_after: Duration, max_entries: usize) -> Self {
        Self {
            refresh_after: refresh_after.min(expire_after),
            expire_after,
            max_entries,
            inner: Mutex::new(Inner {
                epoch: 0,
                map: HashMap::new(),
            }),
        }
    }

    /// How long an entry answers without a reload having succeeded.
    pub fn expire_after(&self) -> Duration {
        self.expire_after
    }

    /// After how long an entry is reloaded in the background.
    pub fn refresh_after(&self) -> Duration {
        self.refresh_after
    }

    /// Looks `key` up; see [`Lookup`].
    pub fn get(&self, key: &K) -> Lookup<V> {
        let mut inner = self.inner.lock().expect("cache lock");
        let epoch = inner.epoch;
        if self.expire_after.is_zero() {
            return Lookup::Miss { epoch };
        }
        let Some(slot) = inner.map.get_mut(key) else {
            return Lookup::Miss { epoch };
        };
        let age = slot.at.elapsed();
        if age >= self.expire_after {
            inner.map.remove(key);
            return Lookup::Miss { epoch };
        }
        if age >= self.refresh_after && !slot.refreshing {
            slot.refreshing = true;
            return Lookup::Stale {
                value: slot.value.clone(),
                epoch,
            };
        }
        Lookup::Fresh(slot.value.clone())
    }

    /// The current epoch (take it before a load, hand it to [`Self::put`]).
    pub fn epoch(&self) -> u64 {
        self.inner.lock().expect("cache lock").epoch
    }

    /// Stores what a load that began at `epoch` found (`None`: the key is gone,
    /// drop it). Ignored when something was forgotten since the load began.
    pub fn put(&self, key: K, value: Option<V>, epoch: u64) {
        if self.expire_after.is_zero() {
            return;
        }
        let mut inner = self.inner.lock().expect("cache lock");
        if inner.epoch != epoch {
            return;
        }
        match value {
            Some(value) => {
                if inner.map.len() >= self.max_entries && !inner.map.contains_key(&key) {
                    let expire = self.expire_after;
                    inner.map.retain(|_, s| s.at.elapsed() < expire);
                    if inner.map.len() >= self.max_entries {
                        inner.map.clear();
                    }
                }
                inner.map.insert(
                    key,
                    Slot {
                        at: Instant::now(),
                        value,
                        refreshing: false,
                    },
                );
            }
            None => {
                inner.map.remove(&key);
            }
        }
    }

    /// A background reload failed (the database is down): the entry keeps
    /// answering until it expires, and the next lookup tries again.
    pub fn reload_failed(&self, key: &K) {
        if let Some(s) = self.inner.lock().expect("cache lock").map.get_mut(key) {
            s.refreshing = false;
        }
    }

    /// Drops the entries `pred` picks, and makes loads under way unable to put.
    pub fn forget(&self, pred: impl Fn(&K, &V) -> bool) {
        let mut inner = self.inner.lock().expect("cache lock");
        inner.epoch += 1;
        inner.map.retain(|k, s| !pred(k, &s.value));
    }

    /// Drops everything.
    pub fn clear(&self) {
        self.forget(|_, _| true);
    }

    /// Entries held (for tests).
    pub fn len(&self) -> usize {
        self.inner.lock().expect("cache lock").map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_then_stale_once_then_expired() {
        let c = RefreshCache::new(Duration::from_millis(40), Duration::from_millis(120), 10);
        let Lookup::Miss { epoch } = c.get(&1) else {
            panic!()
        };
        c.put(1, Some("a"), epoch);
        assert_eq!(c.get(&1), Lookup::Fresh("a"));
        std::thread::sleep(Duration::from_millis(50));
        // Past the refresh point: one lookup is told to reload, the others answer.
        assert!(matches!(c.get(&1), Lookup::Stale { value: "a", .. }));
        assert_eq!(c.get(&1), Lookup::Fresh("a"));
        // The reload failed: the next lookup is told again.
        c.reload_failed(&1);
        let Lookup::Stale { epoch, .. } = c.get(&1) else {
            panic!()
        };
        c.put(1, Some("b"), epoch);
        assert_eq!(c.get(&1), Lookup::Fresh("b"));
        std::thread::sleep(Duration::from_millis(130));
        assert!(matches!(c.get(&1), Lookup::Miss { .. }));
        assert!(c.is_empty());
    }

    /// A load that began before a forget cannot put its answer back.
    #[test]
    fn forgetting_beats_a_load_under_way() {
        let c = RefreshCache::new(Duration::from_secs(1), Duration::from_secs(5), 10);
        let Lookup::Miss { epoch } = c.get(&"tok") else {
            panic!()
        };
        c.forget(|k, _| *k == "tok");
        c.put("tok", Some(1), epoch);
        assert!(matches!(c.get(&"tok"), Lookup::Miss { .. }));
        // A load found the key gone: dropped.
        let e = c.epoch();
        c.put("tok", Some(2), e);
        assert_eq!(c.get(&"tok"), Lookup::Fresh(2));
        c.put("tok", None, e);
        assert!(matches!(c.get(&"tok"), Lookup::Miss { .. }));
    }

    #[test]
    fn zero_ttl_is_off_and_size_is_bounded() {
        let off = RefreshCache::new(Duration::ZERO, Duration::ZERO, 10);
        off.put(1, Some(1), off.epoch());
        assert!(matches!(off.get(&1), Lookup::Miss { .. }));
        let c = RefreshCache::new(Duration::from_secs(1), Duration::from_secs(5), 3);
        for k in 0..10 {
            c.put(k, Some(k), c.epoch());
            assert!(c.len() <= 3);
        }
        assert_eq!(c.get(&9), Lookup::Fresh(9));
    }
}
