//! Every error case of the frame and of the data segment.

mod common;

use common::{data_of, with_cp, HOURLY, OFFICIAL};
use leadbridge_hj212::{
    crc16_hj212, parse_packet, Error, Frame, FrameError, Packet, PacketError, MAX_DATA_LEN,
    MAX_PACKET_LEN,
};

fn replace(packet: &[u8], at: usize, with: &[u8]) -> Vec<u8> {
    let mut out = packet.to_vec();
    out.splice(at..at + with.len(), with.iter().copied());
    out
}

// ---------------------------------------------------------------- frame

#[test]
fn missing_header() {
    for bad in [&b""[..], b"#", b"#0101", b"# #0101", b" ##0101"] {
        assert_eq!(Frame::parse(bad), Err(FrameError::MissingHeader), "{bad:?}");
    }
    assert_eq!(
        Frame::parse(&replace(OFFICIAL, 1, b"$")),
        Err(FrameError::MissingHeader)
    );
}

#[test]
fn bad_length_digits() {
    let cases: [(&[u8], &str); 5] = [
        (b"##", ""),
        (b"##01", "01"),
        (b"##01a1QN=", "01a1"),
        (b"##+101QN=", "+101"),
        (b"## 101QN=", " 101"),
    ];
    for (bad, found) in cases {
        assert_eq!(
            Frame::parse(bad),
            Err(FrameError::BadLengthDigits {
                found: found.to_owned()
            }),
            "{bad:?}"
        );
    }
    let err = Frame::parse(b"##\xff101").unwrap_err();
    assert_eq!(
        err,
        FrameError::BadLengthDigits {
            found: "\\xff101".to_owned()
        }
    );
}

#[test]
fn length_mismatch() {
    // Declared one more / one less than the DATA present.
    assert_eq!(
        Frame::parse(&replace(OFFICIAL, 2, b"0102")),
        Err(FrameError::LengthMismatch {
            declared: 102,
            expected_total: 114,
            actual_total: 113
        })
    );
    assert_eq!(
        Frame::parse(&replace(OFFICIAL, 2, b"0100")),
        Err(FrameError::LengthMismatch {
            declared: 100,
            expected_total: 112,
            actual_total: 113
        })
    );
    // Truncated in the middle of DATA.
    assert_eq!(
        Frame::parse(&OFFICIAL[..50]),
        Err(FrameError::LengthMismatch {
            declared: 101,
            expected_total: 113,
            actual_total: 50
        })
    );
    // Trailing bytes after CRLF (e.g. two packets glued together).
    let mut two = OFFICIAL.to_vec();
    two.extend_from_slice(OFFICIAL);
    assert!(matches!(
        Frame::parse(&two),
        Err(FrameError::LengthMismatch {
            actual_total: 226,
            ..
        })
    ));
}

#[test]
fn non_ascii() {
    // A UTF-8 character in DATA: the sender counted characters, not bytes.
    let data = with_cp("DataTime=20240601090000;w01018-Avg=1.0,w01018-Info=中");
    let chars = data.chars().count();
    let packet = format!("##{chars:04}{data}{:04X}\r\n", crc16_hj212(data.as_bytes()));
    let offset = 6 + data.find('中').unwrap();
    assert_eq!(
        Frame::parse(packet.as_bytes()),
        Err(FrameError::NonAscii { offset, byte: 0xE4 })
    );
    // Non-ASCII in the CRC field is also reported as such.
    let n = OFFICIAL.len();
    assert_eq!(
        Frame::parse(&replace(OFFICIAL, n - 3, b"\x80")),
        Err(FrameError::NonAscii {
            offset: n - 3,
            byte: 0x80
        })
    );
    // encode refuses it, with the offset in the data segment.
    assert_eq!(
        Frame::encode("ab\u{e9}"),
        Err(FrameError::NonAscii {
            offset: 2,
            byte: 0xC3
        })
    );
}

