//! `leadbridge connect file`: an agency's export files, row by row, to the hub.
//!
//! Promise: every row read is counted exactly once as accepted, replayed, rejected or skipped;
//! a row is sent only after it passed the hub's own schemas and domain checks locally; a row
//! already accepted or replayed in an earlier run of the same file (by content) and mapping is
//! skipped, and a row identical to an earlier row of the same input is sent once. The
//! checkpoint only ever advances past rows whose outcome is known, so a run stopped at any
//! point — the hub down, the process killed — resumes without losing a row; a row whose
//! answer was lost is sent again and answered as a replay.

use std::collections::{BTreeSet, HashSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::hub::{batch_body, HubClient, HubOptions, Outcome};
use super::mapping::{BoundMapping, Mapping};
use super::report::{Report, ReportLine};
use super::source::{self, Item, Row};
use super::state::{FileCheckpoint, StateDir};
use super::{ConnectError, Summary};
use crate::contract::validate::{ValidationError, Validator};

/// A batch is sent when it holds this many bytes, well under the hub's 16 MiB limit.
const MAX_BATCH_BYTES: usize = 8 << 20;

/// What `connect file` was asked to do.
pub struct FileOptions {
    pub mapping: PathBuf,
    pub inputs: Vec<PathBuf>,
    /// `None` for `--dry-run`: map and check, send nothing, keep no state.
    pub hub: Option<HubOptions>,
    pub state: PathBuf,
    pub report: Option<PathBuf>,
    /// Leads per batch call (1–500).
    pub batch_size: usize,
}

/// The end of a run: the counts, the leads a dry run found valid, and what stopped it.
pub struct RunResult {
    pub summary: Summary,
    pub valid_in_dry_run: u64,
    /// Per input, when there are several.
    pub per_input: Vec<(String, Summary)>,
    pub errors: Vec<ConnectError>,
}

pub async fn import(options: FileOptions) -> RunResult {
    let mut result = RunResult {
        summary: Summary::default(),
        valid_in_dry_run: 0,
        per_input: Vec::new(),
        errors: Vec::new(),
    };
    let prepared = match prepare(&options) {
        Ok(prepared) => prepared,
        Err(error) => {
            result.errors.push(error);
            return result;
        }
    };
    let (mapping, validator, hub, state, mut report) = prepared;
    for input in &options.inputs {
        let mut run = InputRun {
            input,
            name: input.display().to_string(),
            mapping: &mapping,
            validator: &validator,
            hub: hub.as_ref(),
            state: state.as_ref(),
            report: report.as_mut(),
            batch_size: options.batch_size.clamp(1, 500),
            summary: Summary::default(),
            valid_in_dry_run: 0,
            checkpoint: FileCheckpoint::default(),
            rejected_now: BTreeSet::new(),
            cleared: BTreeSet::new(),
            batch: Vec::new(),
            batch_bytes: 0,
        };
        let outcome = run.run().await;
        result.summary.add(&run.summary);
        result.valid_in_dry_run += run.valid_in_dry_run;
        result.per_input.push((run.name.clone(), run.summary));
        if let Err(error) = outcome {
            let stop = error.stops_the_run();
            result.errors.push(error);
            if stop {
                break;
            }
        }
    }
    if let Some(report) = report.as_mut() {
        if let Err(error) = report.finish() {
            result.errors.push(ConnectError::Report(error));
        }
    }
    result
}

type Prepared = (
    Mapping,
    Validator,
    Option<HubClient>,
    Option<StateDir>,
    Option<Report>,
);

fn prepare(options: &FileOptions) -> Result<Prepared, ConnectError> {
    let validator =
        Validator::built_in().map_err(|error| ConnectError::Setup(error.to_string()))?;
    let mapping = Mapping::load(&options.mapping, validator.schemas())?;
    if mapping.input.is_none() {
        return Err(ConnectError::Setup(format!(
            "mapping {} has no [input] table; a file import needs one",
            mapping.path
        )));
    }
    let hub = match &options.hub {
        Some(hub) => Some(HubClient::new(hub.clone())?),
        None => None,
    };
    let state = match &options.hub {
        Some(_) => Some(StateDir::open(&options.state)?),
        None => None,
    };
    let report = match &options.report {
        Some(path) => Some(Report::create(path)?),
        None => None,
    };
    Ok((mapping, validator, hub, state, report))
}

/// A lead waiting in the batch, with the row it came from.
struct Pending {
    row: u64,
    lead: Value,
}

struct InputRun<'a> {
    input: &'a Path,
    name: String,
    mapping: &'a Mapping,
    validator: &'a Validator,
    hub: Option<&'a HubClient>,
    state: Option<&'a StateDir>,
    report: Option<&'a mut Report>,
    batch_size: usize,
    summary: Summary,
    valid_in_dry_run: u64,
    checkpoint: FileCheckpoint,
    /// Rows rejected in this run.
    rejected_now: BTreeSet<u64>,
    /// Rows rejected in an earlier run that this run accepted, replayed or skipped.
    cleared: BTreeSet<u64>,
    batch: Vec<Pending>,
    batch_bytes: usize,
}

