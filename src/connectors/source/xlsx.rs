//! XLSX workbooks, read cell by cell in the sheet's order, never as a whole range: a sheet that
//! declares `A1:XFD1048576` (as some exports do) costs nothing for the cells it does not hold.
//! The reader runs on its own thread and hands rows over a bounded channel, so at most
//! [`ROWS_IN_FLIGHT`] rows are in memory at once.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use calamine::{DataRef, Reader, Xlsx};

use super::{column_label, Cell, Item, Row, RowSource, SourceError};

const ROWS_IN_FLIGHT: usize = 256;

/// A row wider than Excel's last column (XFD) is not a spreadsheet row.
const MAX_COLUMNS: u32 = 16_384;

type Workbook = Xlsx<std::io::BufReader<std::fs::File>>;

pub struct XlsxSource {
    path: PathBuf,
    sheet: String,
    header_row: u64,
    header: Vec<String>,
    rows: mpsc::Receiver<Result<Item, SourceError>>,
}

impl XlsxSource {
    pub fn open(
        path: &Path,
        sheet: Option<&str>,
        header_row: u64,
    ) -> Result<XlsxSource, SourceError> {
        let workbook = open_workbook(path)?;
        let names = workbook.sheet_names();
        let sheet = match sheet {
            Some(name) if names.iter().any(|n| n == name) => name.to_owned(),
            Some(name) => {
                return Err(SourceError::new(
                    path,
                    format!("has no sheet {name:?}; its sheets are {names:?}"),
                ))
            }
            None => names
                .first()
                .cloned()
                .ok_or_else(|| SourceError::new(path, "has no sheet"))?,
        };
        let (sender, rows) = mpsc::sync_channel(ROWS_IN_FLIGHT);
        let (header_sender, header_receiver) = mpsc::sync_channel(1);
        let thread_path = path.to_owned();
        let thread_sheet = sheet.clone();
        std::thread::Builder::new()
            .name("xlsx-reader".into())
            .spawn(move || {
                read_sheet(
                    workbook,
                    &thread_path,
                    &thread_sheet,
                    header_row,
                    header_sender,
                    sender,
                )
            })
            .map_err(|error| SourceError::new(path, format!("cannot start its reader: {error}")))?;
        let header = header_receiver
            .recv()
            .map_err(|_| SourceError::new(path, "the sheet reader stopped before the header"))??;
        Ok(XlsxSource {
            path: path.to_owned(),
            sheet,
            header_row,
            header,
            rows,
        })
    }
}

fn open_workbook(path: &Path) -> Result<Workbook, SourceError> {
    calamine::open_workbook(path).map_err(|error| {
        SourceError::new(path, format!("is not a readable XLSX workbook: {error}"))
    })
}

impl RowSource for XlsxSource {
    fn header(&self) -> &[String] {
        &self.header
    }

    /// The merged cells on the header row: a merged header leaves all but its first cell empty.
    fn header_hint(&self) -> String {
        let Ok(mut workbook) = open_workbook(&self.path) else {
            return String::new();
        };
        if workbook.load_merged_regions().is_err() {
            return String::new();
        }
        let row = (self.header_row - 1) as u32;
        let merged: Vec<String> = workbook
            .merged_regions_by_sheet(&self.sheet)
            .into_iter()
            .filter(|(_, _, region)| region.start.0 <= row && row <= region.end.0)
            .map(|(_, _, region)| {
                format!(
                    "{}{}:{}{}",
                    column_label(region.start.1 as usize),
                    region.start.0 + 1,
                    column_label(region.end.1 as usize),
                    region.end.0 + 1
                )
            })
            .collect();
        if merged.is_empty() {
            String::new()
        } else {
            format!(
                " (row {} has merged cells {}: a merged header names only its first column; unmerge it or point header_row at the row below)",
                self.header_row,
                merged.join(", ")
            )
        }
    }

    fn next_item(&mut self) -> Result<Option<Item>, SourceError> {
        match self.rows.recv() {
            Ok(item) => item.map(Some),
            Err(_) => Ok(None),
        }
    }

    fn bytes_read(&self) -> Option<u64> {
        None
    }
}

