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

use super::batch::{lead_size, Answer, Sender, Setup};
use super::hub::HubOptions;
use super::mapping::Mapping;
use super::report::ReportLine;
use super::source::{self, Item};
use super::state::{FileCheckpoint, StateDir};
use super::{ConnectError, Summary};

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
    let mut setup = match prepare(&options) {
        Ok(setup) => setup,
        Err(error) => {
            result.errors.push(error);
            return result;
        }
    };
    for input in &options.inputs {
        let name = input.display().to_string();
        let mut run = InputRun {
            input,
            mapping: &setup.mapping,
            state: setup.state.as_ref(),
            sender: Sender::new(
                name.clone(),
                &setup.mapping,
                &setup.validator,
                setup.hub.as_ref(),
                setup.report.as_mut(),
            ),
            batch_size: options.batch_size.clamp(1, 500),
            checkpoint: FileCheckpoint::default(),
            rejected_now: BTreeSet::new(),
            cleared: BTreeSet::new(),
        };
        let outcome = run.run().await;
        result.summary.add(&run.sender.summary);
        result.valid_in_dry_run += run.sender.valid_in_dry_run;
        result.per_input.push((name, run.sender.summary));
        if let Err(error) = outcome {
            let stop = error.stops_the_run();
            result.errors.push(error);
            if stop {
                break;
            }
        }
    }
    if let Some(report) = setup.report.as_mut() {
        if let Err(error) = report.finish() {
            result.errors.push(ConnectError::Report(error));
        }
    }
    result
}

fn prepare(options: &FileOptions) -> Result<Setup, ConnectError> {
    let setup = Setup::open(
        &options.mapping,
        options.hub.as_ref(),
        &options.state,
        options.report.as_deref(),
    )?;
    if setup.mapping.input.is_none() {
        return Err(ConnectError::Setup(format!(
            "mapping {} has no [input] table; a file import needs one",
            setup.mapping.path
        )));
    }
    Ok(setup)
}

struct InputRun<'a> {
    input: &'a Path,
    mapping: &'a Mapping,
    state: Option<&'a StateDir>,
    sender: Sender<'a, u64>,
    batch_size: usize,
    checkpoint: FileCheckpoint,
    /// Rows rejected in this run.
    rejected_now: BTreeSet<u64>,
    /// Rows rejected in an earlier run that this run accepted, replayed or skipped.
    cleared: BTreeSet<u64>,
}

impl InputRun<'_> {
    async fn run(&mut self) -> Result<(), ConnectError> {
        let input_settings = self.mapping.input.clone().expect("checked in prepare");
        let identity = source::identify(self.input)?;
        if let Some(state) = self.state {
            self.checkpoint = state.load(&identity.sha256, &self.mapping.sha256)?;
        }
        self.checkpoint.input = self.sender.input.clone();
        let mut rows = source::open(self.input, &input_settings, &identity)?;
        let bound = match self.mapping.bind(rows.header(), "") {
            Ok(bound) => bound,
            Err(_) => self.mapping.bind(rows.header(), &rows.header_hint())?,
        };
        let mut progress = Progress::new(
            &self.sender.input,
            identity.bytes,
            rows.bytes_read().is_some(),
        );
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
            self.sender.summary.rows += 1;
            match item {
                Item::Bad {
                    number,
                    byte_offset,
                    code,
                    message,
                } => {
                    self.rejected_now.insert(number);
                    self.sender.reject_unread(ReportLine {
                        input: self.sender.input.clone(),
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
                        self.sender.summary.skipped += 1;
                        self.clear(row.number);
                    } else if let Some(lead) = self.sender.check(&bound, &row, &row.number)? {
                        let size = lead_size(&lead);
                        if self.sender.is_full_for(size) {
                            self.send(last_row).await?;
                        }
                        self.sender.push(row.number, lead, size);
                    } else {
                        self.rejected_now.insert(row.number);
                    }
                    last_row = last_row.max(row.number);
                    if self.sender.len() >= self.batch_size {
                        self.send(last_row).await?;
                    }
                }
            }
            progress.update(&self.sender.summary, rows.bytes_read());
        }
        self.send(last_row).await?;
        progress.finish(&self.sender.summary);
        Ok(())
    }

    /// Sends the batch, then moves the checkpoint to `through`, every row up to which is now
    /// answered. When the hub cannot be reached, the checkpoint moves only to the row before
    /// the batch, and the batch is read again next time.
    async fn send(&mut self, through: u64) -> Result<(), ConnectError> {
        let first_row = self.sender.first_row().copied();
        match self.sender.flush().await {
            Ok(answers) => {
                for (row, answer) in answers {
                    match answer {
                        Answer::Taken => self.clear(row),
                        Answer::Rejected => {
                            self.rejected_now.insert(row);
                        }
                    }
                }
                self.save(through)
            }
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
