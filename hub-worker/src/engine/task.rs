//! The inference tasks a worker serves, as named by the hub and the HF task API.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A task a loaded model serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// One pooled vector per input (`/v1/embeddings`, HF `feature_extraction`).
    FeatureExtraction,
    /// Same model as feature extraction; the HF task API answers cosine similarities.
    SentenceSimilarity,
    /// Sequence classification with labels from `config.json` `id2label`.
    TextClassification,
}

impl Task {
    /// The hub's name for the task.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::FeatureExtraction => "feature-extraction",
            Task::SentenceSimilarity => "sentence-similarity",
            Task::TextClassification => "text-classification",
        }
    }

    /// Parses the hub's name for a task.
    pub fn parse(s: &str) -> Option<Task> {
        match s {
            "feature-extraction" => Some(Task::FeatureExtraction),
            "sentence-similarity" => Some(Task::SentenceSimilarity),
            "text-classification" => Some(Task::TextClassification),
            _ => None,
        }
    }

    /// Embedding tasks share a loaded model: pooled vectors out of the encoder.
    pub fn is_embedding(self) -> bool {
        matches!(self, Task::FeatureExtraction | Task::SentenceSimilarity)
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
