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
    for chunk in blobs.chunks(2000) {
        let oids: Vec<&str> = chunk.iter().map(|b| b.oid.as_str()).collect();
        let lfs: Vec<bool> = chunk.iter().map(|b| b.is_lfs).collect();
        let shas: Vec<&str> = chunk.iter().map(|b| b.sha256.as_str()).collect();
        let sizes: Vec<i64> = chunk.iter().map(|b| b.size).collect();
        let pointers: Vec<Option<i32>> = chunk.iter().map(|b| b.pointer_size).collect();
        sqlx::query(
            "INSERT INTO git_blobs (oid, is_lfs, sha256, size, pointer_size)
             SELECT * FROM UNNEST($1::text[], $2::bool[], $3::text[], $4::int8[], $5::int4[])
             ON CONFLICT DO NOTHING",
        )
        .bind(&oids)
        .bind(&lfs)
        .bind(&shas)
        .bind(&sizes)
        .bind(&pointers)
        .execute(&mut *db)
        .await?;
    }
    Ok(())
}

/// A row of a tree: a name and what it points at, without blob details.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TreeRow {
    pub tree_oid: String,
    pub name: String,
    pub mode: String,
    pub oid: String,
}

/// The direct entries of several trees (one query per level of a commit's
/// work tree). Blob details are not read: a commit needs them only for the
/// paths it touches ([`blob_sizes`]), and looking them up for every entry of
/// a folder of a thousand files was a third of a one-file commit's time.
pub async fn entries_of_trees(
    db: impl PgExecutor<'_>,
    tree_oids: &[String],
) -> sqlx::Result<Vec<TreeRow>> {
    sqlx::query_as(
        "SELECT tree_oid, name, mode, oid FROM git_tree_entries WHERE tree_oid = ANY($1)",
    )
    .bind(tree_oids)
    .fetch_all(db)
    .await
}

/// The sha256 and size of the git blobs `oids` that have a row, by blob id.
pub async fn blob_sizes(
    db: impl PgExecutor<'_>,
    oids: &[String],
) -> sqlx::Result<std::collections::HashMap<String, (String, i64)>> {
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT oid, sha256, size FROM git_blobs WHERE oid = ANY($1)")
            .bind(oids)
            .fetch_all(db)
            .await?;
    Ok(rows.into_iter().map(|(o, s, z)| (o, (s, z))).collect())
}

/// What a commit keeps about its paths for deriving metadata (see
/// `registry::path_stats`); None for commits older than the column.
pub async fn path_stats(
    db: impl PgExecutor<'_>,
    repo_id: i64,
    oid: &str,
) -> sqlx::Result<Option<serde_json::Value>> {
    let row: Option<(Option<Json<serde_json::Value>>,)> =
        sqlx::query_as("SELECT path_stats FROM commits WHERE repo_id = $1 AND oid = $2")
            .bind(repo_id)
            .bind(oid)
            .fetch_optional(db)
            .await?;
    Ok(row.and_then(|r| r.0).map(|j| j.0))
}

/// The blob columns of a row (None when its `is_lfs` is null: no blob).
fn blob_from_row(r: &sqlx::postgres::PgRow) -> Option<BlobInfo> {
    r.get::<Option<bool>, _>("is_lfs").map(|is_lfs| BlobInfo {
        is_lfs,
        sha256: r.get("sha256"),
        size: r.get("size"),
        pointer_size: r.get("pointer_size"),
        xet_hash: r
            .get::<Option<Vec<u8>>, _>("xet_file")
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .map(|raw| hub_xet::hash::hash_string(&hub_xet::hash::hash_from_raw(raw))),
    })
}

