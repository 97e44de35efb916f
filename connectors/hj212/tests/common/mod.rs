//! Sample packets of domain.md §3.2 and §3.7, byte for byte.

#![allow(dead_code)]

/// §3.7, hourly water data (CN 2061), CRC `8941`.
pub const HOURLY: &[u8] = b"##0265QN=20240601100000123;ST=32;CN=2061;PW=123456;MN=370303A00000000000000001;Flag=4;CP=&&DataTime=20240601090000;w01018-Min=18.2,w01018-Avg=21.5,w01018-Max=25.0,w01018-Cou=3.2,w01018-Flag=N;w21003-Min=0.80,w21003-Avg=1.05,w21003-Max=1.31,w21003-Cou=0.16,w21003-Flag=N&&8941\r\n";

/// §3.7, real-time air data (CN 2011), CRC `2800`.
pub const REALTIME: &[u8] = b"##0199QN=20240601100501000;ST=31;CN=2011;PW=123456;MN=370305B00000000000000002;Flag=4;CP=&&DataTime=20240601100500;a21026-Rtd=35.2,a21026-Flag=N;a21002-Rtd=48.7,a21002-Flag=N;a34013-Rtd=4.1,a34013-Flag=N&&2800\r\n";

/// §3.2, the standard's official sample (CN 1062), CRC `1C80`.
pub const OFFICIAL: &[u8] = b"##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&1C80\r\n";

pub const ALL: [&[u8]; 3] = [HOURLY, REALTIME, OFFICIAL];

/// DATA of a packet (between the length field and the CRC).
pub fn data_of(packet: &[u8]) -> &str {
    std::str::from_utf8(&packet[6..packet.len() - 6]).unwrap()
}

/// A valid data segment with a given CP content and the standard header.
pub fn with_cp(cp: &str) -> String {
    format!("QN=20240601100000123;ST=32;CN=2061;PW=123456;MN=370303A00000000000000001;Flag=4;CP=&&{cp}&&")
}
