//! On whose behalf a credential minted from a read-and-gate decision reads a
//! repo: a [`Grant`], recorded in the credential (signed LFS links, Xet CAS
//! tokens and their data links, worker pull tokens) so that the decision is
//! made again every time the credential is used (`gating::recheck`). A
//! credential outlives its minting by up to an hour; access withdrawn in the
//! meantime (a member removed, a repo made private, a gate request rejected, a
//! token revoked, an endpoint deleted) must end it at once, not at its expiry.
//!
//! Making the decision again costs a few queries, and a Xet download uses its
//! data links by the hundred, so the decisions are kept per process in a
//! [`GrantCache`] (a [`RefreshCache`] as long-lived as the token cache,
//! `--auth-cache-ttl-secs`, 5 s by default), dropped at once by every change
//! that may withdraw a grant:
//!
//! - the changes published as invalidations (`signals`): a token revoked
//!   (its grants), a namespace's members or roles changed (grants on its
//!   repos), an endpoint changed or deleted (its pull grants), a gate's access
//!   requests decided (grants on that repo);
//! - repo row changes announced by the database's own triggers
//!   (`repo_cache::CHANNEL`: privacy, gating, deletion, moves, renames),
//!   heard by the same listener.
//!
//! The cache answers only while that listener listens (as the repo cache):
//! otherwise, and on a miss, the decision is read from the database. So a
//! withdrawal made through the hub is refused by this process at once (the
//! invalidation is applied before the change's response; a repo row change
//! reaches this process's listener before the response too, see
//! `repo_cache`), by other replicas within a notification's delivery, and
//! within the TTL when a notification is lost or the change is made straight
//! in the database without one (a membership or access request edited by
//! hand).

use crate::db::repos::RepoRow;
use crate::refresh_cache::{Lookup, RefreshCache};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

/// See the module docs. The JSON form of `Anonymous` and `User` is that of
/// the reader recorded by LFS links before grants (`{"kind": "user", "id": 5}`),
/// so those links still open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Grant {
    /// Anyone: a public repo that is not gated. (Also what a Xet token signed
    /// before grants were recorded counts as.)
    #[default]
    Anonymous,
    /// A user, with the rights of their account; `token`: the API token the
    /// credential was minted for, which must still be valid (not revoked, not
    /// expired); `session`: for a dashboard session instead, the
    /// `users.session_version` it was issued under, which must still be the
    /// user's (a sign-out bumps it). Both `None`: the account alone decides
    /// (links minted before sessions were recorded).
    User {
        id: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<i32>,
    },
    /// A worker pulling an inference endpoint's weights: the endpoint must
    /// still exist, name the repo, and its creator still be allowed to
    /// download the model (`gating::endpoint_download`).
    Endpoint { id: i64 },
    /// A worker running a fine-tuning job under one claim: the claim must
    /// still hold the running job, the repo be its base model or dataset, and
    /// its creator still be allowed to read it (`gating::job_download`).
    Job { id: Uuid, claim: Uuid },
}

impl Grant {
    /// The grant of a user's API token `token`.
    pub fn token(id: i64, token: i64) -> Grant {
        Grant::User {
            id,
            token: Some(token),
            session: None,
        }
    }

    /// The grant of a user's dashboard session issued under `version`
    /// (`users.session_version`; None: the account alone decides).
    pub fn session(id: i64, version: Option<i32>) -> Grant {
        Grant::User {
            id,
            token: None,
            session: version,
        }
    }

    /// Whether this is a worker's pull grant (an endpoint's or a job's).
    pub fn is_pull(&self) -> bool {
        matches!(self, Grant::Endpoint { .. } | Grant::Job { .. })
    }
}

/// Why a grant no longer holds: the answer the credential's use gets, kept in
/// the cache (database failures are never kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 404 `repo_not_found`: the repo is gone or no longer readable by the grant.
    RepoNotFound,
    /// 403 `gated_repo`: the gate no longer lets the grant through.
    Gated(String),
    /// 403 `forbidden` (a read-only account holding a write grant).
    Forbidden(String),
    /// 401 `unauthorized`: what the grant was minted for is gone (a revoked or
    /// expired token, a deleted endpoint, a job no longer held by the claim).
    Withdrawn(String),
}

