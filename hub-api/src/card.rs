//! Repo metadata derived at commit time: the model card's YAML front matter
//! (`cardData`), `config.json` facts, tags, pipeline tag, library and the
//! safetensors parameter counts.

use serde_json::{json, Map, Value};

/// Metadata of one commit, stored with it (and cached on the repo for the default branch).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RepoMeta {
    pub card_data: Value,
    pub config_info: Value,
    pub tags: Vec<String>,
    pub pipeline_tag: Option<String>,
    pub library_name: Option<String>,
    pub license: Option<String>,
    /// `{"parameters": {dtype: n}, "total": n}` when the repo has safetensors files.
    pub safetensors: Option<Value>,
}

/// Splits a README into its YAML front matter (if any) and the body.
/// Blank lines before the opening `---` are allowed, as in the client's
/// `REGEX_YAML_BLOCK`.
pub fn split_front_matter(readme: &str) -> (Option<&str>, &str) {
    let text = readme.strip_prefix('\u{feff}').unwrap_or(readme);
    let Some(rest) = text
        .trim_start_matches([' ', '\t', '\r', '\n'])
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))
    else {
        return (None, text);
    };
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            let yaml = &rest[..offset];
            let body = &rest[offset + line.len()..];
            return (Some(yaml), body);
        }
        offset += line.len();
    }
    (None, text)
}

/// What `validate-yaml` says of parsed metadata beyond YAML syntax, as the
/// Hub does: (errors, warnings). Errors are types the Hub and its clients
/// cannot read (`license`, `tags`, `model-index`); the warning is for a card
/// without metadata.
pub fn check_metadata(card: &Value) -> (Vec<String>, Vec<String>) {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let Some(map) = card.as_object().filter(|m| !m.is_empty()) else {
        warnings.push("empty or missing yaml metadata in repo card".to_string());
        return (errors, warnings);
    };
    let strings = |v: &Value| match v {
        Value::String(_) => true,
        Value::Array(a) => a.iter().all(Value::is_string),
        _ => false,
    };
    for key in ["license", "tags"] {
        if let Some(v) = map.get(key).filter(|v| !v.is_null() && !strings(v)) {
            errors.push(format!(
                "\"{key}\" must be a string or a list of strings, not {}",
                type_name(v)
            ));
        }
    }
    if let Some(mi) = map.get("model-index") {
        let entry_ok = |e: &Value| {
            e.get("name").is_some_and(Value::is_string)
                && e.get("results").is_some_and(Value::is_array)
        };
        match mi.as_array() {
            Some(entries) if entries.iter().all(entry_ok) => {}
            _ => {
                errors.push("\"model-index\" must be a list of {name, results} entries".to_string())
            }
        }
    }
    (errors, warnings)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Largest YAML front matter parsed (bytes).
pub const MAX_FRONT_MATTER: usize = 1024 * 1024;
/// Most YAML nodes (scalars, sequences, mappings) the front matter may yield,
/// counting each alias expansion: a "billion laughs" document stops here.
pub const MAX_YAML_NODES: usize = 200_000;

/// Parses the front matter of a README into JSON (`{}` when there is none).
/// Errors name the problem, as `validate-yaml` reports it. The size and the
/// node count are bounded, so the CPU and memory are too; callers run it as
/// heavy work (`heavy::Heavy::run`).
pub fn parse_card(readme: &str) -> Result<Value, String> {
    let (yaml, _) = split_front_matter(readme);
    let Some(yaml) = yaml else {
        return Ok(json!({}));
    };
    if yaml.trim().is_empty() {
        return Ok(json!({}));
    }
    if yaml.len() > MAX_FRONT_MATTER {
        return Err(format!(
            "the model card metadata is {} bytes, over the limit of {MAX_FRONT_MATTER}",
            yaml.len()
        ));
    }
    let nodes = std::cell::Cell::new(0usize);
    let de = serde_norway::Deserializer::from_str(yaml);
    let v: Value = serde::de::DeserializeSeed::deserialize(Bounded(&nodes), de).map_err(|e| {
        if nodes.get() > MAX_YAML_NODES {
            format!(
                "the model card metadata expands to more than {MAX_YAML_NODES} YAML nodes (aliases count each time they are used)"
            )
        } else {
            format!("invalid YAML in the model card metadata: {e}")
        }
    })?;
    match v {
        Value::Object(_) => Ok(v),
        Value::Null => Ok(json!({})),
        _ => Err("the model card metadata must be a YAML mapping (key: value)".into()),
    }
}

/// Deserializes a `serde_json::Value` while counting nodes against [`MAX_YAML_NODES`].
#[derive(Clone, Copy)]
struct Bounded<'a>(&'a std::cell::Cell<usize>);

