//! The model card (README.md) of a fine-tuned model: front matter the hub reads
//! (`base_model`, `datasets`, `pipeline_tag`, `model-index` with the test-split
//! accuracy) and a body that records the base model and dataset at their commits,
//! the hyperparameters and the evaluation on the test split.

use hub_types::jobs::JobSpec;
use serde_json::{Map, Value};

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn num(metrics: &Map<String, Value>, k: &str) -> f64 {
    metrics.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// The card's text.
pub fn render(job: &JobSpec, labels: &[String], metrics: &Map<String, Value>) -> String {
    let hp = &job.hyperparameters;
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
    s.push_str("## Hyperparameters\n\n| name | value |\n|---|---|\n");
    let hp_json = serde_json::to_value(hp).expect("hyperparameters serialize");
    if let Some(o) = hp_json.as_object() {
        for (k, v) in o {
            s.push_str(&format!("| {k} | {v} |\n"));
        }
    }
    s.push_str(
        "\nOptimizer: AdamW (betas 0.9/0.999, eps 1e-8; no weight decay on biases and \
         LayerNorm), linear warm-up then linear decay, cross-entropy on the `[CLS]` \
         pooler output, no dropout.\n",
    );
    s
}
