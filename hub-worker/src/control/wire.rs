//! The control-plane contract between a worker and hub-api (`/api/v1/workers/...`),
//! declared once in [`hub_types::control`] and re-exported here, plus how a worker reads
//! the desired set: item by item, so that a malformed assignment fails alone.

pub use hub_types::control::*;

/// The desired set as a worker reads it: items kept raw and parsed one by one
/// ([`parse_assignment`]).
pub type RawAssignments = AssignmentsResponse<serde_json::Value>;

/// One item of the desired set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Desired {
    Valid(Assignment),
    /// Malformed, but with an id: reported `failed` with the parse error.
    Invalid {
        assignment_id: String,
        model_key: String,
        error: String,
    },
}

impl Desired {
    /// The assignment id.
    pub fn id(&self) -> &str {
        match self {
            Desired::Valid(a) => &a.assignment_id,
            Desired::Invalid { assignment_id, .. } => assignment_id,
        }
    }

    /// What identifies this item's content (see [`Assignment::fingerprint`]).
    pub fn fingerprint(&self) -> String {
        match self {
            Desired::Valid(a) => a.fingerprint(),
            Desired::Invalid { error, .. } => format!("invalid|{error}"),
        }
    }
}

/// Parses one item of the desired set; `None` when it has no `assignment_id` at all.
pub fn parse_assignment(v: &serde_json::Value) -> Option<Desired> {
    match serde_json::from_value::<Assignment>(v.clone()) {
        Ok(a) => Some(Desired::Valid(a)),
        Err(e) => {
            let id = v.get("assignment_id")?.as_str()?.to_string();
            Some(Desired::Invalid {
                assignment_id: id,
                model_key: v
                    .get("model_key")
                    .and_then(|k| k.as_str())
                    .unwrap_or("")
                    .to_string(),
                error: e.to_string(),
            })
        }
    }
}
