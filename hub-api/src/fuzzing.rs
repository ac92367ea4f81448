//! Fuzz entry points: one plain function per parser that reads tenant bytes,
//! each calling the real parser with the hub's real limits. The coverage-guided
//! harness in `fuzz/` (libFuzzer) drives them; `tests/fuzz_replay.rs` replays
//! the checked-in corpora (`fuzz/corpus/<target>/`) through them on every
//! `cargo test`. An entry point must return for every input: a panic, an
//! abort, an out-of-memory or a hang is a finding (see docs/RELIABILITY.md).
//!
//! Inputs that carry two texts (rules and paths) split them at the first NUL
//! byte; paths are the NUL- or newline-separated rest.

use crate::card;
use crate::dashboard::markdown;
use crate::dashboard::tensors;
use crate::domain::{self, RepoPath};
use crate::git::attributes;
use crate::registry::ndjson::{self, Line};
use crate::routes::hf::{lfs, resolve};
use crate::state::Limits;
use crate::validate::{gguf, safetensors};
use base64::Engine;

/// A fuzz entry point.
pub type Entry = fn(&[u8]);

/// Every target, by the name of its corpus folder and harness binary.
pub const TARGETS: &[(&str, Entry)] = &[
    ("safetensors", safetensors_file),
    ("gguf", gguf_header),
    ("ndjson", ndjson_commit),
    ("lfs_batch", lfs_batch),
    ("gitattributes", gitattributes),
    ("gitignore", gitignore),
    ("card", card_front_matter),
    ("markdown", card_markdown),
    ("repo_path", repo_path),
    ("names", names_and_revisions),
    ("viewer_filter", viewer_filter),
    ("git_push_commands", git_push_commands),
    ("viewer_convert", viewer_convert),
];

/// The tenant text of an input (lossy: the routes that take text refuse or
/// replace invalid UTF-8 before the parser sees it).
fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// Splits an input at its first NUL into (rules, paths).
fn rules_and_paths(data: &[u8]) -> (std::borrow::Cow<'_, str>, Vec<String>) {
    match data.iter().position(|b| *b == 0) {
        Some(i) => {
            let paths = text(&data[i + 1..])
                .split(['\0', '\n'])
                .filter(|p| !p.is_empty())
                .take(64)
                .map(str::to_string)
                .collect();
            (text(&data[..i]), paths)
        }
        None => (
            text(data),
            [
                "model.safetensors",
                "a/b/c.bin",
                "README.md",
                "x y/[z].gguf",
            ]
            .map(String::from)
            .to_vec(),
        ),
    }
}

/// A safetensors file held in memory: the commit-time check (length, then
/// header, as `registry::commit` reads them) and the dashboard's tensor table.
pub fn safetensors_file(data: &[u8]) {
    let size = data.len() as u64;
    let whole = safetensors::check_file(data);
    if let Ok(n) = safetensors::header_len(data, size) {
        let header = &data[8..8 + n as usize];
        let split = safetensors::check_header(header, size);
        assert_eq!(
            whole.is_ok(),
            split.is_ok(),
            "check_file and check_header disagree"
        );
        if n <= tensors::MAX_HEADER_SHOWN {
            let _ = tensors::parse_table(header);
        }
        // The same header in front of a larger file (data the validator never reads).
        let _ = safetensors::check_header(header, size.saturating_mul(3).max(size));
    }
}

/// A GGUF header: the prefix the validator reads, as a whole file and as the
/// start of a much larger one.
pub fn gguf_header(data: &[u8]) {
    let prefix = &data[..data.len().min(gguf::MAX_HEADER_BYTES as usize)];
    let _ = gguf::check(prefix, data.len() as u64);
    let _ = gguf::check(prefix, u64::MAX);
}

/// An NDJSON commit body, line by line as the commit route reads it: each
/// line parsed, the header first and once, paths and digests validated,
/// inline content base64-decoded.
pub fn ndjson_commit(data: &[u8]) {
    let (mut lines, tail) = ndjson::split_lines(data);
    if !tail.is_empty() {
        lines.push(tail);
    }
    let mut header = false;
    for line in lines {
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let Ok(parsed) = ndjson::parse_line(line) else {
            return;
        };
        if !header && !matches!(parsed, Line::Header(_)) {
            return;
        }
        let ok = match parsed {
            Line::Header(_) => !std::mem::replace(&mut header, true),
            Line::File(f) => {
                RepoPath::parse(&f.path).is_ok()
                    && base64::engine::general_purpose::STANDARD
                        .decode(f.content.as_bytes())
                        .is_ok()
            }
            Line::LfsFile(f) => {
                RepoPath::parse(&f.path).is_ok()
                    && domain::Sha256::parse(&f.oid).is_ok()
                    && f.old_path
                        .as_deref()
                        .is_none_or(|p| RepoPath::parse(p).is_ok())
            }
            Line::DeletedFile(p) => RepoPath::parse(&p.path).is_ok(),
            Line::DeletedFolder(p) => RepoPath::parse_folder(&p.path).is_ok(),
        };
        if !ok {
            return;
        }
    }
}

/// An LFS batch body: the JSON body as `JsonBody` parses it, then the
/// per-object checks of the batch route (digest, size within the limit).
pub fn lfs_batch(data: &[u8]) {
    let data = if data.iter().all(|b| b.is_ascii_whitespace()) {
        &b"{}"[..]
    } else {
        data
    };
    if let Ok(body) = serde_json::from_slice::<lfs::BatchBody>(data) {
        let _ = lfs::check_objects(&body, Limits::default().lfs_object);
    }
}

