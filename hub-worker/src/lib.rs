//! Paddock inference worker.
