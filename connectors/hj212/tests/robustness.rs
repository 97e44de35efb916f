//! Property-style sweeps over truncated and mutated variants of the sample
//! packets: nothing panics, and a damaged length, CRC or DATA is rejected.
//! (A panic anywhere fails the test.)

mod common;

use common::{data_of, ALL, OFFICIAL};
use leadbridge_hj212::{crc16_hj212, parse_packet, Frame, FrameError, Number, Packet};

/// Invariants of an accepted packet that the types alone do not enforce.
fn check_packet(packet: &Packet) {
    assert_eq!(
        packet.split.is_some(),
        packet.flag.is_some_and(|f| f.is_split())
    );
    if let Some(split) = packet.split {
        assert!(1 <= split.number && split.number <= split.total);
    }
    if !packet.cp.pollutants.is_empty() {
        assert!(packet.cp.data_time.is_some());
    }
    for pollutant in &packet.cp.pollutants {
        for reading in &pollutant.readings {
            let again = Number::parse(reading.value.text()).unwrap();
            assert_eq!(again.value(), reading.value.value());
            assert!(reading.value.value().is_finite());
        }
    }
}

/// Parses bytes as a packet, and if the frame is accepted checks that it is
/// the canonical encoding of its DATA (up to the case of the CRC digits).
fn parse_any(bytes: &[u8]) -> Result<(), ()> {
    let frame = match Frame::parse(bytes) {
        Ok(frame) => frame,
        Err(_) => {
            assert!(parse_packet(bytes).is_err());
            return Err(());
        }
    };
    let canonical = Frame::encode(frame.data()).unwrap();
    assert!(
        canonical.eq_ignore_ascii_case(bytes),
        "{:?}",
        bytes.escape_ascii().to_string()
    );
    assert_eq!(crc16_hj212(frame.data().as_bytes()), frame.crc());
    if let Ok(packet) = frame.packet() {
        check_packet(&packet);
    }
    Ok(())
}

/// Frames a (possibly mutated) data segment with a correct CRC, so that the
/// data-segment parser is exercised, and checks it does not panic.
fn parse_data(data: &str) {
    let result = match Frame::encode(data) {
        Ok(bytes) => {
            let frame = Frame::parse(&bytes).expect("encode output must parse");
            assert_eq!(frame.data(), data);
            frame.packet()
        }
        // Non-ASCII or too long for a frame: the parser must still cope.
        Err(_) => Packet::parse(data),
    };
    if let Ok(packet) = result {
        check_packet(&packet);
    }
}

#[test]
fn samples_are_accepted() {
    for packet in ALL {
        assert_eq!(parse_any(packet), Ok(()));
        parse_packet(packet).unwrap();
    }
}

#[test]
fn every_prefix_is_rejected() {
    for packet in ALL {
        for len in 0..packet.len() {
            assert_eq!(parse_any(&packet[..len]), Err(()), "prefix of {len} bytes");
        }
        let data = data_of(packet);
        for len in 0..data.len() {
            let prefix = &data[..len];
            assert!(Packet::parse(prefix).is_err(), "{prefix}");
            parse_data(prefix);
        }
    }
}

#[test]
fn every_suffix_and_deletion_is_rejected() {
    for packet in ALL {
        for start in 1..=packet.len() {
            assert_eq!(parse_any(&packet[start..]), Err(()));
        }
        for at in 0..packet.len() {
            let mut cut = packet.to_vec();
            cut.remove(at);
            assert_eq!(parse_any(&cut), Err(()), "deleted byte {at}");
        }
    }
}

#[test]
fn every_insertion_is_rejected() {
    for packet in ALL {
        for at in 0..=packet.len() {
            for byte in [b'0', b'9', b'A', b';', b'&', b'\r', b'\n', b'#', 0x00, 0xFF] {
                let mut longer = packet.to_vec();
                longer.insert(at, byte);
                assert_eq!(parse_any(&longer), Err(()), "inserted {byte:#x} at {at}");
            }
        }
    }
}

#[test]
fn every_single_byte_change_is_rejected() {
    for packet in ALL {
        let n = packet.len();
        let crc_field = n - 6..n - 2;
        for at in 0..n {
            for byte in 0..=u8::MAX {
                let original = packet[at];
                if byte == original {
                    continue;
                }
                let mut changed = packet.to_vec();
                changed[at] = byte;
                let result = Frame::parse(&changed);
                if crc_field.contains(&at) && byte.eq_ignore_ascii_case(&original) {
                    // The CRC may be written in either case.
                    assert!(result.is_ok());
                    continue;
                }
                let err = match result {
                    Ok(_) => panic!("accepted a change of byte {at} to {byte:#x}"),
                    Err(err) => err,
                };
                let expected_kind = match at {
                    0..=1 => matches!(err, FrameError::MissingHeader),
                    2..=5 => matches!(
                        err,
                        FrameError::BadLengthDigits { .. } | FrameError::LengthMismatch { .. }
                    ),
                    _ if crc_field.contains(&at) => matches!(
                        err,
                        FrameError::BadCrc { .. }
                            | FrameError::BadCrcDigits { .. }
                            | FrameError::NonAscii { .. }
                    ),
                    _ if at >= n - 2 => {
                        matches!(err, FrameError::MissingCrlf | FrameError::NonAscii { .. })
                    }
                    _ => matches!(err, FrameError::BadCrc { .. } | FrameError::NonAscii { .. }),
                };
                assert!(expected_kind, "byte {at} -> {byte:#x}: {err:?}");
            }
        }
    }
}