fn entry_from_row(prefix: &str, r: &sqlx::postgres::PgRow) -> Entry {
    let path: String = r.get("path");
    let mode: String = r.get("mode");
    let blob = blob_from_row(r);
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

/// The columns of an [`Entry`] row, from `e` (an entry) and `b` ([`blob_of`]).
const ENTRY_COLS: &str = "e.name AS path, e.mode, e.oid AS oid, b.is_lfs, b.sha256 AS sha256, b.size, b.pointer_size, b.xet_file";

/// The blob row (with the Xet file of an LFS blob) of the git object `oid`,
/// for a `LEFT JOIN LATERAL`: looked up by index for each entry, so a listing
/// costs its own entries. A plain join lets the planner hash every blob of
/// the hub once a listing has a few hundred entries.
fn blob_of(oid: &str) -> String {
    format!(
        "SELECT g.is_lfs, g.sha256, g.size, g.pointer_size,
                (SELECT x.xet_file FROM blobs x WHERE x.sha256 = g.sha256 AND g.is_lfs) AS xet_file
         FROM git_blobs g WHERE g.oid = {oid} LIMIT 1"
    )
}

/// Blob details of git objects, by id (one query; objects without a blob row
/// are left out).
async fn blob_infos(
    db: &mut PgConnection,
    oids: &[&str],
) -> sqlx::Result<std::collections::HashMap<String, BlobInfo>> {
    if oids.is_empty() {
        return Ok(Default::default());
    }
    let rows = sqlx::query(
        "SELECT g.oid, g.is_lfs, g.sha256, g.size, g.pointer_size,
                (SELECT x.xet_file FROM blobs x WHERE x.sha256 = g.sha256 AND g.is_lfs) AS xet_file
         FROM git_blobs g WHERE g.oid = ANY($1)",
    )
    .bind(oids)
    .fetch_all(&mut *db)
    .await?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((r.get("oid"), blob_from_row(r)?)))
        .collect())
}

/// A tree entry without its blob details.
#[derive(Debug, Clone)]
struct Bare {
    name: String,
    mode: String,
    oid: String,
}

/// Up to `limit` entries of a tree by name, after `after` (one index range
/// read).
async fn names_after(
    db: &mut PgConnection,
    tree_oid: &str,
    after: Option<&str>,
    limit: usize,
) -> sqlx::Result<Vec<Bare>> {
    let rows: Vec<(String, String, String)> = match after {
        None => {
            sqlx::query_as(
                "SELECT name, mode, oid FROM git_tree_entries WHERE tree_oid = $1
                 ORDER BY name LIMIT $2",
            )
            .bind(tree_oid)
            .bind(limit as i64)
            .fetch_all(&mut *db)
            .await?
        }
        Some(a) => {
            sqlx::query_as(
                "SELECT name, mode, oid FROM git_tree_entries WHERE tree_oid = $1 AND name > $2
                 ORDER BY name LIMIT $3",
            )
            .bind(tree_oid)
            .bind(a)
            .bind(limit as i64)
            .fetch_all(&mut *db)
            .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|(name, mode, oid)| Bare { name, mode, oid })
        .collect())
}

/// A page of a listing ([`list_page`]).
#[derive(Debug, Clone)]
pub struct Page {
    pub entries: Vec<Entry>,
    /// Whether entries follow the last one.
    pub more: bool,
}

/// One folder being listed by [`list_page`].
struct Frame {
    oid: String,
    /// Its path below the listed tree ("" for the tree itself).
    dir: String,
    /// The last name taken from it.
    after: Option<String>,
    /// Names read ahead, not taken yet.
    buf: std::collections::VecDeque<Bare>,
    /// Whether `buf` holds everything after `after`.
    exhausted: bool,
}

impl Frame {
    fn new(oid: String, dir: String, after: Option<String>) -> Self {
        Self {
            oid,
            dir,
            after,
            buf: Default::default(),
            exhausted: false,
        }
    }
}

