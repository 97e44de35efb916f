//! The hub's own tables on the shared [`Store`](crate::shared::store::Store): leads, their
//! revisions and timelines, and the police feedback agencies read.

pub mod clocks;
pub mod feedback;
pub mod leads;
pub mod publication;
pub mod supervision;

pub use clocks::{AgencyStep, AgencyStepError};
pub use feedback::{ReceiptOutcome, ReconsiderationError};
pub use leads::{Acceptance, ConflictReason, LeadView, TimelineEvent};

use crate::shared::store::{Migrations, Store, StoreError};

/// The hub's tables, with the outbox and the audit ledger.
pub static MIGRATIONS: Migrations = Migrations {
    postgres: sqlx::migrate!("./migrations/hub/postgres"),
    sqlite: sqlx::migrate!("./migrations/hub/sqlite"),
};

/// Connects to the hub's database at `url` (`postgres://…` or `sqlite:…`), runs its migrations
/// and opens a pool.
pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
    Store::connect(url, max_connections, &MIGRATIONS).await
}