#[test]
fn bad_crc_reports_expected_and_found() {
    let n = HOURLY.len();
    assert_eq!(
        Frame::parse(&replace(HOURLY, n - 6, b"8942")),
        Err(FrameError::BadCrc {
            expected: 0x8941,
            found: 0x8942
        })
    );
    // A changed DATA byte with the old CRC.
    let tampered = replace(HOURLY, HOURLY.len() - 20, b"9");
    let expected = crc16_hj212(data_of(&tampered).as_bytes());
    assert_ne!(expected, 0x8941);
    assert_eq!(
        Frame::parse(&tampered),
        Err(FrameError::BadCrc {
            expected,
            found: 0x8941
        })
    );
    // The MODBUS CRC of the official sample is not accepted.
    let n = OFFICIAL.len();
    assert_eq!(
        Frame::parse(&replace(OFFICIAL, n - 6, b"0759")),
        Err(FrameError::BadCrc {
            expected: 0x1C80,
            found: 0x0759
        })
    );
}

#[test]
fn bad_crc_digits() {
    let n = OFFICIAL.len();
    for bad in [&b"1C8G"[..], b"+C80", b"-C80", b" C80", b"1C8\0", b"0x1C"] {
        assert_eq!(
            Frame::parse(&replace(OFFICIAL, n - 6, bad)),
            Err(FrameError::BadCrcDigits {
                found: bad.escape_ascii().to_string()
            }),
            "{bad:?}"
        );
    }
}

#[test]
fn missing_crlf() {
    let n = OFFICIAL.len();
    // Terminator absent, or something else in its place.
    assert_eq!(
        Frame::parse(&OFFICIAL[..n - 2]),
        Err(FrameError::MissingCrlf)
    );
    assert_eq!(
        Frame::parse(&OFFICIAL[..n - 1]),
        Err(FrameError::MissingCrlf)
    );
    for bad in [&b"\n\n"[..], b"\r\r", b"\n\r", b"  "] {
        assert_eq!(
            Frame::parse(&replace(OFFICIAL, n - 2, bad)),
            Err(FrameError::MissingCrlf)
        );
    }
}

#[test]
fn too_long() {
    // Largest data under the default limit passes, one more byte does not.
    let fits = "x".repeat(MAX_PACKET_LEN - 12);
    let packet = Frame::encode(&fits).unwrap();
    assert_eq!(packet.len(), MAX_PACKET_LEN);
    assert_eq!(Frame::parse(&packet).unwrap().data(), fits);

    let over = "x".repeat(MAX_PACKET_LEN - 11);
    assert_eq!(
        Frame::encode(&over),
        Err(FrameError::TooLong {
            len: 1025,
            max: 1024
        })
    );
    let packet = Frame::encode_with_max_len(&over, 2000).unwrap();
    assert_eq!(
        Frame::parse(&packet),
        Err(FrameError::TooLong {
            len: 1025,
            max: 1024
        })
    );
    assert_eq!(
        Frame::parse_with_max_len(&packet, 2000).unwrap().data(),
        over
    );

    // A smaller configured limit rejects the samples.
    assert_eq!(
        Frame::parse_with_max_len(HOURLY, 200),
        Err(FrameError::TooLong { len: 277, max: 200 })
    );
    // Garbage is rejected for its size before anything else is read.
    assert!(matches!(
        Frame::parse(&[0xFF; 5000]),
        Err(FrameError::TooLong { .. })
    ));
}

#[test]
fn encode_limits() {
    let max = "x".repeat(MAX_DATA_LEN);
    let packet = Frame::encode_with_max_len(&max, usize::MAX).unwrap();
    assert!(packet.starts_with(b"##9999xx"));
    assert_eq!(
        Frame::parse_with_max_len(&packet, usize::MAX)
            .unwrap()
            .data(),
        max
    );
    let over = "x".repeat(MAX_DATA_LEN + 1);
    assert_eq!(
        Frame::encode_with_max_len(&over, usize::MAX),
        Err(FrameError::DataTooLong { len: 10_000 })
    );
    // Empty DATA is a valid frame (CRC FFFF) but not a valid packet.
    assert_eq!(Frame::encode("").unwrap(), b"##0000FFFF\r\n");
    assert!(matches!(
        parse_packet(b"##0000FFFF\r\n"),
        Err(Error::Packet(PacketError::Missing { .. }))
    ));
}

