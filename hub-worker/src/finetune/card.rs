//! The model card (README.md) of a fine-tuned model: front matter the hub reads
//! (`base_model`, `datasets`, `pipeline_tag`, `model-index` with the test-split
//! accuracy, retrieval or perplexity) and a body that records the base model and
//! dataset at their commits, the hyperparameters and the evaluation on the test split.

use hub_types::jobs::{JobSpec, JobTask};
use serde_json::{Map, Value};

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn num(metrics: &Map<String, Value>, k: &str) -> f64 {
    metrics.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// The hyperparameters as a table, without the other task's columns.
fn hyperparameter_table(job: &JobSpec) -> String {
    let mut s = String::from("## Hyperparameters\n\n| name | value |\n|---|---|\n");
    let hp_json = serde_json::to_value(&job.hyperparameters).expect("hyperparameters serialize");
    let other: &[&str] = match job.task {
        JobTask::TextClassification => &["anchor_column", "positive_column"],
        JobTask::SentenceEmbedding => &["text_column", "label_column"],
        JobTask::CausalLmLora => &["label_column", "anchor_column", "positive_column"],
    };
    if let Some(o) = hp_json.as_object() {
        for (k, v) in o.iter().filter(|(k, _)| !other.contains(&k.as_str())) {
            s.push_str(&format!("| {k} | {v} |\n"));
        }
    }
    s
}

/// What a card's front matter says besides the job's repos.
struct Front<'a> {
    library: &'a str,
    pipeline: &'a str,
    tags: &'a [&'a str],
    /// `model-index`'s task type.
    task: &'a str,
    /// `model-index`'s metrics on the test split (type, value).
    metrics: &'a [(&'a str, f64)],
}

/// The YAML front matter the hub reads, and the card's title.
fn header(job: &JobSpec, f: &Front) -> String {
    let mut s = String::from("---\n");
    s.push_str(&format!("base_model: {}\n", yaml_str(&job.base.repo_id)));
    s.push_str(&format!(
        "datasets:\n- {}\n",
        yaml_str(&job.dataset.repo_id)
    ));
    s.push_str(&format!(
        "library_name: {}\npipeline_tag: {}\ntags:\n",
        f.library, f.pipeline
    ));
    for t in f.tags.iter().chain(&["paddock-fine-tune"]) {
        s.push_str(&format!("- {t}\n"));
    }
    s.push_str("model-index:\n");
    s.push_str(&format!("- name: {}\n", yaml_str(&job.output_repo)));
    s.push_str(&format!("  results:\n  - task:\n      type: {}\n", f.task));
    s.push_str(&format!(
        "    dataset:\n      name: {}\n      type: {}\n      split: test\n      revision: {}\n",
        yaml_str(&job.dataset.repo_id),
        yaml_str(&job.dataset.repo_id),
        yaml_str(&job.dataset.revision)
    ));
    s.push_str("    metrics:\n");
    for (kind, value) in f.metrics {
        s.push_str(&format!("    - type: {kind}\n      value: {value}\n"));
    }
    s.push_str("---\n\n");
    s.push_str(&format!("# {}\n\n", job.output_repo));
    s
}

/// The card's text, for the job's task.
pub fn render(job: &JobSpec, labels: &[String], metrics: &Map<String, Value>) -> String {
    match job.task {
        JobTask::TextClassification => render_classifier(job, labels, metrics),
        JobTask::SentenceEmbedding => render_embedding(job, metrics),
        JobTask::CausalLmLora => render_lora(job, metrics),
    }
}

