//! Repositories: rows, lookup by id, listing and search.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgExecutor, QueryBuilder};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RepoRow {
    pub id: i64,
    pub namespace_id: i64,
    pub namespace: String,
    pub namespace_kind: String,
    pub name: String,
    pub repo_type: String,
    pub private: bool,
    pub gated: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_modified: DateTime<Utc>,
    pub downloads: i64,
    pub likes: i64,
    pub card_data: Json<serde_json::Value>,
    pub tags: Vec<String>,
    pub pipeline_tag: Option<String>,
    pub library_name: Option<String>,
    pub license: Option<String>,
    pub safetensors: Option<Json<serde_json::Value>>,
    pub used_storage: i64,
    /// Bumped by the database whenever the repo's refs move or one of its LFS
    /// objects is permanently removed (what `/resolve` may cache by).
    pub resolve_version: i64,
}

impl RepoRow {
    /// The repo id as clients write it (`ns/name`, or `name` for canonical repos).
    pub fn full_id(&self) -> String {
        if self.namespace == crate::domain::names::ROOT_NAMESPACE {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        }
    }
    /// A model row with everything but its ids, names and privacy empty (unit tests).
    #[cfg(test)]
    pub fn sample(id: i64, namespace_id: i64, namespace: &str, name: &str, private: bool) -> Self {
        let now = chrono::Utc::now();
        RepoRow {
            id,
            namespace_id,
            namespace: namespace.into(),
            namespace_kind: "org".into(),
            name: name.into(),
            repo_type: "model".into(),
            private,
            gated: None,
            created_at: now,
            last_modified: now,
            downloads: 0,
            likes: 0,
            card_data: sqlx::types::Json(serde_json::Value::Null),
            tags: vec![],
            pipeline_tag: None,
            library_name: None,
            license: None,
            safetensors: None,
            used_storage: 0,
            resolve_version: 0,
        }
    }

    pub fn kind(&self) -> crate::domain::RepoType {
        if self.repo_type == "dataset" {
            crate::domain::RepoType::Dataset
        } else {
            crate::domain::RepoType::Model
        }
    }
}

pub const REPO_COLS: &str = "r.id, r.namespace_id, n.name AS namespace, n.kind AS namespace_kind, r.name, r.repo_type, r.private, r.gated, r.created_at, r.last_modified, r.downloads, r.likes, r.card_data, r.tags, r.pipeline_tag, r.library_name, r.license, r.safetensors, r.used_storage, r.resolve_version";

pub async fn find(
    db: impl PgExecutor<'_>,
    repo_type: &str,
    namespace: &str,
    name: &str,
) -> sqlx::Result<Option<RepoRow>> {
    sqlx::query_as(&format!(
        "SELECT {REPO_COLS} FROM repos r JOIN namespaces n ON n.id = r.namespace_id
         WHERE lower(n.name) = lower($1) AND r.repo_type = $2 AND lower(r.name) = lower($3)"
    ))
    .bind(namespace)
    .bind(repo_type)
    .bind(name)
    .fetch_optional(db)
    .await
}

