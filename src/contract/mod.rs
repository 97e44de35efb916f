//! The contract both roles and every outside party build against: what a lead is (its types,
//! identifiers and divisions), what makes one valid (the JSON Schemas and domain checks of
//! `schemas/`), and the events the hub and the police adapter exchange on Kafka.
//!
//! Promise: this module depends on nothing else in the crate, so the hub, the adapter and the
//! connectors can share it without depending on each other.

pub mod calendar;
pub mod deadlines;
pub mod events;
pub mod lead;
pub mod validate;
