//! The agencies' files, read as rows of cells: CSV (UTF-8, UTF-8 with a BOM, GB18030/GBK),
//! XLSX and JSON Lines.
//!
//! Promise: every source streams — memory is bounded by the longest row, not by the file
//! (XLSX: by its shared-strings table, which the format keeps whole) — and decodes strictly:
//! a row whose bytes are not valid in the file's encoding is never turned into text with
//! replacement characters; it comes out as a [`Item::Bad`] holding the file offset of its
//! first bad byte, and the rows after it are read on. Row numbers are those a spreadsheet or an
//! editor shows: the 1-based sheet row or file line, title and header rows counted.

mod csv;
mod jsonl;
mod xlsx;

use std::io::Read;
use std::path::Path;

use chrono::NaiveDateTime;
use sha2::{Digest, Sha256};

use serde::Deserialize;

/// The `[input]` table of a file mapping.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSettings {
    pub format: InputFormat,
    /// XLSX: the sheet's name; the first sheet when absent.
    pub sheet: Option<String>,
    #[serde(default)]
    pub encoding: Encoding,
    #[serde(default = "comma")]
    pub delimiter: String,
    /// 1-based row holding the column names; rows above it are titles.
    #[serde(default = "first_row")]
    pub header_row: u64,
}

fn comma() -> String {
    ",".into()
}

fn first_row() -> u64 {
    1
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    Csv,
    Xlsx,
    Jsonl,
}

/// The declared encoding of a CSV file. `gbk` is accepted as GB18030, its superset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum Encoding {
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
    #[serde(rename = "gb18030", alias = "gbk")]
    Gb18030,
    /// A byte-order mark, then strict UTF-8 over the whole file, then GB18030.
    #[default]
    #[serde(rename = "auto")]
    Auto,
}

/// One cell of a row.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Empty,
    Text(String),
    Number(f64),
    Bool(bool),
    /// A spreadsheet date or time cell, in the mapping's time zone.
    DateTime(NaiveDateTime),
}

impl Cell {
    /// No value: an empty cell, or text that is only white space.
    pub fn is_empty(&self) -> bool {
        match self {
            Cell::Empty => true,
            Cell::Text(text) => text.trim().is_empty(),
            _ => false,
        }
    }

    /// Feeds the cell to a fingerprint of its row: its kind and its exact value.
    fn hash_into(&self, hasher: &mut Sha256) {
        match self {
            Cell::Empty => hasher.update([0]),
            Cell::Text(text) => {
                hasher.update([1]);
                hasher.update((text.len() as u64).to_be_bytes());
                hasher.update(text.as_bytes());
            }
            Cell::Number(number) => {
                hasher.update([2]);
                hasher.update(number.to_bits().to_be_bytes());
            }
            Cell::Bool(value) => hasher.update([3, u8::from(*value)]),
            Cell::DateTime(at) => {
                hasher.update([4]);
                hasher.update(at.and_utc().timestamp_micros().to_be_bytes());
            }
        }
    }
}

/// A row of an input, its cells in the order of the header.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// As a spreadsheet or editor shows it (1-based).
    pub number: u64,
    pub cells: Vec<Cell>,
    /// Where the row starts in the file (XLSX: 0, the file is compressed).
    pub byte_offset: u64,
}

impl Row {
    /// Identical rows have identical fingerprints; trailing empty cells do not count.
    pub fn fingerprint(&self) -> [u8; 16] {
        let mut hasher = Sha256::new();
        let used = self
            .cells
            .iter()
            .rposition(|cell| !cell.is_empty())
            .map_or(0, |at| at + 1);
        for cell in &self.cells[..used] {
            cell.hash_into(&mut hasher);
        }
        let digest = hasher.finalize();
        let mut fingerprint = [0; 16];
        fingerprint.copy_from_slice(&digest[..16]);
        fingerprint
    }
}

/// What a source yields: a row, or a row it could not read.
#[derive(Debug)]
pub enum Item {
    Row(Row),
    /// A row that cannot be read (bad bytes, a malformed JSON line); it is reported and not sent.
    Bad {
        number: u64,
        byte_offset: Option<u64>,
        code: &'static str,
        message: String,
    },
}

