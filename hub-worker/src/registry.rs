//! The models a worker holds, by assignment: their status for heartbeats and the loaded
//! `Model` the HTTP routes serve under `/models/{model_key}`.

use crate::engine::{Model, ModelStats};
use std::collections::HashMap;
use std::sync::RwLock;

/// Lifecycle of one assignment on this worker (the heartbeat's `status`): the replica
/// status the hub stores, declared once in `hub-types`.
pub use hub_types::ReplicaStatus as SlotStatus;

/// One assignment's state.
#[derive(Clone)]
pub struct Slot {
    pub assignment_id: String,
    pub model_key: String,
    /// Name reported by `/v1/models` (the repo id).
    pub served_name: String,
    /// Identity of what was asked for (repo, revision, task, limits): a change means reload.
    pub fingerprint: String,
    pub status: SlotStatus,
    pub message: Option<String>,
    pub model: Option<Model>,
}

impl Slot {
    /// The status and message to report: a running slot whose model can no longer
    /// serve ([`Model::failure`]) is `failed`, with the reason.
    fn effective(&self) -> (SlotStatus, Option<String>) {
        match self.model.as_ref().and_then(Model::failure) {
            Some(why) if self.status == SlotStatus::Running => (SlotStatus::Failed, Some(why)),
            _ => (self.status, self.message.clone()),
        }
    }
}

/// A snapshot of one slot for heartbeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotReport {
    pub assignment_id: String,
    pub status: SlotStatus,
    pub message: Option<String>,
    pub stats: ModelStats,
}

/// Thread-safe set of slots, keyed by assignment id.
#[derive(Default)]
pub struct ModelRegistry {
    slots: RwLock<HashMap<String, Slot>>,
}

impl ModelRegistry {
    /// An empty registry.
    pub fn new() -> ModelRegistry {
        ModelRegistry::default()
    }

    /// Serves an already loaded model under `model_key` (standalone use and tests).
    pub fn insert_model(&self, model_key: &str, served_name: &str, model: Model) {
        self.upsert(Slot {
            assignment_id: format!("local-{model_key}"),
            model_key: model_key.to_string(),
            served_name: served_name.to_string(),
            fingerprint: String::new(),
            status: SlotStatus::Running,
            message: None,
            model: Some(model),
        });
    }

    /// Inserts or replaces a slot.
    pub fn upsert(&self, slot: Slot) {
        self.slots
            .write()
            .expect("registry lock")
            .insert(slot.assignment_id.clone(), slot);
    }

    /// Updates a slot's status if it still exists with the same fingerprint (a reconcile
    /// may have replaced or removed it meanwhile). Returns whether it did.
    pub fn set_status(
        &self,
        assignment_id: &str,
        fingerprint: &str,
        status: SlotStatus,
        message: Option<String>,
        model: Option<Model>,
    ) -> bool {
        let mut slots = self.slots.write().expect("registry lock");
        match slots.get_mut(assignment_id) {
            Some(s) if s.fingerprint == fingerprint => {
                s.status = status;
                s.message = message;
                s.model = model;
                true
            }
            _ => false,
        }
    }

    /// Removes a slot; its model unloads when the last request using it finishes.
    pub fn remove(&self, assignment_id: &str) -> Option<Slot> {
        self.slots
            .write()
            .expect("registry lock")
            .remove(assignment_id)
    }

    /// A copy of one slot.
    pub fn get(&self, assignment_id: &str) -> Option<Slot> {
        self.slots
            .read()
            .expect("registry lock")
            .get(assignment_id)
            .cloned()
    }

    /// The slot serving `model_key` (a running one if several match).
    pub fn by_key(&self, model_key: &str) -> Option<Slot> {
        let slots = self.slots.read().expect("registry lock");
        let mut found: Option<&Slot> = None;
        for s in slots.values().filter(|s| s.model_key == model_key) {
            if s.status == SlotStatus::Running || found.is_none() {
                found = Some(s);
            }
        }
        found.cloned()
    }

    /// Assignment ids held.
    pub fn assignment_ids(&self) -> Vec<String> {
        self.slots
            .read()
            .expect("registry lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Status of every slot, for heartbeats. A running slot whose model can no longer
    /// serve ([`Model::failure`]) is reported `failed` with the reason.
    pub fn reports(&self) -> Vec<SlotReport> {
        let slots = self.slots.read().expect("registry lock");
        let mut out: Vec<SlotReport> = slots
            .values()
            .map(|s| {
                let (status, message) = s.effective();
                SlotReport {
                    assignment_id: s.assignment_id.clone(),
                    status,
                    message,
                    stats: s.model.as_ref().map(Model::stats).unwrap_or_default(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.assignment_id.cmp(&b.assignment_id));
        out
    }

    /// Each slot's served name, status and load (for the metrics).
    pub fn loads(&self) -> Vec<(String, SlotStatus, ModelStats)> {
        self.slots
            .read()
            .expect("registry lock")
            .values()
            .map(|s| {
                let stats = s.model.as_ref().map(Model::stats).unwrap_or_default();
                (s.served_name.clone(), s.effective().0, stats)
            })
            .collect()
    }

    /// Number of running models.
    pub fn running(&self) -> usize {
        self.slots
            .read()
            .expect("registry lock")
            .values()
            .filter(|s| s.effective().0 == SlotStatus::Running)
            .count()
    }
}
