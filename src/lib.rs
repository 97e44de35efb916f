//! LeadBridge: the data exchange hub of a police–environment joint enforcement mechanism.
//!
//! Agencies push case leads over HTTPS with mutual TLS; the hub validates them (JSON Schema
//! and domain checks), commits each with an outbox message and an audit entry, and a relay
//! publishes them to Kafka for the police case-management adapter.
//!
//! The layout follows the roles. `contract` is what everyone shares (lead types, validation,
//! wire events); `shared` is infrastructure (settings, Kafka, storage, outbox, ledger, HTTPS
//! edge, telemetry); `hub`, `police` and `connectors` are the roles, each depending on those two
//! and never on each other; `app` composes the roles a process runs. `tests/it/layout.rs` checks
//! that no two of these import each other.

pub mod app;
pub mod connectors;
pub mod contract;
pub mod hub;
pub mod police;
pub mod shared;

pub use app::{Application, Roles};