#[test]
fn frame_errors_reach_parse_packet() {
    assert_eq!(
        parse_packet(b"hello"),
        Err(Error::Frame(FrameError::MissingHeader))
    );
}

// ---------------------------------------------------------------- data segment

const HEAD: &str =
    "QN=20240601100000123;ST=32;CN=2061;PW=123456;MN=370303A00000000000000001;Flag=4;";
const CP: &str = "CP=&&DataTime=20240601090000;w01018-Avg=21.5,w01018-Flag=N&&";

fn parse(data: &str) -> Result<Packet, PacketError> {
    // Also through the whole pipeline, to check both layers agree.
    let framed = parse_packet(&Frame::encode(data).unwrap());
    let direct = Packet::parse(data);
    assert_eq!(framed, direct.clone().map_err(Error::Packet));
    direct
}

fn missing(data: &str, field: &str) {
    match parse(data) {
        Err(PacketError::Missing { field: f, .. }) => assert_eq!(f, field, "{data}"),
        other => panic!("{data}: expected {field} missing, got {other:?}"),
    }
}

fn invalid(data: &str, field: &str, value: &str) -> String {
    match parse(data) {
        Err(PacketError::Invalid {
            field: f,
            value: v,
            reason,
        }) => {
            assert_eq!((f.as_str(), v.as_str()), (field, value), "{data}");
            reason
        }
        other => panic!("{data}: expected {field}={value} invalid, got {other:?}"),
    }
}

#[test]
fn baseline_is_valid() {
    parse(&format!("{HEAD}{CP}")).unwrap();
}

#[test]
fn missing_fields() {
    for field in ["ST", "CN", "PW", "MN"] {
        let head: String = HEAD
            .split_terminator(';')
            .filter(|item| !item.starts_with(&format!("{field}=")))
            .map(|item| format!("{item};"))
            .collect();
        missing(&format!("{head}{CP}"), field);
    }
    missing(HEAD, "CP");
    missing(&format!("{HEAD}CPX=&&&&"), "CP");
    missing(&with_cp("w01018-Avg=1"), "DataTime");
    missing(&with_cp("RtdInterval=30;w01018-Flag=N"), "DataTime");
}

#[test]
fn duplicate_fields() {
    let dup = |data: &str, field: &str| {
        assert_eq!(
            parse(data),
            Err(PacketError::Duplicate {
                field: field.to_owned()
            }),
            "{data}"
        );
    };
    dup(&format!("ST=32;{HEAD}{CP}"), "ST");
    dup(&format!("{HEAD}MN=1;{CP}"), "MN");
    dup(&format!("{HEAD}Flag=4;{CP}"), "Flag");
    dup(
        &with_cp("DataTime=20240601090000;DataTime=20240601090000"),
        "DataTime",
    );
    dup(
        &with_cp("DataTime=20240601090000;w01018-Avg=1,w01018-Avg=1"),
        "w01018-Avg",
    );
    dup(
        &with_cp("DataTime=20240601090000;w01018-Flag=N;w01018-Flag=N"),
        "w01018-Flag",
    );
    dup(
        &with_cp("DataTime=20240601090000;w01018-Info=a;w01018-Info=b"),
        "w01018-Info",
    );
    dup(&with_cp("RtdInterval=30;RtdInterval=30"), "RtdInterval");
}

#[test]
fn unknown_field_outside_cp() {
    assert_eq!(
        parse(&format!("{HEAD}XX=1;{CP}")),
        Err(PacketError::Unknown {
            field: "XX".to_owned()
        })
    );
    assert_eq!(
        parse(&format!("qn=20240601100000123;{HEAD}{CP}")),
        Err(PacketError::Unknown {
            field: "qn".to_owned()
        })
    );
}

