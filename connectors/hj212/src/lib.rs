//! Parsing core for HJ 212-2017 (污染物在线监控（监测）系统数据传输标准)
//! streams: packet framing, the CRC, and the data segment. It knows nothing
//! of transport, Kafka or SQL; the facts it implements are those of
//! `design/domain.md` §3.
//!
//! ```
//! use leadbridge_hj212::{parse_packet, Command, Field};
//!
//! let packet = parse_packet(b"##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;\
//! MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&1C80\r\n").unwrap();
//! assert_eq!(packet.cn, Command::Interval(1062));
//! assert_eq!(packet.cp.param("RtdInterval"), Some("30"));
//! ```
//!
//! # Guarantees
//!
//! - A [`Frame`] exists only if [`Frame::parse`] accepted its bytes, which
//!   means: they start with `##`; the 4-digit length equals the number of DATA
//!   bytes; every byte is ASCII; the 4 hex digits (either case) after DATA equal
//!   [`crc16_hj212`] of DATA; they end with `\r\n`; and the whole is within the
//!   size limit. Any single changed byte of a valid packet is rejected (except
//!   a change of case of a hex letter in the CRC field).
//! - A [`Packet`] exists only if its DATA parsed: QN (if present) is a real
//!   date-time with milliseconds, ST is 2 digits, CN 4 digits, Flag 0–255,
//!   PNUM/PNO are present exactly when Flag's split bit is set (with
//!   1 ≤ PNO ≤ PNUM), CP is the last field, every numeric reading is a plain
//!   decimal kept with its exact text, no key appears twice, and readings come
//!   with a valid `DataTime`.
//! - No function panics on any input, valid or not: no unchecked indexing,
//!   no `unwrap`. Every error names the field or check concerned and why.
//!   Tests feed every prefix and every single-byte change of the sample
//!   packets through both layers.
//!
//! # Limits
//!
//! - The input must be exactly one packet; splitting a byte stream into
//!   packets, resynchronising after garbage, and reassembling split messages
//!   (PNUM/PNO) are the caller's job.
//! - The 1024-byte packet limit is recalled, not verified ([`MAX_PACKET_LEN`]);
//!   it is a default that can be overridden.
//! - Field lengths other than QN/ST/CN/Flag are not enforced (PW 6 and MN 24
//!   characters come from secondary sources only), nor is the CP length.
//! - QN and Flag are optional, since HJ/T 212-2005 packets commonly omit them;
//!   a Flag of version 2005 is reported but no other 2005 rule is applied.
//! - Pollutant codes are kept as text, not checked against a code table, and
//!   carry no units. ST is a number, not checked against the list of systems.
//!   CN codes not listed in §3.4 are kept as [`Command::Other`].
//! - Fields outside CP other than QN ST CN PW MN Flag PNUM PNO are rejected;
//!   unknown CP items are kept as text ([`Cp::params`], [`Pollutant::extras`]).
//! - Times carry no time zone, and are not checked for plausibility (future
//!   dates, QN vs `DataTime`). Data flags are reported, never judged.

mod crc;
mod frame;
mod packet;
mod time;

pub use crc::crc16_hj212;
pub use frame::{Frame, FrameError, FRAME_OVERHEAD, MAX_DATA_LEN, MAX_PACKET_LEN};
pub use packet::{
    Command, Cp, DataFlag, Field, Number, Packet, PacketError, PacketFlag, Param, Pollutant,
    ProtocolVersion, Reading, Split,
};
pub use time::DateTime;

/// A packet rejected by [`parse_packet`]: either its framing or its data
/// segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The framing (length, CRC, …) is wrong.
    #[error("HJ 212 frame: {0}")]
    Frame(#[from] FrameError),
    /// The framing is right but the data segment is not.
    #[error("HJ 212 data segment: {0}")]
    Packet(#[from] PacketError),
}

/// Checks the framing of one packet (default size limit) and parses its data
/// segment.
pub fn parse_packet(bytes: &[u8]) -> Result<Packet, Error> {
    Ok(Frame::parse(bytes)?.packet()?)
}
