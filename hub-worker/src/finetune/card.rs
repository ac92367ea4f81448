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
    let mut s = String::new();
    s.push_str("---\n");
    s.push_str(&format!("base_model: {}\n", yaml_str(&job.base.repo_id)));
    s.push_str(&format!(
        "datasets:\n- {}\n",
        yaml_str(&job.dataset.repo_id)
    ));
    s.push_str("library_name: transformers\npipeline_tag: text-generation\n");
    s.push_str("tags:\n- text-generation\n- lora\n- peft\n- paddock-fine-tune\n");
    s.push_str("model-index:\n");
    s.push_str(&format!("- name: {}\n", yaml_str(&job.output_repo)));
    s.push_str("  results:\n  - task:\n      type: text-generation\n");
    s.push_str(&format!(
        "    dataset:\n      name: {}\n      type: {}\n      split: test\n      revision: {}\n",
        yaml_str(&job.dataset.repo_id),
        yaml_str(&job.dataset.repo_id),
        yaml_str(&job.dataset.revision)
    ));
    s.push_str(&format!(
        "    metrics:\n    - type: perplexity\n      value: {ppl}\n"
    ));
    if let Some(em) = em {
        s.push_str(&format!("    - type: exact_match\n      value: {em}\n"));
    }
    s.push_str("---\n\n");
    s.push_str(&format!("# {}\n\n", job.output_repo));
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
    let mut s = String::new();
    s.push_str("---\n");
    s.push_str(&format!("base_model: {}\n", yaml_str(&job.base.repo_id)));
    s.push_str(&format!(
        "datasets:\n- {}\n",
        yaml_str(&job.dataset.repo_id)
    ));
    s.push_str("library_name: sentence-transformers\npipeline_tag: sentence-similarity\n");
    s.push_str("tags:\n- sentence-transformers\n- feature-extraction\n- sentence-similarity\n- paddock-fine-tune\n");
    s.push_str("model-index:\n");
    s.push_str(&format!("- name: {}\n", yaml_str(&job.output_repo)));
    s.push_str("  results:\n  - task:\n      type: retrieval\n");
    s.push_str(&format!(
        "    dataset:\n      name: {}\n      type: {}\n      split: test\n      revision: {}\n",
        yaml_str(&job.dataset.repo_id),
        yaml_str(&job.dataset.repo_id),
        yaml_str(&job.dataset.revision)
    ));
    s.push_str(&format!(
        "    metrics:\n    - type: accuracy_at_1\n      value: {acc}\n    - type: mrr\n      value: {mrr}\n"
    ));
    s.push_str("---\n\n");
    s.push_str(&format!("# {}\n\n", job.output_repo));
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
    let mut s = String::new();
    s.push_str("---\n");
    s.push_str(&format!("base_model: {}\n", yaml_str(&job.base.repo_id)));
    s.push_str(&format!(
        "datasets:\n- {}\n",
        yaml_str(&job.dataset.repo_id)
    ));
    s.push_str("library_name: transformers\npipeline_tag: text-classification\n");
    s.push_str("tags:\n- text-classification\n- paddock-fine-tune\n");
    s.push_str("model-index:\n");
    s.push_str(&format!("- name: {}\n", yaml_str(&job.output_repo)));
    s.push_str("  results:\n  - task:\n      type: text-classification\n");
    s.push_str(&format!(
        "    dataset:\n      name: {}\n      type: {}\n      split: test\n      revision: {}\n",
        yaml_str(&job.dataset.repo_id),
        yaml_str(&job.dataset.repo_id),
        yaml_str(&job.dataset.revision)
    ));
    s.push_str(&format!(
        "    metrics:\n    - type: accuracy\n      value: {acc}\n"
    ));
    s.push_str("---\n\n");
    s.push_str(&format!("# {}\n\n", job.output_repo));
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