/// [`find`] for several repos in one round trip: for each (repo type,
/// namespace, name), its row if it exists, in the order given. Each key is
/// looked up on its own (a lateral subquery with `find`'s condition), so the
/// plan is `find`'s index lookup per key whatever the planner guesses of the
/// array's length.
pub async fn find_many(
    db: impl PgExecutor<'_>,
    keys: &[(String, String, String)],
) -> sqlx::Result<Vec<Option<RepoRow>>> {
    #[derive(sqlx::FromRow)]
    struct Hit {
        i: i64,
        #[sqlx(flatten)]
        row: RepoRow,
    }
    let (types, (namespaces, names)): (Vec<&str>, (Vec<&str>, Vec<&str>)) = keys
        .iter()
        .map(|(t, ns, n)| (t.as_str(), (ns.as_str(), n.as_str())))
        .unzip();
    let hits: Vec<Hit> = sqlx::query_as(&format!(
        "SELECT q.i, x.* FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS q(kind, ns, name, i)
         CROSS JOIN LATERAL (
           SELECT {REPO_COLS} FROM repos r JOIN namespaces n ON n.id = r.namespace_id
           WHERE lower(n.name) = lower(q.ns) AND r.repo_type = q.kind AND lower(r.name) = lower(q.name)
           LIMIT 1) x"
    ))
    .bind(&types)
    .bind(&namespaces)
    .bind(&names)
    .fetch_all(db)
    .await?;
    let mut out: Vec<Option<RepoRow>> = vec![None; keys.len()];
    for h in hits {
        if let Some(slot) = usize::try_from(h.i - 1).ok().and_then(|i| out.get_mut(i)) {
            *slot = Some(h.row);
        }
    }
    Ok(out)
}