impl Bounded<'_> {
    fn count<E: serde::de::Error>(&self) -> Result<(), E> {
        let n = self.0.get() + 1;
        self.0.set(n);
        if n > MAX_YAML_NODES {
            return Err(E::custom("too many YAML nodes"));
        }
        Ok(())
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Bounded<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("YAML data")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::from(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        self.count()?;
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.count()?;
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        self.count()?;
        Ok(Value::String(v))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Null)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        serde::de::DeserializeSeed::deserialize(self, d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<Value, A::Error> {
        self.count()?;
        let mut out = Vec::new();
        while let Some(v) = s.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Value, A::Error> {
        self.count()?;
        let mut out = Map::new();
        while let Some(k) = m.next_key::<String>()? {
            self.count()?;
            let v = m.next_value_seed(self)?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// Picks the facts of `config.json` the hub uses.
pub fn parse_config(config: &[u8]) -> Value {
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(config) else {
        return json!({});
    };
    let mut out = Map::new();
    for k in ["architectures", "model_type", "id2label"] {
        if let Some(v) = m.get(k) {
            out.insert(k.to_string(), v.clone());
        }
    }
    Value::Object(out)
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => vec![],
    }
}

fn pipeline_from_architectures(archs: &[String]) -> Option<&'static str> {
    let a = archs.first()?;
    let rules: &[(&str, &str)] = &[
        ("ForSequenceClassification", "text-classification"),
        ("ForTokenClassification", "token-classification"),
        ("ForQuestionAnswering", "question-answering"),
        ("ForMaskedLM", "fill-mask"),
        ("ForCausalLM", "text-generation"),
        ("LMHeadModel", "text-generation"),
        ("ForConditionalGeneration", "text2text-generation"),
        ("ForImageClassification", "image-classification"),
        ("ForSpeechSeq2Seq", "automatic-speech-recognition"),
    ];
    for (suffix, task) in rules {
        if a.ends_with(suffix) {
            return Some(task);
        }
    }
    a.ends_with("Model").then_some("feature-extraction")
}

/// The file extensions whose presence anywhere in a repo [`derive`] looks at.
pub const DERIVE_EXTS: [&str; 3] = [".safetensors", ".gguf", ".onnx"];

/// What [`derive`] needs of a commit's file list: the root folder's file
/// names and which of [`DERIVE_EXTS`] some path ends with. A commit keeps
/// these incrementally (`registry::path_stats`) instead of listing the repo.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PathFacts {
    pub root_files: Vec<String>,
    /// Per entry of [`DERIVE_EXTS`].
    pub has_ext: [bool; 3],
}

impl PathFacts {
    /// The facts of a full file list.
    pub fn of_paths(paths: &[&str]) -> Self {
        PathFacts {
            root_files: paths
                .iter()
                .filter(|p| !p.contains('/'))
                .map(|p| p.to_string())
                .collect(),
            has_ext: DERIVE_EXTS.map(|ext| paths.iter().any(|p| p.ends_with(ext))),
        }
    }
}

/// Derives a commit's metadata from its card, config and file list.
pub fn derive(
    is_model: bool,
    card_data: Value,
    config_info: Value,
    paths: &[&str],
    safetensors: Option<Value>,
) -> RepoMeta {
    derive_from_facts(
        is_model,
        card_data,
        config_info,
        &PathFacts::of_paths(paths),
        safetensors,
    )
}

/// [`derive`] from the [`PathFacts`] of the file list.
pub fn derive_from_facts(
    is_model: bool,
    card_data: Value,
    config_info: Value,
    facts: &PathFacts,
    safetensors: Option<Value>,
) -> RepoMeta {
    let card = card_data.as_object().cloned().unwrap_or_default();
    let has = |p: &str| facts.root_files.iter().any(|f| f == p);
    let has_ext = |ext: &str| {
        DERIVE_EXTS
            .iter()
            .position(|e| *e == ext)
            .is_some_and(|i| facts.has_ext[i])
    };

    let library_name = card
        .get("library_name")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .or_else(|| {
            if !is_model {
                None
            } else if has("modules.json") || has("config_sentence_transformers.json") {
                Some("sentence-transformers".into())
            } else if has("config.json") {
                Some("transformers".into())
            } else if has_ext(".gguf") {
                Some("gguf".into())
            } else {
                None
            }
        });
    let archs = str_list(config_info.get("architectures"));
    let pipeline_tag = card
        .get("pipeline_tag")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .or_else(|| {
            if !is_model {
                return None;
            }
            if library_name.as_deref() == Some("sentence-transformers") {
                return Some("sentence-similarity".into());
            }
            pipeline_from_architectures(&archs).map(str::to_string)
        });
    let license = match card.get("license") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(a)) => a.first().and_then(|x| x.as_str()).map(str::to_string),
        _ => None,
    };

    let mut tags: Vec<String> = Vec::new();
    let mut push = |t: String| {
        if !t.is_empty() && t.len() <= 128 && !tags.contains(&t) {
            tags.push(t);
        }
    };
    if let Some(l) = &library_name {
        push(l.clone());
    }
    if is_model {
        for (ext, tag) in [
            (".safetensors", "safetensors"),
            (".gguf", "gguf"),
            (".onnx", "onnx"),
        ] {
            if has_ext(ext) {
                push(tag.to_string());
            }
        }
        if let Some(mt) = config_info.get("model_type").and_then(|v| v.as_str()) {
            push(mt.to_string());
        }
    }
    for t in str_list(card.get("tags")) {
        push(t);
    }
    if let Some(p) = &pipeline_tag {
        push(p.clone());
    }
    for t in str_list(card.get("task_categories")) {
        push(format!("task_categories:{t}"));
    }
    for l in str_list(card.get("language")) {
        push(l);
    }
    if let Some(l) = &license {
        push(format!("license:{l}"));
    }
    RepoMeta {
        card_data: Value::Object(card),
        config_info,
        tags,
        pipeline_tag,
        library_name,
        license,
        safetensors,
    }
}

