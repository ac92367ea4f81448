//! A short-lived cache of resolved API tokens (keyed by the token's sha256,
//! never the secret), so a hot path such as `HEAD /resolve` does not look the
//! token and its user up on every request.
//!
//! Revocation through the API on this replica drops the entry at once; a
//! revocation on another replica (or straight in the database) takes effect
//! here within the TTL (`--auth-cache-ttl-secs`, default 5 s; 0 disables the
//! cache). Expiry is checked on every hit.

use super::principal::{Credential, Principal};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Above this many entries the cache starts over (bounded memory).
const MAX_ENTRIES: usize = 10_000;

pub struct TokenCache {
    ttl: Duration,
    entries: Mutex<HashMap<Vec<u8>, (Instant, Principal)>>,
}

impl TokenCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The cached principal of a token hash, if fresh and not expired.
    pub fn get(&self, hash: &[u8]) -> Option<Principal> {
        if self.ttl.is_zero() {
            return None;
        }
        let mut map = self.entries.lock().expect("token cache lock");
        let (at, p) = map.get(hash)?;
        let expired = matches!(&p.credential, Credential::Token { expires_at: Some(e), .. } if *e <= chrono::Utc::now());
        if at.elapsed() > self.ttl || expired {
            map.remove(hash);
            return None;
        }
        Some(p.clone())
    }

    pub fn put(&self, hash: Vec<u8>, p: &Principal) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.entries.lock().expect("token cache lock");
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(hash, (Instant::now(), p.clone()));
    }

    /// Drops a token (after it was revoked here).
    pub fn forget_token(&self, token_id: i64) {
        self.entries.lock().expect("token cache lock").retain(
            |_, (_, p)| !matches!(&p.credential, Credential::Token { id, .. } if *id == token_id),
        );
    }

    /// Drops every token of a user (after their rights changed here).
    pub fn forget_user(&self, user_id: i64) {
        self.entries
            .lock()
            .expect("token cache lock")
            .retain(|_, (_, p)| p.user_id != user_id);
    }
}
