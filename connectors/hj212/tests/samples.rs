//! The sample packets of domain.md §3.2 and §3.7 parse to the expected values.

mod common;

use common::{data_of, ALL, HOURLY, OFFICIAL, REALTIME};
use leadbridge_hj212::{
    crc16_hj212, parse_packet, Command, DataFlag, DateTime, Field, Frame, Packet, PacketFlag,
    ProtocolVersion,
};

fn time(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, ms: u16) -> DateTime {
    DateTime {
        year: y,
        month: mo,
        day: d,
        hour: h,
        minute: mi,
        second: s,
        millisecond: ms,
    }
}

/// Asserts a reading's text and value.
fn reading(packet: &Packet, code: &str, field: Field, text: &str, value: f64) {
    let pollutant = packet.cp.pollutant(code).unwrap();
    let number = pollutant.get(field).unwrap();
    assert_eq!(number.text(), text, "{code}-{field}");
    assert_eq!(number.value(), value, "{code}-{field}");
}

#[test]
fn samples_frame_with_expected_length_and_crc() {
    for (packet, len, crc) in [
        (HOURLY, 265, 0x8941),
        (REALTIME, 199, 0x2800),
        (OFFICIAL, 101, 0x1C80),
    ] {
        assert_eq!(packet.len(), len + 12);
        let frame = Frame::parse(packet).unwrap();
        assert_eq!(frame.data().len(), len);
        assert_eq!(frame.data(), data_of(packet));
        assert_eq!(frame.crc(), crc);
        assert_eq!(crc16_hj212(frame.data().as_bytes()), crc);
    }
}

#[test]
fn samples_round_trip_through_encode() {
    for packet in ALL {
        let frame = Frame::parse(packet).unwrap();
        assert_eq!(Frame::encode(frame.data()).unwrap(), packet);
        assert_eq!(
            Frame::parse(&Frame::encode(frame.data()).unwrap()).unwrap(),
            frame
        );
    }
}

#[test]
fn hourly_sample() {
    let p = parse_packet(HOURLY).unwrap();
    assert_eq!(p.qn, Some(time(2024, 6, 1, 10, 0, 0, 123)));
    assert_eq!(p.qn.unwrap().to_qn(), "20240601100000123");
    assert_eq!(p.st, 32);
    assert_eq!(p.cn, Command::HourlyData);
    assert_eq!(p.cn.code(), 2061);
    assert_eq!(p.pw, "123456");
    assert_eq!(p.mn, "370303A00000000000000001");
    let flag = p.flag.unwrap();
    assert_eq!(flag, PacketFlag(4));
    assert!(!flag.ack_required());
    assert!(!flag.is_split());
    assert_eq!(flag.version(), ProtocolVersion::Hj212_2017);
    assert_eq!(p.split, None);

    assert_eq!(p.cp.data_time, Some(time(2024, 6, 1, 9, 0, 0, 0)));
    assert!(p.cp.params.is_empty());
    let codes: Vec<&str> = p.cp.pollutants.iter().map(|x| x.code.as_str()).collect();
    assert_eq!(codes, ["w01018", "w21003"]);

    reading(&p, "w01018", Field::Min, "18.2", 18.2);
    reading(&p, "w01018", Field::Avg, "21.5", 21.5);
    reading(&p, "w01018", Field::Max, "25.0", 25.0);
    reading(&p, "w01018", Field::Cou, "3.2", 3.2);
    reading(&p, "w21003", Field::Min, "0.80", 0.8);
    reading(&p, "w21003", Field::Avg, "1.05", 1.05);
    reading(&p, "w21003", Field::Max, "1.31", 1.31);
    reading(&p, "w21003", Field::Cou, "0.16", 0.16);
    for code in ["w01018", "w21003"] {
        let pollutant = p.cp.pollutant(code).unwrap();
        assert_eq!(pollutant.flag, Some(DataFlag::Normal));
        let fields: Vec<Field> = pollutant.readings.iter().map(|r| r.field).collect();
        assert_eq!(fields, [Field::Min, Field::Avg, Field::Max, Field::Cou]);
        assert_eq!(pollutant.get(Field::Rtd), None);
        assert!(pollutant.extras.is_empty());
    }
}

