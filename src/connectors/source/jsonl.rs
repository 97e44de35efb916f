//! JSON Lines: one JSON object per line, UTF-8. A line's columns are its object's top-level
//! keys; the header is the keys of the first object, and a key missing from a later line is an
//! empty cell.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{Cell, Item, Row, RowSource, SourceError};

/// A line longer than this is reported, not read whole (a lead is at most 900 KiB).
const MAX_LINE_BYTES: u64 = 4 << 20;

pub struct JsonLinesSource {
    path: PathBuf,
    reader: BufReader<File>,
    header: Vec<String>,
    /// Items read while looking for the header, handed out first (a stack: last is next).
    pending: Vec<Item>,
    line: u64,
    offset: u64,
    buffer: Vec<u8>,
}

type Line = Result<(u64, u64, Map<String, Value>), Item>;

impl JsonLinesSource {
    pub fn open(path: &Path) -> Result<JsonLinesSource, SourceError> {
        let file = File::open(path)
            .map_err(|error| SourceError::new(path, format!("cannot open: {error}")))?;
        let mut source = JsonLinesSource {
            path: path.to_owned(),
            reader: BufReader::with_capacity(1 << 20, file),
            header: Vec::new(),
            pending: Vec::new(),
            line: 0,
            offset: 0,
            buffer: Vec::new(),
        };
        let mut before = Vec::new();
        while let Some(line) = source.read_line()? {
            match line {
                Ok((number, offset, object)) => {
                    source.header = object.keys().cloned().collect();
                    before.push(Item::Row(source.row(number, offset, &object)));
                    break;
                }
                Err(bad) => before.push(bad),
            }
        }
        if source.header.is_empty() {
            return Err(SourceError::new(
                path,
                "holds no JSON object to read keys from",
            ));
        }
        before.reverse();
        source.pending = before;
        Ok(source)
    }

    fn row(&self, number: u64, offset: u64, object: &Map<String, Value>) -> Row {
        let cells = self
            .header
            .iter()
            .map(|key| match object.get(key) {
                None | Some(Value::Null) => Cell::Empty,
                Some(Value::String(text)) if text.is_empty() => Cell::Empty,
                Some(Value::String(text)) => Cell::Text(text.clone()),
                Some(Value::Bool(value)) => Cell::Bool(*value),
                Some(Value::Number(number)) => match number.as_f64() {
                    // Integers beyond 2⁵³ (an ID number sent as a number) keep every digit.
                    Some(float) if float.abs() < 9_007_199_254_740_992.0 => Cell::Number(float),
                    _ => Cell::Text(number.to_string()),
                },
                Some(other) => Cell::Text(other.to_string()),
            })
            .collect();
        Row {
            number,
            cells,
            byte_offset: offset,
        }
    }

    /// The next non-blank line: its number, offset and object, or why it is not one.
    fn read_line(&mut self) -> Result<Option<Line>, SourceError> {
        loop {
            self.buffer.clear();
            let read = (&mut self.reader)
                .take(MAX_LINE_BYTES + 1)
                .read_until(b'\n', &mut self.buffer)
                .map_err(|error| SourceError::new(&self.path, format!("cannot read: {error}")))?;
            if read == 0 {
                return Ok(None);
            }
            self.line += 1;
            let number = self.line;
            let offset = self.offset;
            self.offset += read as u64;
            if read as u64 > MAX_LINE_BYTES && self.buffer.last() != Some(&b'\n') {
                // Skip the rest of the over-long line.
                loop {
                    self.buffer.clear();
                    let more = (&mut self.reader)
                        .take(1 << 20)
                        .read_until(b'\n', &mut self.buffer)
                        .map_err(|error| {
                            SourceError::new(&self.path, format!("cannot read: {error}"))
                        })?;
                    self.offset += more as u64;
                    if more == 0 || self.buffer.last() == Some(&b'\n') {
                        break;
                    }
                }
                return Ok(Some(Err(Item::Bad {
                    number,
                    byte_offset: None,
                    code: "lead_too_large",
                    message: format!("line {number} is longer than {MAX_LINE_BYTES} bytes"),
                })));
            }
            let mut bytes: &[u8] = &self.buffer;
            let mut start = offset;
            if number == 1 && bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
                bytes = &bytes[3..];
                start += 3;
            }
            while let Some((last, rest)) = bytes.split_last() {
                if *last == b'\n' || *last == b'\r' {
                    bytes = rest;
                } else {
                    break;
                }
            }
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let text = match std::str::from_utf8(bytes) {
                Ok(text) => text,
                Err(error) => {
                    let at = start + error.valid_up_to() as u64;
                    return Ok(Some(Err(Item::Bad {
                        number,
                        byte_offset: Some(at),
                        code: "encoding",
                        message: format!(
                            "line {number} is not valid UTF-8: byte {at} cannot be decoded; the row is not sent"
                        ),
                    })));
                }
            };
            return Ok(Some(match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(object)) => Ok((number, offset, object)),
                Ok(_) => Err(Item::Bad {
                    number,
                    byte_offset: None,
                    code: "type",
                    message: format!("line {number} is not a JSON object"),
                }),
                Err(error) => Err(Item::Bad {
                    number,
                    byte_offset: None,
                    code: "malformed_json",
                    message: format!("line {number}, column {}: {error}", error.column()),
                }),
            }));
        }
    }
}

impl RowSource for JsonLinesSource {
    fn header(&self) -> &[String] {
        &self.header
    }

    fn next_item(&mut self) -> Result<Option<Item>, SourceError> {
        if let Some(item) = self.pending.pop() {
            return Ok(Some(item));
        }
        Ok(self.read_line()?.map(|line| match line {
            Ok((number, offset, object)) => Item::Row(self.row(number, offset, &object)),
            Err(bad) => bad,
        }))
    }

    fn bytes_read(&self) -> Option<u64> {
        Some(self.offset)
    }
}
