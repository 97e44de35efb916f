//! The HJ 212 checksum (standard Appendix A; domain.md §3.2).

/// CRC of an HJ 212 DATA segment, as defined in Appendix A of HJ 212-2017.
///
/// The register starts at `0xFFFF`. For each byte the register is first
/// shifted right by 8 and **then** XORed with the byte (the standard's "XOR
/// the temporary register with the CRC16 register's high byte"), followed by
/// eight steps of: shift right by one, and XOR with `0xA001` if the bit shifted
/// out was 1. There is no final XOR.
///
/// This is **not** CRC-16/MODBUS, which XORs the byte into the register
/// without the preceding shift: on the official sample the two give `0x1C80`
/// and `0x0759`.
///
/// The CRC of a packet covers DATA only (not `##`, the length, the CRC field or
/// CRLF), and is written as four hex digits, high byte first (`{:04X}`).
#[must_use]
pub fn crc16_hj212(data: &[u8]) -> u16 {
    let mut reg: u16 = 0xFFFF;
    for &byte in data {
        reg = (reg >> 8) ^ u16::from(byte);
        for _ in 0..8 {
            let lsb = reg & 1;
            reg >>= 1;
            if lsb != 0 {
                reg ^= 0xA001;
            }
        }
    }
    reg
}

#[cfg(test)]
mod tests {
    use super::crc16_hj212;

    /// DATA of the official sample of domain.md §3.2 (CRC `1C80`).
    const OFFICIAL: &[u8] = b"QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&";
    /// DATA of the first sample packet of domain.md §3.7 (CRC `8941`).
    const SAMPLE_HOURLY: &[u8] = b"QN=20240601100000123;ST=32;CN=2061;PW=123456;MN=370303A00000000000000001;Flag=4;CP=&&DataTime=20240601090000;w01018-Min=18.2,w01018-Avg=21.5,w01018-Max=25.0,w01018-Cou=3.2,w01018-Flag=N;w21003-Min=0.80,w21003-Avg=1.05,w21003-Max=1.31,w21003-Cou=0.16,w21003-Flag=N&&";
    /// DATA of the second sample packet of domain.md §3.7 (CRC `2800`).
    const SAMPLE_REALTIME: &[u8] = b"QN=20240601100501000;ST=31;CN=2011;PW=123456;MN=370305B00000000000000002;Flag=4;CP=&&DataTime=20240601100500;a21026-Rtd=35.2,a21026-Flag=N;a21002-Rtd=48.7,a21002-Flag=N;a34013-Rtd=4.1,a34013-Flag=N&&";

    /// Textbook CRC-16/MODBUS, only to show that HJ 212 differs from it.
    fn crc16_modbus(data: &[u8]) -> u16 {
        let mut reg: u16 = 0xFFFF;
        for &byte in data {
            reg ^= u16::from(byte);
            for _ in 0..8 {
                let lsb = reg & 1;
                reg >>= 1;
                if lsb != 0 {
                    reg ^= 0xA001;
                }
            }
        }
        reg
    }

    #[test]
    fn official_sample_is_1c80() {
        assert_eq!(crc16_hj212(OFFICIAL), 0x1C80);
    }

    #[test]
    fn sample_packets_of_3_7() {
        assert_eq!(crc16_hj212(SAMPLE_HOURLY), 0x8941);
        assert_eq!(crc16_hj212(SAMPLE_REALTIME), 0x2800);
    }

    #[test]
    fn differs_from_modbus_on_official_sample() {
        // Sanity check of the reference implementation: the published
        // CRC-16/MODBUS check value ("123456789" -> 0x4B37).
        assert_eq!(crc16_modbus(b"123456789"), 0x4B37);
        assert_eq!(crc16_modbus(OFFICIAL), 0x0759);
        assert_ne!(crc16_modbus(OFFICIAL), crc16_hj212(OFFICIAL));
    }

    #[test]
    fn empty_input_is_initial_register() {
        assert_eq!(crc16_hj212(b""), 0xFFFF);
    }
}