#[test]
fn realtime_sample() {
    let p = parse_packet(REALTIME).unwrap();
    assert_eq!(p.qn, Some(time(2024, 6, 1, 10, 5, 1, 0)));
    assert_eq!(p.st, 31);
    assert_eq!(p.cn, Command::RealTimeData);
    assert_eq!(p.pw, "123456");
    assert_eq!(p.mn, "370305B00000000000000002");
    assert_eq!(p.flag, Some(PacketFlag(4)));
    assert_eq!(p.split, None);
    assert_eq!(p.cp.data_time, Some(time(2024, 6, 1, 10, 5, 0, 0)));
    assert_eq!(p.cp.data_time.unwrap().to_data_time(), "20240601100500");
    let codes: Vec<&str> = p.cp.pollutants.iter().map(|x| x.code.as_str()).collect();
    assert_eq!(codes, ["a21026", "a21002", "a34013"]);
    reading(&p, "a21026", Field::Rtd, "35.2", 35.2);
    reading(&p, "a21002", Field::Rtd, "48.7", 48.7);
    reading(&p, "a34013", Field::Rtd, "4.1", 4.1);
    for pollutant in &p.cp.pollutants {
        assert_eq!(pollutant.readings.len(), 1);
        assert_eq!(pollutant.flag, Some(DataFlag::Normal));
    }
}

#[test]
fn official_sample() {
    let p = parse_packet(OFFICIAL).unwrap();
    assert_eq!(p.qn, Some(time(2016, 8, 1, 8, 58, 57, 223)));
    assert_eq!(p.st, 32);
    assert_eq!(p.cn, Command::Interval(1062));
    assert_eq!(p.pw, "100000");
    assert_eq!(p.mn, "010000A8900016F000169DC0");
    let flag = p.flag.unwrap();
    assert!(flag.ack_required());
    assert!(!flag.is_split());
    assert_eq!(flag.version(), ProtocolVersion::Hj212_2017);
    assert_eq!(p.cp.data_time, None);
    assert!(p.cp.pollutants.is_empty());
    assert_eq!(p.cp.param("RtdInterval"), Some("30"));
}

#[test]
fn lowercase_crc_is_accepted() {
    let mut packet = OFFICIAL.to_vec();
    let n = packet.len();
    assert_eq!(&packet[n - 6..n - 2], b"1C80");
    packet[n - 5] = b'c';
    assert_eq!(Frame::parse(&packet).unwrap().crc(), 0x1C80);
}

#[test]
fn command_codes_of_3_4() {
    let named = [
        (2011, Command::RealTimeData),
        (2051, Command::MinuteData),
        (2061, Command::HourlyData),
        (2031, Command::DailyData),
        (2021, Command::RunStatus),
        (2041, Command::DailyRunTime),
        (2081, Command::DasPowerOnTime),
        (1011, Command::GetTime),
        (1012, Command::SetTime),
        (1013, Command::CalibrateTime),
        (1072, Command::SetPassword),
        (9011, Command::RequestResponse),
        (9012, Command::ExecutionResult),
        (9013, Command::NoticeResponse),
        (9014, Command::DataResponse),
    ];
    for (code, command) in named {
        assert_eq!(Command::from_code(code), command);
        assert_eq!(command.code(), code);
    }
    for code in 1061..=1064 {
        assert_eq!(Command::from_code(code), Command::Interval(code));
    }
    for code in 3011..=3021 {
        assert_eq!(Command::from_code(code), Command::Control(code));
    }
    for code in [0, 1060, 1065, 3010, 3022, 9999] {
        assert_eq!(Command::from_code(code), Command::Other(code));
    }
    for code in 0..=9999 {
        assert_eq!(Command::from_code(code).code(), code);
    }
}

#[test]
fn flag_bits() {
    let f = PacketFlag(7);
    assert!(f.ack_required() && f.is_split());
    assert_eq!(f.version(), ProtocolVersion::Hj212_2017);
    assert_eq!(PacketFlag(0).version(), ProtocolVersion::Hj212_2005);
    assert_eq!(PacketFlag(8).version(), ProtocolVersion::Unknown(2));
}