fn join_path(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// A page of the listing of the tree `tree_oid` (its entries shown below
/// `prefix`): at most `limit` entries after the entry at `after` (a path
/// relative to the tree: the last entry of the previous page).
///
/// The order is a folder's entries by name (in the database's collation:
/// bytewise on the hub's own cluster), each folder followed by its contents
/// when `recursive`: a depth-first walk. A page reads at most `limit + 1`
/// names per folder it visits (index range reads), resumes by looking up the
/// folders along `after`, and reads the page's blobs in one query, so its
/// cost does not depend on the size of the tree or of the hub. None when
/// `after` is no entry of this listing (a cursor of another listing).
pub async fn list_page(
    db: &mut PgConnection,
    tree_oid: &str,
    prefix: &str,
    recursive: bool,
    after: Option<&str>,
    limit: usize,
) -> sqlx::Result<Option<Page>> {
    let mut stack: Vec<Frame> = Vec::new();
    match after {
        None => stack.push(Frame::new(tree_oid.to_string(), String::new(), None)),
        Some(after) => {
            let segs: Vec<&str> = after.split('/').collect();
            if segs.iter().any(|s| s.is_empty()) || (!recursive && segs.len() > 1) {
                return Ok(None);
            }
            let mut tree = tree_oid.to_string();
            let mut dir = String::new();
            for (i, seg) in segs.iter().enumerate() {
                let row: Option<(String, String)> = sqlx::query_as(
                    "SELECT mode, oid FROM git_tree_entries WHERE tree_oid = $1 AND name = $2",
                )
                .bind(&tree)
                .bind(seg)
                .fetch_optional(&mut *db)
                .await?;
                let Some((mode, oid)) = row else {
                    return Ok(None);
                };
                let last = i + 1 == segs.len();
                stack.push(Frame::new(tree.clone(), dir.clone(), Some(seg.to_string())));
                dir = join_path(&dir, seg);
                if mode == "40000" {
                    if last && recursive {
                        stack.push(Frame::new(oid.clone(), dir.clone(), None));
                    }
                    tree = oid;
                } else if !last {
                    return Ok(None);
                }
            }
        }
    }
    let want = limit + 1;
    let mut out: Vec<(String, Bare)> = Vec::new();
    while out.len() < want {
        let Some(top) = stack.last_mut() else { break };
        if top.buf.is_empty() {
            if top.exhausted {
                stack.pop();
                continue;
            }
            let n = want - out.len();
            let rows = names_after(&mut *db, &top.oid, top.after.as_deref(), n).await?;
            top.exhausted = rows.len() < n;
            if rows.is_empty() {
                stack.pop();
                continue;
            }
            top.buf = rows.into();
        }
        let Some(e) = top.buf.pop_front() else {
            continue;
        };
        top.after = Some(e.name.clone());
        let path = join_path(&top.dir, &e.name);
        if recursive && e.mode == "40000" {
            let child = Frame::new(e.oid.clone(), path.clone(), None);
            out.push((path, e));
            stack.push(child);
        } else {
            out.push((path, e));
        }
    }
    let more = out.len() > limit;
    out.truncate(limit);
    let oids: Vec<&str> = out
        .iter()
        .filter(|(_, e)| e.mode != "40000")
        .map(|(_, e)| e.oid.as_str())
        .collect();
    let blobs = blob_infos(&mut *db, &oids).await?;
    let entries = out
        .iter()
        .map(|(path, e)| Entry {
            path: join_path(prefix, path),
            mode: e.mode.clone(),
            oid: e.oid.clone(),
            blob: if e.mode == "40000" {
                None
            } else {
                // Entries sharing a blob each get its details.
                blobs.get(&e.oid).cloned()
            },
        })
        .collect();
    Ok(Some(Page { entries, more }))
}

/// The entries at `paths` below a root tree (files or folders; paths that
/// name nothing are left out), in the order of `paths`. One query per path
/// depth for all paths, and one for their blobs.
pub async fn lookup_paths(
    db: &mut PgConnection,
    root_tree: &str,
    paths: &[&str],
) -> sqlx::Result<Vec<Entry>> {
    // (path index, segments, tree reached so far, entry found at the last segment)
    let segs: Vec<Vec<&str>> = paths.iter().map(|p| p.split('/').collect()).collect();
    let mut at: Vec<Option<String>> = vec![Some(root_tree.to_string()); paths.len()];
    let mut found: Vec<Option<Bare>> = vec![None; paths.len()];
    let depth = segs.iter().map(Vec::len).max().unwrap_or(0);
    for level in 0..depth {
        let mut pairs: std::collections::BTreeSet<(&str, &str)> = Default::default();
        for (i, s) in segs.iter().enumerate() {
            if let (Some(t), Some(seg)) = (&at[i], s.get(level)) {
                pairs.insert((t.as_str(), seg));
            }
        }
        if pairs.is_empty() {
            break;
        }
        let (trees, names): (Vec<&str>, Vec<&str>) = pairs.into_iter().unzip();
        let rows: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT q.t, q.n, e.mode, e.oid
             FROM UNNEST($1::text[], $2::text[]) AS q(t, n),
                  LATERAL (SELECT mode, oid FROM git_tree_entries
                           WHERE tree_oid = q.t AND name = q.n) e",
        )
        .bind(&trees)
        .bind(&names)
        .fetch_all(&mut *db)
        .await?;
        let hits: std::collections::HashMap<(String, String), (String, String)> = rows
            .into_iter()
            .map(|(t, n, mode, oid)| ((t, n), (mode, oid)))
            .collect();
        for (i, s) in segs.iter().enumerate() {
            let (Some(t), Some(seg)) = (at[i].take(), s.get(level)) else {
                continue;
            };
            let Some((mode, oid)) = hits.get(&(t, seg.to_string())) else {
                continue;
            };
            if level + 1 == s.len() {
                found[i] = Some(Bare {
                    name: seg.to_string(),
                    mode: mode.clone(),
                    oid: oid.clone(),
                });
            } else if mode == "40000" {
                at[i] = Some(oid.clone());
            }
        }
    }
    let oids: Vec<&str> = found
        .iter()
        .flatten()
        .filter(|e| e.mode != "40000")
        .map(|e| e.oid.as_str())
        .collect();
    let blobs = blob_infos(&mut *db, &oids).await?;
    Ok(paths
        .iter()
        .zip(found)
        .filter_map(|(p, e)| {
            let e = e?;
            Some(Entry {
                path: p.to_string(),
                blob: (e.mode != "40000")
                    .then(|| blobs.get(&e.oid).cloned())
                    .flatten(),
                mode: e.mode,
                oid: e.oid,
            })
        })
        .collect())
}