impl Refusal {
    /// The refusal an error of the decision stands for (None: not a refusal,
    /// such as a database failure, which is answered but not kept).
    pub fn of(e: &crate::error::ApiError) -> Option<Refusal> {
        use crate::error::ApiError;
        match e {
            ApiError::RepoNotFound => Some(Refusal::RepoNotFound),
            ApiError::GatedRepo(m) => Some(Refusal::Gated(m.clone())),
            ApiError::Forbidden(m) => Some(Refusal::Forbidden(m.clone())),
            ApiError::Unauthorized(m) => Some(Refusal::Withdrawn(m.clone())),
            _ => None,
        }
    }

    pub fn into_error(self) -> crate::error::ApiError {
        use crate::error::ApiError;
        match self {
            Refusal::RepoNotFound => ApiError::RepoNotFound,
            Refusal::Gated(m) => ApiError::GatedRepo(m),
            Refusal::Forbidden(m) => ApiError::Forbidden(m),
            Refusal::Withdrawn(m) => ApiError::Unauthorized(m),
        }
    }
}

/// What deciding a grant again found: the repo (its row and the grant's level
/// on it) or why not, with the repo's namespace for invalidation.
#[derive(Debug, Clone)]
pub struct Decided {
    /// The repo's namespace (None: the repo is gone).
    pub namespace_id: Option<i64>,
    pub verdict: Result<(RepoRow, crate::auth::Access), Refusal>,
}

/// The key of a decision: the grant, the repo, and whether it was for
/// writing (a Xet write token) or reading (with the gate).
pub type GrantKey = (Grant, i64, bool);

/// Above this many entries the cache starts over (bounded memory).
const MAX_ENTRIES: usize = 20_000;

/// Decisions made again for grants (see the module docs).
pub struct GrantCache {
    inner: RefreshCache<GrantKey, Decided>,
}

impl GrantCache {
    /// A cache whose entries answer for `ttl` at most (0: off), reloaded in
    /// the background after a fifth of it (within [0.2 s, 1 s]).
    pub fn new(ttl: Duration) -> Self {
        let refresh = (ttl / 5).clamp(Duration::from_millis(200), Duration::from_secs(1));
        Self {
            inner: RefreshCache::new(refresh, ttl, MAX_ENTRIES),
        }
    }

    pub fn get(&self, key: &GrantKey) -> Lookup<Decided> {
        self.inner.get(key)
    }

    pub fn epoch(&self) -> u64 {
        self.inner.epoch()
    }

    /// Stores what a decision begun at `epoch` found.
    pub fn put(&self, key: GrantKey, value: Decided, epoch: u64) {
        self.inner.put(key, Some(value), epoch);
    }

    /// A background reload failed; the entry answers until it expires.
    pub fn reload_failed(&self, key: &GrantKey) {
        self.inner.reload_failed(key);
    }

    /// Drops the grants of an API token (revoked).
    pub fn forget_token(&self, token_id: i64) {
        self.inner.forget(
            |(g, _, _), _| matches!(g, Grant::User { token: Some(t), .. } if *t == token_id),
        );
    }

    /// Drops the grants of a user's dashboard sessions (they signed out).
    pub fn forget_sessions(&self, user_id: i64) {
        self.inner.forget(
            |(g, _, _), _| matches!(g, Grant::User { id, session: Some(_), .. } if *id == user_id),
        );
    }

    /// Drops the decisions on a namespace's repos (its members or roles
    /// changed, it was renamed or deleted), and a deleted user's own grants.
    pub fn forget_namespace(&self, namespace_id: i64) {
        self.inner.forget(|(g, _, _), d| {
            d.namespace_id == Some(namespace_id)
                || matches!(g, Grant::User { id, .. } if *id == namespace_id)
        });
    }

    /// Drops the decisions on a repo (its row changed, or its gate's requests).
    pub fn forget_repo(&self, repo_id: i64) {
        self.inner.forget(|(_, r, _), _| *r == repo_id);
    }

    /// Drops an endpoint's pull grants (changed or deleted).
    pub fn forget_endpoint(&self, endpoint_id: i64) {
        self.inner
            .forget(|(g, _, _), _| matches!(g, Grant::Endpoint { id } if *id == endpoint_id));
    }

    /// Drops a job's pull grants (ended or cancelled).
    pub fn forget_job(&self, job_id: Uuid) {
        self.inner
            .forget(|(g, _, _), _| matches!(g, Grant::Job { id, .. } if *id == job_id));
    }