/// Sums per-file parameter counts into the `safetensors` field of repo info.
pub fn sum_safetensors(files: &[Value]) -> Option<Value> {
    if files.is_empty() {
        return None;
    }
    let mut params: Map<String, Value> = Map::new();
    let mut total: i64 = 0;
    for f in files {
        if let Some(m) = f.as_object() {
            for (dtype, n) in m {
                let n = n.as_i64().unwrap_or(0);
                total = total.saturating_add(n);
                let cur = params.get(dtype).and_then(|v| v.as_i64()).unwrap_or(0);
                params.insert(dtype.clone(), json!(cur.saturating_add(n)));
            }
        }
    }
    Some(json!({"parameters": params, "total": total}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter() {
        let r =
            "---\nlicense: apache-2.0\ntags:\n- a\n- b\npipeline_tag: fill-mask\n---\n# Title\n";
        let v = parse_card(r).unwrap();
        assert_eq!(v["license"], "apache-2.0");
        assert_eq!(split_front_matter(r).1, "# Title\n");
        assert_eq!(parse_card("# no card").unwrap(), json!({}));
        assert!(parse_card("---\n: : bad\n  - x\n---\n").is_err());
        assert!(parse_card("---\n- a list\n---\n").is_err());
    }

    /// A "billion laughs" document (each level repeats the previous nine
    /// times) is refused at the node bound, quickly and in little memory.
    #[test]
    fn alias_bomb_is_bounded() {
        let mut y = String::from("---\na: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        let mut prev = 'a';
        for c in 'b'..='i' {
            y.push_str(&format!("{c}: &{c} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
            prev = c;
        }
        y.push_str("---\n");
        let t = std::time::Instant::now();
        let e = parse_card(&y).unwrap_err();
        assert!(e.contains("YAML nodes") || e.contains("repetition"), "{e}");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            t.elapsed()
        );
        let big = format!("---\nx: \"{}\"\n---\n", "a".repeat(MAX_FRONT_MATTER));
        assert!(parse_card(&big).unwrap_err().contains("over the limit"));
        // Aliases within the bound still work.
        let ok = parse_card("---\nbase: &b {k: v}\nother: *b\n---\n").unwrap();
        assert_eq!(ok["other"]["k"], "v");
    }

    #[test]
    fn derived_tags() {
        let cfg =
            parse_config(br#"{"architectures":["BertModel"],"model_type":"bert","hidden_size":4}"#);
        let m = derive(
            true,
            json!({"license":"mit","tags":["x"]}),
            cfg,
            &["config.json", "model.safetensors", "modules.json"],
            None,
        );
        assert_eq!(m.library_name.as_deref(), Some("sentence-transformers"));
        assert_eq!(m.pipeline_tag.as_deref(), Some("sentence-similarity"));
        assert_eq!(m.license.as_deref(), Some("mit"));
        assert!(m.tags.contains(&"safetensors".to_string()));
        assert!(m.tags.contains(&"bert".to_string()));
        assert!(m.tags.contains(&"license:mit".to_string()));
        let m = derive(
            true,
            json!({}),
            json!({"architectures":["BertForSequenceClassification"]}),
            &["config.json"],
            None,
        );
        assert_eq!(m.pipeline_tag.as_deref(), Some("text-classification"));
    }

    #[test]
    fn safetensors_sum() {
        let s = sum_safetensors(&[json!({"F32": 10}), json!({"F32": 5, "I64": 1})]).unwrap();
        assert_eq!(s["total"], 16);
        assert_eq!(s["parameters"]["F32"], 15);
    }
}