/// An input that cannot be read at all; the import stops with exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SourceError {
    pub path: String,
    pub message: String,
}

impl SourceError {
    fn new(path: &Path, message: impl Into<String>) -> Self {
        SourceError {
            path: path.display().to_string(),
            message: message.into(),
        }
    }
}

/// A file's identity: the SHA-256 of its content (a renamed or re-exported file with the same
/// bytes is the same input), and what the same pass learned of its encoding.
#[derive(Clone, Debug)]
pub struct FileIdentity {
    pub sha256: String,
    pub bytes: u64,
    /// The whole file is valid UTF-8 (after a UTF-8 byte-order mark, if any).
    pub utf8: bool,
    pub utf8_bom: bool,
    pub utf16_bom: bool,
}

/// Reads the file once: its hash, and whether it is UTF-8 throughout.
pub fn identify(path: &Path) -> Result<FileIdentity, SourceError> {
    let mut file = std::fs::File::open(path)
        .map_err(|error| SourceError::new(path, format!("cannot open: {error}")))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut carry: Vec<u8> = Vec::new();
    let mut utf8 = true;
    let mut total = 0u64;
    let mut head: Vec<u8> = Vec::new();
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(|error| SourceError::new(path, format!("cannot read: {error}")))?;
        if read == 0 {
            break;
        }
        let chunk = &buffer[..read];
        hasher.update(chunk);
        if head.len() < 3 {
            head.extend(chunk.iter().take(3 - head.len()));
        }
        total += read as u64;
        if utf8 {
            carry.extend_from_slice(chunk);
            match std::str::from_utf8(&carry) {
                Ok(_) => carry.clear(),
                Err(error) if error.error_len().is_none() => {
                    // An incomplete sequence at the end of the chunk: finish it with the next.
                    let keep = carry.split_off(error.valid_up_to());
                    carry = keep;
                }
                Err(_) => utf8 = false,
            }
        }
    }
    if !carry.is_empty() {
        utf8 = false;
    }
    Ok(FileIdentity {
        sha256: hex::encode(hasher.finalize()),
        bytes: total,
        utf8,
        utf8_bom: head.starts_with(&[0xEF, 0xBB, 0xBF]),
        utf16_bom: head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF]),
    })
}

/// A readable input: its header and then its rows.
pub trait RowSource: Send {
    /// The column names, in order.
    fn header(&self) -> &[String];
    /// Something to add when a column is not found (XLSX: the merged cells of the header).
    fn header_hint(&self) -> String {
        String::new()
    }
    /// The next row, `None` at the end.
    fn next_item(&mut self) -> Result<Option<Item>, SourceError>;
    /// How far into the file reading is, in bytes, for progress (`None` when unknown).
    fn bytes_read(&self) -> Option<u64>;
}

/// The text encoding a CSV file is read with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextEncoding {
    Utf8,
    Gb18030,
}

impl TextEncoding {
    /// The declared encoding, or for `auto`: a BOM, then strict UTF-8 over the whole file,
    /// then GB18030.
    pub fn of(declared: Encoding, identity: &FileIdentity) -> TextEncoding {
        match declared {
            Encoding::Utf8 => TextEncoding::Utf8,
            Encoding::Gb18030 => TextEncoding::Gb18030,
            Encoding::Auto if identity.utf8_bom || identity.utf8 => TextEncoding::Utf8,
            Encoding::Auto => TextEncoding::Gb18030,
        }
    }

