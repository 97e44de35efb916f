//! What every connector does with a row once it has read it: map it, check the lead with the
//! hub's own schemas and domain checks, gather leads into batches, send them, and book each
//! answer in the summary and the report.
//!
//! Promise: every row handed to [`Sender::check`] is counted exactly once — as rejected right
//! here (the mapping or the local checks refused it; it is reported and never sent), or, once
//! its batch is answered, as accepted, replayed or rejected by the hub (reported). A lead is
//! only ever sent after it passed the local checks. [`Sender::flush`] returns every answer in
//! the order the leads were queued, so the caller advances its checkpoint only past rows
//! whose answer it holds; when the hub cannot be reached, no answer is booked and the error
//! is returned.

use std::fmt::Display;
use std::path::Path;

use serde_json::Value;

use super::hub::{batch_body, HubClient, HubOptions, Outcome};
use super::mapping::{BoundMapping, Mapping};
use super::report::{Report, ReportLine};
use super::source::Row;
use super::state::StateDir;
use super::{ConnectError, Summary};
use crate::contract::validate::{ValidationError, Validator};

/// A batch is sent when it holds this many bytes, well under the hub's 16 MiB limit.
pub const MAX_BATCH_BYTES: usize = 8 << 20;

/// What a run needs before it reads a row: the mapping, the checks, the hub, the state and
/// the report, each opened or refused with a message naming it.
pub struct Setup {
    pub mapping: Mapping,
    pub validator: Validator,
    /// `None` for a dry run.
    pub hub: Option<HubClient>,
    /// `None` for a dry run: it keeps no state.
    pub state: Option<StateDir>,
    pub report: Option<Report>,
}

impl Setup {
    pub fn open(
        mapping: &Path,
        hub: Option<&HubOptions>,
        state: &Path,
        report: Option<&Path>,
    ) -> Result<Setup, ConnectError> {
        let validator =
            Validator::built_in().map_err(|error| ConnectError::Setup(error.to_string()))?;
        let mapping = Mapping::load(mapping, validator.schemas())?;
        let state = match hub {
            Some(_) => Some(StateDir::open(state)?),
            None => None,
        };
        let hub = match hub {
            Some(hub) => Some(HubClient::new(hub.clone())?),
            None => None,
        };
        let report = match report {
            Some(path) => Some(Report::create(path)?),
            None => None,
        };
        Ok(Setup {
            mapping,
            validator,
            hub,
            state,
            report,
        })
    }
}

/// How the hub answered the lead of one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Accepted or replayed: the hub has it.
    Taken,
    Rejected,
}

/// A lead waiting in the batch, with the row it came from.
struct Pending<R> {
    row: R,
    lead: Value,
}

/// Checks rows, batches their leads and books the hub's answers. `R` names a row: its number
/// in a file, its key in a table; the report shows it as its text.
pub struct Sender<'a, R> {
    /// The input the report names.
    pub input: String,
    mapping: &'a Mapping,
    validator: &'a Validator,
    hub: Option<&'a HubClient>,
    report: Option<&'a mut Report>,
    pub summary: Summary,
    /// Leads that passed the checks in a dry run (nothing is sent).
    pub valid_in_dry_run: u64,
    batch: Vec<Pending<R>>,
    batch_bytes: usize,
}