/// A `.gitattributes` text and paths: the LFS rules, their matching, and the
/// file the hub writes back with explicit LFS paths added. Checks that the
/// written file does what it is for: every (valid) path it adds is LFS when
/// the file is read back.
pub fn gitattributes(data: &[u8]) {
    let (rules_text, paths) = rules_and_paths(data);
    // Over the pattern limits is a clean refusal, not a finding.
    let Ok(rules) = attributes::LfsRules::parse(&rules_text) else {
        return;
    };
    let paths: Vec<&str> = paths
        .iter()
        .map(String::as_str)
        .filter(|p| RepoPath::parse(p).is_ok())
        .collect();
    for p in &paths {
        let _ = rules.is_lfs(p);
    }
    let written =
        attributes::with_lfs_paths(&rules_text, paths.iter().copied(), |p| rules.is_lfs(p));
    if let Ok(reread) = attributes::LfsRules::parse(&written) {
        for p in &paths {
            assert!(
                reread.is_lfs(p),
                "{p:?} is not LFS in the .gitattributes written for it:\n{written}"
            );
        }
    }
}

/// A preupload `gitIgnore` text and paths.
pub fn gitignore(data: &[u8]) {
    let (rules_text, paths) = rules_and_paths(data);
    let Ok(rules) = crate::git::ignore::IgnoreRules::parse(&rules_text) else {
        return;
    };
    let mut folders = std::collections::HashMap::new();
    for p in &paths {
        let _ = rules.is_ignored(p, &mut folders);
    }
}

/// A README: the YAML front matter (`validate-yaml` and commit metadata) and
/// the metadata derived from it.
pub fn card_front_matter(data: &[u8]) {
    let readme = text(data);
    let _ = card::split_front_matter(&readme);
    if let Ok(v) = card::parse_card(&readme) {
        let meta = card::derive(true, v, serde_json::json!({}), &["README.md"], None);
        let _ = serde_json::to_string(&meta.card_data);
    }
    let _ = card::parse_config(data);
}

/// A README body rendered on the repo page.
pub fn card_markdown(data: &[u8]) {
    let readme = text(data);
    let (_, body) = card::split_front_matter(&readme);
    let base = markdown::Base {
        repo_url: "/ns/repo",
        rev: "main",
    };
    let _ = markdown::render(body, &base);
}

/// Repo paths (file and folder forms) and the `Range` header against a size.
pub fn repo_path(data: &[u8]) {
    let s = text(data);
    if let Ok(p) = RepoPath::parse(&s) {
        let _ = p.fold_key();
    }
    let _ = RepoPath::parse_folder(&s);
    let _ = resolve::parse_range(Some(&s), 1000);
    let _ = resolve::parse_range(Some(&s), 0);
}

/// Namespace, repo and repo-id names, revisions and ref names, digests.
pub fn names_and_revisions(data: &[u8]) {
    let s = text(data);
    let _ = domain::NamespaceName::parse(&s);
    let _ = domain::RepoName::parse(&s);
    let _ = domain::RepoId::parse(&s);
    for kind in ["model", "dataset", "models", "datasets", &s] {
        let _ = domain::RepoType::parse(kind);
    }
    if let Ok(r) = domain::Revision::parse(&s) {
        let _ = r.candidate_refs();
    }
    if let Ok(r) = domain::RefName::parse(&s) {
        let _ = (r.branch_ref(), r.tag_ref());
    }
    let _ = domain::is_commit_oid(&s);
    let _ = domain::Sha256::parse(&s);
}

/// The dataset viewer's `where` and `orderby` text (`/filter`).
pub fn viewer_filter(data: &[u8]) {
    let _ = crate::viewer::filter::parse(&text(data));
}

/// The command section of a `git-receive-pack` body (pkt-lines up to the flush).
pub fn git_push_commands(data: &[u8]) {
    let _ = crate::git::protocol::parse_push_commands(data);
}

/// A dataset's source file through the viewer's Parquet conversion (arrow's
/// CSV and JSON readers on tenant bytes, schema inference, the JSON array
/// path): the first byte picks CSV, TSV or JSON (its value mod 3), the rest is
/// the file. The Parquet goes to `/dev/null`.
pub fn viewer_convert(data: &[u8]) {
    use crate::viewer::discover::Format;
    let Some((pick, file)) = data.split_first() else {
        return;
    };
    let format = match pick % 3 {
        0 => Format::Csv,
        1 => Format::Tsv,
        _ => Format::Json,
    };
    let Ok(out) = std::fs::OpenOptions::new().write(true).open("/dev/null") else {
        return;
    };
    let _ = crate::viewer::convert::convert(format, file.len() as u64, file, out);
    // The parallel CSV path (`viewer::csv_split`: the quote-aware chunk cutter,
    // decoders, the in-order writer), with 64-byte chunks.
    if format != Format::Json {
        if let Ok(out) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            let _ =
                crate::viewer::convert::convert_with(format, file.len() as u64, file, out, 0, 64);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_target_takes_empty_and_junk_input() {
        for (_, f) in super::TARGETS {
            f(b"");
            f(b"\0\xff{[\n---\n");
        }
    }
}
