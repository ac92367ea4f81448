//! Hub-signed JWTs: HS256 only (the algorithm is pinned), `iss`, `aud` and
//! `exp` required, keys named by `kid` and kept in Postgres so every replica
//! shares them and they rotate without a restart.

use jsonwebtoken::{
    decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use serde::{de::DeserializeOwned, Serialize};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The issuer of every hub token.
pub const ISSUER: &str = "paddock-hub";
/// Leeway for clock skew, in seconds.
pub const LEEWAY_S: u64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("token is not valid: {0}")]
    Invalid(String),
    #[error("unknown signing key")]
    UnknownKey,
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

#[derive(Clone)]
struct Key {
    kid: String,
    secret: Vec<u8>,
}

struct Inner {
    /// Active keys; the last one signs.
    keys: Vec<Key>,
    by_kid: HashMap<String, Key>,
    loaded: Instant,
    /// The last reload caused by an unknown `kid` (at most one per second, so
    /// forged key ids cannot turn every request into a database query).
    miss_reload: Option<Instant>,
}

/// The set of active signing keys.
#[derive(Clone)]
pub struct KeyRing {
    db: PgPool,
    inner: Arc<RwLock<Inner>>,
}

/// Other replicas see a rotation or retirement within this long.
pub const RELOAD_EVERY: Duration = Duration::from_secs(10);
const MISS_RELOAD_EVERY: Duration = Duration::from_secs(1);

/// A signing key as the admin API shows it (never the secret).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyInfo {
    pub kid: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub retired_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl KeyRing {
    /// Loads keys, creating the first one if there is none.
    pub async fn load(db: PgPool) -> Result<Self, JwtError> {
        let ring = Self {
            db,
            inner: Arc::new(RwLock::new(Inner {
                keys: vec![],
                by_kid: HashMap::new(),
                loaded: Instant::now(),
                miss_reload: None,
            })),
        };
        ring.reload().await?;
        if ring.inner.read().expect("lock").keys.is_empty() {
            ring.rotate().await?;
        }
        Ok(ring)
    }

    /// Re-reads the active keys from the database.
    pub async fn reload(&self) -> Result<(), JwtError> {
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT kid, secret FROM signing_keys WHERE retired_at IS NULL ORDER BY created_at, kid",
        )
        .fetch_all(&self.db)
        .await?;
        let keys: Vec<Key> = rows
            .into_iter()
            .map(|(kid, secret)| Key { kid, secret })
            .collect();
        let by_kid = keys.iter().map(|k| (k.kid.clone(), k.clone())).collect();
        let mut g = self.inner.write().expect("lock");
        g.keys = keys;
        g.by_kid = by_kid;
        g.loaded = Instant::now();
        Ok(())
    }

    /// Adds a new signing key (it signs from now on; older keys still verify).
    pub async fn rotate(&self) -> Result<String, JwtError> {
        let kid = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
        let secret: [u8; 32] = rand::random();
        sqlx::query("INSERT INTO signing_keys (kid, secret) VALUES ($1, $2)")
            .bind(&kid)
            .bind(&secret[..])
            .execute(&self.db)
            .await?;
        self.reload().await?;
        Ok(kid)
    }

    /// Retires a key: tokens it signed stop verifying. False when there is no
    /// such active key.
    pub async fn retire(&self, kid: &str) -> Result<bool, JwtError> {
        let r = sqlx::query(
            "UPDATE signing_keys SET retired_at = now() WHERE kid = $1 AND retired_at IS NULL",
        )
        .bind(kid)
        .execute(&self.db)
        .await?;
        self.reload().await?;
        Ok(r.rows_affected() > 0)
    }

    /// Every key, newest first (active and retired).
    pub async fn list(&self) -> Result<Vec<KeyInfo>, JwtError> {
        Ok(sqlx::query_as(
            "SELECT kid, created_at, retired_at FROM signing_keys ORDER BY created_at DESC, kid DESC",
        )
        .fetch_all(&self.db)
        .await?)
    }

    /// The key id new tokens are signed with.
    pub fn signing_kid(&self) -> Option<String> {
        self.inner
            .read()
            .expect("lock")
            .keys
            .last()
            .map(|k| k.kid.clone())
    }

    async fn maybe_reload(&self) {
        let stale = self.inner.read().expect("lock").loaded.elapsed() > RELOAD_EVERY;
        if stale {
            if let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "reloading signing keys failed");
            }
        }
    }

    /// Signs claims with the newest key. Claims must carry `exp`, `iss`, `aud`.
    pub async fn sign<C: Serialize>(&self, claims: &C) -> Result<String, JwtError> {
        self.maybe_reload().await;
        let key = self
            .inner
            .read()
            .expect("lock")
            .keys
            .last()
            .cloned()
            .ok_or(JwtError::UnknownKey)?;
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid.clone());
        encode(&header, claims, &EncodingKey::from_secret(&key.secret))
            .map_err(|e| JwtError::Invalid(e.to_string()))
    }

    /// Verifies a token for `audience`: HS256 only, known `kid`, valid `exp`/`iss`/`aud`.
    pub async fn verify<C: DeserializeOwned>(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<C, JwtError> {
        self.maybe_reload().await;
        let header = decode_header(token).map_err(|e| JwtError::Invalid(e.to_string()))?;
        if header.alg != Algorithm::HS256 {
            return Err(JwtError::Invalid("algorithm not allowed".into()));
        }
        let kid = header
            .kid
            .ok_or_else(|| JwtError::Invalid("missing kid".into()))?;
        if kid.is_empty() || kid.len() > 64 {
            return Err(JwtError::UnknownKey);
        }
        let mut key = self.inner.read().expect("lock").by_kid.get(&kid).cloned();
        if key.is_none() {
            // A replica may have rotated since the last reload; reload, but at
            // most once a second.
            let due = {
                let mut g = self.inner.write().expect("lock");
                let due = g
                    .miss_reload
                    .is_none_or(|t| t.elapsed() > MISS_RELOAD_EVERY);
                if due {
                    g.miss_reload = Some(Instant::now());
                }
                due
            };
            if due {
                self.reload().await?;
                key = self.inner.read().expect("lock").by_kid.get(&kid).cloned();
            }
        }
        let key = key.ok_or(JwtError::UnknownKey)?;
        let mut v = Validation::new(Algorithm::HS256);
        v.set_audience(&[audience]);
        v.set_issuer(&[ISSUER]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.leeway = LEEWAY_S;
        v.validate_nbf = true;
        decode::<C>(token, &DecodingKey::from_secret(&key.secret), &v)
            .map(|d| d.claims)
            .map_err(|e| JwtError::Invalid(e.to_string()))
    }
}

/// Seconds since the epoch, `secs` from now.
pub fn expires_in(secs: i64) -> i64 {
    chrono::Utc::now().timestamp() + secs
}
