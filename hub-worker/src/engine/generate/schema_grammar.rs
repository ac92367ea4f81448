//! JSON Schema to a GBNF grammar, for `response_format: json_schema` and forced tool calls.
//!
//! The grammar is the one llama.cpp's `json_schema_to_grammar` (its `common` library,
//! `json-schema.cpp` + `json-schema-to-grammar.cpp`, MIT) makes for the same schema, rule
//! for rule and byte for byte: the rule names, the shape of each rule (which decides how
//! costly the grammar is to enforce, see `llama::offthread`) and the order of the rules.
//! `schema_grammar_cases.json` holds schemas with the grammar llama.cpp made for each, and a
//! test also compares every case with llama.cpp's converter itself, live. Doing it here
//! gives a refused schema a message that says what is wrong and where (`JSON schema error
//! at #/properties/age: unrecognized type intger`): through `llama-cpp-2` a refusal is only
//! a status code. And the schema, tenant input, is parsed by serde_json (its nesting limit
//! of 128) rather than by C++ with none.
//!
//! What a schema may say, as llama.cpp reads it: `type` (a name or a list of names),
//! `properties` / `required` / `additionalProperties`, `items` / `prefixItems` /
//! `minItems` / `maxItems`, `minLength` / `maxLength` / `pattern` (anchored regexes with
//! no grammar equivalent accept any string) / `format` (`date`, `time`, `date-time`,
//! `uuid`), `minimum` / `maximum` / `exclusiveMinimum` / `exclusiveMaximum` for integers,
//! `enum`, `const`, `anyOf` / `oneOf` / `allOf`, and `$ref` into the same document.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

