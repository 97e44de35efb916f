//! CSV files, parsed as bytes and decoded field by field. Parsing the bytes first is sound for
//! GB18030 as for UTF-8: neither ever uses the bytes of `,`, `"`, CR or LF inside a multi-byte
//! character (GBK trail bytes are 0x40–0xFE, GB18030's four-byte forms use 0x30–0x39).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{Cell, Item, Row, RowSource, SourceError, TextEncoding};

pub struct CsvSource {
    path: PathBuf,
    reader: csv::Reader<BufReader<File>>,
    /// A second handle, to re-read the raw bytes of a row that does not decode.
    raw: File,
    encoding: TextEncoding,
    /// Bytes before the CSV proper (a UTF-8 BOM).
    skipped: u64,
    header: Vec<String>,
    record: csv::ByteRecord,
    /// The file ends its lines with CR LF. The parser then places a record's start on the LF
    /// of the line before, one line early, so line numbers are corrected by one.
    crlf: bool,
}

impl CsvSource {
    pub fn open(
        path: &Path,
        encoding: TextEncoding,
        utf8_bom: bool,
        delimiter: u8,
        header_row: u64,
    ) -> Result<CsvSource, SourceError> {
        let open = || {
            File::open(path)
                .map_err(|error| SourceError::new(path, format!("cannot open: {error}")))
        };
        let mut file = BufReader::with_capacity(1 << 20, open()?);
        let skipped = if utf8_bom { 3 } else { 0 };
        if utf8_bom {
            let mut bom = [0u8; 3];
            file.read_exact(&mut bom)
                .map_err(|error| SourceError::new(path, format!("cannot read: {error}")))?;
        }
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(delimiter)
            .from_reader(file);
        let mut source = CsvSource {
            path: path.to_owned(),
            reader,
            raw: open()?,
            encoding,
            skipped,
            header: Vec::new(),
            record: csv::ByteRecord::new(),
            crlf: false,
        };
        let mut records = 0u64;
        loop {
            if !source.read_record()? {
                return Err(SourceError::new(
                    path,
                    format!("has no row {header_row} to read the column names from"),
                ));
            }
            records += 1;
            if records == header_row {
                break;
            }
        }
        let line = source.record.position().map_or(0, |p| p.line());
        let mut header = Vec::with_capacity(source.record.len());
        for field in source.record.iter() {
            match encoding.decode(field) {
                Some(text) => header.push(text.trim().to_owned()),
                None => {
                    let (_, offset) = source.bad_offset()?;
                    return Err(SourceError::new(
                        path,
                        format!(
                            "the header (line {line}) is not valid {} at byte {offset}; declare the file's encoding in [input] encoding",
                            encoding.name()
                        ),
                    ));
                }
            }
        }
        source.header = header;
        let next = source.reader.position().byte() + source.skipped;
        source.crlf = source.byte_at(next) == b'\n';
        Ok(source)
    }

    fn read_record(&mut self) -> Result<bool, SourceError> {
        self.reader
            .read_byte_record(&mut self.record)
            .map_err(|error| SourceError::new(&self.path, format!("cannot read: {error}")))
    }

    /// The file offsets of the current record: where it starts, and its first bad byte.
    fn bad_offset(&mut self) -> Result<(u64, u64), SourceError> {
        let start = self.record.position().map_or(0, |p| p.byte()) + self.skipped;
        let end = self.reader.position().byte() + self.skipped;
        let length = end.saturating_sub(start).min(16 << 20) as usize;
        let mut bytes = vec![0u8; length];
        self.raw
            .seek(SeekFrom::Start(start))
            .and_then(|_| self.raw.read_exact(&mut bytes))
            .map_err(|error| SourceError::new(&self.path, format!("cannot re-read: {error}")))?;
        let within = self.encoding.first_bad_byte(&bytes).unwrap_or(0);
        Ok((start, start + within as u64))
    }
}

impl RowSource for CsvSource {
    fn header(&self) -> &[String] {
        &self.header
    }

    fn next_item(&mut self) -> Result<Option<Item>, SourceError> {
        loop {
            if !self.read_record()? {
                return Ok(None);
            }
            if self
                .record
                .iter()
                .all(|field| field.iter().all(u8::is_ascii_whitespace))
            {
                continue;
            }
            let position = self.record.position().cloned();
            let early = u64::from(self.crlf);
            let number = position.as_ref().map_or(0, |p| p.line()) + early;
            let mut cells = Vec::with_capacity(self.record.len());
            let mut bad = false;
            for field in self.record.iter() {
                if field.is_empty() {
                    cells.push(Cell::Empty);
                    continue;
                }
                match self.encoding.decode(field) {
                    Some(text) => cells.push(Cell::Text(text)),
                    None => {
                        bad = true;
                        break;
                    }
                }
            }
            if bad {
                let (_, offset) = self.bad_offset()?;
                return Ok(Some(Item::Bad {
                    number,
                    byte_offset: Some(offset),
                    code: "encoding",
                    message: format!(
                        "line {number} is not valid {}: byte {offset} (0x{:02X}) cannot be decoded; the row is not sent",
                        self.encoding.name(),
                        self.byte_at(offset)
                    ),
                }));
            }
            return Ok(Some(Item::Row(Row {
                number,
                cells,
                byte_offset: position.map_or(0, |p| p.byte()) + self.skipped + early,
            })));
        }
    }

    fn bytes_read(&self) -> Option<u64> {
        Some(self.reader.position().byte() + self.skipped)
    }
}

impl CsvSource {
    fn byte_at(&mut self, offset: u64) -> u8 {
        let mut byte = [0u8; 1];
        match self
            .raw
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.raw.read_exact(&mut byte))
        {
            Ok(()) => byte[0],
            Err(_) => 0,
        }
    }
}