/// Every entry (files and folders) below a tree, recursively, in path order.
pub async fn list_recursive(
    db: impl PgExecutor<'_>,
    tree_oid: &str,
    prefix: &str,
) -> sqlx::Result<Vec<Entry>> {
    let rows = sqlx::query(&format!(
        "WITH RECURSIVE t(path, mode, oid) AS (
            SELECT e.name, e.mode, e.oid FROM git_tree_entries e WHERE e.tree_oid = $1
            UNION ALL
            SELECT t.path || '/' || e.name, e.mode, e.oid
            FROM t JOIN git_tree_entries e ON e.tree_oid = t.oid WHERE t.mode = '40000'
         )
         SELECT t.path, t.mode, t.oid AS oid, b.is_lfs, b.sha256 AS sha256, b.size, b.pointer_size, b.xet_file
         FROM t LEFT JOIN LATERAL ({BLOB_OF_E}) b ON t.mode <> '40000'
         ORDER BY t.path COLLATE \"C\"",
        BLOB_OF_E = blob_of("t.oid")
    ))
    .bind(tree_oid)
    .fetch_all(db)
    .await?;
    Ok(rows.iter().map(|r| entry_from_row(prefix, r)).collect())
}

/// The top-level entries of many commits' trees in one query, by (repo id,
/// commit id): what sizes a model (its weight files, `config.json`). A commit
/// that is not found is left out; one with an empty tree has no entries.
pub async fn top_level_files(
    db: impl PgExecutor<'_>,
    commits: &[(i64, String)],
) -> sqlx::Result<std::collections::HashMap<(i64, String), Vec<Entry>>> {
    let mut out = std::collections::HashMap::new();
    if commits.is_empty() {
        return Ok(out);
    }
    let repos: Vec<i64> = commits.iter().map(|c| c.0).collect();
    let oids: Vec<&str> = commits.iter().map(|c| c.1.as_str()).collect();
    let rows = sqlx::query(&format!(
        "SELECT c.repo_id, c.oid AS commit_oid, e.name AS path, e.mode, e.oid AS oid,
                b.is_lfs, b.sha256 AS sha256, b.size, b.pointer_size, b.xet_file
         FROM unnest($1::bigint[], $2::text[]) AS u(repo, oid)
         JOIN commits c ON c.repo_id = u.repo AND c.oid = u.oid
         LEFT JOIN git_tree_entries e ON e.tree_oid = c.tree_oid
         LEFT JOIN LATERAL ({BLOB_OF_E}) b ON e.mode <> '40000'
         ORDER BY c.repo_id, c.oid, e.name COLLATE \"C\"",
        BLOB_OF_E = blob_of("e.oid")
    ))
    .bind(&repos)
    .bind(&oids)
    .fetch_all(db)
    .await?;
    for r in &rows {
        let files: &mut Vec<Entry> = out
            .entry((r.get("repo_id"), r.get("commit_oid")))
            .or_default();
        if r.get::<Option<String>, _>("path").is_some() {
            files.push(entry_from_row("", r));
        }
    }
    Ok(out)
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
        let row = sqlx::query(&format!(
            "SELECT {ENTRY_COLS} FROM git_tree_entries e LEFT JOIN LATERAL ({BLOB_OF_E}) b ON e.mode <> '40000'
             WHERE e.tree_oid = $1 AND e.name = $2",
            BLOB_OF_E = blob_of("e.oid")
        ))
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
    /// The exact object body of a commit pushed with git (None for commits
    /// the hub wrote, which are rebuilt from the columns).
    pub raw: Option<Vec<u8>>,
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

const COMMIT_COLS: &str = "oid AS oid, tree_oid AS tree_oid, parent_oids, author_name, author_email, author_time, author_tz, title, message, depth, created_at, card_data, config_info, tags, pipeline_tag, library_name, license, safetensors, raw";

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
    /// See `registry::path_stats`.
    pub path_stats: Option<&'a serde_json::Value>,
    /// The pushed object body, when `object` does not rebuild it (see [`CommitRow::raw`]).
    pub raw: Option<&'a [u8]>,
}

