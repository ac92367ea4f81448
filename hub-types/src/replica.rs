//! The state of one replica (a model on a worker), as the worker reports it and the hub
//! stores it.

use serde::{Deserialize, Serialize};

/// Where a replica is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum ReplicaStatus {
    /// Fetching weights from the hub.
    Pulling,
    /// Weights fetched; the engine is loading them.
    Loading,
    /// Serving requests.
    Running,
    /// Gave up (with a message saying why).
    Failed,
}

/// A status name that is not one of [`ReplicaStatus`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("status {0:?} is not pulling, loading, running or failed")]
pub struct UnknownReplicaStatus(pub String);

impl ReplicaStatus {
    /// Every status.
    pub const ALL: [ReplicaStatus; 4] = [
        ReplicaStatus::Pulling,
        ReplicaStatus::Loading,
        ReplicaStatus::Running,
        ReplicaStatus::Failed,
    ];

    /// The wire (and database) name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReplicaStatus::Pulling => "pulling",
            ReplicaStatus::Loading => "loading",
            ReplicaStatus::Running => "running",
            ReplicaStatus::Failed => "failed",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Result<ReplicaStatus, UnknownReplicaStatus> {
        ReplicaStatus::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownReplicaStatus(s.chars().take(100).collect()))
    }
}

crate::wire_name!(ReplicaStatus, UnknownReplicaStatus);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for r in ReplicaStatus::ALL {
            assert_eq!(ReplicaStatus::parse(r.as_str()), Ok(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        assert_eq!(
            ReplicaStatus::parse("done").unwrap_err().to_string(),
            "status \"done\" is not pulling, loading, running or failed"
        );
    }
}
