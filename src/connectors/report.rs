//! The rejection report (connector contract §3): one line per problem, as CSV (UTF-8 with a
//! BOM, so spreadsheet programs on Chinese Windows read it right) or, for a `.jsonl` file, as
//! JSON Lines.
//!
//! Promise: the columns are `input, row, column, pointer, code, message, byte_offset`, in that
//! order, and every line written is flushed when the report is finished, also when the run
//! stops early.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde::Serialize;

/// One problem of one row.
#[derive(Clone, Debug, Serialize)]
pub struct ReportLine {
    pub input: String,
    /// The row as a spreadsheet or editor shows it; the key value for SQL.
    pub row: String,
    pub column: String,
    pub pointer: String,
    pub code: String,
    pub message: String,
    pub byte_offset: Option<u64>,
}

enum Writer {
    Csv(Box<csv::Writer<BufWriter<File>>>),
    Jsonl(BufWriter<File>),
}

pub struct Report {
    writer: Writer,
    path: String,
}

#[derive(Debug, thiserror::Error)]
#[error("report {path}: {source}")]
pub struct ReportError {
    pub path: String,
    pub source: std::io::Error,
}

impl Report {
    pub fn create(path: &Path) -> Result<Report, ReportError> {
        let failed = |source| ReportError {
            path: path.display().to_string(),
            source,
        };
        let mut file = BufWriter::new(File::create(path).map_err(failed)?);
        let jsonl = path.extension().is_some_and(|e| e == "jsonl");
        let writer = if jsonl {
            Writer::Jsonl(file)
        } else {
            file.write_all(b"\xEF\xBB\xBF").map_err(failed)?;
            let mut writer = csv::Writer::from_writer(file);
            writer
                .write_record([
                    "input",
                    "row",
                    "column",
                    "pointer",
                    "code",
                    "message",
                    "byte_offset",
                ])
                .map_err(|error| failed(error.into()))?;
            Writer::Csv(Box::new(writer))
        };
        Ok(Report {
            writer,
            path: path.display().to_string(),
        })
    }

    pub fn write(&mut self, line: &ReportLine) -> Result<(), ReportError> {
        let failed = |source| ReportError {
            path: self.path.clone(),
            source,
        };
        match &mut self.writer {
            Writer::Csv(writer) => {
                let offset = line.byte_offset.map(|o| o.to_string()).unwrap_or_default();
                writer
                    .write_record([
                        line.input.as_str(),
                        &line.row,
                        &line.column,
                        &line.pointer,
                        &line.code,
                        &line.message,
                        &offset,
                    ])
                    .map_err(|error| failed(error.into()))
            }
            Writer::Jsonl(file) => {
                let mut bytes = serde_json::to_vec(line).expect("a report line serialises");
                bytes.push(b'\n');
                file.write_all(&bytes).map_err(failed)
            }
        }
    }

    pub fn finish(&mut self) -> Result<(), ReportError> {
        let result = match &mut self.writer {
            Writer::Csv(writer) => writer.flush(),
            Writer::Jsonl(file) => file.flush(),
        };
        result.map_err(|source| ReportError {
            path: self.path.clone(),
            source,
        })
    }
}