/// The card of a LoRA-tuned decoder: perplexity and exact match on the test split.
fn render_lora(job: &JobSpec, metrics: &Map<String, Value>) -> String {
    let hp = &job.hyperparameters;
    let ppl = num(metrics, "test_perplexity");
    let em = metrics.get("test_exact_match").and_then(Value::as_f64);
    let mut measured = vec![("perplexity", ppl)];
    measured.extend(em.map(|em| ("exact_match", em)));
    let mut s = header(
        job,
        &Front {
            library: "transformers",
            pipeline: "text-generation",
            tags: &["text-generation", "lora", "peft"],
            task: "text-generation",
            metrics: &measured,
        },
    );
    s.push_str(&format!(
        "A causal language model fine-tuned with LoRA from [{b}](/{b}) at revision `{br}` on \
         the dataset [{d}](/datasets/{d}) at revision `{dr}`, by the Paddock fine-tuning job \
         `{id}` (candle, on CPU). `model.safetensors` holds the merged weights (`W + \
         lora_alpha / r * B A`, in the base model's dtype and tensor names) with the base \
         model's config, generation config, tokenizer and chat template, so it serves as a \
         `text-generation` endpoint as it is; `adapter/` holds the adapter alone in PEFT's \
         layout (`adapter_model.safetensors`, `adapter_config.json`), for \
         `PeftModel.from_pretrained` on the base model.\n\n",
        b = job.base.repo_id,
        br = job.base.revision,
        d = job.dataset.repo_id,
        dr = job.dataset.revision,
        id = job.job_id,
    ));
    s.push_str(&format!(
        "## LoRA\n\n| setting | value |\n|---|---|\n| r | {} |\n| lora_alpha | {} |\n\
         | target_modules | {} |\n| trainable parameters | {} |\n\n",
        hp.rank(),
        hp.alpha(),
        hp.targets().join(", "),
        metrics
            .get("trainable_parameters")
            .cloned()
            .unwrap_or(Value::Null),
    ));
    s.push_str(
        "## Evaluation (test split)\n\nMean cross-entropy per learned token (completion \
         tokens, assistant turns, or every token of text rows), its perplexity, and the \
         share of prompt/completion or chat rows whose greedy completion is exactly the \
         reference (trimmed).\n\n| model | loss | perplexity | exact match |\n|---|---|---|---|\n",
    );
    for (name, prefix) in [
        ("untuned (base model)", "untuned_test"),
        ("fine-tuned", "test"),
    ] {
        let em = metrics
            .get(&format!("{prefix}_exact_match"))
            .and_then(Value::as_f64)
            .map(|m| format!("{m:.4}"))
            .unwrap_or_else(|| "n/a".into());
        s.push_str(&format!(
            "| {name} | {:.4} | {:.3} | {em} |\n",
            num(metrics, &format!("{prefix}_loss")),
            num(metrics, &format!("{prefix}_perplexity")),
        ));
    }
    s.push_str(&format!(
        "\n{} test rows ({} compared by exact match); {} train rows ({} learned tokens), {} \
         steps in {:.1} s.\n\n",
        metrics.get("test_examples").cloned().unwrap_or(Value::Null),
        metrics
            .get("exact_match_rows")
            .cloned()
            .unwrap_or(Value::Null),
        metrics
            .get("train_examples")
            .cloned()
            .unwrap_or(Value::Null),
        metrics.get("train_tokens").cloned().unwrap_or(Value::Null),
        metrics.get("steps").cloned().unwrap_or(Value::Null),
        num(metrics, "train_seconds"),
    ));
    s.push_str(&hyperparameter_table(job));
    s.push_str(
        "\nLoss: causal-LM cross-entropy on the learned tokens only. Optimizer: AdamW \
         (betas 0.9/0.999, eps 1e-8) on the adapters only, the base frozen in f32; linear \
         warm-up then linear decay, no dropout.\n",
    );
    s
}