#[test]
fn not_key_value() {
    assert_eq!(
        parse(&format!("{HEAD}garbage;{CP}")),
        Err(PacketError::NotKeyValue {
            item: "garbage".to_owned(),
            part: "the data segment"
        })
    );
    assert_eq!(
        parse(&with_cp("DataTime=20240601090000;w01018-Avg")),
        Err(PacketError::NotKeyValue {
            item: "w01018-Avg".to_owned(),
            part: "CP"
        })
    );
}

#[test]
fn empty_values_outside_cp() {
    for field in ["QN", "ST", "CN", "PW", "MN", "Flag"] {
        let data = format!("{HEAD}{CP}").replacen(&format!("{field}="), &format!("{field}=;X="), 1);
        // The original value becomes a separate (unknown) item; the field is empty.
        assert_eq!(invalid(&data, field, ""), "empty value");
    }
}

#[test]
fn bad_qn() {
    let with_qn = |qn: &str| format!("QN={qn};{}{CP}", &HEAD[21..]);
    assert!(invalid(&with_qn("2024060110000012"), "QN", "2024060110000012").contains("17 digits"));
    assert!(
        invalid(&with_qn("2024060110000012a"), "QN", "2024060110000012a").contains("17 digits")
    );
    assert!(invalid(&with_qn("20241301100000123"), "QN", "20241301100000123").contains("month"));
    assert!(invalid(&with_qn("20230229100000123"), "QN", "20230229100000123").contains("day 29"));
    assert!(invalid(&with_qn("20240601250000123"), "QN", "20240601250000123").contains("hour"));
    parse(&with_qn("20240229235959999")).unwrap();
}

#[test]
fn bad_st_cn_flag() {
    let swap = |from: &str, to: &str| format!("{HEAD}{CP}").replacen(from, to, 1);
    assert!(invalid(&swap("ST=32", "ST=3"), "ST", "3").contains("2 digits"));
    assert!(invalid(&swap("ST=32", "ST=3a"), "ST", "3a").contains("2 digits"));
    assert!(invalid(&swap("ST=32", "ST=320"), "ST", "320").contains("2 digits"));
    assert!(invalid(&swap("CN=2061", "CN=206"), "CN", "206").contains("4 digits"));
    assert!(invalid(&swap("CN=2061", "CN=+061"), "CN", "+061").contains("4 digits"));
    assert!(invalid(&swap("Flag=4", "Flag=x"), "Flag", "x").contains("1 to 3 digits"));
    assert!(invalid(&swap("Flag=4", "Flag=1000"), "Flag", "1000").contains("1 to 3 digits"));
    assert!(invalid(&swap("Flag=4", "Flag=256"), "Flag", "256").contains("0-255"));
}

#[test]
fn split_fields() {
    let with = |flag: &str, extra: &str| {
        format!("{HEAD}{extra}{CP}").replacen("Flag=4", &format!("Flag={flag}"), 1)
    };
    missing(&with("6", ""), "PNUM");
    missing(&with("6", "PNUM=2;"), "PNO");
    missing(&with("6", "PNO=1;"), "PNUM");
    assert!(invalid(&with("4", "PNUM=2;PNO=1;"), "PNUM", "2").contains("split bit"));
    assert!(invalid(&with("4", "PNO=1;"), "PNO", "1").contains("split bit"));
    assert!(invalid(&with("6", "PNUM=0;PNO=1;"), "PNUM", "0").contains("at least 1"));
    assert!(invalid(&with("6", "PNUM=2;PNO=3;"), "PNO", "3").contains("1 to PNUM"));
    assert!(invalid(&with("6", "PNUM=2;PNO=0;"), "PNO", "0").contains("1 to PNUM"));
    assert!(invalid(&with("6", "PNUM=1234567890;PNO=1;"), "PNUM", "1234567890").contains("digits"));
    // Without Flag there is no split bit either.
    let no_flag = format!("{HEAD}PNUM=2;PNO=1;{CP}").replacen("Flag=4;", "", 1);
    assert!(invalid(&no_flag, "PNUM", "2").contains("split bit"));
    let ok = parse(&with("6", "PNUM=2;PNO=2;")).unwrap();
    assert_eq!(ok.split.map(|s| (s.total, s.number)), Some((2, 2)));
}