/// A schema turned into GBNF with root rule `root`, or why it cannot be.
pub fn json_schema_to_gbnf(schema: &str) -> Result<String, String> {
    let root: Json =
        serde_json::from_str(schema).map_err(|e| format!("the schema is not valid JSON: {e}"))?;
    let doc = Builder::build(&root)?;
    let mut c = Converter::new(&doc);
    c.visit(doc.root, "")?;
    if !c.errors.is_empty() {
        return Err(c.errors.join("; "));
    }
    if !c.warnings.is_empty() {
        tracing::debug!(warnings = %c.warnings.join("; "), "JSON schema conversion was incomplete");
    }
    let mut out = String::new();
    for (name, rule) in &c.rules {
        let _ = writeln!(out, "{name} ::= {rule}");
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// JSON, keeping the order of an object's keys (the grammar lists properties in the order
// the schema declares them) and the integer / float distinction.

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl<'de> serde::Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Json;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
                Ok(Json::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
                Ok(Json::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
                Ok(match i64::try_from(v) {
                    Ok(i) => Json::Int(i),
                    Err(_) => Json::UInt(v),
                })
            }
            fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
                Ok(Json::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Json, E> {
                Ok(Json::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Json, E> {
                Ok(Json::Str(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(v) = a.next_element()? {
                    items.push(v);
                }
                Ok(Json::Arr(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Json, A::Error> {
                let mut entries: Vec<(String, Json)> = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, Json>()? {
                    // A repeated key keeps its first place and its last value.
                    match entries.iter_mut().find(|(key, _)| *key == k) {
                        Some(entry) => entry.1 = v,
                        None => entries.push((k, v)),
                    }
                }
                Ok(Json::Obj(entries))
            }
        }
        d.deserialize_any(V)
    }
}

impl Json {
    pub(crate) fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Compact JSON text as nlohmann's `dump()` writes it (what llama.cpp puts in the
    /// grammar for an `enum` or `const` value).
    pub(crate) fn dump(&self) -> String {
        let mut out = String::new();
        self.dump_into(&mut out);
        out
    }

    fn dump_into(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Json::UInt(u) => {
                let _ = write!(out, "{u}");
            }
            Json::Float(f) => dump_float(*f, out),
            Json::Str(s) => dump_string(s, out),
            Json::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.dump_into(out);
                }
                out.push(']');
            }
            Json::Obj(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    dump_string(k, out);
                    out.push(':');
                    v.dump_into(out);
                }
                out.push('}');
            }
        }
    }
}

/// A JSON string as nlohmann writes it: serde_json escapes the same characters the same
/// way (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other controls as `\u00xx`).
fn dump_string(s: &str, out: &mut String) {
    out.push_str(&serde_json::to_string(s).expect("a string serializes"));
}

/// A double as nlohmann writes it: the shortest digits that read back the same, in fixed
/// notation for decimal exponents -4 to 15 (with `.0` when integral), else `d.ddde+XX`.
fn dump_float(f: f64, out: &mut String) {
    if !f.is_finite() {
        out.push_str("null");
        return;
    }
    if f == 0.0 {
        out.push_str(if f.is_sign_negative() { "-0.0" } else { "0.0" });
        return;
    }
    if f < 0.0 {
        out.push('-');
    }
    // `{:e}` gives the shortest round-trip digits: "1.2345e-7".
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let exp: i32 = exp.parse().unwrap_or(0);
    let k = digits.len() as i32;
    // value = 0.d1..dk * 10^n
    let n = exp + 1;
    const MIN_EXP: i32 = -4;
    const MAX_EXP: i32 = 15;
    if k <= n && n <= MAX_EXP {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
        out.push_str(".0");
    } else if 0 < n && n <= MAX_EXP {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if MIN_EXP < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = n - 1;
        out.push('e');
        out.push(if e < 0 { '-' } else { '+' });
        let _ = write!(out, "{:02}", e.unsigned_abs());
    }
}

// ---------------------------------------------------------------------------------------
// The schema as a tree of nodes (llama.cpp's `common_chat_schema`), `$ref`s resolved.

type NodeId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    None,
    Date,
    Time,
    DateTime,
    Uuid,
}

#[derive(Debug)]
enum Node {
    Any,
    Ref {
        reference: String,
        target: Option<NodeId>,
    },
    AnyOf(Vec<NodeId>),
    AllOf(Vec<NodeId>),
    Const(Json),
    Enum(Vec<Json>),
    Null,
    Boolean,
    Number,
    Integer {
        min: i64,
        max: i64,
    },
    Str {
        pattern: String,
        format: Format,
        min_length: i32,
        /// -1: none.
        max_length: i32,
    },
    Array {
        items: NodeId,
        min_items: i32,
        /// -1: none.
        max_items: i32,
    },
    Tuple(Vec<NodeId>),
    Object {
        /// (name, schema, required), in the schema's order.
        properties: Vec<(String, NodeId, bool)>,
        additional: Option<NodeId>,
    },
}

struct Doc {
    nodes: Vec<Node>,
    root: NodeId,
}

struct Builder<'a> {
    root: &'a Json,
    nodes: Vec<Node>,
    /// `$ref` -> its target (`None` while the target is being built: a cycle stops there).
    refs: HashMap<String, Option<NodeId>>,
    /// Ref nodes, given their target once every `$ref` is built.
    pending: Vec<NodeId>,
}

fn fail<T>(path: &str, msg: impl std::fmt::Display) -> Result<T, String> {
    Err(format!("JSON schema error at {path}: {msg}"))
}

impl<'a> Builder<'a> {
    fn build(root: &'a Json) -> Result<Doc, String> {
        let mut b = Builder {
            root,
            nodes: Vec::new(),
            refs: HashMap::new(),
            pending: Vec::new(),
        };
        let top = b.node(root, "#")?;
        for id in std::mem::take(&mut b.pending) {
            let Node::Ref { reference, .. } = &b.nodes[id] else {
                continue;
            };
            let target = b.refs.get(reference).copied().flatten();
            if let Node::Ref { target: t, .. } = &mut b.nodes[id] {
                *t = target;
            }
        }
        Ok(Doc {
            nodes: b.nodes,
            root: top,
        })
    }

    fn push(&mut self, n: Node) -> NodeId {
        self.nodes.push(n);
        self.nodes.len() - 1
    }

    fn count(schema: &Json, key: &str, path: &str, default: i32) -> Result<i32, String> {
        let Some(v) = schema.get(key) else {
            return Ok(default);
        };
        let n = match v {
            Json::Int(i) => i32::try_from(*i).ok().filter(|n| *n >= 0),
            Json::UInt(u) => i32::try_from(*u).ok(),
            _ => None,
        };
        match n {
            Some(n) => Ok(n),
            None => fail(path, format!("{key} must be a non-negative integer")),
        }
    }

    /// A fractional bound is rounded inwards, towards the integers it still admits.
    fn bound(schema: &Json, key: &str, path: &str, round_up: bool) -> Result<i64, String> {
        match schema.get(key) {
            Some(Json::Int(i)) => Ok(*i),
            Some(Json::UInt(u)) => Ok(*u as i64),
            Some(Json::Float(f)) => Ok(if round_up { f.ceil() } else { f.floor() } as i64),
            _ => fail(path, format!("{key} must be a number")),
        }
    }

    fn format(schema: &Json, path: &str) -> Result<Format, String> {
        let Some(v) = schema.get("format") else {
            return Ok(Format::None);
        };
        let Json::Str(f) = v else {
            return fail(path, "format must be a string");
        };
        Ok(match f.as_str() {
            "date" => Format::Date,
            "time" => Format::Time,
            "date-time" => Format::DateTime,
            "uuid" | "uuid1" | "uuid2" | "uuid3" | "uuid4" | "uuid5" => Format::Uuid,
            _ => Format::None,
        })
    }

    fn resolve(&self, reference: &str, path: &str) -> Result<&'a Json, String> {
        let mut target = self.root;
        for sel in reference[1..].split('/').skip(1) {
            target = match target {
                Json::Obj(_) if target.has(sel) => target.get(sel).expect("present"),
                Json::Arr(items) => match sel.parse::<usize>().ok().and_then(|i| items.get(i)) {
                    Some(t) => t,
                    None => {
                        return fail(
                            path,
                            format!("cannot resolve $ref {reference}, {sel} is out of range"),
                        )
                    }
                },
                _ => {
                    return fail(
                        path,
                        format!("cannot resolve $ref {reference}, {sel} not found"),
                    )
                }
            };
        }
        Ok(target)
    }

    fn reference(&mut self, value: &Json, path: &str) -> Result<NodeId, String> {
        let Json::Str(reference) = value else {
            return fail(path, "$ref must be a string");
        };
        if !reference.starts_with("#/") {
            return fail(
                path,
                format!(
                    "unsupported $ref {reference}, only references into the same document are supported"
                ),
            );
        }
        if !self.refs.contains_key(reference) {
            // Reserve the key first, so that a cycle back to this $ref stops here.
            self.refs.insert(reference.clone(), None);
            let target = self.resolve(reference, path)?;
            let node = self.node(target, reference)?;
            self.refs.insert(reference.clone(), Some(node));
        }
        let id = self.push(Node::Ref {
            reference: reference.clone(),
            target: None,
        });
        self.pending.push(id);
        Ok(id)
    }

    fn alternatives(&mut self, alts: &Json, path: &str) -> Result<Vec<NodeId>, String> {
        let Json::Arr(alts) = alts else {
            return fail(path, "must be an array of schemas");
        };
        if alts.is_empty() {
            return fail(path, "must not be empty");
        }
        alts.iter()
            .enumerate()
            .map(|(i, alt)| self.node(alt, &format!("{path}/{i}")))
            .collect()
    }

    fn object(&mut self, schema: &Json, path: &str) -> Result<NodeId, String> {
        let mut required = HashSet::new();
        if let Some(Json::Arr(names)) = schema.get("required") {
            for n in names {
                if let Json::Str(n) = n {
                    required.insert(n.as_str());
                }
            }
        }
        let mut properties = Vec::new();
        if let Some(props) = schema.get("properties") {
            let Json::Obj(props) = props else {
                return fail(path, "properties must be an object");
            };
            for (name, prop) in props {
                let id = self.node(prop, &format!("{path}/properties/{name}"))?;
                properties.push((name.clone(), id, required.contains(name.as_str())));
            }
        }
        let additional = match schema.get("additionalProperties") {
            Some(Json::Bool(true)) => Some(self.push(Node::Any)),
            Some(Json::Bool(false)) => None,
            Some(a @ Json::Obj(_)) => Some(self.node(a, &format!("{path}/additionalProperties"))?),
            Some(_) => return fail(path, "additionalProperties must be a boolean or a schema"),
            // {"type": "object"} on its own accepts any object.
            None if !schema.has("properties") => Some(self.push(Node::Any)),
            None => None,
        };
        Ok(self.push(Node::Object {
            properties,
            additional,
        }))
    }

    fn array(&mut self, schema: &Json, path: &str) -> Result<NodeId, String> {
        let items = if schema.has("items") || schema.has("prefixItems") {
            // "items" wins when both are present; a schema instead of an array is the item
            // schema.
            let key = if schema.has("items") {
                "items"
            } else {
                "prefixItems"
            };
            match schema.get(key).expect("present") {
                Json::Arr(items) => {
                    let mut ids = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        ids.push(self.node(item, &format!("{path}/{key}/{i}"))?);
                    }
                    return Ok(self.push(Node::Tuple(ids)));
                }
                items => self.node(items, &format!("{path}/{key}"))?,
            }
        } else {
            self.push(Node::Any)
        };
        let min_items = Self::count(schema, "minItems", path, 0)?;
        let max_items = Self::count(schema, "maxItems", path, -1)?;
        Ok(self.push(Node::Array {
            items,
            min_items,
            max_items,
        }))
    }

    fn string(&mut self, schema: &Json, path: &str) -> Result<NodeId, String> {
        let pattern = match schema.get("pattern") {
            None => String::new(),
            Some(Json::Str(p)) => p.clone(),
            Some(_) => return fail(path, "pattern must be a string"),
        };
        let format = Self::format(schema, path)?;
        let min_length = Self::count(schema, "minLength", path, 0)?;
        let max_length = Self::count(schema, "maxLength", path, -1)?;
        Ok(self.push(Node::Str {
            pattern,
            format,
            min_length,
            max_length,
        }))
    }

    fn integer(&mut self, schema: &Json, path: &str) -> Result<NodeId, String> {
        let mut min = i64::MIN;
        let mut max = i64::MAX;
        if schema.has("minimum") {
            min = Self::bound(schema, "minimum", path, true)?;
        } else if schema.has("exclusiveMinimum") {
            min = Self::bound(schema, "exclusiveMinimum", path, false)?.wrapping_add(1);
        }
        if schema.has("maximum") {
            max = Self::bound(schema, "maximum", path, false)?;
        } else if schema.has("exclusiveMaximum") {
            max = Self::bound(schema, "exclusiveMaximum", path, true)?.wrapping_sub(1);
        }
        Ok(self.push(Node::Integer { min, max }))
    }

    fn node(&mut self, schema: &Json, path: &str) -> Result<NodeId, String> {
        if !matches!(schema, Json::Obj(_)) {
            return fail(path, "schema must be an object");
        }
        if let Some(r) = schema.get("$ref") {
            return self.reference(r, path);
        }
        if schema.has("oneOf") || schema.has("anyOf") {
            let key = if schema.has("oneOf") {
                "oneOf"
            } else {
                "anyOf"
            };
            let alts =
                self.alternatives(schema.get(key).expect("present"), &format!("{path}/{key}"))?;
            return Ok(self.push(Node::AnyOf(alts)));
        }
        let ty = schema.get("type").unwrap_or(&Json::Null);
        if let Json::Arr(types) = ty {
            // {"type": ["a", "b"], ...} is {"anyOf": [{"type": "a", ...}, {"type": "b", ...}]}
            if types.is_empty() {
                return fail(path, "type must not be empty");
            }
            let mut alts = Vec::with_capacity(types.len());
            for (i, t) in types.iter().enumerate() {
                let Json::Obj(entries) = schema else {
                    unreachable!("checked above")
                };
                let mut alt = entries.clone();
                if let Some(e) = alt.iter_mut().find(|(k, _)| k == "type") {
                    e.1 = t.clone();
                }
                alts.push(self.node(&Json::Obj(alt), &format!("{path}/type/{i}"))?);
            }
            return Ok(self.push(Node::AnyOf(alts)));
        }
        if let Some(c) = schema.get("const") {
            return Ok(self.push(Node::Const(c.clone())));
        }
        if let Some(values) = schema.get("enum") {
            return match values {
                Json::Arr(v) if !v.is_empty() => Ok(self.push(Node::Enum(v.clone()))),
                _ => fail(path, "enum must be a non-empty array"),
            };
        }
        let type_name = match ty {
            Json::Null => "",
            Json::Str(s) => s.as_str(),
            _ => return fail(path, "type must be a string or an array of strings"),
        };
        let has_properties = schema.has("properties")
            || schema
                .get("additionalProperties")
                .is_some_and(|a| *a != Json::Bool(true));
        let all_of = |b: &mut Self| -> Result<NodeId, String> {
            let alts = b.alternatives(
                schema.get("allOf").expect("present"),
                &format!("{path}/allOf"),
            )?;
            Ok(b.push(Node::AllOf(alts)))
        };
        match type_name {
            // Without a type the structural keywords decide, in the converter's order.
            "" => {
                if has_properties {
                    self.object(schema, path)
                } else if schema.has("allOf") {
                    all_of(self)
                } else if schema.has("items") || schema.has("prefixItems") {
                    self.array(schema, path)
                } else if schema.has("pattern")
                    || schema.has("minLength")
                    || schema.has("maxLength")
                    || Self::format(schema, path)? != Format::None
                {
                    self.string(schema, path)
                } else {
                    Ok(self.push(Node::Any))
                }
            }
            "object" if !has_properties && schema.has("allOf") => all_of(self),
            "object" => self.object(schema, path),
            "string" if schema.has("allOf") => all_of(self),
            "string" => self.string(schema, path),
            "array" => self.array(schema, path),
            "integer" => self.integer(schema, path),
            "number" => Ok(self.push(Node::Number)),
            "boolean" => Ok(self.push(Node::Boolean)),
            "null" => Ok(self.push(Node::Null)),
            other => fail(path, format!("unrecognized type {other}")),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The converter.

const SPACE_RULE: &str = r#"| " " | "\n"{1,2} [ \t]{0,20}"#;

/// (name, rule, the rules it uses)
const PRIMITIVE_RULES: &[(&str, &str, &[&str])] = &[
    ("boolean", r#"("true" | "false")"#, &[]),
    ("decimal-part", "[0-9]{1,16}", &[]),
    ("integral-part", "[0] | [1-9] [0-9]{0,15}", &[]),
    (
        "number",
        r#"("-"? integral-part) ("." decimal-part)? ([eE] [-+]? integral-part)?"#,
        &["integral-part", "decimal-part"],
    ),
    ("integer", r#"("-"? integral-part)"#, &["integral-part"]),
    (
        "value",
        "object | array | string | number | boolean | null",
        &["object", "array", "string", "number", "boolean", "null"],
    ),
    (
        "object",
        r#""{" space ( string ":" space value ("," space string ":" space value)* )? space "}""#,
        &["string", "value"],
    ),
    (
        "array",
        r#""[" space ( value ("," space value)* )? space "]""#,
        &["value"],
    ),
    (
        "uuid",
        r#""\"" [0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12} "\"""#,
        &[],
    ),
    (
        "char",
        r#"[^"\\\x7F\x00-\x1F] | [\\] (["\\bfnrt] | "u" [0-9a-fA-F]{4})"#,
        &[],
    ),
    ("string", r#""\"" char* "\"""#, &["char"]),
    ("null", r#""null""#, &[]),
];

const STRING_FORMAT_RULES: &[(&str, &str, &[&str])] = &[
    (
        "date",
        r#"[0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [1-2] [0-9] | "3" [0-1] )"#,
        &[],
    ),
    (
        "time",
        r#"([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{3} )? ( "Z" | ( "+" | "-" ) ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )"#,
        &[],
    ),
    ("date-time", r#"date "T" time"#, &["date", "time"]),
    ("date-string", r#""\"" date "\"""#, &["date"]),
    ("time-string", r#""\"" time "\"""#, &["time"]),
    ("date-time-string", r#""\"" date-time "\"""#, &["date-time"]),
];

fn builtin(name: &str) -> Option<(&'static str, &'static [&'static str])> {
    PRIMITIVE_RULES
        .iter()
        .chain(STRING_FORMAT_RULES)
        .find(|(n, _, _)| *n == name)
        .map(|(_, rule, deps)| (*rule, *deps))
}

fn is_reserved_name(name: &str) -> bool {
    name == "root" || builtin(name).is_some()
}

/// Runs of characters a rule name cannot hold, each replaced by one `-`.
fn rule_name_chars(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_run = false;
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
            in_run = false;
        } else if !in_run {
            out.push('-');
            in_run = true;
        }
    }
    out
}

/// A GBNF string literal of `literal` (only `\r`, `\n`, `"` and `\` escaped).
fn format_literal(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len() + 2);
    out.push('"');
    for c in literal.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn build_repetition(
    item_rule: &str,
    min_items: i32,
    max_items: i32,
    separator_rule: &str,
) -> String {
    let has_max = max_items != i32::MAX;
    if max_items == 0 {
        return String::new();
    }
    if min_items == 0 && max_items == 1 {
        return format!("{item_rule}?");
    }
    if separator_rule.is_empty() {
        if min_items == 1 && !has_max {
            return format!("{item_rule}+");
        }
        if min_items == 0 && !has_max {
            return format!("{item_rule}*");
        }
        let max = if has_max {
            max_items.to_string()
        } else {
            String::new()
        };
        return format!("{item_rule}{{{min_items},{max}}}");
    }
    let rest = build_repetition(
        &format!("({separator_rule} {item_rule})"),
        if min_items == 0 { 0 } else { min_items - 1 },
        if has_max { max_items - 1 } else { max_items },
        "",
    );
    let result = format!("{item_rule} {rest}");
    if min_items == 0 {
        format!("({result})?")
    } else {
        result
    }
}

/// Decimal integers from `min` to `max` (`i64::MIN` / `i64::MAX`: unbounded).
struct IntRange<'o> {
    out: &'o mut String,
}

impl IntRange<'_> {
    fn digit_range(&mut self, from: u8, to: u8) {
        self.out.push('[');
        self.out.push(from as char);
        if from != to {
            self.out.push('-');
            self.out.push(to as char);
        }
        self.out.push(']');
    }

    fn more_digits(&mut self, min_digits: i64, max_digits: i64) {
        self.out.push_str("[0-9]");
        if min_digits == max_digits && min_digits == 1 {
            return;
        }
        let _ = write!(self.out, "{{{min_digits}");
        if max_digits != min_digits {
            self.out.push(',');
            if max_digits != i64::from(i32::MAX) {
                let _ = write!(self.out, "{max_digits}");
            }
        }
        self.out.push('}');
    }

    fn uniform_range(&mut self, from: &[u8], to: &[u8]) {
        let mut i = 0;
        while i < from.len() && i < to.len() && from[i] == to[i] {
            i += 1;
        }
        if i > 0 {
            self.out.push('"');
            self.out
                .push_str(std::str::from_utf8(&from[..i]).unwrap_or_default());
            self.out.push('"');
        }
        if i < from.len() && i < to.len() {
            if i > 0 {
                self.out.push(' ');
            }
            let sub_len = from.len() - i - 1;
            if sub_len > 0 {
                let from_sub = &from[i + 1..];
                let to_sub = &to[i + 1..];
                let zeros = vec![b'0'; sub_len];
                let nines = vec![b'9'; sub_len];
                let mut to_reached = false;
                self.out.push('(');
                if from_sub == zeros.as_slice() {
                    self.digit_range(from[i], to[i].wrapping_sub(1));
                    self.out.push(' ');
                    self.more_digits(sub_len as i64, sub_len as i64);
                } else {
                    let _ = write!(self.out, "[{}] ", from[i] as char);
                    self.out.push('(');
                    self.uniform_range(from_sub, &nines);
                    self.out.push(')');
                    if from[i] < to[i].wrapping_sub(1) {
                        self.out.push_str(" | ");
                        if to_sub == nines.as_slice() {
                            self.digit_range(from[i] + 1, to[i]);
                            to_reached = true;
                        } else {
                            self.digit_range(from[i] + 1, to[i] - 1);
                        }
                        self.out.push(' ');
                        self.more_digits(sub_len as i64, sub_len as i64);
                    }
                }
                if !to_reached {
                    self.out.push_str(" | ");
                    self.digit_range(to[i], to[i]);
                    self.out.push(' ');
                    self.uniform_range(&zeros, to_sub);
                }
                self.out.push(')');
            } else {
                let _ = write!(self.out, "[{}-{}]", from[i] as char, to[i] as char);
            }
        }
    }

    fn build(
        &mut self,
        mut min: i64,
        max: i64,
        decimals_left: i64,
        top_level: bool,
    ) -> Result<(), String> {
        let has_min = min != i64::MIN;
        let has_max = max != i64::MAX;
        if has_min && has_max {
            if min < 0 && max < 0 {
                self.out.push_str("\"-\" (");
                self.build(max.wrapping_neg(), min.wrapping_neg(), decimals_left, true)?;
                self.out.push(')');
                return Ok(());
            }
            if min < 0 {
                self.out.push_str("\"-\" (");
                self.build(0, min.wrapping_neg(), decimals_left, true)?;
                self.out.push_str(") | ");
                min = 0;
            }
            let mut min_s = min.to_string().into_bytes();
            let max_s = max.to_string().into_bytes();
            for digits in min_s.len()..max_s.len() {
                self.uniform_range(&min_s.clone(), &vec![b'9'; digits]);
                min_s = std::iter::once(b'1')
                    .chain(std::iter::repeat_n(b'0', digits))
                    .collect();
                self.out.push_str(" | ");
            }
            self.uniform_range(&min_s, &max_s);
            return Ok(());
        }
        let less_decimals = (decimals_left - 1).max(1);
        if has_min {
            if min < 0 {
                self.out.push_str("\"-\" (");
                self.build(i64::MIN, min.wrapping_neg(), decimals_left, false)?;
                self.out.push_str(") | [0] | [1-9] ");
                self.more_digits(0, decimals_left - 1);
            } else if min == 0 {
                if top_level {
                    self.out.push_str("[0] | [1-9] ");
                    self.more_digits(0, less_decimals);
                } else {
                    self.more_digits(1, decimals_left);
                }
            } else if min <= 9 {
                let c = b'0' + min as u8;
                let range_start = if top_level { b'1' } else { b'0' };
                if c > range_start {
                    self.digit_range(range_start, c - 1);
                    self.out.push(' ');
                    self.more_digits(1, less_decimals);
                    self.out.push_str(" | ");
                }
                self.digit_range(c, b'9');
                self.out.push(' ');
                self.more_digits(0, less_decimals);
            } else {
                let min_s = min.to_string();
                let len = min_s.len() as i64;
                let c = min_s.as_bytes()[0];
                if c > b'1' {
                    self.digit_range(if top_level { b'1' } else { b'0' }, c - 1);
                    self.out.push(' ');
                    self.more_digits(len, less_decimals);
                    self.out.push_str(" | ");
                }
                self.digit_range(c, c);
                self.out.push_str(" (");
                let rest: i64 = min_s[1..]
                    .parse()
                    .map_err(|_| "integer bound".to_string())?;
                self.build(rest, i64::MAX, less_decimals, false)?;
                self.out.push(')');
                if c < b'9' {
                    self.out.push_str(" | ");
                    self.digit_range(c + 1, b'9');
                    self.out.push(' ');
                    self.more_digits(len - 1, less_decimals);
                }
            }
            return Ok(());
        }
        if has_max {
            if max >= 0 {
                if top_level {
                    self.out.push_str("\"-\" [1-9] ");
                    self.more_digits(0, less_decimals);
                    self.out.push_str(" | ");
                }
                self.build(0, max, decimals_left, true)?;
            } else {
                self.out.push_str("\"-\" (");
                self.build(max.wrapping_neg(), i64::MAX, decimals_left, false)?;
                self.out.push(')');
            }
            return Ok(());
        }
        Err("an integer range needs a minimum or a maximum".to_string())
    }
}

/// Deepest group nesting of a `pattern` converted to a grammar.
const MAX_PATTERN_DEPTH: usize = 100;

fn is_non_literal(c: u8) -> bool {
    b"|.()[]{}*+?^$".contains(&c)
}

fn escaped_in_regexps_but_not_in_literals(c: u8) -> bool {
    b"^$.[]()|{}*+?".contains(&c)
}

/// Length of a GBNF escape at `pos` of `pattern` (`\xHH`, `\uHHHH`, `\UHHHHHHHH`, `\t`,
/// `\r`, `\n`, `\\`, `\"`, `\[`, `\]`, `\-`), 0 if there is none.
fn gbnf_escape_length(pattern: &[u8], pos: usize) -> usize {
    if pos + 1 >= pattern.len() || pattern[pos] != b'\\' {
        return 0;
    }
    let n_hex = match pattern[pos + 1] {
        b'x' => 2,
        b'u' => 4,
        b'U' => 8,
        b't' | b'r' | b'n' | b'\\' | b'"' | b'[' | b']' | b'-' => return 2,
        _ => return 0,
    };
    if pos + 2 + n_hex > pattern.len() {
        return 0;
    }
    if pattern[pos + 2..pos + 2 + n_hex]
        .iter()
        .all(u8::is_ascii_hexdigit)
    {
        2 + n_hex
    } else {
        0
    }
}

/// C's `stoi`: leading whitespace, a sign, digits; `None` without digits or out of range.
fn stoi(s: &str) -> Option<i32> {
    let t = s.trim_start();
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let end = digits
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 {
        return None;
    }
    let v: i64 = digits[..end].parse().ok()?;
    i32::try_from(if neg { -v } else { v }).ok()
}

enum PatternError {
    /// A valid regex with no grammar equivalent: the string accepts anything.
    Unsupported(String),
    /// Not a valid regex.
    Invalid(String),
}

struct Converter<'d> {
    doc: &'d Doc,
    rules: BTreeMap<String, String>,
    refs_being_resolved: HashSet<String>,
    errors: Vec<String>,
    warnings: Vec<String>,
}

impl<'d> Converter<'d> {
    fn new(doc: &'d Doc) -> Self {
        let mut rules = BTreeMap::new();
        rules.insert("space".to_string(), SPACE_RULE.to_string());
        Converter {
            doc,
            rules,
            refs_being_resolved: HashSet::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn add_rule(&mut self, name: &str, rule: &str) -> String {
        let esc = rule_name_chars(name);
        match self.rules.get(&esc) {
            None => {
                self.rules.insert(esc.clone(), rule.to_string());
                return esc;
            }
            Some(r) if r == rule => return esc,
            Some(_) => {}
        }
        let mut i = 0;
        loop {
            let key = format!("{esc}{i}");
            match self.rules.get(&key) {
                Some(r) if r != rule => i += 1,
                _ => {
                    self.rules.insert(key.clone(), rule.to_string());
                    return key;
                }
            }
        }
    }

    fn add_primitive(&mut self, name: &str, primitive: &str) -> String {
        let (rule, deps) = builtin(primitive).expect("a built-in rule");
        let n = self.add_rule(name, rule);
        for dep in deps {
            if !self.rules.contains_key(*dep) {
                self.add_primitive(dep, dep);
            }
        }
        n
    }

    fn visit_primitive(&mut self, rule_name: &str, ty: &str) -> String {
        self.add_primitive(if rule_name == "root" { "root" } else { ty }, ty)
    }

    fn union(&mut self, name: &str, alts: &[NodeId]) -> Result<String, String> {
        let mut rules = Vec::with_capacity(alts.len());
        for (i, alt) in alts.iter().enumerate() {
            let sep = if name.is_empty() { "alternative-" } else { "-" };
            rules.push(self.visit(*alt, &format!("{name}{sep}{i}"))?);
        }
        Ok(rules.join(" | "))
    }

    fn visit_pattern(&mut self, pattern: &str, name: &str) -> String {
        let snapshot = self.rules.clone();
        match self.pattern_to_rule(pattern, name) {
            Ok(rule) => rule,
            Err(PatternError::Unsupported(why)) => {
                self.rules = snapshot;
                self.warnings.push(format!(
                    "pattern {pattern} is not supported ({why}), accepting any string"
                ));
                let s = self.add_primitive("string", "string");
                self.add_rule(name, &s)
            }
            Err(PatternError::Invalid(why)) => {
                self.rules = snapshot;
                self.errors
                    .push(format!("Invalid pattern {pattern}: {why}"));
                String::new()
            }
        }
    }

    fn pattern_to_rule(&mut self, pattern: &str, name: &str) -> Result<String, PatternError> {
        let p = pattern.as_bytes();
        if p.len() < 2 || p[0] != b'^' || p[p.len() - 1] != b'$' {
            return Err(PatternError::Unsupported(
                "not anchored with '^' and '$'".into(),
            ));
        }
        let mut t = PatternTransform {
            conv: self,
            sub: &p[1..p.len() - 1],
            name,
            i: 0,
            depth: 0,
            sub_rule_ids: HashMap::new(),
        };
        let rule = t.transform()?;
        if t.depth != 0 {
            return Err(PatternError::Invalid("unbalanced parentheses".into()));
        }
        let rule = to_rule(&rule);
        Ok(self.add_rule(name, &format!("\"\\\"\" ({rule}) \"\\\"\"")))
    }

    /// A JSON string that is none of `strings`.
    fn not_strings(&mut self, strings: &[String]) -> String {
        #[derive(Default)]
        struct TrieNode {
            children: BTreeMap<char, usize>,
            end: bool,
        }
        let mut nodes = vec![TrieNode::default()];
        for s in strings {
            let mut cur = 0;
            for ch in s.chars() {
                cur = match nodes[cur].children.get(&ch) {
                    Some(&next) => next,
                    None => {
                        nodes.push(TrieNode::default());
                        let next = nodes.len() - 1;
                        nodes[cur].children.insert(ch, next);
                        next
                    }
                };
            }
            nodes[cur].end = true;
        }
        let char_rule = self.add_primitive("char", "char");
        fn walk(nodes: &[TrieNode], idx: usize, char_rule: &str, out: &mut String) {
            let node = &nodes[idx];
            let mut rejects = String::new();
            for (i, (ch, &child)) in node.children.iter().enumerate() {
                rejects.push(*ch);
                if i > 0 {
                    out.push_str(" | ");
                }
                let _ = write!(out, "[{ch}]");
                if !nodes[child].children.is_empty() {
                    out.push_str(" (");
                    walk(nodes, child, char_rule, out);
                    out.push(')');
                } else {
                    let _ = write!(out, " {char_rule}+");
                }
            }
            if !node.children.is_empty() {
                let _ = write!(out, " | [^\"{rejects}] {char_rule}*");
            }
        }
        let mut out = String::from("[\"] ( ");
        walk(&nodes, 0, &char_rule, &mut out);
        out.push_str(" )");
        if !nodes[0].end {
            out.push('?');
        }
        out.push_str(" [\"]");
        out
    }

    fn resolve_ref(&mut self, reference: &str, target: Option<NodeId>) -> Result<String, String> {
        let fragment = match reference.find('#') {
            Some(i) => &reference[i + 1..],
            None => reference,
        };
        let mut ref_name = format!("ref{}", rule_name_chars(fragment));
        if !self.rules.contains_key(&ref_name) && !self.refs_being_resolved.contains(reference) {
            let Some(target) = target else {
                self.errors.push(format!("Unresolved $ref {reference}"));
                return Ok(String::new());
            };
            self.refs_being_resolved.insert(reference.to_string());
            ref_name = self.visit(target, &ref_name)?;
            self.refs_being_resolved.remove(reference);
        }
        Ok(ref_name)
    }

    fn object_rule(
        &mut self,
        properties: &[(String, NodeId)],
        required: &HashSet<String>,
        name: &str,
        additional: Option<NodeId>,
    ) -> Result<String, String> {
        let dash = if name.is_empty() { "" } else { "-" };
        let mut required_props = Vec::new();
        let mut optional_props = Vec::new();
        let mut kv_rules: HashMap<String, String> = HashMap::new();
        let mut prop_names = Vec::new();
        for (prop_name, prop) in properties {
            let prop_rule = self.visit(*prop, &format!("{name}{dash}{prop_name}"))?;
            let kv = self.add_rule(
                &format!("{name}{dash}{prop_name}-kv"),
                &format!(
                    "{} space \":\" space {prop_rule}",
                    format_literal(&Json::Str(prop_name.clone()).dump())
                ),
            );
            kv_rules.insert(prop_name.clone(), kv);
            if required.contains(prop_name) {
                required_props.push(prop_name.clone());
            } else {
                optional_props.push(prop_name.clone());
            }
            prop_names.push(prop_name.clone());
        }
        if let Some(additional) = additional {
            let sub_name = format!("{name}{dash}additional");
            let value_rule = if matches!(self.doc.nodes[additional], Node::Any) {
                self.add_primitive("value", "value")
            } else {
                self.visit(additional, &format!("{sub_name}-value"))?
            };
            let key_rule = if prop_names.is_empty() {
                self.add_primitive("string", "string")
            } else {
                let rule = self.not_strings(&prop_names);
                self.add_rule(&format!("{sub_name}-k"), &rule)
            };
            let kv = self.add_rule(
                &format!("{sub_name}-kv"),
                &format!("{key_rule} \":\" space {value_rule}"),
            );
            kv_rules.insert("*".to_string(), kv);
            optional_props.push("*".to_string());
        }
        if required_props.is_empty() && optional_props.is_empty() {
            return Ok(r#""{" space "}""#.to_string());
        }
        let mut rule = String::from("\"{\" space ");
        for (i, p) in required_props.iter().enumerate() {
            if i > 0 {
                rule.push_str(" \",\" space ");
            }
            rule.push_str(&kv_rules[p]);
        }
        if !optional_props.is_empty() {
            rule.push_str(" (");
            if !required_props.is_empty() {
                rule.push_str(" \",\" space ( ");
            }
            for i in 0..optional_props.len() {
                if i > 0 {
                    rule.push_str(" | ");
                }
                let refs = self.recursive_refs(&optional_props[i..], false, name, &kv_rules);
                rule.push_str(&refs);
            }
            if !required_props.is_empty() {
                rule.push_str(" )");
            }
            rule.push_str(" )?");
        }
        rule.push_str(" space \"}\"");
        Ok(rule)
    }

    fn recursive_refs(
        &mut self,
        ks: &[String],
        first_is_optional: bool,
        name: &str,
        kv_rules: &HashMap<String, String>,
    ) -> String {
        let Some(k) = ks.first() else {
            return String::new();
        };
        let kv = &kv_rules[k];
        let comma_ref = format!("( \",\" space {kv} )");
        let mut res = if first_is_optional {
            format!("{comma_ref}{}", if k == "*" { "*" } else { "?" })
        } else if k == "*" {
            format!("{kv} {comma_ref}*")
        } else {
            kv.clone()
        };
        if ks.len() > 1 {
            let dash = if name.is_empty() { "" } else { "-" };
            let rest = self.recursive_refs(&ks[1..], true, name, kv_rules);
            let rest_name = self.add_rule(&format!("{name}{dash}{k}-rest"), &rest);
            res.push(' ');
            res.push_str(&rest_name);
        }
        res
    }

    fn visit_all_of(
        &mut self,
        children: &[NodeId],
        name: &str,
        rule_name: &str,
    ) -> Result<String, String> {
        let mut required = HashSet::new();
        let mut properties: Vec<(String, NodeId)> = Vec::new();
        let mut enum_values: BTreeMap<String, usize> = BTreeMap::new();
        let doc = self.doc;
        let nodes = &doc.nodes;
        // Ref chains are followed once per node: a cycle of refs adds nothing more.
        fn add_component(
            nodes: &[Node],
            id: NodeId,
            is_required: bool,
            seen: &mut HashSet<NodeId>,
            properties: &mut Vec<(String, NodeId)>,
            required: &mut HashSet<String>,
            enum_values: &mut BTreeMap<String, usize>,
        ) {
            match &nodes[id] {
                Node::Ref {
                    target: Some(t), ..
                } if seen.insert(id) => {
                    add_component(
                        nodes,
                        *t,
                        is_required,
                        seen,
                        properties,
                        required,
                        enum_values,
                    );
                    seen.remove(&id);
                }
                Node::Object {
                    properties: props, ..
                } => {
                    for (pname, pid, _) in props {
                        properties.push((pname.clone(), *pid));
                        if is_required {
                            required.insert(pname.clone());
                        }
                    }
                }
                Node::Enum(values) => {
                    for v in values {
                        *enum_values.entry(format_literal(&v.dump())).or_default() += 1;
                    }
                }
                _ => {}
            }
        }
        let mut seen = HashSet::new();
        for &child in children {
            if let Node::AnyOf(alts) = &nodes[child] {
                for &alt in alts {
                    add_component(
                        nodes,
                        alt,
                        false,
                        &mut seen,
                        &mut properties,
                        &mut required,
                        &mut enum_values,
                    );
                }
            } else {
                add_component(
                    nodes,
                    child,
                    true,
                    &mut seen,
                    &mut properties,
                    &mut required,
                    &mut enum_values,
                );
            }
        }
        if !enum_values.is_empty() {
            let intersection: Vec<&str> = enum_values
                .iter()
                .filter(|(_, n)| **n == children.len())
                .map(|(v, _)| v.as_str())
                .collect();
            if !intersection.is_empty() {
                let rule = format!("({})", intersection.join(" | "));
                return Ok(self.add_rule(rule_name, &rule));
            }
        }
        let rule = self.object_rule(&properties, &required, name, None)?;
        Ok(self.add_rule(rule_name, &rule))
    }

    fn visit(&mut self, id: NodeId, name: &str) -> Result<String, String> {
        let rule_name = if is_reserved_name(name) {
            format!("{name}-")
        } else if name.is_empty() {
            "root".to_string()
        } else {
            name.to_string()
        };
        let sub_name = format!("{name}{}", if name.is_empty() { "" } else { "-" });
        let doc = self.doc;
        let nodes = &doc.nodes;
        Ok(match &nodes[id] {
            Node::Ref { reference, target } => {
                let r = self.resolve_ref(reference, *target)?;
                self.add_rule(&rule_name, &r)
            }
            Node::AnyOf(alts) => {
                let r = self.union(name, alts)?;
                self.add_rule(&rule_name, &r)
            }
            Node::AllOf(children) => self.visit_all_of(children, name, &rule_name)?,
            Node::Const(v) => self.add_rule(&rule_name, &format_literal(&v.dump())),
            Node::Enum(values) => {
                let alts: Vec<String> = values.iter().map(|v| format_literal(&v.dump())).collect();
                self.add_rule(&rule_name, &format!("({})", alts.join(" | ")))
            }
            Node::Object {
                properties,
                additional,
            } => {
                if properties.is_empty()
                    && additional.is_some_and(|a| matches!(nodes[a], Node::Any))
                {
                    let r = self.add_primitive("object", "object");
                    return Ok(self.add_rule(&rule_name, &r));
                }
                let props: Vec<(String, NodeId)> = properties
                    .iter()
                    .map(|(n, id, _)| (n.clone(), *id))
                    .collect();
                let required: HashSet<String> = properties
                    .iter()
                    .filter(|(_, _, r)| *r)
                    .map(|(n, _, _)| n.clone())
                    .collect();
                let rule = self.object_rule(&props, &required, name, *additional)?;
                self.add_rule(&rule_name, &rule)
            }
            Node::Tuple(items) => {
                let mut rule = String::from("\"[\" space ");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        rule.push_str(" \",\" space ");
                    }
                    rule.push_str(&self.visit(*item, &format!("{sub_name}tuple-{i}"))?);
                }
                rule.push_str(" space \"]\"");
                self.add_rule(&rule_name, &rule)
            }
            Node::Array {
                items,
                min_items,
                max_items,
            } => {
                if matches!(nodes[*items], Node::Any) && *min_items == 0 && *max_items < 0 {
                    return Ok(self.visit_primitive(&rule_name, "array"));
                }
                let item_rule = self.visit(*items, &format!("{sub_name}item"))?;
                let max = if *max_items < 0 { i32::MAX } else { *max_items };
                let rep = build_repetition(&item_rule, *min_items, max, "\",\" space");
                self.add_rule(&rule_name, &format!("\"[\" space {rep} space \"]\""))
            }
            Node::Str {
                pattern,
                format,
                min_length,
                max_length,
            } => {
                if !pattern.is_empty() {
                    return Ok(self.visit_pattern(pattern, &rule_name));
                }
                match format {
                    Format::Uuid => return Ok(self.visit_primitive(&rule_name, "uuid")),
                    Format::Date | Format::Time | Format::DateTime => {
                        let prim = match format {
                            Format::Date => "date-string",
                            Format::Time => "time-string",
                            _ => "date-time-string",
                        };
                        let r = self.add_primitive(prim, prim);
                        return Ok(self.add_rule(&rule_name, &r));
                    }
                    Format::None => {}
                }
                if *min_length > 0 || *max_length >= 0 {
                    let char_rule = self.add_primitive("char", "char");
                    let max = if *max_length < 0 {
                        i32::MAX
                    } else {
                        *max_length
                    };
                    let rep = build_repetition(&char_rule, *min_length, max, "");
                    self.add_rule(&rule_name, &format!("\"\\\"\" {rep} \"\\\"\""))
                } else {
                    self.visit_primitive(&rule_name, "string")
                }
            }
            Node::Integer { min, max } => {
                if *min == i64::MIN && *max == i64::MAX {
                    return Ok(self.visit_primitive(&rule_name, "integer"));
                }
                let mut out = String::from("(");
                IntRange { out: &mut out }.build(*min, *max, 16, true)?;
                out.push(')');
                self.add_rule(&rule_name, &out)
            }
            Node::Number => self.visit_primitive(&rule_name, "number"),
            Node::Boolean => self.visit_primitive(&rule_name, "boolean"),
            Node::Null => self.visit_primitive(&rule_name, "null"),
            Node::Any => {
                let r = self.add_primitive("value", "value");
                self.add_rule(&rule_name, &r)
            }
        })
    }
}

/// A piece of a pattern: a literal (quoted when used) or a rule expression.
type Piece = (String, bool);

fn to_rule((s, is_literal): &Piece) -> String {
    if *is_literal {
        format!("\"{s}\"")
    } else {
        s.clone()
    }
}

struct PatternTransform<'c, 'd, 'p> {
    conv: &'c mut Converter<'d>,
    /// The pattern between `^` and `$`.
    sub: &'p [u8],
    name: &'p str,
    i: usize,
    depth: usize,
    /// Repeated sub-expressions, each a rule of its own.
    sub_rule_ids: HashMap<String, String>,
}

impl PatternTransform<'_, '_, '_> {
    fn text(&self, from: usize, len: usize) -> String {
        let end = (from + len).min(self.sub.len());
        String::from_utf8_lossy(&self.sub[from..end]).into_owned()
    }

    fn transform(&mut self) -> Result<Piece, PatternError> {
        let mut seq: Vec<Piece> = Vec::new();
        let length = self.sub.len();
        while self.i < length {
            let c = self.sub[self.i];
            match c {
                b'.' => {
                    let dot = self.conv.add_rule("dot", "[^\\x0A\\x0D]");
                    seq.push((dot, false));
                    self.i += 1;
                }
                b'(' => {
                    self.i += 1;
                    if self.i < length && self.sub[self.i] == b'?' {
                        if self.i + 1 < length && self.sub[self.i + 1] == b':' {
                            self.i += 2; // a non-capturing group is a group
                        } else {
                            return Err(PatternError::Unsupported(
                                "unsupported group syntax".into(),
                            ));
                        }
                    }
                    self.depth += 1;
                    if self.depth > MAX_PATTERN_DEPTH {
                        return Err(PatternError::Unsupported("pattern nesting too deep".into()));
                    }
                    let inner = self.transform()?;
                    seq.push((format!("({})", to_rule(&inner)), false));
                }
                b')' => {
                    self.i += 1;
                    if self.depth == 0 {
                        return Err(PatternError::Invalid("unbalanced parentheses".into()));
                    }
                    self.depth -= 1;
                    return Ok(join_seq(&seq));
                }
                b'^' | b'$' => {
                    return Err(PatternError::Unsupported(
                        "anchor inside the pattern".into(),
                    ));
                }
                b'[' => {
                    let mut class = vec![b'['];
                    self.i += 1;
                    while self.i < length && self.sub[self.i] != b']' {
                        if self.sub[self.i] == b'\\' {
                            let n = gbnf_escape_length(self.sub, self.i);
                            if n == 0 {
                                return Err(PatternError::Unsupported(format!(
                                    "unsupported escape in character class: {}",
                                    self.text(self.i, 2)
                                )));
                            }
                            class.extend_from_slice(&self.sub[self.i..self.i + n]);
                            self.i += n;
                        } else {
                            class.push(self.sub[self.i]);
                            self.i += 1;
                        }
                    }
                    if self.i >= length {
                        return Err(PatternError::Invalid("unterminated character class".into()));
                    }
                    class.push(b']');
                    self.i += 1;
                    seq.push((String::from_utf8_lossy(&class).into_owned(), false));
                }
                b'|' => {
                    seq.push(("|".to_string(), false));
                    self.i += 1;
                }
                b'*' | b'+' | b'?' => {
                    let Some(last) = seq.last_mut() else {
                        return Err(PatternError::Invalid("nothing to repeat".into()));
                    };
                    *last = (format!("{}{}", to_rule(last), c as char), false);
                    self.i += 1;
                }
                b'{' => {
                    let start = self.i + 1;
                    self.i += 1;
                    while self.i < length && self.sub[self.i] != b'}' {
                        self.i += 1;
                    }
                    if self.i >= length {
                        return Err(PatternError::Unsupported(
                            "unterminated curly brackets".into(),
                        ));
                    }
                    let inside = String::from_utf8_lossy(&self.sub[start..self.i]).into_owned();
                    self.i += 1;
                    let nums: Vec<&str> = inside.split(',').collect();
                    if nums.len() != 1 && nums.len() != 2 {
                        return Err(PatternError::Unsupported(
                            "wrong number of values in curly brackets".into(),
                        ));
                    }
                    let invalid =
                        || PatternError::Unsupported("invalid number in curly brackets".into());
                    let (min_times, max_times) = if nums.len() == 1 {
                        let n = stoi(nums[0]).ok_or_else(invalid)?;
                        (n, n)
                    } else {
                        let min = if nums[0].is_empty() {
                            0
                        } else {
                            stoi(nums[0]).ok_or_else(invalid)?
                        };
                        let max = if nums[1].is_empty() {
                            i32::MAX
                        } else {
                            stoi(nums[1]).ok_or_else(invalid)?
                        };
                        (min, max)
                    };
                    let Some(last) = seq.last_mut() else {
                        return Err(PatternError::Invalid("nothing to repeat".into()));
                    };
                    let (sub, sub_is_literal) = last.clone();
                    let item = if sub_is_literal {
                        format!("\"{sub}\"")
                    } else {
                        let next = self.sub_rule_ids.len() + 1;
                        match self.sub_rule_ids.get(&sub) {
                            Some(id) => id.clone(),
                            None => {
                                let id = self.conv.add_rule(&format!("{}-{next}", self.name), &sub);
                                self.sub_rule_ids.insert(sub, id.clone());
                                id
                            }
                        }
                    };
                    *last = (build_repetition(&item, min_times, max_times, ""), false);
                }
                _ => {
                    let mut literal: Vec<u8> = Vec::new();
                    while self.i < length {
                        let ch = self.sub[self.i];
                        if ch == b'\\' {
                            if self.i == length - 1 {
                                return Err(PatternError::Invalid("trailing backslash".into()));
                            }
                            let next = self.sub[self.i + 1];
                            if escaped_in_regexps_but_not_in_literals(next) {
                                literal.push(next);
                                self.i += 2;
                            } else {
                                let n = gbnf_escape_length(self.sub, self.i);
                                if n == 0 {
                                    return Err(PatternError::Unsupported(format!(
                                        "unsupported escape: {}",
                                        self.text(self.i, 2)
                                    )));
                                }
                                literal.extend_from_slice(&self.sub[self.i..self.i + n]);
                                self.i += n;
                            }
                        } else if ch == b'"' {
                            literal.extend_from_slice(b"\\\"");
                            self.i += 1;
                        } else if !is_non_literal(ch)
                            && (self.i == length - 1
                                || literal.is_empty()
                                || self.sub[self.i + 1] == b'.'
                                || !is_non_literal(self.sub[self.i + 1]))
                        {
                            literal.push(ch);
                            self.i += 1;
                        } else {
                            break;
                        }
                    }
                    if literal.is_empty() {
                        // Nothing was consumed: a stray ']' or '}'.
                        return Err(PatternError::Unsupported(format!(
                            "unsupported character: {}",
                            c as char
                        )));
                    }
                    seq.push((String::from_utf8_lossy(&literal).into_owned(), true));
                }
            }
        }
        Ok(join_seq(&seq))
    }
}

/// The sequence as one rule expression, consecutive literals merged.
fn join_seq(seq: &[Piece]) -> Piece {
    let mut ret: Vec<Piece> = Vec::new();
    let mut literal = String::new();
    for (s, is_literal) in seq {
        if *is_literal {
            literal.push_str(s);
        } else {
            if !literal.is_empty() {
                ret.push((std::mem::take(&mut literal), true));
            }
            ret.push((s.clone(), false));
        }
    }
    if !literal.is_empty() {
        ret.push((literal, true));
    }
    let parts: Vec<String> = ret.iter().map(to_rule).collect();
    (parts.join(" "), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Case {
        schema: String,
        /// The schema is given as a JSON string and passed as is (not valid JSON, say).
        raw: bool,
        /// `None`: the schema is refused.
        gbnf: Option<String>,
    }

    /// `schema_grammar_cases.json`: `[{"schema": ..., "gbnf": "..."} | {"schema": ..., "error": true}]`.
    fn cases() -> Vec<Case> {
        let text = include_str!("schema_grammar_cases.json");
        let Json::Arr(cases) = serde_json::from_str::<Json>(text).expect("the cases parse") else {
            panic!("the cases are an array");
        };
        cases
            .into_iter()
            .map(|c| {
                let raw = c.get("raw") == Some(&Json::Bool(true));
                let schema = match c.get("schema").expect("a schema") {
                    Json::Str(s) if raw => s.clone(),
                    s => s.dump(),
                };
                let gbnf = match c.get("gbnf") {
                    Some(Json::Str(g)) => Some(g.clone()),
                    _ => None,
                };
                Case { schema, raw, gbnf }
            })
            .collect()
    }

    #[test]
    fn every_case_gives_the_grammar_llama_cpp_gives() {
        let cases = cases();
        assert!(cases.len() >= 100, "{} cases", cases.len());
        assert!(cases.iter().filter(|c| c.gbnf.is_none()).count() >= 15);
        for Case { schema, raw, gbnf } in cases {
            assert!(
                !raw || gbnf.is_none(),
                "a raw case is one llama.cpp cannot parse"
            );
            let got = json_schema_to_gbnf(&schema);
            match gbnf {
                Some(g) => assert_eq!(got.as_deref(), Ok(g.as_str()), "schema {schema}"),
                None => assert!(got.is_err(), "schema {schema} should fail, gave {got:?}"),
            }
        }
    }

    /// Every case against llama.cpp's own converter, live. `PADDOCK_WRITE_GBNF_CASES=<file>`
    /// writes the cases with llama.cpp's grammars, to refresh `schema_grammar_cases.json`
    /// after a llama.cpp update.
    #[cfg(feature = "engine-llama")]
    #[test]
    fn every_case_matches_llama_cpp_live() {
        let mut out = Vec::new();
        let mut differ = Vec::new();
        for Case { schema, raw, .. } in cases() {
            let theirs = llama_cpp_2::json_schema_to_grammar(&schema).ok();
            let ours = json_schema_to_gbnf(&schema);
            if ours.as_ref().ok() != theirs.as_ref() {
                differ.push(format!(
                    "schema {schema}\n ours   {ours:?}\n theirs {theirs:?}"
                ));
            }
            let shown = if raw {
                format!("{}, \"raw\": true", Json::Str(schema.clone()).dump())
            } else {
                schema.clone()
            };
            out.push(match theirs {
                Some(g) => format!("{{\"schema\": {shown}, \"gbnf\": {}}}", Json::Str(g).dump()),
                None => format!("{{\"schema\": {shown}, \"error\": true}}"),
            });
        }
        if let Ok(path) = std::env::var("PADDOCK_WRITE_GBNF_CASES") {
            std::fs::write(path, format!("[\n{}\n]\n", out.join(",\n"))).unwrap();
        }
        assert!(
            differ.is_empty(),
            "{} of the cases differ:\n{}",
            differ.len(),
            differ.join("\n")
        );
    }

    #[test]
    fn a_schema_that_is_not_json_or_nests_too_deep_is_a_clean_error() {
        assert!(json_schema_to_gbnf("{")
            .unwrap_err()
            .contains("not valid JSON"));
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(json_schema_to_gbnf(&deep)
            .unwrap_err()
            .contains("not valid JSON"));
        let mut s = r#"{"type":"string"}"#.to_string();
        for _ in 0..200 {
            s = format!(r#"{{"type":"array","items":{s}}}"#);
        }
        assert!(json_schema_to_gbnf(&s)
            .unwrap_err()
            .contains("not valid JSON"));
    }

    #[test]
    fn a_refused_schema_says_what_is_wrong_and_where() {
        for (schema, message) in [
            (
                r#"{"type":"object","properties":{"age":{"type":"intger"}}}"#,
                "JSON schema error at #/properties/age: unrecognized type intger",
            ),
            (
                r#"{"type":"array","items":{"type":"string"},"minItems":-1}"#,
                "JSON schema error at #: minItems must be a non-negative integer",
            ),
            (
                r##"{"$ref":"#/$defs/missing"}"##,
                "cannot resolve $ref #/$defs/missing, $defs not found",
            ),
            (
                r#"{"type":"string","pattern":"^(ab$"}"#,
                "Invalid pattern ^(ab$: unbalanced parentheses",
            ),
        ] {
            let err = json_schema_to_gbnf(schema).unwrap_err();
            assert!(err.contains(message), "{schema}: {err}");
        }
    }

    #[test]
    fn ref_cycles_and_hostile_bounds_end_without_a_panic() {
        for s in [
            r##"{"$ref":"#/$defs/a","$defs":{"a":{"$ref":"#/$defs/b"},"b":{"$ref":"#/$defs/a"}}}"##,
            r##"{"allOf":[{"$ref":"#/$defs/a"}],"$defs":{"a":{"$ref":"#/$defs/b"},"b":{"$ref":"#/$defs/a"}}}"##,
            r#"{"type":"integer","maximum":-9223372036854775808}"#,
            r#"{"type":"integer","minimum":-9223372036854775807,"maximum":9223372036854775806}"#,
            r#"{"type":"integer","exclusiveMaximum":-9223372036854775808}"#,
            r#"{"type":"integer","exclusiveMinimum":9223372036854775807}"#,
            r#"{"type":"integer","minimum":1e300}"#,
            r#"{"type":"array","minItems":99999999999}"#,
            r#"{"type":"string","pattern":"^((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((a))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))$"}"#,
            r#"{"type":"string","pattern":"^a{99999999999}$"}"#,
            r#"{"type":"string","pattern":"^\\$"}"#,
        ] {
            let _ = json_schema_to_gbnf(s);
        }
    }

    #[test]
    fn floats_are_written_as_nlohmann_writes_them() {
        for (f, s) in [
            (1.5, "1.5"),
            (1.0, "1.0"),
            (-2.0, "-2.0"),
            (0.001234, "0.001234"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e14, "100000000000000.0"),
            (1e15, "1e+15"),
            (1.5e300, "1.5e+300"),
            (123456.789, "123456.789"),
        ] {
            assert_eq!(Json::Float(f).dump(), s, "{f}");
        }
    }
}
