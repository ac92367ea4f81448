//! Times the optimizer steps of a text-classification fine-tune (forward,
//! backward, AdamW) with `hub_worker::finetune::train` on the dataset of
//! `scripts/finetune/make-dataset.py`. `scripts/bench/finetune.sh` runs it next to
//! the same steps in PyTorch.
//!
//!     bench-finetune MODEL_DIR DATASET_DIR [BATCH] [MAX_SEQ] [EPOCHS]
//!
//! Prints one JSON line: steps, seconds per step (median and mean over the steps
//! after the first two), tokens per batch, and the test accuracies.

use hub_types::jobs::{Hyperparameters, StopReason};

/// The allocator of `hub-worker` (its `main.rs`): a step allocates and frees
/// tensors of megabytes, which glibc hands back to the kernel every time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use hub_worker::finetune::data;
use hub_worker::finetune::train::{self, Control, TrainInput};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

struct Clock {
    at: Vec<Instant>,
}

impl Control for Clock {
    fn step(&mut self, _step: u64, _total: u64, loss: Option<f32>) -> Option<StopReason> {
        if loss.is_some() {
            self.at.push(Instant::now());
        }
        None
    }
    fn log(&mut self, line: String) {
        eprintln!("{line}");
    }
    fn metric(&mut self, _: &str, _: Value) {}
}

fn main() -> anyhow::Result<()> {
    // As hub-worker's main; PADDOCK_BENCH_DEFAULT_ALLOC=1 measures mimalloc's defaults.
    if std::env::var_os("PADDOCK_BENCH_DEFAULT_ALLOC").is_none() {
        hub_worker::allocator::configure();
    }
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 3,
        "usage: bench-finetune MODEL_DIR DATASET_DIR [BATCH] [MAX_SEQ] [EPOCHS]"
    );
    let arg = |i: usize, d: u32| args.get(i).map(|s| s.parse().unwrap()).unwrap_or(d);
    let hp = Hyperparameters {
        batch_size: arg(3, 16),
        max_seq_length: arg(4, 32),
        epochs: arg(5, 2),
        learning_rate: 1e-4,
        ..Default::default()
    };
    hub_worker::engine::threads::init_compute_threads(hub_worker::host::cores());
    let spec = hub_worker::engine::spec::inspect(std::path::Path::new(&args[1]))?;
    let read = |name: &str| -> anyhow::Result<Vec<data::Example>> {
        let p = std::path::Path::new(&args[2]).join(name);
        Ok(data::parse(name, &std::fs::read(p)?, "text", "label")?)
    };
    let (train_rows, test_rows) = (read("train.csv")?, read("test.csv")?);
    let out = tempfile::tempdir()?;
    let mut clock = Clock { at: vec![] };
    let started = Instant::now();
    let r = train::run(
        TrainInput {
            base: &spec,
            train: train_rows,
            test: test_rows,
            hp: &hp,
            deadline: Instant::now() + Duration::from_secs(3600),
            max_wall_seconds: 3600,
        },
        &mut clock,
        out.path(),
    )?;
    // Step k's time: from the end of step k-1 to the end of step k (the first
    // step follows the untuned evaluation, so it is left out with the second).
    let mut d: Vec<f64> = clock
        .at
        .windows(2)
        .skip(1)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    let mean = d.iter().sum::<f64>() / d.len().max(1) as f64;
    d.sort_by(f64::total_cmp);
    let median = d.get(d.len() / 2).copied().unwrap_or(f64::NAN);
    println!(
        "{}",
        json!({
            "engine": "candle",
            "steps": clock.at.len(),
            "timed_steps": d.len(),
            "batch_size": hp.batch_size,
            "max_seq_length": hp.max_seq_length,
            "median_step_s": median,
            "mean_step_s": mean,
            "untuned_test_accuracy": r.metrics["untuned_test_accuracy"],
            "test_accuracy": r.metrics["test_accuracy"],
            "total_s": started.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}