#[test]
fn cp_wrapping() {
    let reason = "must be wrapped as CP=&&…&& and be the last field of the data segment";
    for (cp, value) in [
        ("CP=", ""),
        ("CP=&&", "&&"),
        ("CP=&&&", "&&&"),
        ("CP=DataTime=20240601090000", "DataTime=20240601090000"),
        ("CP=&&RtdInterval=30&", "&&RtdInterval=30&"),
        ("CP=&&RtdInterval=30&&;MN=1", "&&RtdInterval=30&&;MN=1"),
    ] {
        assert_eq!(invalid(&format!("{HEAD}{cp}"), "CP", value), reason, "{cp}");
    }
}

#[test]
fn bad_data_time() {
    let r = invalid(
        &with_cp("DataTime=2024060109000"),
        "DataTime",
        "2024060109000",
    );
    assert!(r.contains("14 digits"), "{r}");
    let r = invalid(
        &with_cp("DataTime=20240631090000"),
        "DataTime",
        "20240631090000",
    );
    assert!(r.contains("day 31"), "{r}");
}

#[test]
fn bad_numbers() {
    for value in [
        "", "abc", "1.2.3", "1e5", "1E5", "NaN", "inf", ".5", "5.", "-", "+", " 1", "1 ", "1,5",
        "0x10", "--1", "1-",
    ] {
        let item = format!("DataTime=20240601090000;w01018-Avg={value}");
        // A ',' in the value splits the item; that case is a NotKeyValue.
        if value.contains(',') {
            assert!(matches!(
                parse(&with_cp(&item)),
                Err(PacketError::NotKeyValue { .. })
            ));
            continue;
        }
        let reason = invalid(&with_cp(&item), "w01018-Avg", value);
        assert!(reason.contains("decimal number"), "{value:?}: {reason}");
    }
    let huge = format!("1{}", "0".repeat(400));
    let reason = invalid(
        &with_cp(&format!("DataTime=20240601090000;w01018-Avg={huge}")),
        "w01018-Avg",
        &format!("{}…", &huge[..64]),
    );
    assert!(reason.contains("too large"), "{reason}");
    // Every numeric field is checked, not just Avg.
    for field in [
        "Rtd", "Min", "Max", "Cou", "ZsRtd", "ZsMin", "ZsAvg", "ZsMax",
    ] {
        let data = with_cp(&format!("DataTime=20240601090000;a21026-{field}=x"));
        invalid(&data, &format!("a21026-{field}"), "x");
    }
}

#[test]
fn empty_data_flag() {
    let data = with_cp("DataTime=20240601090000;w01018-Flag=");
    assert_eq!(invalid(&data, "w01018-Flag", ""), "empty data flag");
}

#[test]
fn bad_cp_keys() {
    for (item, key) in [
        ("-Avg=1", "-Avg"),
        ("w01018-=1", "w01018-"),
        ("w01 018-Avg=1", "w01 018-Avg"),
        ("w01018-Avg-x=1", "w01018-Avg-x"),
        ("=1", ""),
        ("Rtd Interval=30", "Rtd Interval"),
    ] {
        let data = with_cp(&format!("DataTime=20240601090000;{item}"));
        match parse(&data) {
            Err(PacketError::BadKey { key: k, .. }) => assert_eq!(k, key),
            other => panic!("{item}: {other:?}"),
        }
    }
}

#[test]
fn error_text_is_bounded() {
    let long = "9".repeat(500);
    let data = format!("{HEAD}{CP}").replacen("ST=32", &format!("ST={long}"), 1);
    let err = parse(&data).unwrap_err();
    assert!(err.to_string().len() < 150, "{err}");
}