#[test]
fn every_other_length_value_is_rejected() {
    for packet in ALL {
        let declared = packet.len() - 12;
        for value in 0..=9999 {
            if value == declared {
                continue;
            }
            let mut changed = packet.to_vec();
            changed[2..6].copy_from_slice(format!("{value:04}").as_bytes());
            assert_eq!(
                Frame::parse(&changed),
                Err(FrameError::LengthMismatch {
                    declared: value,
                    expected_total: value + 12,
                    actual_total: packet.len(),
                })
            );
        }
    }
}

#[test]
fn every_other_crc_value_is_rejected() {
    let n = OFFICIAL.len();
    for found in 0..=u16::MAX {
        // Every value in upper case; lower case on a sample, to save time.
        let mut texts = vec![format!("{found:04X}")];
        if found % 7 == 0 || found == 0x1C80 {
            texts.push(format!("{found:04x}"));
        }
        for text in texts {
            let mut changed = OFFICIAL.to_vec();
            changed[n - 6..n - 2].copy_from_slice(text.as_bytes());
            let result = Frame::parse(&changed);
            if found == 0x1C80 {
                assert!(result.is_ok());
            } else {
                assert_eq!(
                    result,
                    Err(FrameError::BadCrc {
                        expected: 0x1C80,
                        found
                    })
                );
            }
        }
    }
}

#[test]
fn data_segment_survives_every_single_change() {
    // Replacements: the separators and characters the grammar cares about,
    // and a few others; the CRC is recomputed so that the data-segment parser
    // sees each variant. (All 256 byte values are tried at the frame level.)
    let alphabet = [
        ';', ',', '=', '&', '-', '+', '.', ' ', '0', '1', '9', 'A', 'N', 'Z', 'a', 'z', '#', '_',
        '\0', '\r', '\n',
    ];
    for packet in ALL {
        let data = data_of(packet);
        for (at, _) in data.char_indices() {
            for &c in &alphabet {
                let mut changed = data.to_owned();
                changed.replace_range(at..=at, c.encode_utf8(&mut [0; 4]));
                parse_data(&changed);
            }
            let mut cut = data.to_owned();
            cut.remove(at);
            parse_data(&cut);
        }
    }
}

#[test]
fn data_segment_survives_non_ascii() {
    // Packet::parse takes any &str; multi-byte characters must not upset its
    // slicing.
    for packet in ALL {
        let data = data_of(packet);
        for at in 0..=data.len() {
            for s in ["é", "中", "\u{1F600}", "；", "＝"] {
                let mut changed = data.to_owned();
                changed.insert_str(at, s);
                parse_data(&changed);
                let mut replaced = data.to_owned();
                if at < data.len() {
                    replaced.replace_range(at..=at, s);
                    parse_data(&replaced);
                }
            }
        }
    }
}

/// xorshift64*: deterministic pseudo-random numbers without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
    }
}

#[test]
fn random_multi_mutations() {
    const STRUCTURE: &[u8] = b";,=&-.0123456789+CPNQSTFlagDataTimeRtdAvg#\r\n \x00\xff";
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut accepted = 0usize;
    for _ in 0..10_000 {
        let packet = ALL[rng.below(ALL.len())];
        let mut data = data_of(packet).as_bytes().to_vec();
        let mut raw = packet.to_vec();
        for _ in 0..1 + rng.below(6) {
            for bytes in [&mut data, &mut raw] {
                let byte = STRUCTURE[rng.below(STRUCTURE.len())];
                let at = rng.below(bytes.len() + 1);
                match rng.below(4) {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    2 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => {
                        // Duplicate or drop a run, as a glitchy link might.
                        let end = (at + rng.below(40)).min(bytes.len());
                        if rng.below(2) == 0 {
                            let run = bytes[at..end].to_vec();
                            bytes.splice(at..at, run);
                        } else {
                            bytes.drain(at..end);
                        }
                    }
                }
            }
        }
        let _ = parse_any(&raw);
        let data = String::from_utf8_lossy(&data);
        parse_data(&data);
        if Packet::parse(&data).is_ok() {
            accepted += 1;
        }
    }
    // The mutations are not all fatal: the sweep does reach the success path.
    assert!(accepted > 0);
}