fn cell_of(value: &DataRef<'_>) -> Result<Cell, String> {
    Ok(match value {
        DataRef::Empty => Cell::Empty,
        DataRef::Int(number) => Cell::Number(*number as f64),
        DataRef::Float(number) => Cell::Number(*number),
        DataRef::String(text) if text.is_empty() => Cell::Empty,
        DataRef::String(text) => Cell::Text(text.clone()),
        DataRef::SharedString("") => Cell::Empty,
        DataRef::SharedString(text) => Cell::Text((*text).to_owned()),
        DataRef::Bool(value) => Cell::Bool(*value),
        DataRef::DateTime(at) if at.is_datetime() => match at.as_datetime() {
            Some(local) => Cell::DateTime(local),
            None => return Err(format!("a date cell out of range ({})", at.as_f64())),
        },
        DataRef::DateTime(at) => Cell::Number(at.as_f64()),
        DataRef::DateTimeIso(text) => {
            match chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f") {
                Ok(local) => Cell::DateTime(local),
                Err(_) => Cell::Text(text.clone()),
            }
        }
        DataRef::DurationIso(text) => Cell::Text(text.clone()),
        DataRef::Error(error) => return Err(format!("an error value {error}")),
    })
}

/// Where the rows of the sheet go: the header to whoever opened the source, then the rows.
struct Outlet {
    header_index: u32,
    header: Option<mpsc::SyncSender<Result<Vec<String>, SourceError>>>,
    rows: mpsc::SyncSender<Result<Item, SourceError>>,
}

impl Outlet {
    /// Hands a finished row on; false when nobody listens any more.
    fn finish(&mut self, row: u32, cells: Vec<Cell>, bad: Option<String>) -> bool {
        if row == self.header_index {
            let names = cells
                .iter()
                .map(|cell| match cell {
                    Cell::Empty => String::new(),
                    Cell::Text(text) => text.trim().to_owned(),
                    Cell::Number(number) => number.to_string(),
                    Cell::Bool(value) => value.to_string(),
                    Cell::DateTime(at) => at.to_string(),
                })
                .collect();
            return self
                .header
                .take()
                .is_some_and(|h| h.send(Ok(names)).is_ok());
        }
        if row < self.header_index {
            return true;
        }
        if self.header.is_some() {
            // The header row held no cell at all: it is a row of empty names.
            let header_index = self.header_index;
            if !self.finish(header_index, Vec::new(), None) {
                return false;
            }
        }
        let number = u64::from(row) + 1;
        let item = match bad {
            Some(message) => Item::Bad {
                number,
                byte_offset: None,
                code: "cell_error",
                message: format!("row {number}: {message}; the row is not sent"),
            },
            None if cells.iter().all(Cell::is_empty) => return true,
            None => Item::Row(Row {
                number,
                cells,
                byte_offset: 0,
            }),
        };
        self.rows.send(Ok(item)).is_ok()
    }

    fn fail(&mut self, error: SourceError) {
        match self.header.take() {
            Some(header) => {
                let _ = header.send(Err(error));
            }
            None => {
                let _ = self.rows.send(Err(error));
            }
        }
    }
}

fn read_sheet(
    mut workbook: Workbook,
    path: &Path,
    sheet: &str,
    header_row: u64,
    header: mpsc::SyncSender<Result<Vec<String>, SourceError>>,
    rows: mpsc::SyncSender<Result<Item, SourceError>>,
) {
    let mut outlet = Outlet {
        header_index: (header_row - 1) as u32,
        header: Some(header),
        rows,
    };
    let mut reader = match workbook.worksheet_cells_reader(sheet) {
        Ok(reader) => reader,
        Err(error) => {
            outlet.fail(SourceError::new(
                path,
                format!("cannot read sheet {sheet:?}: {error}"),
            ));
            return;
        }
    };
    let mut current: Option<u32> = None;
    let mut cells: Vec<Cell> = Vec::new();
    let mut bad: Option<String> = None;
    loop {
        let cell = match reader.next_cell() {
            Ok(Some(cell)) => cell,
            Ok(None) => break,
            Err(error) => {
                outlet.fail(SourceError::new(
                    path,
                    format!("cannot read sheet {sheet:?}: {error}"),
                ));
                return;
            }
        };
        let (row, column) = cell.get_position();
        if column >= MAX_COLUMNS {
            continue;
        }
        if current != Some(row) {
            if let Some(done) = current {
                if !outlet.finish(done, std::mem::take(&mut cells), bad.take()) {
                    return;
                }
            }
            current = Some(row);
        }
        match cell_of(cell.get_value()) {
            Ok(Cell::Empty) => {}
            Ok(value) => {
                let column = column as usize;
                if cells.len() <= column {
                    cells.resize(column + 1, Cell::Empty);
                }
                cells[column] = value;
            }
            Err(message) => {
                bad.get_or_insert_with(|| {
                    format!(
                        "cell {}{} holds {message}",
                        column_label(column as usize),
                        row + 1
                    )
                });
            }
        }
    }
    if let Some(done) = current {
        if !outlet.finish(done, cells, bad) {
            return;
        }
    }
    if outlet.header.is_some() {
        outlet.fail(SourceError::new(
            path,
            format!("sheet {sheet:?} has no row {header_row} to read the column names from"),
        ));
    }
}
