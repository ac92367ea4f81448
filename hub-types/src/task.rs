//! The inference tasks: what an endpoint asks for and what a worker serves.

use serde::{Deserialize, Serialize};

/// A task a loaded model serves, by its hub (and HF pipeline) name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", try_from = "String")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Task {
    /// One pooled vector per input (`/v1/embeddings`, HF `feature_extraction`).
    FeatureExtraction,
    /// Same model as feature extraction; the HF task API answers cosine similarities.
    SentenceSimilarity,
    /// Sequence classification with labels from `config.json` `id2label`.
    TextClassification,
    /// A decoder LLM: OpenAI chat/completions, HF `text-generation` and chat completion.
    TextGeneration,
}

/// A task name no worker serves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "task {0:?} is not supported (feature-extraction, sentence-similarity, text-classification, text-generation)"
)]
pub struct UnknownTask(pub String);

impl Task {
    /// Every task, in the order the hub lists them.
    pub const ALL: [Task; 4] = [
        Task::FeatureExtraction,
        Task::SentenceSimilarity,
        Task::TextClassification,
        Task::TextGeneration,
    ];

    /// The names of [`Task::ALL`].
    pub const NAMES: [&'static str; 4] = [
        Task::FeatureExtraction.as_str(),
        Task::SentenceSimilarity.as_str(),
        Task::TextClassification.as_str(),
        Task::TextGeneration.as_str(),
    ];

    /// The hub's name for the task.
    pub const fn as_str(self) -> &'static str {
        match self {
            Task::FeatureExtraction => "feature-extraction",
            Task::SentenceSimilarity => "sentence-similarity",
            Task::TextClassification => "text-classification",
            Task::TextGeneration => "text-generation",
        }
    }

    /// Parses the hub's name for a task.
    pub fn parse(s: &str) -> Result<Task, UnknownTask> {
        Task::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownTask(s.chars().take(100).collect()))
    }

    /// Embedding tasks share a loaded model: pooled vectors out of the encoder.
    pub fn is_embedding(self) -> bool {
        matches!(self, Task::FeatureExtraction | Task::SentenceSimilarity)
    }

    /// Served by a decoder (generation family), not an encoder.
    pub fn is_generation(self) -> bool {
        matches!(self, Task::TextGeneration)
    }
}

crate::wire_name!(Task, UnknownTask);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in Task::ALL {
            assert_eq!(Task::parse(t.as_str()), Ok(t));
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
            assert_eq!(
                serde_json::from_value::<Task>(t.as_str().into()).unwrap(),
                t
            );
        }
        assert_eq!(Task::NAMES.len(), Task::ALL.len());
    }

    #[test]
    fn unknown_tasks_are_named_in_the_error() {
        let e = Task::parse("translation").unwrap_err();
        assert_eq!(e, UnknownTask("translation".into()));
        assert!(e.to_string().contains("\"translation\" is not supported"));
        let e = serde_json::from_str::<Task>("\"translation\"").unwrap_err();
        assert!(
            e.to_string().contains("\"translation\" is not supported"),
            "{e}"
        );
    }
}