impl InputRun<'_> {
    async fn run(&mut self) -> Result<(), ConnectError> {
        let input_settings = self.mapping.input.clone().expect("checked in prepare");
        let identity = source::identify(self.input)?;
        if let Some(state) = self.state {
            self.checkpoint = state.load(&identity.sha256, &self.mapping.sha256)?;
        }
        self.checkpoint.input = self.name.clone();
        let mut rows = source::open(self.input, &input_settings, &identity)?;
        let bound = match self.mapping.bind(rows.header(), "") {
            Ok(bound) => bound,
            Err(_) => self.mapping.bind(rows.header(), &rows.header_hint())?,
        };
        let mut progress = Progress::new(&self.name, identity.bytes, rows.bytes_read().is_some());
        let mut seen: HashSet<[u8; 16]> = HashSet::new();
        let mut last_row = 0u64;
        loop {
            let item = match rows.next_item() {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(error) => {
                    // Keep what is answered; the rows after are read again next time.
                    self.send(last_row).await?;
                    return Err(error.into());
                }
            };
            self.summary.rows += 1;
            match item {
                Item::Bad {
                    number,
                    byte_offset,
                    code,
                    message,
                } => {
                    self.summary.rejected += 1;
                    self.rejected_now.insert(number);
                    self.write_report(ReportLine {
                        input: self.name.clone(),
                        row: number.to_string(),
                        column: String::new(),
                        pointer: String::new(),
                        code: code.into(),
                        message,
                        byte_offset,
                    })?;
                    last_row = last_row.max(number);
                }
                Item::Row(row) => {
                    let first = seen.insert(row.fingerprint());
                    if self.checkpoint.is_done(row.number) || !first {
                        self.summary.skipped += 1;
                        self.clear(row.number);
                    } else if let Some(lead) = self.checked_lead(&bound, &row)? {
                        let size = serde_json::to_vec(&lead).map_or(0, |b| b.len());
                        if !self.batch.is_empty() && self.batch_bytes + size > MAX_BATCH_BYTES {
                            self.send(last_row).await?;
                        }
                        self.batch_bytes += size;
                        self.batch.push(Pending {
                            row: row.number,
                            lead,
                        });
                    }
                    last_row = last_row.max(row.number);
                    if self.batch.len() >= self.batch_size {
                        self.send(last_row).await?;
                    }
                }
            }
            progress.update(&self.summary, rows.bytes_read());
        }
        self.send(last_row).await?;
        progress.finish(&self.summary);
        Ok(())
    }

    /// Sends the batch, then moves the checkpoint to `through`, every row up to which is now
    /// answered. When the hub cannot be reached, the checkpoint moves only to the row before
    /// the batch, and the batch is read again next time.
    async fn send(&mut self, through: u64) -> Result<(), ConnectError> {
        let first_row = self.batch.first().map(|pending| pending.row);
        match self.flush().await {
            Ok(()) => self.save(through),
            Err(error) => {
                self.save(first_row.map_or(through, |row| row - 1))?;
                Err(error)
            }
        }
    }

    fn clear(&mut self, row: u64) {
        if self.checkpoint.rejected_rows.contains(&row) {
            self.cleared.insert(row);
        }
    }

    /// The row's lead when it passes the mapping and the hub's checks; otherwise the row is
    /// reported and counted as rejected.
    fn checked_lead(
        &mut self,
        bound: &BoundMapping<'_>,
        row: &Row,
    ) -> Result<Option<Value>, ConnectError> {
        let problems: Vec<ReportLine> = match bound.lead(row) {
            Err(problems) => problems
                .into_iter()
                .map(|problem| {
                    self.line(
                        row.number,
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
                            self.line(
                                row.number,
                                column,
                                problem.pointer,
                                problem.code,
                                problem.message,
                            )
                        })
                        .collect(),
                    Err(error @ ValidationError::ForeignAgency { .. }) => vec![self.line(
                        row.number,
                        None,
                        "/source/agency".into(),
                        "not_callers_agency",
                        error.to_string(),
                    )],
                }
            }
        };
        self.summary.rejected += 1;
        self.rejected_now.insert(row.number);
        for line in &problems {
            self.write_report(line.clone())?;
        }
        Ok(None)
    }

    fn line(
        &self,
        row: u64,
        column: Option<String>,
        pointer: String,
        code: impl Into<String>,
        message: String,
    ) -> ReportLine {
        ReportLine {
            input: self.name.clone(),
            row: row.to_string(),
            column: column.unwrap_or_default(),
            pointer,
            code: code.into(),
            message,
            byte_offset: None,
        }
    }

    fn write_report(&mut self, line: ReportLine) -> Result<(), ConnectError> {
        match self.report.as_deref_mut() {
            Some(report) => Ok(report.write(&line)?),
            None => Ok(()),
        }
    }

    /// Sends the batch and books every answer.
    async fn flush(&mut self) -> Result<(), ConnectError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let Some(hub) = self.hub else {
            self.valid_in_dry_run += batch.len() as u64;
            return Ok(());
        };
        let leads: Vec<Value> = batch.iter().map(|pending| pending.lead.clone()).collect();
        let outcomes = hub.submit(batch_body(&leads), leads.len()).await?;
        for (pending, outcome) in batch.iter().zip(outcomes) {
            match outcome {
                Outcome::Accepted => {
                    self.summary.accepted += 1;
                    self.clear(pending.row);
                }
                Outcome::Replayed => {
                    self.summary.replayed += 1;
                    self.clear(pending.row);
                }
                Outcome::Rejected(problems) => {
                    self.summary.rejected += 1;
                    self.rejected_now.insert(pending.row);
                    for problem in problems {
                        let column = self.mapping.column_of(&problem.pointer);
                        let line = self.line(
                            pending.row,
                            column,
                            problem.pointer,
                            problem.code,
                            problem.message,
                        );
                        self.write_report(line)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Moves the checkpoint to `through` (never back) and writes it; a dry run keeps none.
    /// The rejected rows are those of earlier runs this run has not cleared, and this run's.
    fn save(&mut self, through: u64) -> Result<(), ConnectError> {
        let Some(state) = self.state else {
            return Ok(());
        };
        let through = self.checkpoint.through_row.max(through);
        let rejected: BTreeSet<u64> = self
            .checkpoint
            .rejected_rows
            .iter()
            .chain(self.rejected_now.iter())
            .copied()
            .filter(|row| *row <= through && !self.cleared.contains(row))
            .collect();
        self.checkpoint.through_row = through;
        self.checkpoint.rejected_rows = rejected;
        self.checkpoint.updated_at = chrono::Utc::now().to_rfc3339();
        Ok(state.save(&self.checkpoint)?)
    }
}

/// A progress bar on a terminal; elsewhere a progress line every ten seconds.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    name: String,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    fn new(name: &str, bytes: u64, bytes_known: bool) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = if bytes_known {
                indicatif::ProgressBar::new(bytes)
            } else {
                indicatif::ProgressBar::new_spinner()
            };
            let template = if bytes_known {
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {msg} ETA {eta}"
            } else {
                "{prefix} {spinner} {msg}"
            };
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(name.to_owned());
            bar
        });
        let now = Instant::now();
        Progress {
            bar,
            name: name.to_owned(),
            started: now,
            last_line: now,
        }
    }

    fn message(&self, summary: &Summary) -> String {
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        format!(
            "rows {}, sent {}, rejected {}, {:.0} rows/s",
            summary.rows,
            summary.accepted + summary.replayed,
            summary.rejected,
            summary.rows as f64 / seconds
        )
    }

    fn update(&mut self, summary: &Summary, bytes_read: Option<u64>) {
        if let Some(bar) = &self.bar {
            if summary.rows % 64 == 0 {
                if let Some(position) = bytes_read {
                    bar.set_position(position);
                } else {
                    bar.tick();
                }
                bar.set_message(self.message(summary));
            }
        } else if self.last_line.elapsed() >= Duration::from_secs(10) {
            self.last_line = Instant::now();
            eprintln!("{}: {}", self.name, self.message(summary));
        }
    }

    fn finish(&mut self, summary: &Summary) {
        if let Some(bar) = self.bar.take() {
            bar.finish_with_message(self.message(summary));
        }
    }
}