/// The card of a sentence encoder: retrieval on the test split.
fn render_embedding(job: &JobSpec, metrics: &Map<String, Value>) -> String {
    let hp = &job.hyperparameters;
    let (acc, mrr) = (num(metrics, "test_accuracy_at_1"), num(metrics, "test_mrr"));
    let mut s = header(
        job,
        &Front {
            library: "sentence-transformers",
            pipeline: "sentence-similarity",
            tags: &[
                "sentence-transformers",
                "feature-extraction",
                "sentence-similarity",
            ],
            task: "retrieval",
            metrics: &[("accuracy_at_1", acc), ("mrr", mrr)],
        },
    );
    s.push_str(&format!(
        "A sentence encoder fine-tuned from [{b}](/{b}) at revision `{br}` on the sentence \
         pairs of the dataset [{d}](/datasets/{d}) at revision `{dr}` (columns `{a}` and \
         `{p}`), by the Paddock fine-tuning job `{id}` (candle, on CPU). It keeps the base \
         model's files and sentence-transformers pooling, so it loads with \
         `SentenceTransformer` and serves as a `feature-extraction` endpoint.\n\n",
        b = job.base.repo_id,
        br = job.base.revision,
        d = job.dataset.repo_id,
        dr = job.dataset.revision,
        a = hp.anchor(),
        p = hp.positive(),
        id = job.job_id,
    ));
    s.push_str(
        "## Evaluation (test split)\n\nEach test anchor ranks every distinct positive of \
         the test split by cosine similarity.\n\n\
         | model | accuracy@1 | MRR | mean pair cosine |\n|---|---|---|---|\n",
    );
    for (name, prefix) in [
        ("untuned (base model)", "untuned_test"),
        ("fine-tuned", "test"),
    ] {
        s.push_str(&format!(
            "| {name} | {:.4} | {:.4} | {:.4} |\n",
            num(metrics, &format!("{prefix}_accuracy_at_1")),
            num(metrics, &format!("{prefix}_mrr")),
            num(metrics, &format!("{prefix}_pair_cosine")),
        ));
    }
    s.push_str(&format!(
        "\n{} test anchors against {} positives; {} train pairs, {} steps in {:.1} s.\n\n",
        metrics.get("test_examples").cloned().unwrap_or(Value::Null),
        metrics.get("test_corpus").cloned().unwrap_or(Value::Null),
        metrics
            .get("train_examples")
            .cloned()
            .unwrap_or(Value::Null),
        metrics.get("steps").cloned().unwrap_or(Value::Null),
        num(metrics, "train_seconds"),
    ));
    s.push_str(&hyperparameter_table(job));
    s.push_str(&format!(
        "\nLoss: MultipleNegativesRankingLoss (scale {}, cosine similarity; each anchor's \
         positive against the batch's other positives). Optimizer: AdamW (betas 0.9/0.999, \
         eps 1e-8; no weight decay on biases and LayerNorm), linear warm-up then linear \
         decay, no dropout.\n",
        crate::finetune::embed::MNRL_SCALE
    ));
    s
}