#[test]
fn data_flags_of_3_6_and_unknown_ones() {
    let known = [
        ("N", DataFlag::Normal),
        ("F", DataFlag::Stopped),
        ("M", DataFlag::Maintenance),
        ("S", DataFlag::Manual),
        ("D", DataFlag::Fault),
        ("C", DataFlag::Calibration),
        ("T", DataFlag::OverRange),
        ("B", DataFlag::CommFailure),
    ];
    for (text, flag) in known {
        let data = common::with_cp(&format!(
            "DataTime=20240601090000;w01018-Avg=1,w01018-Flag={text}"
        ));
        let p = Packet::parse(&data).unwrap();
        assert_eq!(p.cp.pollutant("w01018").unwrap().flag, Some(flag.clone()));
        assert_eq!(flag.as_str(), text);
    }
    for text in ["P", "0", "n", "XY"] {
        let data = common::with_cp(&format!("DataTime=20240601090000;w01018-Flag={text}"));
        let p = Packet::parse(&data).unwrap();
        let flag = p.cp.pollutant("w01018").unwrap().flag.clone().unwrap();
        assert_eq!(flag, DataFlag::Other(text.to_owned()));
        assert_eq!(flag.as_str(), text);
    }
}

#[test]
fn split_packet_and_optional_fields() {
    // Flag=7: 2017, split, ack. PNUM/PNO may sit anywhere before CP.
    let p = Packet::parse(
        "ST=31;CN=2051;PNUM=3;PW=123456;MN=X1;Flag=7;PNO=2;CP=&&DataTime=20240601100500;a21026-ZsAvg=-0.5,a21026-Avg=+12,a21026-SampleTime=20240601100000&&",
    )
    .unwrap();
    assert_eq!(p.qn, None);
    let split = p.split.unwrap();
    assert_eq!((split.total, split.number), (3, 2));
    let so2 = p.cp.pollutant("a21026").unwrap();
    assert_eq!(so2.get(Field::ZsAvg).unwrap().value(), -0.5);
    assert_eq!(so2.get(Field::Avg).unwrap().text(), "+12");
    assert_eq!(so2.extra("SampleTime"), Some("20240601100000"));
    assert_eq!(so2.flag, None);

    // 2005 style: no QN, no Flag, 2005 pollutant codes; empty items ignored.
    let p = Packet::parse("ST=32;CN=2011;PW=123456;MN=88888880000001;CP=&&DataTime=20040516021000;;B01-Rtd=120.5,011-Rtd=30;&&").unwrap();
    assert_eq!((p.qn, p.flag, p.split), (None, None, None));
    assert_eq!(
        p.cp.pollutant("011")
            .unwrap()
            .get(Field::Rtd)
            .unwrap()
            .value(),
        30.0
    );

    // A response without CP content.
    let p =
        Packet::parse("QN=20240601100000123;ST=91;CN=9014;PW=123456;MN=X;Flag=4;CP=&&&&").unwrap();
    assert_eq!(p.cn, Command::DataResponse);
    assert_eq!(p.cp, Default::default());
}

#[test]
fn readings_of_one_code_merge_across_groups() {
    let data = common::with_cp("DataTime=20240601090000;w01018-Min=1;w21003-Min=2;w01018-Max=3");
    let p = Packet::parse(&data).unwrap();
    assert_eq!(p.cp.pollutants.len(), 2);
    let cod = p.cp.pollutant("w01018").unwrap();
    assert_eq!(cod.get(Field::Max).unwrap().text(), "3");
}

#[test]
fn errors_display_field_and_reason() {
    let err = parse_packet(
        &Frame::encode(&common::with_cp("DataTime=20240601090000;w01018-Avg=1.2.3")).unwrap(),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("w01018-Avg"), "{text}");
    assert!(text.contains("1.2.3"), "{text}");
    assert!(text.contains("decimal number"), "{text}");
}
