//! Infrastructure every role uses and none owns: settings, Kafka plumbing, the database and
//! its transactional outbox, the audit ledger and the relay that publishes the outbox, the
//! HTTPS edge, certificates and client identity, telemetry.
//!
//! Promise: nothing here depends on a role (`hub`, `police`); roles plug in through the
//! types and hooks these modules define.

pub mod audit;
pub mod config;
pub mod http;
pub mod identity;
pub mod kafka;
pub mod outbox;
pub mod pki;
pub mod private_fs;
pub mod relay;
pub mod retry;
pub mod store;
pub mod telemetry;
pub mod tlog;