pub async fn insert_commit(db: &mut PgConnection, c: &NewCommit<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO commits (repo_id, oid, tree_oid, parent_oids, author_name, author_email, author_time, author_tz,
            title, message, depth, card_data, config_info, tags, pipeline_tag, library_name, license, safetensors, author_id, path_stats, raw)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
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
    .bind(c.path_stats.map(Json))
    .bind(c.raw)
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
         FROM q JOIN LATERAL (
           -- By index (commit_changes_repo_path): the path itself, and the
           -- paths below it, which sort bytewise between 'path/' and 'path0'.
           SELECT x.commit_oid FROM commit_changes x
           WHERE x.repo_id = $1 AND x.path COLLATE \"C\" = q.path
           UNION ALL
           SELECT x.commit_oid FROM commit_changes x
           WHERE x.repo_id = $1 AND x.path COLLATE \"C\" > q.path || '/'
             AND x.path COLLATE \"C\" < q.path || '0'
         ) cc ON true
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

/// Every commit of a repo as (id, tree, parents): the graph a git fetch walks.
pub async fn commit_graph(
    db: impl PgExecutor<'_>,
    repo_id: i64,
) -> sqlx::Result<Vec<(String, String, Vec<String>)>> {
    sqlx::query_as("SELECT oid, tree_oid, parent_oids FROM commits WHERE repo_id = $1")
        .bind(repo_id)
        .fetch_all(db)
        .await
}

/// The commits `oids` of a repo (those that exist), in no particular order.
pub async fn commits_by_oids(
    db: impl PgExecutor<'_>,
    repo_id: i64,
    oids: &[String],
) -> sqlx::Result<Vec<CommitRow>> {
    sqlx::query_as(&format!(
        "SELECT {COMMIT_COLS} FROM commits WHERE repo_id = $1 AND oid = ANY($2)"
    ))
    .bind(repo_id)
    .bind(oids)
    .fetch_all(db)
    .await
}

/// Where the bytes of git blobs are: (oid, is_lfs, sha256, size) of those that have a row.
pub async fn blob_rows(
    db: impl PgExecutor<'_>,
    oids: &[String],
) -> sqlx::Result<Vec<(String, bool, String, i64)>> {
    sqlx::query_as("SELECT oid, is_lfs, sha256, size FROM git_blobs WHERE oid = ANY($1)")
        .bind(oids)
        .fetch_all(db)
        .await
}
