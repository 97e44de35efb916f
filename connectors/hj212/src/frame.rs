//! Packet framing: `"##" + LLLL + DATA + CCCC + "\r\n"` (domain.md §3.1).

use crate::crc::crc16_hj212;
use crate::packet::{Packet, PacketError};

/// Largest accepted packet, in bytes, counting `##`, the length, DATA, the CRC
/// and CRLF.
///
/// **Recalled, not verified** (domain.md §3.3 and §5 item 3, tagged \[M\]): the
/// standard is remembered to cap a whole packet at 1024 characters, but this
/// was not checked against its text. It is therefore only the default of
/// [`Frame::parse`] and [`Frame::encode`]; pass another value to
/// [`Frame::parse_with_max_len`] / [`Frame::encode_with_max_len`] (e.g. from
/// configuration) if real streams need it.
pub const MAX_PACKET_LEN: usize = 1024;

/// Bytes a packet adds around DATA: `##` (2) + LLLL (4) + CRC (4) + CRLF (2).
pub const FRAME_OVERHEAD: usize = 12;

/// Largest DATA the 4-digit length field can describe.
pub const MAX_DATA_LEN: usize = 9999;

const HEADER: &[u8] = b"##";
const TERMINATOR: &[u8] = b"\r\n";
/// Offset of DATA in a packet: `##` + LLLL.
const DATA_START: usize = 6;

/// Why bytes are not a well-formed HJ 212 packet.
///
/// Checks run in this order, and the first failure is reported: total size,
/// header, length digits, ASCII, terminator/length, CRC digits, CRC value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The input is longer than the configured maximum (see [`MAX_PACKET_LEN`]).
    #[error("packet is {len} bytes, more than the maximum of {max}")]
    TooLong {
        /// Bytes given.
        len: usize,
        /// Maximum in force.
        max: usize,
    },
    /// The input does not start with `##`.
    #[error("packet does not start with \"##\"")]
    MissingHeader,
    /// The four bytes after `##` are not four decimal digits (or the input ends
    /// before them).
    #[error("length field must be 4 decimal digits, found \"{found}\"")]
    BadLengthDigits {
        /// What stands where the digits should be (escaped).
        found: String,
    },
    /// The packet length disagrees with the length field.
    #[error(
        "length field says DATA is {declared} bytes, so the packet should be \
         {expected_total} bytes, but it is {actual_total}"
    )]
    LengthMismatch {
        /// DATA length given by the length field.
        declared: usize,
        /// `declared` + [`FRAME_OVERHEAD`].
        expected_total: usize,
        /// Bytes actually given.
        actual_total: usize,
    },
    /// A byte is not ASCII. For [`Frame::parse`] `offset` counts from the start
    /// of the packet; for [`Frame::encode`] from the start of the data segment.
    #[error("non-ASCII byte 0x{byte:02X} at offset {offset}")]
    NonAscii {
        /// Where the byte is.
        offset: usize,
        /// The byte.
        byte: u8,
    },
    /// The CRC field is not four hex digits.
    #[error("CRC field must be 4 hex digits, found \"{found}\"")]
    BadCrcDigits {
        /// The field's bytes (escaped).
        found: String,
    },
    /// The CRC field does not match the CRC of DATA.
    #[error("CRC mismatch: DATA has CRC {expected:04X}, packet says {found:04X}")]
    BadCrc {
        /// CRC computed over the received DATA.
        expected: u16,
        /// CRC written in the packet.
        found: u16,
    },
    /// The packet is complete up to the CRC but does not end with `\r\n`.
    #[error("packet does not end with \"\\r\\n\"")]
    MissingCrlf,
    /// [`Frame::encode`] only: the data segment is too long for the 4-digit
    /// length field.
    #[error("data segment is {len} bytes; the length field allows at most {MAX_DATA_LEN}")]
    DataTooLong {
        /// Bytes in the data segment.
        len: usize,
    },
}

/// A packet whose framing has been checked: its length field matches, its
/// DATA is ASCII and its CRC is correct.
///
/// The only ways to obtain one are [`Frame::parse`] and
/// [`Frame::parse_with_max_len`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    data: String,
    crc: u16,
}

impl Frame {
    /// Parses one complete packet, with the default size limit
    /// [`MAX_PACKET_LEN`]. The input must be exactly one packet, CRLF included.
    pub fn parse(bytes: &[u8]) -> Result<Frame, FrameError> {
        Self::parse_with_max_len(bytes, MAX_PACKET_LEN)
    }

