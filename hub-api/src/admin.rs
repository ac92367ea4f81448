//! `hub-api admin ...`: users, organizations, members and tokens from the
//! command line (the same database as `serve`, usable while it runs).

use crate::auth::secrets;
use crate::config::AdminCommand;
use crate::db;
use crate::db::namespaces::Role;
use crate::domain::NamespaceName;
use anyhow::{bail, Context};
use sqlx::PgPool;
use std::io::Read;

/// Hashes a password with argon2id (off the async executor).
pub async fn hash_password(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
        let salt = SaltString::generate(&mut OsRng);
        argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))
    })
    .await?
}

/// A full name is free text, bounded.
fn check_fullname(full: Option<&str>) -> anyhow::Result<()> {
    match full {
        Some(f)
            if f.trim().is_empty()
                || f.chars().count() > 100
                || f.chars().any(char::is_control) =>
        {
            bail!("the full name must be 1 to 100 characters, without control characters")
        }
        _ => Ok(()),
    }
}

/// Creates a token and returns its secret (shown once).
pub async fn create_token(
    pool: &PgPool,
    user_id: i64,
    name: &str,
    scopes: &[String],
    expires_days: Option<u32>,
) -> anyhow::Result<(i64, String)> {
    for s in scopes {
        if crate::auth::Scope::parse(s).is_none() {
            bail!("unknown scope {s:?} (use read, write, inference, admin, worker)");
        }
    }
    let secret = secrets::new_secret();
    let hash = secrets::hash(&secret);
    let row = db::tokens::insert(
        pool,
        &db::tokens::NewToken {
            user_id,
            name,
            secret_hash: &hash,
            display_prefix: &secrets::display_prefix(&secret),
            scopes,
            restrict_namespaces: None,
            restrict_repos: None,
            expires_at: expires_days.map(|d| chrono::Utc::now() + chrono::Duration::days(d as i64)),
        },
    )
    .await?;
    Ok((row.id, secret))
}

pub async fn run(pool: &PgPool, cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::CreateUser {
            name,
            admin,
            password_stdin,
            email,
            fullname,
        } => {
            NamespaceName::parse(&name).map_err(|e| anyhow::anyhow!("{e}"))?;
            check_fullname(fullname.as_deref())?;
            let hash = if password_stdin {
                let mut pw = String::new();
                std::io::stdin().read_to_string(&mut pw)?;
                let pw = pw.trim_end_matches(['\n', '\r']).to_string();
                if pw.len() < 8 {
                    bail!("the password must have at least 8 characters");
                }
                Some(hash_password(pw).await?)
            } else {
                None
            };
            let mut conn = pool.acquire().await?;
            let id = db::namespaces::create_user(
                &mut conn,
                &name,
                email.as_deref(),
                hash.as_deref(),
                admin,
            )
            .await?
            .with_context(|| format!("the name {name:?} is taken"))?;
            if let Some(full) = &fullname {
                db::namespaces::set_fullname(&mut *conn, id, full).await?;
            }
            println!("created user {name} (id {id})");
        }
        AdminCommand::CreateOrg {
            name,
            owner,
            fullname,
            private_repos,
        } => {
            NamespaceName::parse(&name).map_err(|e| anyhow::anyhow!("{e}"))?;
            check_fullname(fullname.as_deref())?;
            let user = db::namespaces::user_by_name(pool, &owner)
                .await?
                .with_context(|| format!("no user named {owner:?}"))?;
            let mut tx = pool.begin().await?;
            let id = db::namespaces::insert_namespace(
                &mut *tx,
                &name,
                "org",
                fullname.as_deref().unwrap_or(&name),
            )
            .await?
            .with_context(|| format!("the name {name:?} is taken"))?;
            db::namespaces::set_member(&mut *tx, id, user.id, Role::Admin).await?;
            if private_repos {
                db::namespaces::set_private_by_default(&mut *tx, id, true).await?;
            }
            crate::audit::record(
                &mut *tx,
                None,
                id,
                "org.created",
                &name,
                serde_json::json!({"owner": owner, "private_repos": private_repos}),
            )
            .await?;
            tx.commit().await?;
            println!("created organization {name} (id {id}) owned by {owner}");
        }
        AdminCommand::AddMember { org, user, role } => {
            let o = db::namespaces::by_name(pool, &org)
                .await?
                .filter(|n| n.kind == "org")
                .with_context(|| format!("no organization named {org:?}"))?;
            let u = db::namespaces::user_by_name(pool, &user)
                .await?
                .with_context(|| format!("no user named {user:?}"))?;
            let role = Role::parse(&role).context("role must be admin, write or read")?;
            db::namespaces::set_member(pool, o.id, u.id, role).await?;
            crate::audit::record(
                pool,
                None,
                o.id,
                "member.added",
                &user,
                serde_json::json!({"role": role.as_str()}),
            )
            .await?;
            println!("{user} is now {} of {org}", role.as_str());
        }
        AdminCommand::CreateToken {
            user,
            scopes,
            name,
            expires_in,
        } => {
            let u = db::namespaces::user_by_name(pool, &user)
                .await?
                .with_context(|| format!("no user named {user:?}"))?;
            let (id, secret) = create_token(pool, u.id, &name, &scopes, expires_in).await?;
            crate::audit::record(
                pool,
                None,
                u.id,
                "token.created",
                &format!("token:{id}"),
                serde_json::json!({"name": name, "scopes": scopes}),
            )
            .await?;
            println!(
                "created token {id} ({name}) for {user} with scopes {}",
                scopes.join(",")
            );
            println!("{secret}");
        }
    }
    Ok(())
}
