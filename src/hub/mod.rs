//! The hub: the agencies' side. It validates and accepts leads, keeps their state and
//! timeline, publishes them through the outbox, and turns the police adapter's receipts and
//! decisions into the feedback agencies read.
//!
//! Depends on `contract` and `shared`, never on `police`.

pub mod api;
pub mod ingest;
pub mod receipts;
pub mod store;
pub mod supervise;