pub async fn by_id(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<Option<RepoRow>> {
    sqlx::query_as(&format!(
        "SELECT {REPO_COLS} FROM repos r JOIN namespaces n ON n.id = r.namespace_id WHERE r.id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Inserts a repo row; `Ok(None)` if the name is taken in that namespace.
pub async fn insert(
    db: impl PgExecutor<'_>,
    namespace_id: i64,
    name: &str,
    repo_type: &str,
    private: bool,
) -> sqlx::Result<Option<i64>> {
    let r: Option<(i64,)> = sqlx::query_as(
        "INSERT INTO repos (namespace_id, name, repo_type, private) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(namespace_id)
    .bind(name)
    .bind(repo_type)
    .bind(private)
    .fetch_optional(db)
    .await?;
    Ok(r.map(|r| r.0))
}

pub async fn delete(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM repos WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Metadata of the default branch head, cached on the repo for listing and search.
pub async fn set_head_metadata(
    db: impl PgExecutor<'_>,
    id: i64,
    meta: &crate::card::RepoMeta,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE repos SET card_data = $2, tags = $3, pipeline_tag = $4, library_name = $5, license = $6,
         safetensors = $7, last_modified = now() WHERE id = $1",
    )
    .bind(id)
    .bind(Json(&meta.card_data))
    .bind(&meta.tags)
    .bind(&meta.pipeline_tag)
    .bind(&meta.library_name)
    .bind(&meta.license)
    .bind(meta.safetensors.as_ref().map(Json))
    .execute(db)
    .await?;
    Ok(())
}

pub async fn touch(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE repos SET last_modified = now() WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Sort orders of listings (all descending, ties broken by id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    LastModified,
    CreatedAt,
    Downloads,
    Likes,
}

impl SortKey {
    pub fn parse(s: &str) -> Option<SortKey> {
        match s {
            "lastModified" | "last_modified" | "updated" => Some(SortKey::LastModified),
            "createdAt" | "created_at" | "created" => Some(SortKey::CreatedAt),
            "downloads" => Some(SortKey::Downloads),
            "likes" | "trendingScore" | "trending_score" => Some(SortKey::Likes),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SortKey::LastModified => "lastModified",
            SortKey::CreatedAt => "createdAt",
            SortKey::Downloads => "downloads",
            SortKey::Likes => "likes",
        }
    }
    fn column(self) -> &'static str {
        match self {
            SortKey::LastModified => "r.last_modified",
            SortKey::CreatedAt => "r.created_at",
            SortKey::Downloads => "r.downloads",
            SortKey::Likes => "r.likes",
        }
    }
}

/// Keyset cursor: the sort value of the last row (as text) and its id.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    pub v: String,
    pub id: i64,
}

/// What a listing asks for.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub repo_type: String,
    pub search: Vec<String>,
    pub author: Option<String>,
    /// Every filter must match a tag (or pipeline tag / library / license).
    pub filters: Vec<String>,
    pub pipeline_tag: Option<String>,
    pub library: Option<String>,
    pub license: Option<String>,
    pub gated: Option<bool>,
    pub sort: SortKey,
    pub limit: i64,
    pub cursor: Option<Cursor>,
    /// Viewer: None for anonymous; (user id, is site admin).
    pub viewer: Option<(i64, bool)>,
}

/// Appends ` AND <repo r is visible to viewer>`: site admins see everything,
/// users public repos plus their own and their organizations', anonymous
/// callers public repos. The one visibility rule of every repo listing.
pub fn push_visible_to(b: &mut QueryBuilder<'_, sqlx::Postgres>, viewer: Option<(i64, bool)>) {
    match viewer {
        Some((_, true)) => {}
        Some((uid, false)) => {
            b.push(" AND (NOT r.private OR r.namespace_id = ");
            b.push_bind(uid);
            b.push(" OR EXISTS (SELECT 1 FROM org_members m WHERE m.org_id = r.namespace_id AND m.user_id = ");
            b.push_bind(uid);
            b.push("))");
        }
        None => {
            b.push(" AND NOT r.private");
        }
    }
}

/// The `LIKE` pattern matching strings that contain `s` literally (`%`,
/// `_` and the escape `\` in `s` match only themselves).
pub fn contains_pattern(s: &str) -> String {
    let mut p = String::with_capacity(s.len() + 2);
    p.push('%');
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// Every character a `search_key` can hold: names are `[A-Za-z0-9._-]`
/// (`domain::names`), lower-cased, joined by `/`.
const KEY_CHARS: &str = "abcdefghijklmnopqrstuvwxyz0123456789._-/";

/// Whether pg_trgm's `LIKE` support finds a trigram in `%term%`. It takes
/// each run of letters and digits in the pattern, pads it with two blanks
/// on the left and one on the right where the run is bounded by a literal
/// non-word character (not where it meets the `%`), and takes the trigrams
/// of that. With none (a term of one or two characters, or one such as
/// `a..`, `x.-` or `---`) PostgreSQL reads the whole trigram index: 2.8 s
/// at a million repos.
pub fn trigram_usable(term: &str) -> bool {
    let chars: Vec<char> = term.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && chars[i].is_alphanumeric() {
            i += 1;
        }
        let left = if start > 0 { 2 } else { 0 };
        let right = if i < chars.len() { 1 } else { 0 };
        if i - start + left + right >= 3 {
            return true;
        }
    }
    false
}

/// The characters (a one-character term) or character pairs of a term,
/// as `search_grams()` (migration `20261205000001`) lists them for a key:
/// a key contains the term only if its grams hold all of these. None when
/// the term holds a character no key has (nothing can match).
pub fn term_grams(t: &str) -> Option<Vec<String>> {
    let t: Vec<char> = t.to_lowercase().chars().collect();
    if !t.iter().all(|c| KEY_CHARS.contains(*c)) {
        return None;
    }
    let mut g: Vec<String> = if t.len() == 1 {
        vec![t[0].to_string()]
    } else {
        t.windows(2).map(|w| w.iter().collect()).collect()
    };
    g.sort();
    g.dedup();
    Some(g)
}

/// ` AND <key contains term>`: by the trigram index when pg_trgm can use
/// it, otherwise by the character-pair index (`repos_search_grams`); the
/// `LIKE` is always there, so the answer is exact either way.
fn push_search_term(b: &mut QueryBuilder<'_, sqlx::Postgres>, term: &str) {
    if !trigram_usable(&term.to_lowercase()) {
        match term_grams(term) {
            None => {
                b.push(" AND false");
                return;
            }
            Some(g) => {
                b.push(" AND search_grams(r.search_key) @> ");
                b.push_bind(g);
            }
        }
    }
    b.push(" AND r.search_key LIKE lower(");
    b.push_bind(contains_pattern(term));
    b.push(")");
}

pub async fn list(db: impl PgExecutor<'_>, q: &ListQuery) -> sqlx::Result<Vec<RepoRow>> {
    let mut b = QueryBuilder::new(format!(
        "SELECT {REPO_COLS} FROM repos r JOIN namespaces n ON n.id = r.namespace_id WHERE r.repo_type = "
    ));
    b.push_bind(&q.repo_type);
    push_visible_to(&mut b, q.viewer);
    for s in &q.search {
        // Search matches the full id "ns/name" (case-insensitive substring),
        // kept lower-cased in `search_key` under two indexes: trigrams, and
        // characters and their pairs for terms trigrams cannot serve (see
        // [`push_search_term`]).
        push_search_term(&mut b, s);
    }
    if let Some(a) = &q.author {
        b.push(" AND lower(n.name) = lower(");
        b.push_bind(a.clone());
        b.push(")");
    }
    for f in &q.filters {
        b.push(" AND (");
        b.push_bind(f.clone());
        b.push(" = ANY(r.tags) OR r.pipeline_tag = ");
        b.push_bind(f.clone());
        b.push(" OR r.library_name = ");
        b.push_bind(f.clone());
        b.push(")");
    }
    if let Some(p) = &q.pipeline_tag {
        b.push(" AND r.pipeline_tag = ");
        b.push_bind(p.clone());
    }
    if let Some(l) = &q.library {
        b.push(" AND r.library_name = ");
        b.push_bind(l.clone());
    }
    if let Some(l) = &q.license {
        b.push(" AND r.license = ");
        b.push_bind(l.clone());
    }
    if let Some(g) = q.gated {
        b.push(if g {
            " AND r.gated IS NOT NULL"
        } else {
            " AND r.gated IS NULL"
        });
    }
    let col = q.sort.column();
    if let Some(c) = &q.cursor {
        b.push(format!(" AND ({col}, r.id) < ("));
        match q.sort {
            SortKey::LastModified | SortKey::CreatedAt => {
                b.push_bind(c.v.clone());
                b.push("::timestamptz");
            }
            SortKey::Downloads | SortKey::Likes => {
                b.push_bind(c.v.parse::<i64>().unwrap_or(i64::MAX));
            }
        }
        b.push(", ");
        b.push_bind(c.id);
        b.push(")");
    }
    b.push(format!(" ORDER BY {col} DESC, r.id DESC LIMIT "));
    b.push_bind(q.limit);
    // Planned for its parameters each time (an unnamed statement): whether a
    // term is rare or common decides between reading its index and walking
    // the sort order, and a cached generic plan that cannot tell took a
    // common two-letter search from 2 ms to 2.5 s after the fifth call.
    b.build_query_as().persistent(false).fetch_all(db).await
}

/// The cursor that continues after `row` in `sort` order.
pub fn cursor_after(row: &RepoRow, sort: SortKey) -> Cursor {
    let v = match sort {
        SortKey::LastModified => row
            .last_modified
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        SortKey::CreatedAt => row
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        SortKey::Downloads => row.downloads.to_string(),
        SortKey::Likes => row.likes.to_string(),
    };
    Cursor { v, id: row.id }
}

pub async fn add_download(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE repos SET downloads = downloads + 1 WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_terms_have_a_trigram() {
        for t in [
            "gemma",
            "7b-1",
            ".a.",
            "-1/",
            "e-1",
            "q.9",
            "b-1",
            "org-0421/",
        ] {
            assert!(trigram_usable(t), "{t}");
        }
        for t in ["", "a", "zz", "b-", "a..", "x.-", "1-/", "---", "9/"] {
            assert!(!trigram_usable(t), "{t}");
        }
    }

    #[test]
    fn grams_of_a_term() {
        assert_eq!(term_grams("Q"), Some(vec!["q".to_string()]));
        assert_eq!(
            term_grams("a..."),
            Some(vec![".".repeat(2), "a.".to_string()])
        );
        assert_eq!(term_grams("é"), None);
        assert_eq!(term_grams("a%"), None);
    }
}