    fn name(self) -> &'static str {
        match self {
            TextEncoding::Utf8 => "UTF-8",
            TextEncoding::Gb18030 => "GB18030",
        }
    }

    /// The text of `bytes`, or `None` when they are not valid in this encoding.
    fn decode(self, bytes: &[u8]) -> Option<String> {
        match self {
            TextEncoding::Utf8 => std::str::from_utf8(bytes).ok().map(str::to_owned),
            TextEncoding::Gb18030 => encoding_rs::GB18030
                .decode_without_bom_handling_and_without_replacement(bytes)
                .map(|text| text.into_owned()),
        }
    }

    /// The offset in `bytes` of the first byte that is not valid in this encoding.
    fn first_bad_byte(self, bytes: &[u8]) -> Option<usize> {
        match self {
            TextEncoding::Utf8 => std::str::from_utf8(bytes).err().map(|e| e.valid_up_to()),
            TextEncoding::Gb18030 => {
                let mut decoder = encoding_rs::GB18030.new_decoder_without_bom_handling();
                let capacity = decoder
                    .max_utf8_buffer_length_without_replacement(bytes.len())
                    .unwrap_or(bytes.len() * 4 + 16);
                let mut text = String::with_capacity(capacity);
                match decoder.decode_to_string_without_replacement(bytes, &mut text, true) {
                    (encoding_rs::DecoderResult::Malformed(bad, after), read) => {
                        Some(read - after as usize - bad as usize)
                    }
                    _ => None,
                }
            }
        }
    }
}

/// Opens `path` as `input` says, reading the header (with `columns` for JSON Lines, whose
/// header is the keys of its first object).
pub fn open(
    path: &Path,
    input: &InputSettings,
    identity: &FileIdentity,
) -> Result<Box<dyn RowSource>, SourceError> {
    match input.format {
        InputFormat::Csv => {
            if identity.utf16_bom {
                return Err(SourceError::new(
                    path,
                    "starts with a UTF-16 byte-order mark; export it as UTF-8 or GBK",
                ));
            }
            let encoding = TextEncoding::of(input.encoding, identity);
            Ok(Box::new(csv::CsvSource::open(
                path,
                encoding,
                identity.utf8_bom && encoding == TextEncoding::Utf8,
                input.delimiter.as_bytes()[0],
                input.header_row,
            )?))
        }
        InputFormat::Jsonl => Ok(Box::new(jsonl::JsonLinesSource::open(path)?)),
        InputFormat::Xlsx => Ok(Box::new(xlsx::XlsxSource::open(
            path,
            input.sheet.as_deref(),
            input.header_row,
        )?)),
    }
}

/// A spreadsheet column's letters: 0 → A, 26 → AA.
pub fn column_label(index: usize) -> String {
    let mut n = index + 1;
    let mut label = Vec::new();
    while n > 0 {
        let rem = (n - 1) % 26;
        label.push(b'A' + rem as u8);
        n = (n - 1) / 26;
    }
    label.reverse();
    String::from_utf8(label).expect("ASCII letters")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_bad_byte_is_found_in_either_encoding() {
        let gbk = encoding_rs::GBK.encode("淄博市").0.into_owned();
        assert_eq!(
            TextEncoding::Gb18030.decode(&gbk).as_deref(),
            Some("淄博市")
        );
        let mut broken = gbk.clone();
        broken.insert(2, 0xFF);
        assert_eq!(TextEncoding::Gb18030.first_bad_byte(&broken), Some(2));
        assert_eq!(TextEncoding::Gb18030.decode(&broken), None);
        assert_eq!(TextEncoding::Utf8.first_bad_byte(&gbk), Some(0));
        let utf8 = "a,淄博\u{FFFD}".as_bytes().to_vec();
        assert_eq!(TextEncoding::Utf8.first_bad_byte(&utf8), None);
        let mut cut = "ab淄".as_bytes().to_vec();
        cut.pop();
        assert_eq!(TextEncoding::Utf8.first_bad_byte(&cut), Some(2));
    }

    #[test]
    fn identical_rows_share_a_fingerprint_and_kinds_of_cells_do_not_collide() {
        let row = |cells: Vec<Cell>| Row {
            number: 1,
            cells,
            byte_offset: 0,
        };
        let a = row(vec![Cell::Text("1".into()), Cell::Empty]);
        let b = row(vec![Cell::Text("1".into())]);
        let c = row(vec![Cell::Number(1.0)]);
        let d = row(vec![
            Cell::Text("1".into()),
            Cell::Text("".into()),
            Cell::Text("x".into()),
        ]);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(b.fingerprint(), c.fingerprint());
        assert_ne!(a.fingerprint(), d.fingerprint());
    }
}