impl<'a, R: Display + Clone> Sender<'a, R> {
    pub fn new(
        input: String,
        mapping: &'a Mapping,
        validator: &'a Validator,
        hub: Option<&'a HubClient>,
        report: Option<&'a mut Report>,
    ) -> Self {
        Sender {
            input,
            mapping,
            validator,
            hub,
            report,
            summary: Summary::default(),
            valid_in_dry_run: 0,
            batch: Vec::new(),
            batch_bytes: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.batch.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// The row of the first lead waiting in the batch.
    pub fn first_row(&self) -> Option<&R> {
        self.batch.first().map(|pending| &pending.row)
    }

    /// The row's lead when it passes the mapping and the hub's checks; otherwise the row is
    /// reported and counted as rejected.
    pub fn check(
        &mut self,
        bound: &BoundMapping<'_>,
        row: &Row,
        id: &R,
    ) -> Result<Option<Value>, ConnectError> {
        let problems: Vec<ReportLine> = match bound.lead(row) {
            Err(problems) => problems
                .into_iter()
                .map(|problem| {
                    self.line(
                        id,
                        problem.column,
                        problem.pointer,
                        problem.code,
                        problem.message,
                    )
                })
                .collect(),
            Ok(lead) => {
                match self
                    .validator
                    .validate(self.mapping.agency, lead.clone(), chrono::Utc::now())
                {
                    Ok(_) => return Ok(Some(lead)),
                    Err(ValidationError::Invalid(problems)) => problems
                        .into_iter()
                        .map(|problem| {
                            let column = self.mapping.column_of(&problem.pointer);
                            self.line(id, column, problem.pointer, problem.code, problem.message)
                        })
                        .collect(),
                    Err(error @ ValidationError::ForeignAgency { .. }) => vec![self.line(
                        id,
                        None,
                        "/source/agency".into(),
                        "not_callers_agency",
                        error.to_string(),
                    )],
                }
            }
        };
        self.summary.rejected += 1;
        for line in problems {
            self.write_report(&line)?;
        }
        Ok(None)
    }

    /// Counts a row that could not even be read as rejected, and reports it.
    pub fn reject_unread(&mut self, line: ReportLine) -> Result<(), ConnectError> {
        self.summary.rejected += 1;
        self.write_report(&line)
    }

    /// Whether a lead of `size` bytes no longer fits in the batch (it is sent first).
    pub fn is_full_for(&self, size: usize) -> bool {
        !self.batch.is_empty() && self.batch_bytes + size > MAX_BATCH_BYTES
    }

    /// Queues a checked lead of `size` bytes (see [`lead_size`]).
    pub fn push(&mut self, row: R, lead: Value, size: usize) {
        self.batch_bytes += size;
        self.batch.push(Pending { row, lead });
    }

    /// A report line about one row.
    pub fn line(
        &self,
        id: &R,
        column: Option<String>,
        pointer: String,
        code: impl Into<String>,
        message: String,
    ) -> ReportLine {
        ReportLine {
            input: self.input.clone(),
            row: id.to_string(),
            column: column.unwrap_or_default(),
            pointer,
            code: code.into(),
            message,
            byte_offset: None,
        }
    }

    fn write_report(&mut self, line: &ReportLine) -> Result<(), ConnectError> {
        match self.report.as_deref_mut() {
            Some(report) => Ok(report.write(line)?),
            None => Ok(()),
        }
    }

    /// Flushes the report's buffer (the run goes on).
    pub fn flush_report(&mut self) -> Result<(), ConnectError> {
        match self.report.as_deref_mut() {
            Some(report) => Ok(report.finish()?),
            None => Ok(()),
        }
    }

    /// Sends the batch and books every answer; returns the rows with their answers, in the
    /// order queued. A dry run books them as valid and sends nothing.
    pub async fn flush(&mut self) -> Result<Vec<(R, Answer)>, ConnectError> {
        if self.batch.is_empty() {
            return Ok(Vec::new());
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let Some(hub) = self.hub else {
            self.valid_in_dry_run += batch.len() as u64;
            return Ok(Vec::new());
        };
        let leads: Vec<Value> = batch.iter().map(|pending| pending.lead.clone()).collect();
        let outcomes = hub.submit(batch_body(&leads), leads.len()).await?;
        let mut answers = Vec::with_capacity(batch.len());
        for (pending, outcome) in batch.into_iter().zip(outcomes) {
            let answer = match outcome {
                Outcome::Accepted => {
                    self.summary.accepted += 1;
                    Answer::Taken
                }
                Outcome::Replayed => {
                    self.summary.replayed += 1;
                    Answer::Taken
                }
                Outcome::Rejected(problems) => {
                    self.summary.rejected += 1;
                    for problem in problems {
                        let column = self.mapping.column_of(&problem.pointer);
                        let line = self.line(
                            &pending.row,
                            column,
                            problem.pointer,
                            problem.code,
                            problem.message,
                        );
                        self.write_report(&line)?;
                    }
                    Answer::Rejected
                }
            };
            answers.push((pending.row, answer));
        }
        Ok(answers)
    }
}

/// The size a lead adds to a batch.
pub fn lead_size(lead: &Value) -> usize {
    serde_json::to_vec(lead).map_or(0, |bytes| bytes.len())
}