fn render_classifier(job: &JobSpec, labels: &[String], metrics: &Map<String, Value>) -> String {
    let acc = num(metrics, "test_accuracy");
    let untuned = num(metrics, "untuned_test_accuracy");
    let mut s = header(
        job,
        &Front {
            library: "transformers",
            pipeline: "text-classification",
            tags: &["text-classification"],
            task: "text-classification",
            metrics: &[("accuracy", acc)],
        },
    );
    s.push_str(&format!(
        "A text classifier fine-tuned from [{b}](/{b}) at revision `{br}` on the dataset \
         [{d}](/datasets/{d}) at revision `{dr}`, by the Paddock fine-tuning job `{id}` \
         (candle, on CPU).\n\n",
        b = job.base.repo_id,
        br = job.base.revision,
        d = job.dataset.repo_id,
        dr = job.dataset.revision,
        id = job.job_id,
    ));
    s.push_str("## Labels\n\n| id | label |\n|---|---|\n");
    for (i, l) in labels.iter().enumerate() {
        s.push_str(&format!("| {i} | {} |\n", l.replace('|', "\\|")));
    }
    s.push_str("\n## Evaluation (test split)\n\n| model | accuracy | loss |\n|---|---|---|\n");
    s.push_str(&format!(
        "| untuned head (base encoder, new head) | {untuned:.4} | {:.4} |\n",
        num(metrics, "untuned_test_loss")
    ));
    s.push_str(&format!(
        "| fine-tuned | {acc:.4} | {:.4} |\n\n",
        num(metrics, "test_loss")
    ));
    s.push_str(&format!(
        "{} test examples; {} train examples, {} steps in {:.1} s.\n\n",
        metrics.get("test_examples").cloned().unwrap_or(Value::Null),
        metrics
            .get("train_examples")
            .cloned()
            .unwrap_or(Value::Null),
        metrics.get("steps").cloned().unwrap_or(Value::Null),
        num(metrics, "train_seconds"),
    ));
    s.push_str(&hyperparameter_table(job));
    s.push_str(
        "\nOptimizer: AdamW (betas 0.9/0.999, eps 1e-8; no weight decay on biases and \
         LayerNorm), linear warm-up then linear decay, cross-entropy on the `[CLS]` \
         pooler output, no dropout.\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use hub_types::jobs::JobSpec;
    use serde_json::{json, Map, Value};

    fn job(task: &str) -> JobSpec {
        serde_json::from_value(json!({
            "job_id": "0b6f0e5e-0000-4000-8000-000000000001",
            "claim": "c",
            "task": task,
            "base": {"repo_id": "acme/base", "revision": "a".repeat(40), "pull_token": "t"},
            "dataset": {"repo_id": "acme/data", "revision": "b".repeat(40), "pull_token": "t"},
            "train_files": ["train.csv"],
            "test_files": ["test.csv"],
            "hyperparameters": {},
            "output_repo": "acme/tuned",
            "max_wall_seconds": 60,
            "lease_seconds": 30
        }))
        .unwrap()
    }

    fn metrics(pairs: &[(&str, Value)]) -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    /// The front matter of a card, up to its closing `---`.
    fn front(card: &str) -> &str {
        let end = card[4..].find("\n---\n").expect("closed front matter") + 4;
        &card[..end]
    }

    #[test]
    fn each_task_states_its_pipeline_and_test_metrics_in_the_front_matter() {
        let m = metrics(&[
            ("test_accuracy", json!(0.75)),
            ("test_accuracy_at_1", json!(0.5)),
            ("test_mrr", json!(0.625)),
            ("test_perplexity", json!(1.5)),
            ("test_exact_match", json!(0.67)),
        ]);
        let labels = ["neg".to_string(), "pos".to_string()];
        let classifier = super::render(&job("text-classification"), &labels, &m);
        assert_eq!(
            front(&classifier),
            format!(
                "---\nbase_model: \"acme/base\"\ndatasets:\n- \"acme/data\"\n\
                 library_name: transformers\npipeline_tag: text-classification\n\
                 tags:\n- text-classification\n- paddock-fine-tune\n\
                 model-index:\n- name: \"acme/tuned\"\n  results:\n  - task:\n      \
                 type: text-classification\n    dataset:\n      name: \"acme/data\"\n      \
                 type: \"acme/data\"\n      split: test\n      revision: \"{}\"\n    \
                 metrics:\n    - type: accuracy\n      value: 0.75",
                "b".repeat(40)
            )
        );
        assert!(classifier.contains("\n---\n\n# acme/tuned\n"));
        assert!(classifier.contains("| 1 | pos |"));

        let encoder = super::render(&job("sentence-embedding"), &[], &m);
        let f = front(&encoder);
        assert!(
            f.contains("library_name: sentence-transformers\npipeline_tag: sentence-similarity\n")
        );
        assert!(f.contains("      type: retrieval\n"));
        assert!(f.ends_with(
            "    - type: accuracy_at_1\n      value: 0.5\n    - type: mrr\n      value: 0.625"
        ));

        let lora = super::render(&job("causal-lm-lora"), &[], &m);
        let f = front(&lora);
        assert!(f.contains("pipeline_tag: text-generation\ntags:\n- text-generation\n- lora\n- peft\n- paddock-fine-tune\n"));
        assert!(f.ends_with(
            "    - type: perplexity\n      value: 1.5\n    - type: exact_match\n      value: 0.67"
        ));
        // Text rows only: no exact match is measured, and none is claimed.
        let mut text_only = m.clone();
        text_only.remove("test_exact_match");
        let lora = super::render(&job("causal-lm-lora"), &[], &text_only);
        assert!(front(&lora).ends_with("    - type: perplexity\n      value: 1.5"));
    }
}
