//! Per-process caches of what authenticating and authorizing a request reads
//! from the database, so a hot path (the gateway, `HEAD /resolve`) makes no
//! round trip for a known caller: resolved API tokens (keyed by the token's
//! sha256, never the secret) and callers' roles in namespaces.
//!
//! Both are [`RefreshCache`]s with the lifetime `--auth-cache-ttl-secs`
//! (default 5 s; 0 disables them): an entry is reloaded in the background
//! once it is a fifth of that old (at most 1 s; the request that notices does
//! not wait), and answers for the whole TTL at most. The bounds, documented in
//! `docs/ARCHITECTURE.md`:
//! - revoking a token, or changing a membership or role, through this
//!   process takes effect at once here (the entry is dropped, and a reload
//!   under way cannot put it back);
//! - done through another replica, it takes effect here when that replica's
//!   invalidation NOTIFY arrives (`signals`); straight in the database, or
//!   with the notification lost, within the TTL (about a fifth of it under
//!   traffic).
//!
//! A token's expiry is checked on every hit.

use super::principal::{Credential, Principal};
use crate::db::namespaces::Role;
use crate::refresh_cache::{Lookup, RefreshCache};
use std::sync::Arc;
use std::time::Duration;

/// Above this many entries a cache starts over (bounded memory).
const MAX_ENTRIES: usize = 10_000;

/// When an entry of a cache living `ttl` is reloaded: a fifth of it, within [0.2 s, 1 s].
fn refresh_after(ttl: Duration) -> Duration {
    (ttl / 5).clamp(Duration::from_millis(200), Duration::from_secs(1))
}

/// Resolved API tokens by sha256 of the secret.
pub struct TokenCache {
    inner: RefreshCache<Vec<u8>, Principal>,
}

impl TokenCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            inner: RefreshCache::new(refresh_after(ttl), ttl, MAX_ENTRIES),
        }
    }

    /// The cached principal of a token hash, unless the token expired meanwhile.
    pub fn lookup(&self, hash: &Vec<u8>) -> Lookup<Principal> {
        let expired = |p: &Principal| matches!(&p.credential, Credential::Token { expires_at: Some(e), .. } if *e <= chrono::Utc::now());
        match self.inner.get(hash) {
            Lookup::Fresh(p) | Lookup::Stale { value: p, .. } if expired(&p) => {
                self.inner.forget(|k, _| k == hash);
                Lookup::Miss {
                    epoch: self.inner.epoch(),
                }
            }
            other => other,
        }
    }

    /// Stores what a lookup begun at `epoch` resolved (`None`: the token is
    /// unknown, revoked or expired).
    pub fn put(&self, hash: Vec<u8>, p: Option<Principal>, epoch: u64) {
        self.inner.put(hash, p, epoch);
    }

    /// A background reload failed; the entry answers until it expires.
    pub fn reload_failed(&self, hash: &Vec<u8>) {
        self.inner.reload_failed(hash);
    }

    /// Drops a token (after it was revoked here).
    pub fn forget_token(&self, token_id: i64) {
        self.inner.forget(
            |_, p| matches!(&p.credential, Credential::Token { id, .. } if *id == token_id),
        );
    }

    /// Drops every token of a user (after their rights changed here).
    pub fn forget_user(&self, user_id: i64) {
        self.inner.forget(|_, p| p.user_id == user_id);
    }

    /// Drops every token (invalidations may have been missed).
    pub fn clear(&self) {
        self.inner.clear();
    }

    /// Tokens held (for tests).
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

/// Callers' membership roles: `(user id, namespace id)` → the `org_members`
/// role (`None`: not a member). Owners and site admins never need it.
pub struct RoleCache {
    inner: RefreshCache<(i64, i64), Option<Role>>,
}

impl RoleCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            inner: RefreshCache::new(refresh_after(ttl), ttl, MAX_ENTRIES),
        }
    }

    /// The member role of `user_id` in `namespace_id`, from the cache when it
    /// can answer (a stale entry is reloaded in the background).
    pub async fn member_role(
        self: &Arc<Self>,
        db: &sqlx::PgPool,
        user_id: i64,
        namespace_id: i64,
    ) -> sqlx::Result<Option<Role>> {
        let key = (user_id, namespace_id);
        match self.inner.get(&key) {
            Lookup::Fresh(r) => Ok(r),
            Lookup::Stale { value, epoch } => {
                let (me, db) = (self.clone(), db.clone());
                tokio::spawn(async move {
                    match crate::db::namespaces::member_role(&db, namespace_id, user_id).await {
                        Ok(r) => me.inner.put(key, Some(r), epoch),
                        Err(e) => {
                            tracing::debug!(error = %e, "reloading a role failed");
                            me.inner.reload_failed(&key);
                        }
                    }
                });
                Ok(value)
            }
            Lookup::Miss { epoch } => {
                let r = crate::db::namespaces::member_role(db, namespace_id, user_id).await?;
                self.inner.put(key, Some(r), epoch);
                Ok(r)
            }
        }
    }

    /// Drops every role in a namespace (after its members changed here).
    pub fn forget_namespace(&self, namespace_id: i64) {
        self.inner.forget(|(_, ns), _| *ns == namespace_id);
    }

    /// Drops every role of a user (after they were removed or changed here).
    pub fn forget_user(&self, user_id: i64) {
        self.inner.forget(|(u, _), _| *u == user_id);
    }

    /// Drops every role (invalidations may have been missed).
    pub fn clear(&self) {
        self.inner.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_point_scales_with_the_ttl() {
        assert_eq!(
            refresh_after(Duration::from_secs(5)),
            Duration::from_secs(1)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(60)),
            Duration::from_secs(1)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(1)),
            Duration::from_millis(200)
        );
    }

    fn token(id: i64, user: i64, expires_in_s: i64) -> Principal {
        Principal {
            user_id: user,
            name: "u".into(),
            fullname: String::new(),
            is_admin: false,
            credential: Credential::Token {
                id,
                name: "t".into(),
                scopes: vec![],
                restrict_namespaces: None,
                restrict_repos: None,
                expires_at: Some(chrono::Utc::now() + chrono::TimeDelta::seconds(expires_in_s)),
            },
        }
    }

    #[test]
    fn revocation_and_expiry_drop_tokens() {
        let c = TokenCache::new(Duration::from_secs(5));
        let e = match c.lookup(&vec![1]) {
            Lookup::Miss { epoch } => epoch,
            _ => panic!(),
        };
        c.put(vec![1], Some(token(10, 7, 3600)), e);
        c.put(vec![2], Some(token(11, 7, 3600)), e);
        c.put(vec![3], Some(token(12, 8, -1)), e);
        assert!(matches!(c.lookup(&vec![1]), Lookup::Fresh(_)));
        // Expired since it was cached: a miss (and a lookup reads the database's verdict).
        assert!(matches!(c.lookup(&vec![3]), Lookup::Miss { .. }));
        c.forget_token(10);
        assert!(matches!(c.lookup(&vec![1]), Lookup::Miss { .. }));
        assert!(matches!(c.lookup(&vec![2]), Lookup::Fresh(_)));
        c.forget_user(7);
        assert!(c.is_empty());
    }
}
