//! Git objects in Postgres: trees (content-addressed rows), blobs (where the
//! bytes of a git blob are), commits and the paths each commit changed.

use crate::git::tree::BuiltTree;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor, Row};

/// A file or folder of a tree listing, with what the API shows about it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: String,
    pub mode: String,
    pub oid: String,
    /// Blob details (None for folders).
    pub blob: Option<BlobInfo>,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        self.mode == "40000"
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BlobInfo {
    pub is_lfs: bool,
    pub sha256: String,
    pub size: i64,
    pub pointer_size: Option<i32>,
    /// The Xet file hash string of an LFS file stored through Xet
    /// (`X-Xet-Hash`, the tree's `xetHash`).
    pub xet_hash: Option<String>,
}

/// Stores trees (idempotent: trees are content-addressed).
pub async fn insert_trees(db: &mut PgConnection, trees: &[BuiltTree]) -> sqlx::Result<()> {
    for chunk in trees.chunks(500) {
        let oids: Vec<&str> = chunk.iter().map(|t| t.oid.as_str()).collect();
        sqlx::query(
            "INSERT INTO git_trees (oid) SELECT * FROM UNNEST($1::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(&oids)
        .execute(&mut *db)
        .await?;
    }
    let mut tree_oids = Vec::new();
    let mut names = Vec::new();
    let mut modes = Vec::new();
    let mut oids = Vec::new();
    for t in trees {
        for e in &t.entries {
            tree_oids.push(t.oid.as_str());
            names.push(e.name.as_str());
            modes.push(e.mode.as_str());
            oids.push(e.oid.as_str());
        }
    }
    for start in (0..names.len()).step_by(2000) {
        let end = (start + 2000).min(names.len());
        sqlx::query(
            "INSERT INTO git_tree_entries (tree_oid, name, mode, oid)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(&tree_oids[start..end])
        .bind(&names[start..end])
        .bind(&modes[start..end])
        .bind(&oids[start..end])
        .execute(&mut *db)
        .await?;
    }
    Ok(())
}

/// A blob row to store.
#[derive(Debug, Clone)]
pub struct NewBlob {
    pub oid: String,
    pub is_lfs: bool,
    pub sha256: String,
    pub size: i64,
    pub pointer_size: Option<i32>,
}

pub async fn insert_blobs(db: &mut PgConnection, blobs: &[NewBlob]) -> sqlx::Result<()> {
    for b in blobs {
        sqlx::query(
            "INSERT INTO git_blobs (oid, is_lfs, sha256, size, pointer_size) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
        )
        .bind(&b.oid)
        .bind(b.is_lfs)
        .bind(&b.sha256)
        .bind(b.size)
        .bind(b.pointer_size)
        .execute(&mut *db)
        .await?;
    }
    Ok(())
}

fn entry_from_row(prefix: &str, r: &sqlx::postgres::PgRow) -> Entry {
    let path: String = r.get("path");
    let mode: String = r.get("mode");
    let blob = r.get::<Option<bool>, _>("is_lfs").map(|is_lfs| BlobInfo {
        is_lfs,
        sha256: r.get("sha256"),
        size: r.get("size"),
        pointer_size: r.get("pointer_size"),
        xet_hash: r
            .get::<Option<Vec<u8>>, _>("xet_file")
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .map(|raw| hub_xet::hash::hash_string(&hub_xet::hash::hash_from_raw(raw))),
    });
    Entry {
        path: if prefix.is_empty() {
            path
        } else {
            format!("{prefix}/{path}")
        },
        mode,
        oid: r.get("oid"),
        blob,
    }
}

/// Every entry (files and folders) below a tree, recursively, in path order.
pub async fn list_recursive(
    db: impl PgExecutor<'_>,
    tree_oid: &str,
    prefix: &str,
) -> sqlx::Result<Vec<Entry>> {
    let rows = sqlx::query(
        "WITH RECURSIVE t(path, mode, oid) AS (
            SELECT e.name, e.mode, e.oid FROM git_tree_entries e WHERE e.tree_oid = $1
            UNION ALL
            SELECT t.path || '/' || e.name, e.mode, e.oid
            FROM t JOIN git_tree_entries e ON e.tree_oid = t.oid WHERE t.mode = '40000'
         )
         SELECT t.path, t.mode, t.oid AS oid, b.is_lfs, b.sha256 AS sha256, b.size, b.pointer_size, x.xet_file
         FROM t LEFT JOIN git_blobs b ON b.oid = t.oid AND t.mode <> '40000'
         LEFT JOIN blobs x ON x.sha256 = b.sha256 AND b.is_lfs
         ORDER BY t.path COLLATE \"C\"",
    )
    .bind(tree_oid)
    .fetch_all(db)
    .await?;
    Ok(rows.iter().map(|r| entry_from_row(prefix, r)).collect())
}

/// The direct entries of a tree.
pub async fn list_tree(
    db: impl PgExecutor<'_>,
    tree_oid: &str,
    prefix: &str,
) -> sqlx::Result<Vec<Entry>> {
    let rows = sqlx::query(
        "SELECT e.name AS path, e.mode, e.oid AS oid, b.is_lfs, b.sha256 AS sha256, b.size, b.pointer_size, x.xet_file
         FROM git_tree_entries e LEFT JOIN git_blobs b ON b.oid = e.oid AND e.mode <> '40000'
         LEFT JOIN blobs x ON x.sha256 = b.sha256 AND b.is_lfs
         WHERE e.tree_oid = $1 ORDER BY e.name COLLATE \"C\"",
    )
    .bind(tree_oid)
    .fetch_all(db)
    .await?;
    Ok(rows.iter().map(|r| entry_from_row(prefix, r)).collect())
}

/// Resolves a path below a root tree to its entry (walking one segment per query).
pub async fn lookup_path(
    db: &mut PgConnection,
    root_tree: &str,
    path: &str,
) -> sqlx::Result<Option<Entry>> {
    let mut tree = root_tree.to_string();
    let segs: Vec<&str> = path.split('/').collect();
    for (i, seg) in segs.iter().enumerate() {
        let row = sqlx::query(
            "SELECT e.name AS path, e.mode, e.oid AS oid, b.is_lfs, b.sha256 AS sha256, b.size, b.pointer_size, x.xet_file
             FROM git_tree_entries e LEFT JOIN git_blobs b ON b.oid = e.oid AND e.mode <> '40000'
             LEFT JOIN blobs x ON x.sha256 = b.sha256 AND b.is_lfs
             WHERE e.tree_oid = $1 AND e.name = $2",
        )
        .bind(&tree)
        .bind(seg)
        .fetch_optional(&mut *db)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let entry = entry_from_row("", &row);
        if i + 1 == segs.len() {
            return Ok(Some(Entry {
                path: path.to_string(),
                ..entry
            }));
        }
        if !entry.is_dir() {
            return Ok(None);
        }
        tree = entry.oid;
    }
    Ok(None)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CommitRow {
    pub oid: String,
    pub tree_oid: String,
    pub parent_oids: Vec<String>,
    pub author_name: String,
    pub author_email: String,
    pub author_time: i64,
    pub author_tz: String,
    pub title: String,
    pub message: String,
    pub depth: i64,
    pub created_at: DateTime<Utc>,
    pub card_data: Json<serde_json::Value>,
    pub config_info: Json<serde_json::Value>,
    pub tags: Vec<String>,
    pub pipeline_tag: Option<String>,
    pub library_name: Option<String>,
    pub license: Option<String>,
    pub safetensors: Option<Json<serde_json::Value>>,
}

impl CommitRow {
    /// The commit time (author time) as a UTC timestamp.
    pub fn time(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.author_time, 0).unwrap_or(self.created_at)
    }
    /// The commit message without its title line.
    pub fn description(&self) -> &str {
        self.message
            .split_once("\n\n")
            .map(|(_, d)| d.trim_end_matches('\n'))
            .unwrap_or("")
    }
}

const COMMIT_COLS: &str = "oid AS oid, tree_oid AS tree_oid, parent_oids, author_name, author_email, author_time, author_tz, title, message, depth, created_at, card_data, config_info, tags, pipeline_tag, library_name, license, safetensors";

pub async fn commit(
    db: impl PgExecutor<'_>,
    repo_id: i64,
    oid: &str,
) -> sqlx::Result<Option<CommitRow>> {
    sqlx::query_as(&format!(
        "SELECT {COMMIT_COLS} FROM commits WHERE repo_id = $1 AND oid = $2"
    ))
    .bind(repo_id)
    .bind(oid)
    .fetch_optional(db)
    .await
}

/// Commits whose id starts with `prefix` (for short ids).
pub async fn commits_by_prefix(
    db: impl PgExecutor<'_>,
    repo_id: i64,
    prefix: &str,
) -> sqlx::Result<Vec<String>> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT oid FROM commits WHERE repo_id = $1 AND oid LIKE $2 || '%' LIMIT 2")
            .bind(repo_id)
            .bind(prefix)
            .fetch_all(db)
            .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// A page of history: `start` and its ancestors, newest first, skipping `skip`.
pub async fn history(
    db: impl PgExecutor<'_>,
    repo_id: i64,
    start: &str,
    skip: i64,
    limit: i64,
) -> sqlx::Result<Vec<CommitRow>> {
    sqlx::query_as(&format!(
        "WITH RECURSIVE h(oid, n) AS (
            SELECT oid, 0 FROM commits WHERE repo_id = $1 AND oid = $2
            UNION ALL
            SELECT p.parent_oids[1], h.n + 1 FROM h JOIN commits p ON p.repo_id = $1 AND p.oid = h.oid
            WHERE cardinality(p.parent_oids) > 0 AND h.n < $3 + $4
         )
         SELECT {} FROM h JOIN commits c ON c.repo_id = $1 AND c.oid = h.oid
         ORDER BY h.n OFFSET $3 LIMIT $4",
        COMMIT_COLS
            .split(", ")
            .map(|c| format!("c.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .bind(repo_id)
    .bind(start)
    .bind(skip)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A commit to store.
pub struct NewCommit<'a> {
    pub repo_id: i64,
    pub object: &'a crate::git::CommitObject,
    pub oid: &'a str,
    pub title: &'a str,
    pub depth: i64,
    pub meta: &'a crate::card::RepoMeta,
    pub author_id: Option<i64>,
}

pub async fn insert_commit(db: &mut PgConnection, c: &NewCommit<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO commits (repo_id, oid, tree_oid, parent_oids, author_name, author_email, author_time, author_tz,
            title, message, depth, card_data, config_info, tags, pipeline_tag, library_name, license, safetensors, author_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
         ON CONFLICT DO NOTHING",
    )
    .bind(c.repo_id)
    .bind(c.oid)
    .bind(&c.object.tree)
    .bind(&c.object.parents)
    .bind(&c.object.author.name)
    .bind(&c.object.author.email)
    .bind(c.object.author.time)
    .bind(&c.object.author.tz)
    .bind(c.title)
    .bind(&c.object.message)
    .bind(c.depth)
    .bind(Json(&c.meta.card_data))
    .bind(Json(&c.meta.config_info))
    .bind(&c.meta.tags)
    .bind(&c.meta.pipeline_tag)
    .bind(&c.meta.library_name)
    .bind(&c.meta.license)
    .bind(c.meta.safetensors.as_ref().map(Json))
    .bind(c.author_id)
    .execute(&mut *db)
    .await?;
    Ok(())
}

pub async fn insert_changes(
    db: &mut PgConnection,
    repo_id: i64,
    commit: &str,
    changes: &[(String, &'static str)],
) -> sqlx::Result<()> {
    for chunk in changes.chunks(2000) {
        let paths: Vec<&str> = chunk.iter().map(|c| c.0.as_str()).collect();
        let kinds: Vec<&str> = chunk.iter().map(|c| c.1).collect();
        sqlx::query(
            "INSERT INTO commit_changes (repo_id, commit_oid, path, change)
             SELECT $1, $2, p, k FROM UNNEST($3::text[], $4::text[]) AS x(p, k) ON CONFLICT DO NOTHING",
        )
        .bind(repo_id)
        .bind(commit)
        .bind(&paths)
        .bind(&kinds)
        .execute(&mut *db)
        .await?;
    }
    Ok(())
}

/// Paths a commit changed.
pub async fn changes(
    db: impl PgExecutor<'_>,
    repo_id: i64,
    commit: &str,
) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as(
        "SELECT path, change FROM commit_changes WHERE repo_id = $1 AND commit_oid = $2 ORDER BY path COLLATE \"C\"",
    )
    .bind(repo_id)
    .bind(commit)
    .fetch_all(db)
    .await
}

/// For each path (file or folder), the newest commit at or before `start` that changed it
/// (or something below it): (path, commit oid, title, author time).
pub async fn last_commits(
    db: impl PgExecutor<'_>,
    repo_id: i64,
    start: &str,
    paths: &[String],
) -> sqlx::Result<Vec<(String, String, String, i64)>> {
    sqlx::query_as(
        "WITH RECURSIVE h(oid, n) AS (
            SELECT oid, 0 FROM commits WHERE repo_id = $1 AND oid = $2
            UNION ALL
            SELECT p.parent_oids[1], h.n + 1 FROM h JOIN commits p ON p.repo_id = $1 AND p.oid = h.oid
            WHERE cardinality(p.parent_oids) > 0
         ),
         q(path) AS (SELECT * FROM UNNEST($3::text[]))
         SELECT DISTINCT ON (q.path) q.path, c.oid, c.title, c.author_time
         FROM q JOIN commit_changes cc ON cc.repo_id = $1 AND (cc.path = q.path OR starts_with(cc.path, q.path || '/'))
         JOIN h ON h.oid = cc.commit_oid
         JOIN commits c ON c.repo_id = $1 AND c.oid = h.oid
         ORDER BY q.path, h.n",
    )
    .bind(repo_id)
    .bind(start)
    .bind(paths)
    .fetch_all(db)
    .await
}

/// Parameter counts of validated safetensors blobs.
pub async fn safetensors_params(
    db: impl PgExecutor<'_>,
    shas: &[String],
) -> sqlx::Result<Vec<(String, Json<serde_json::Value>, i64)>> {
    sqlx::query_as("SELECT sha256, parameters, total FROM safetensors_meta WHERE sha256 = ANY($1)")
        .bind(shas)
        .fetch_all(db)
        .await
}

pub async fn insert_safetensors_meta(
    db: impl PgExecutor<'_>,
    sha: &str,
    params: &serde_json::Value,
    total: i64,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO safetensors_meta (sha256, parameters, total) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
        .bind(sha)
        .bind(Json(params))
        .bind(total)
        .execute(db)
        .await?;
    Ok(())
}
