//! Derives an ONNX graph from a BERT-family model's safetensors weights ("the hub can derive
//! them"), so ONNX Runtime serves repos that ship only safetensors. The graph is the one
//! onnxruntime's transformer optimizer produces for BERT: standard ops for the embeddings,
//! then per layer `com.microsoft` `Attention` (fused QKV), `SkipLayerNormalization`
//! (residual + bias + LayerNorm) and `BiasGelu`/`FastGelu`, which ONNX Runtime's CPU
//! kernels run well. No protobuf dependency: the few ONNX messages are encoded by hand
//! (field numbers from onnx.proto, IR version 8, opsets ai.onnx 17 + com.microsoft 1).
//!
//! Inputs: `input_ids`, `position_ids` (and `token_type_ids` when the model has token
//! types), int64 `[batch, sequence]`, and `attention_mask_3d`, int32 `[batch, sequence,
//! sequence]` (1 where query token i may attend to key token j). Positions and the 3-D
//! mask come from the caller so that one row can carry several inputs back to back
//! ("packed", no padding): each input's positions restart at the model's first position
//! and its tokens attend only to each other. A padded batch is the special case of one
//! input per row. Outputs: `last_hidden_state` `[batch, sequence, hidden]` and, for text
//! classification, `logits` `[batch, labels]` (from each row's first token, so
//! classification batches are never packed).

use super::candle::encoder::{BERT_NAMES, DISTILBERT_NAMES};
use super::candle::open_weights;
use super::error::LoadError;
use super::spec::{Activation, Arch, ModelSpec};
use super::task::Task;
use candle_core::Tensor;
use candle_nn::VarBuilder;

// ---- protobuf wire format -------------------------------------------------------------

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, ((field as u64) << 3) | wire as u64);
}

fn int(out: &mut Vec<u8>, field: u32, v: i64) {
    key(out, field, 0);
    varint(out, v as u64);
}

fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    key(out, field, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn float(out: &mut Vec<u8>, field: u32, v: f32) {
    key(out, field, 5);
    out.extend_from_slice(&v.to_le_bytes());
}

// ---- ONNX messages ---------------------------------------------------------------------

const FLOAT: i64 = 1;
const INT32: i64 = 6;
const INT64: i64 = 7;

/// An `AttributeProto`.
enum Attr {
    Int(&'static str, i64),
    Float(&'static str, f32),
}

impl Attr {
    fn encode(&self) -> Vec<u8> {
        let mut a = Vec::new();
        match self {
            Attr::Int(name, v) => {
                bytes(&mut a, 1, name.as_bytes());
                int(&mut a, 3, *v);
                int(&mut a, 20, 2);
            }
            Attr::Float(name, v) => {
                bytes(&mut a, 1, name.as_bytes());
                float(&mut a, 2, *v);
                int(&mut a, 20, 1);
            }
        }
        a
    }
}

fn tensor_proto(name: &str, dims: &[i64], data_type: i64, raw: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(raw.len() + 64);
    for d in dims {
        int(&mut t, 1, *d);
    }
    int(&mut t, 2, data_type);
    bytes(&mut t, 8, name.as_bytes());
    bytes(&mut t, 9, raw);
    t
}

/// `ValueInfoProto` of a tensor; `None` dims are symbolic (`dim_param`).
fn value_info(name: &str, elem: i64, dims: &[Result<i64, &str>]) -> Vec<u8> {
    let mut shape = Vec::new();
    for d in dims {
        let mut dim = Vec::new();
        match d {
            Ok(v) => int(&mut dim, 1, *v),
            Err(p) => bytes(&mut dim, 2, p.as_bytes()),
        }
        bytes(&mut shape, 1, &dim);
    }
    let mut tensor = Vec::new();
    int(&mut tensor, 1, elem);
    bytes(&mut tensor, 2, &shape);
    let mut ty = Vec::new();
    bytes(&mut ty, 1, &tensor);
    let mut vi = Vec::new();
    bytes(&mut vi, 1, name.as_bytes());
    bytes(&mut vi, 2, &ty);
    vi
}

/// A graph under construction.
#[derive(Default)]
struct Graph {
    nodes: Vec<Vec<u8>>,
    initializers: Vec<Vec<u8>>,
    next: usize,
}

impl Graph {
    fn fresh(&mut self, hint: &str) -> String {
        self.next += 1;
        format!("{hint}_{}", self.next)
    }

    /// Adds a node with one output; returns the output name.
    fn op(&mut self, op: &str, domain: &str, inputs: &[&str], attrs: &[Attr]) -> String {
        let out = self.fresh(&op.to_ascii_lowercase());
        self.op_to(op, domain, inputs, attrs, &out);
        out
    }

    fn op_to(&mut self, op: &str, domain: &str, inputs: &[&str], attrs: &[Attr], out: &str) {
        let mut n = Vec::new();
        for i in inputs {
            bytes(&mut n, 1, i.as_bytes());
        }
        bytes(&mut n, 2, out.as_bytes());
        bytes(&mut n, 3, format!("n{}", self.nodes.len()).as_bytes());
        bytes(&mut n, 4, op.as_bytes());
        for a in attrs {
            bytes(&mut n, 5, &a.encode());
        }
        if !domain.is_empty() {
            bytes(&mut n, 7, domain.as_bytes());
        }
        self.nodes.push(n);
    }

    fn std(&mut self, op: &str, inputs: &[&str], attrs: &[Attr]) -> String {
        self.op(op, "", inputs, attrs)
    }

    fn ms(&mut self, op: &str, inputs: &[&str], attrs: &[Attr]) -> String {
        self.op(op, "com.microsoft", inputs, attrs)
    }

    fn init_f32(&mut self, hint: &str, dims: &[i64], data: &[f32]) -> String {
        let name = self.fresh(hint);
        let raw: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.initializers
            .push(tensor_proto(&name, dims, FLOAT, &raw));
        name
    }

    fn init_i64(&mut self, hint: &str, dims: &[i64], data: &[i64]) -> String {
        let name = self.fresh(hint);
        let raw: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.initializers
            .push(tensor_proto(&name, dims, INT64, &raw));
        name
    }
}

// ---- weights --------------------------------------------------------------------------

fn werr(e: candle_core::Error) -> LoadError {
    LoadError::Weights(e.to_string())
}

fn vec1(t: &Tensor) -> Result<Vec<f32>, LoadError> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(werr)
}

/// A dense layer as (weight transposed to `[in, out]`, bias), from `{p}.weight` `[out, in]`.
fn dense(
    vb: &VarBuilder,
    p: &str,
    out: usize,
    inp: usize,
) -> Result<(Vec<f32>, Vec<f32>), LoadError> {
    let w = vb.get((out, inp), &format!("{p}.weight")).map_err(werr)?;
    let b = vb.get(out, &format!("{p}.bias")).map_err(werr)?;
    Ok((
        vec1(&w.t().map_err(werr)?.contiguous().map_err(werr)?)?,
        vec1(&b)?,
    ))
}

fn norm(vb: &VarBuilder, p: &str, h: usize) -> Result<(Vec<f32>, Vec<f32>), LoadError> {
    let (w, b) = if vb.contains_tensor(&format!("{p}.weight")) {
        ("weight", "bias")
    } else {
        ("gamma", "beta")
    };
    Ok((
        vec1(&vb.get(h, &format!("{p}.{w}")).map_err(werr)?)?,
        vec1(&vb.get(h, &format!("{p}.{b}")).map_err(werr)?)?,
    ))
}

fn linear(g: &mut Graph, x: &str, (w, b): (Vec<f32>, Vec<f32>), inp: usize, out: usize) -> String {
    let w = g.init_f32("w", &[inp as i64, out as i64], &w);
    let b = g.init_f32("b", &[out as i64], &b);
    let m = g.std("MatMul", &[x, &w], &[]);
    g.std("Add", &[&m, &b], &[])
}

/// Changes whenever [`export`] would build another graph from the same inputs (ops,
/// names, layout): it is part of [`source_key`], so compiled models cached under the
/// old key are not reused.
pub const EXPORTER_VERSION: u32 = 1;

thread_local! {
    static EXPORTS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Graphs derived by [`export`] on this thread so far (tests check that a load served
/// from the compiled-model cache derives none).
pub fn exports_on_this_thread() -> u64 {
    EXPORTS.with(|c| c.get())
}

/// A sha256 (hex) naming the graph [`super::feed::Graph::of`] gives for `spec` and
/// `task`, computed without deriving it: the compiled-model cache's key, so a wake skips
/// the derivation (seconds in a debug build) and OpenVINO's read of the graph.
///
/// For safetensors it covers everything [`export`] reads: [`EXPORTER_VERSION`], the
/// worker version (written into the graph), the task, the model type, the normalised
/// config ([`super::spec::EncoderConfig`]), the label count and each weights file's name
/// and sha256. For a repo's `model.onnx`, that file's sha256. A file linked from the
/// pull cache's `blobs/sha256/<hex>` is named by the digest it was verified against at
/// pull (those blobs are never modified); any other file is hashed, streamed.
pub fn source_key(spec: &ModelSpec, task: Task) -> Result<String, LoadError> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let field = |h: &mut Sha256, v: &[u8]| {
        h.update((v.len() as u64).to_le_bytes());
        h.update(v);
    };
    if spec.safetensors.is_empty() {
        let Some(onnx) = &spec.onnx else {
            return Err(LoadError::NoWeights {
                onnx_hint: " or model.onnx",
            });
        };
        field(&mut h, b"onnx");
        field(&mut h, file_sha256(onnx)?.as_bytes());
    } else {
        field(&mut h, b"safetensors");
        field(&mut h, &EXPORTER_VERSION.to_le_bytes());
        field(&mut h, env!("CARGO_PKG_VERSION").as_bytes());
        field(&mut h, task.as_str().as_bytes());
        field(&mut h, spec.model_type.as_bytes());
        field(&mut h, format!("{:?}", spec.encoder).as_bytes());
        field(&mut h, &(spec.labels.len() as u64).to_le_bytes());
        for file in &spec.safetensors {
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            field(&mut h, name.as_bytes());
            field(&mut h, file_sha256(file)?.as_bytes());
        }
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 (hex) of `path`'s contents: the name of the pull-cache blob it links to,
/// else hashed.
fn file_sha256(path: &std::path::Path) -> Result<String, LoadError> {
    use sha2::{Digest, Sha256};
    if let Some(digest) = pull_cache_digest(path) {
        return Ok(digest);
    }
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(io)?;
    Ok(hex(&h.finalize()))
}

/// `<hex>` when `path` is a symlink into a pull cache's `blobs/sha256/<hex>`.
fn pull_cache_digest(path: &std::path::Path) -> Option<String> {
    std::fs::symlink_metadata(path)
        .ok()?
        .file_type()
        .is_symlink()
        .then_some(())?;
    let target = std::fs::canonicalize(path).ok()?;
    let name = target.file_name()?.to_str()?;
    let dir = target.parent()?;
    let in_blobs = dir.file_name()? == "sha256" && dir.parent()?.file_name()? == "blobs";
    let is_digest = name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (in_blobs && is_digest).then(|| name.to_string())
}

/// Serialised ONNX `ModelProto` for `spec`'s encoder (and head, for classification).
pub fn export(spec: &ModelSpec, task: Task) -> Result<Vec<u8>, LoadError> {
    EXPORTS.with(|c| c.set(c.get() + 1));
    let cfg = &spec.encoder;
    let (root, base) = open_weights(spec)?;
    let (h, inter, heads) = (cfg.hidden_size, cfg.intermediate_size, cfg.num_heads);
    let (hi, ii) = (h as i64, inter as i64);
    let eps = cfg.layer_norm_eps as f32;
    let mut g = Graph::default();
    let has_types = cfg.arch != Arch::DistilBert && cfg.type_vocab_size > 0;

    // Embeddings.
    let emb = base.pp("embeddings");
    let word = vec1(
        &emb.get((cfg.vocab_size, h), "word_embeddings.weight")
            .map_err(werr)?,
    )?;
    let word = g.init_f32("word_emb", &[cfg.vocab_size as i64, hi], &word);
    let mut x = g.std("Gather", &[&word, "input_ids"], &[]);
    let pos_table = vec1(
        &emb.get(
            (cfg.max_position_embeddings, h),
            "position_embeddings.weight",
        )
        .map_err(werr)?,
    )?;
    let pos_table = g.init_f32(
        "pos_emb",
        &[cfg.max_position_embeddings as i64, hi],
        &pos_table,
    );
    // Position ids come from the caller (see `position_ids` in the module docs; RoBERTa
    // style models start after the padding index, `EncoderConfig::position_offset`).
    let pos = g.std("Gather", &[&pos_table, "position_ids"], &[]);
    x = g.std("Add", &[&x, &pos], &[]);
    if has_types {
        let tt = vec1(
            &emb.get((cfg.type_vocab_size, h), "token_type_embeddings.weight")
                .map_err(werr)?,
        )?;
        let tt = g.init_f32("tt_emb", &[cfg.type_vocab_size as i64, hi], &tt);
        let t = g.std("Gather", &[&tt, "token_type_ids"], &[]);
        x = g.std("Add", &[&x, &t], &[]);
    }
    let emb_eps = if cfg.arch == Arch::DistilBert {
        1e-12
    } else {
        eps
    };
    let (gamma, beta) = norm(&emb, "LayerNorm", h)?;
    let gamma = g.init_f32("ln_g", &[hi], &gamma);
    let beta = g.init_f32("ln_b", &[hi], &beta);
    x = g.std(
        "LayerNormalization",
        &[&x, &gamma, &beta],
        &[Attr::Int("axis", -1), Attr::Float("epsilon", emb_eps)],
    );
    let mask = "attention_mask_3d";

    // Layers.
    let (stack, names) = match cfg.arch {
        Arch::DistilBert => (base.pp("transformer.layer"), &DISTILBERT_NAMES),
        _ => (base.pp("encoder.layer"), &BERT_NAMES),
    };
    for i in 0..cfg.num_layers {
        let l = stack.pp(i);
        let (wq, bq) = dense(&l, names.q, h, h)?;
        let (wk, bk) = dense(&l, names.k, h, h)?;
        let (wv, bv) = dense(&l, names.v, h, h)?;
        // [in, 3h] with Q | K | V side by side in each row.
        let mut wqkv = Vec::with_capacity(3 * h * h);
        for r in 0..h {
            for w in [&wq, &wk, &wv] {
                wqkv.extend_from_slice(&w[r * h..(r + 1) * h]);
            }
        }
        let bqkv: Vec<f32> = bq.iter().chain(&bk).chain(&bv).copied().collect();
        let wqkv = g.init_f32("wqkv", &[hi, 3 * hi], &wqkv);
        let bqkv = g.init_f32("bqkv", &[3 * hi], &bqkv);
        let ctx = g.ms(
            "Attention",
            &[&x, &wqkv, &bqkv, mask],
            &[Attr::Int("num_heads", heads as i64)],
        );
        let (wo, bo) = dense(&l, names.attn_out, h, h)?;
        let wo = g.init_f32("wo", &[hi, hi], &wo);
        let bo = g.init_f32("bo", &[hi], &bo);
        let attn = g.std("MatMul", &[&ctx, &wo], &[]);
        let (g1, b1) = norm(&l, names.attn_norm, h)?;
        let g1 = g.init_f32("g1", &[hi], &g1);
        let b1 = g.init_f32("b1", &[hi], &b1);
        let x1 = g.ms(
            "SkipLayerNormalization",
            &[&attn, &x, &g1, &b1, &bo],
            &[Attr::Float("epsilon", eps)],
        );
        let (w1, bi) = dense(&l, names.ffn_in, inter, h)?;
        let w1 = g.init_f32("w1", &[hi, ii], &w1);
        let bi = g.init_f32("bi", &[ii], &bi);
        let f = g.std("MatMul", &[&x1, &w1], &[]);
        let f = match cfg.activation {
            Activation::Gelu => g.ms("BiasGelu", &[&f, &bi], &[]),
            Activation::GeluTanh => g.ms("FastGelu", &[&f, &bi], &[]),
            Activation::Relu => {
                let a = g.std("Add", &[&f, &bi], &[]);
                g.std("Relu", &[&a], &[])
            }
        };
        let (w2, b2) = dense(&l, names.ffn_out, h, inter)?;
        let w2 = g.init_f32("w2", &[ii, hi], &w2);
        let b2 = g.init_f32("b2", &[hi], &b2);
        let f = g.std("MatMul", &[&f, &w2], &[]);
        let (g2, bb2) = norm(&l, names.out_norm, h)?;
        let g2 = g.init_f32("g2", &[hi], &g2);
        let bb2 = g.init_f32("bb2", &[hi], &bb2);
        x = g.ms(
            "SkipLayerNormalization",
            &[&f, &x1, &g2, &bb2, &b2],
            &[Attr::Float("epsilon", eps)],
        );
    }
    g.op_to("Identity", "", &[&x], &[], "last_hidden_state");

    // Classification head on the first token.
    let n_labels = spec.labels.len();
    if task == Task::TextClassification {
        if n_labels == 0 {
            return Err(LoadError::UnsupportedTask {
                task: task.to_string(),
                reason: "config.json has no id2label or num_labels".to_string(),
            });
        }
        let zero = g.init_i64("zero", &[], &[0]);
        let cls = g.std("Gather", &[&x, &zero], &[Attr::Int("axis", 1)]);
        let missing = |what: &str, e: LoadError| LoadError::UnsupportedTask {
            task: task.to_string(),
            reason: format!("no classification head in the weights ({what}: {e})"),
        };
        let logits = match cfg.arch {
            Arch::Bert => {
                let p =
                    dense(&base, "pooler.dense", h, h).map_err(|e| missing("pooler.dense", e))?;
                let t = linear(&mut g, &cls, p, h, h);
                let t = g.std("Tanh", &[&t], &[]);
                let c = dense(&root, "classifier", n_labels, h)
                    .map_err(|e| missing("classifier", e))?;
                linear(&mut g, &t, c, h, n_labels)
            }
            Arch::Roberta => {
                let d = dense(&root, "classifier.dense", h, h)
                    .map_err(|e| missing("classifier.dense", e))?;
                let t = linear(&mut g, &cls, d, h, h);
                let t = g.std("Tanh", &[&t], &[]);
                let o = dense(&root, "classifier.out_proj", n_labels, h)
                    .map_err(|e| missing("classifier.out_proj", e))?;
                linear(&mut g, &t, o, h, n_labels)
            }
            Arch::DistilBert => {
                let p = dense(&root, "pre_classifier", h, h)
                    .map_err(|e| missing("pre_classifier", e))?;
                let t = linear(&mut g, &cls, p, h, h);
                let t = g.std("Relu", &[&t], &[]);
                let c = dense(&root, "classifier", n_labels, h)
                    .map_err(|e| missing("classifier", e))?;
                linear(&mut g, &t, c, h, n_labels)
            }
        };
        g.op_to("Identity", "", &[&logits], &[], "logits");
    }

    // Assemble GraphProto and ModelProto.
    let dyn2 = [Err("batch"), Err("sequence")];
    let mut graph = Vec::new();
    for n in &g.nodes {
        bytes(&mut graph, 1, n);
    }
    bytes(&mut graph, 2, b"paddock-derived");
    for t in &g.initializers {
        bytes(&mut graph, 5, t);
    }
    let mut inputs = vec!["input_ids", "position_ids"];
    if has_types {
        inputs.push("token_type_ids");
    }
    for name in inputs {
        bytes(&mut graph, 11, &value_info(name, INT64, &dyn2));
    }
    bytes(
        &mut graph,
        11,
        &value_info(
            "attention_mask_3d",
            INT32,
            &[Err("batch"), Err("sequence"), Err("sequence")],
        ),
    );
    bytes(
        &mut graph,
        12,
        &value_info(
            "last_hidden_state",
            FLOAT,
            &[Err("batch"), Err("sequence"), Ok(hi)],
        ),
    );
    if task == Task::TextClassification {
        bytes(
            &mut graph,
            12,
            &value_info("logits", FLOAT, &[Err("batch"), Ok(n_labels as i64)]),
        );
    }
    let mut model = Vec::with_capacity(graph.len() + 256);
    int(&mut model, 1, 8);
    bytes(&mut model, 2, b"paddock-hub-worker");
    bytes(&mut model, 3, env!("CARGO_PKG_VERSION").as_bytes());
    for (domain, version) in [("", 17), ("com.microsoft", 1)] {
        let mut op = Vec::new();
        bytes(&mut op, 1, domain.as_bytes());
        int(&mut op, 2, version);
        bytes(&mut model, 8, &op);
    }
    bytes(&mut model, 7, &graph);
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_in_the_pull_cache_are_named_by_their_blob_digest() {
        let root = tempfile::tempdir().unwrap();
        let blobs = root.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        // The pull cache verified this blob against its name; the name is trusted.
        let digest = "ab".repeat(32);
        std::fs::write(blobs.join(&digest), b"weights").unwrap();
        let snapshot = root.path().join("models/m--c");
        std::fs::create_dir_all(&snapshot).unwrap();
        let link = snapshot.join("model.safetensors");
        std::os::unix::fs::symlink("../../blobs/sha256/".to_string() + &digest, &link).unwrap();
        assert_eq!(file_sha256(&link).unwrap(), digest);

        // Anything else is hashed: a plain file, and a link to a file named otherwise.
        let plain = root.path().join("plain.safetensors");
        std::fs::write(&plain, b"weights").unwrap();
        let hashed = "9a129038d9a00aed0cf6a7ea059ca50a813449061ab87848cf1a13eafdf33b2c";
        assert_eq!(file_sha256(&plain).unwrap(), hashed);
        let other = root.path().join("other");
        std::os::unix::fs::symlink(&plain, &other).unwrap();
        assert_eq!(file_sha256(&other).unwrap(), hashed);
        let wrong_dir = root.path().join("blobs").join(&digest);
        std::fs::write(&wrong_dir, b"weights").unwrap();
        let link2 = root.path().join("link2");
        std::os::unix::fs::symlink(&wrong_dir, &link2).unwrap();
        assert_eq!(
            file_sha256(&link2).unwrap(),
            hashed,
            "not under blobs/sha256"
        );
    }

    #[test]
    fn wire_format() {
        let mut v = Vec::new();
        varint(&mut v, 300);
        assert_eq!(v, [0xac, 0x02]);
        let mut v = Vec::new();
        int(&mut v, 1, -1);
        assert_eq!(v.len(), 11, "negative int64 is a 10-byte varint");
        let mut v = Vec::new();
        bytes(&mut v, 2, b"ab");
        assert_eq!(v, [0x12, 2, b'a', b'b']);
    }
}
