//! The agency side: connectors that turn what agencies already have — spreadsheet exports,
//! database tables, the HJ 212 stream of monitoring stations — into canonical leads, check
//! them with the hub's own schemas and domain checks (`contract::validate`, the same code the
//! hub runs), and push them through the agency API over mutual TLS. The commands, the mapping
//! format and the report are fixed by the connector contract.
//!
//! Promise: a connector is an API client like any agency system — it knows nothing of the
//! hub's database or Kafka; every row it reads ends in exactly one of the summary's counts;
//! and it never re-sends, on a re-run, what the hub already accepted.

pub mod batch;
pub mod file;
pub mod hj212;
pub mod hub;
pub mod mapping;
pub mod report;
pub mod source;
pub mod sql;
pub mod state;

use std::fmt;

/// The counts every run ends with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub rows: u64,
    pub accepted: u64,
    pub replayed: u64,
    pub rejected: u64,
    pub skipped: u64,
}

impl Summary {
    /// The contract's exit status: 2 when the run could not proceed, 1 when some row was
    /// rejected, 0 otherwise.
    pub fn exit_code(&self, could_not_proceed: bool) -> i32 {
        if could_not_proceed {
            2
        } else if self.rejected > 0 {
            1
        } else {
            0
        }
    }

    pub fn add(&mut self, other: &Summary) {
        self.rows += other.rows;
        self.accepted += other.accepted;
        self.replayed += other.replayed;
        self.rejected += other.rejected;
        self.skipped += other.skipped;
    }
}

impl fmt::Display for Summary {
    /// The contract's summary line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rows {}, accepted {}, replayed {}, rejected {}, skipped {}",
            self.rows, self.accepted, self.replayed, self.rejected, self.skipped
        )
    }
}

/// Why a connector run could not proceed (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Mapping(#[from] mapping::MappingError),
    #[error(transparent)]
    Source(#[from] source::SourceError),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Report(#[from] report::ReportError),
    #[error(transparent)]
    Hub(#[from] hub::HubError),
    /// The agency's database refused or dropped a query (`connect sql`); the URL is shown
    /// without its password.
    #[error("database {url}: {message}")]
    Database { url: String, message: String },
}

impl ConnectError {
    /// Whether the other inputs of the run can still be read: an unreadable file or one whose
    /// header lacks a column stops only itself; a hub that cannot be reached, or state and
    /// report files that cannot be written, stop the run.
    pub fn stops_the_run(&self) -> bool {
        !matches!(self, ConnectError::Source(_) | ConnectError::Mapping(_))
    }
}