    /// Like [`Frame::parse`], with an explicit maximum total packet size.
    pub fn parse_with_max_len(bytes: &[u8], max_len: usize) -> Result<Frame, FrameError> {
        if bytes.len() > max_len {
            return Err(FrameError::TooLong {
                len: bytes.len(),
                max: max_len,
            });
        }
        let rest = bytes
            .strip_prefix(HEADER)
            .ok_or(FrameError::MissingHeader)?;
        let declared =
            rest.get(..4)
                .and_then(parse_dec4)
                .ok_or_else(|| FrameError::BadLengthDigits {
                    found: escape(rest.get(..4).unwrap_or(rest)),
                })?;
        if let Some(offset) = bytes.iter().position(|b| !b.is_ascii()) {
            return Err(FrameError::NonAscii {
                offset,
                byte: bytes.get(offset).copied().unwrap_or_default(),
            });
        }

        let expected_total = declared + FRAME_OVERHEAD;
        let has_crlf = bytes.ends_with(TERMINATOR);
        // Everything up to the CRC is there, but CRLF is not (absent, partial or
        // replaced): report the terminator, not the length.
        if !has_crlf && (expected_total - 2..=expected_total).contains(&bytes.len()) {
            return Err(FrameError::MissingCrlf);
        }
        let mismatch = FrameError::LengthMismatch {
            declared,
            expected_total,
            actual_total: bytes.len(),
        };
        if bytes.len() != expected_total {
            return Err(mismatch);
        }

        let crc_start = DATA_START + declared;
        let (Some(data), Some(crc_field)) = (
            bytes.get(DATA_START..crc_start),
            bytes.get(crc_start..crc_start + 4),
        ) else {
            // Unreachable: the total length was checked above.
            return Err(mismatch);
        };
        let found = parse_hex4(crc_field).ok_or_else(|| FrameError::BadCrcDigits {
            found: escape(crc_field),
        })?;
        let expected = crc16_hj212(data);
        if expected != found {
            return Err(FrameError::BadCrc { expected, found });
        }
        Ok(Frame {
            // DATA is ASCII (checked above), so byte -> char is exact.
            data: data.iter().map(|&b| char::from(b)).collect(),
            crc: found,
        })
    }

    /// Builds a packet around `data`, with the default size limit
    /// [`MAX_PACKET_LEN`]. The CRC is written in upper case.
    ///
    /// Every packet this returns is accepted by [`Frame::parse`] with the same
    /// limit.
    pub fn encode(data: &str) -> Result<Vec<u8>, FrameError> {
        Self::encode_with_max_len(data, MAX_PACKET_LEN)
    }

    /// Like [`Frame::encode`], with an explicit maximum total packet size.
    pub fn encode_with_max_len(data: &str, max_len: usize) -> Result<Vec<u8>, FrameError> {
        if let Some((offset, byte)) = data.bytes().enumerate().find(|(_, b)| !b.is_ascii()) {
            return Err(FrameError::NonAscii { offset, byte });
        }
        if data.len() > MAX_DATA_LEN {
            return Err(FrameError::DataTooLong { len: data.len() });
        }
        let total = data.len() + FRAME_OVERHEAD;
        if total > max_len {
            return Err(FrameError::TooLong {
                len: total,
                max: max_len,
            });
        }
        let crc = crc16_hj212(data.as_bytes());
        Ok(format!("##{:04}{data}{crc:04X}\r\n", data.len()).into_bytes())
    }

    /// The DATA segment (ASCII).
    #[must_use]
    pub fn data(&self) -> &str {
        &self.data
    }

    /// The DATA segment, by value.
    #[must_use]
    pub fn into_data(self) -> String {
        self.data
    }

    /// The CRC of DATA (equal to the packet's CRC field).
    #[must_use]
    pub fn crc(&self) -> u16 {
        self.crc
    }

    /// Parses DATA into a [`Packet`].
    pub fn packet(&self) -> Result<Packet, PacketError> {
        Packet::parse(&self.data)
    }
}

/// Four ASCII decimal digits -> value.
fn parse_dec4(field: &[u8]) -> Option<usize> {
    if field.len() != 4 {
        return None;
    }
    field.iter().try_fold(0usize, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + usize::from(b - b'0'))
    })
}

/// Four ASCII hex digits (either case) -> value. Unlike
/// `u16::from_str_radix`, rejects a sign.
fn parse_hex4(field: &[u8]) -> Option<u16> {
    if field.len() != 4 {
        return None;
    }
    field.iter().try_fold(0u16, |acc, &b| {
        let digit = char::from(b).to_digit(16)?;
        u16::try_from(digit).ok().map(|d| (acc << 4) | d)
    })
}

fn escape(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}