    /// Applies a repo row change notification (`repo_cache::CHANNEL`):
    /// `repo:<id>`, `namespace:<id>`; sync payloads drop nothing, anything
    /// else drops everything.
    pub fn received(&self, payload: &str) {
        if payload.starts_with("sync:") {
            return;
        }
        let parsed = payload
            .split_once(':')
            .and_then(|(k, id)| Some((k, id.parse::<i64>().ok()?)));
        match parsed {
            Some(("repo", id)) => self.forget_repo(id),
            Some(("namespace", id)) => self.forget_namespace(id),
            _ => self.clear(),
        }
    }

    /// Drops everything (invalidations may have been missed).
    pub fn clear(&self) {
        self.inner.clear();
    }

    /// Entries held (for tests).
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Access;

    #[test]
    fn grants_read_the_readers_of_older_links() {
        let old_user: Grant = serde_json::from_str(r#"{"kind":"user","id":5}"#).unwrap();
        assert_eq!(old_user, Grant::session(5, None));
        let anon: Grant = serde_json::from_str(r#"{"kind":"anonymous"}"#).unwrap();
        assert_eq!(anon, Grant::Anonymous);
        // A pull link of old cannot be decided again: it does not parse.
        assert!(serde_json::from_str::<Grant>(r#"{"kind":"pull"}"#).is_err());
        for g in [Grant::token(5, 9), Grant::session(5, Some(3))] {
            let back: Grant = serde_json::from_str(&serde_json::to_string(&g).unwrap()).unwrap();
            assert_eq!(back, g);
        }
        let j = Grant::Job {
            id: Uuid::new_v4(),
            claim: Uuid::new_v4(),
        };
        let back: Grant = serde_json::from_str(&serde_json::to_string(&j).unwrap()).unwrap();
        assert_eq!(back, j);
    }

    fn allowed(repo: i64, ns: i64) -> Decided {
        Decided {
            namespace_id: Some(ns),
            verdict: Ok((
                RepoRow::sample(repo, ns, &format!("ns{ns}"), "m", false),
                Access::Read,
            )),
        }
    }

    fn held(c: &GrantCache, key: &GrantKey) -> bool {
        !matches!(c.get(key), Lookup::Miss { .. })
    }

    #[test]
    fn invalidations_drop_the_grants_they_may_withdraw() {
        let c = GrantCache::new(Duration::from_secs(5));
        let job = Uuid::new_v4();
        let keys: Vec<GrantKey> = vec![
            (Grant::token(7, 70), 1, false),
            (Grant::session(8, Some(2)), 2, false),
            (Grant::Endpoint { id: 3 }, 3, false),
            (
                Grant::Job {
                    id: job,
                    claim: Uuid::new_v4(),
                },
                4,
                false,
            ),
            (Grant::Anonymous, 5, false),
        ];
        let fill = |c: &GrantCache| {
            c.clear();
            let e = c.epoch();
            for (i, k) in keys.iter().enumerate() {
                // Repos 1-2 in namespace 100, 3-5 in namespace 200.
                c.put(*k, allowed(k.1, if i < 2 { 100 } else { 200 }), e);
            }
        };
        let still = |c: &GrantCache| -> Vec<bool> { keys.iter().map(|k| held(c, k)).collect() };
        fill(&c);
        c.forget_token(70);
        assert_eq!(still(&c), [false, true, true, true, true]);
        fill(&c);
        c.forget_namespace(100);
        assert_eq!(still(&c), [false, false, true, true, true]);
        fill(&c);
        // A deleted user's namespace: their grants anywhere.
        c.forget_namespace(8);
        assert_eq!(still(&c), [true, false, true, true, true]);
        fill(&c);
        c.forget_endpoint(3);
        assert_eq!(still(&c), [true, true, false, true, true]);
        fill(&c);
        // A sign-out: that user's session grants, not another user's token.
        c.forget_sessions(8);
        assert_eq!(still(&c), [true, false, true, true, true]);
        fill(&c);
        c.forget_sessions(7);
        assert_eq!(still(&c), [true, true, true, true, true]);
        fill(&c);
        c.forget_job(job);
        assert_eq!(still(&c), [true, true, true, false, true]);
        fill(&c);
        c.received("repo:5");
        assert_eq!(still(&c), [true, true, true, true, false]);
        fill(&c);
        c.received("sync:abc:1");
        assert_eq!(still(&c), [true; 5]);
        c.received("namespace:200");
        assert_eq!(still(&c), [true, true, false, false, false]);
        fill(&c);
        c.received("something new");
        assert!(c.is_empty());
    }
}
