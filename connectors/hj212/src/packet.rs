//! The DATA segment: `QN=…;ST=…;CN=…;PW=…;MN=…;Flag=…;[PNUM=…;PNO=…;]CP=&&…&&`
//! (domain.md §3.3–§3.6).

use std::fmt;

use crate::time::DateTime;

/// A parsed DATA segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    /// QN, the request id: a date-time with milliseconds. Optional because
    /// HJ/T 212-2005 uploads often omit it.
    pub qn: Option<DateTime>,
    /// ST, the system code (2 digits, e.g. 31 air pollution source, 32 water
    /// pollution source, 91 system interaction).
    pub st: u8,
    /// CN, the command code.
    pub cn: Command,
    /// PW, the access password, as written.
    pub pw: String,
    /// MN, the device id, as written. Synthetic MNs exist; do not assume it
    /// encodes a region.
    pub mn: String,
    /// Flag. Optional because HJ/T 212-2005 packets often omit it.
    pub flag: Option<PacketFlag>,
    /// PNUM/PNO: present exactly when [`PacketFlag::is_split`].
    pub split: Option<Split>,
    /// CP, the parameters.
    pub cp: Cp,
}

/// CN, the command code (domain.md §3.4). Kept as a number when not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// 2011: real-time data.
    RealTimeData,
    /// 2051: minute data.
    MinuteData,
    /// 2061: hourly data.
    HourlyData,
    /// 2031: daily data.
    DailyData,
    /// 2021: device run status.
    RunStatus,
    /// 2041: daily device run time.
    DailyRunTime,
    /// 2081: data acquisition unit (DAS) power-on time.
    DasPowerOnTime,
    /// 1011: get time.
    GetTime,
    /// 1012: set time.
    SetTime,
    /// 1013: calibrate time.
    CalibrateTime,
    /// 1061–1064: get/set the real-time and minute data intervals. §3.4 only
    /// names the range, so the code is kept (the official sample uses 1062
    /// with `RtdInterval`).
    Interval(u16),
    /// 1072: set password.
    SetPassword,
    /// 3011–3021: device control (calibration, sampling, over-limit sample
    /// keeping, device information…). §3.4 only names the range, so the code is
    /// kept.
    Control(u16),
    /// 9011: request response (carries `QnRtn`).
    RequestResponse,
    /// 9012: execution result (carries `ExeRtn`).
    ExecutionResult,
    /// 9013: notice response.
    NoticeResponse,
    /// 9014: data response.
    DataResponse,
    /// Any other code.
    Other(u16),
}

impl Command {
    /// The command for a CN value. `Interval`, `Control` and `Other` are only
    /// produced for codes of their range / not otherwise listed.
    #[must_use]
    pub fn from_code(code: u16) -> Command {
        match code {
            2011 => Command::RealTimeData,
            2051 => Command::MinuteData,
            2061 => Command::HourlyData,
            2031 => Command::DailyData,
            2021 => Command::RunStatus,
            2041 => Command::DailyRunTime,
            2081 => Command::DasPowerOnTime,
            1011 => Command::GetTime,
            1012 => Command::SetTime,
            1013 => Command::CalibrateTime,
            1061..=1064 => Command::Interval(code),
            1072 => Command::SetPassword,
            3011..=3021 => Command::Control(code),
            9011 => Command::RequestResponse,
            9012 => Command::ExecutionResult,
            9013 => Command::NoticeResponse,
            9014 => Command::DataResponse,
            other => Command::Other(other),
        }
    }

    /// The CN value (written as 4 digits, `{:04}`).
    #[must_use]
    pub fn code(self) -> u16 {
        match self {
            Command::RealTimeData => 2011,
            Command::MinuteData => 2051,
            Command::HourlyData => 2061,
            Command::DailyData => 2031,
            Command::RunStatus => 2021,
            Command::DailyRunTime => 2041,
            Command::DasPowerOnTime => 2081,
            Command::GetTime => 1011,
            Command::SetTime => 1012,
            Command::CalibrateTime => 1013,
            Command::SetPassword => 1072,
            Command::RequestResponse => 9011,
            Command::ExecutionResult => 9012,
            Command::NoticeResponse => 9013,
            Command::DataResponse => 9014,
            Command::Interval(code) | Command::Control(code) | Command::Other(code) => code,
        }
    }
}

/// The Flag field, a bit field `V5 V4 V3 V2 V1 V0 D A` written in decimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketFlag(pub u8);

impl PacketFlag {
    /// The raw bits.
    #[must_use]
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Bit A (bit 0): the sender wants an acknowledgement.
    #[must_use]
    pub fn ack_required(self) -> bool {
        self.0 & 0b01 != 0
    }

    /// Bit D (bit 1): the packet is one of several, and PNUM/PNO are present.
    #[must_use]
    pub fn is_split(self) -> bool {
        self.0 & 0b10 != 0
    }

    /// Bits V5..V0: the protocol version.
    #[must_use]
    pub fn version(self) -> ProtocolVersion {
        match self.0 >> 2 {
            0 => ProtocolVersion::Hj212_2005,
            1 => ProtocolVersion::Hj212_2017,
            other => ProtocolVersion::Unknown(other),
        }
    }
}

/// Protocol version, from the V5..V0 bits of Flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// `000000`: HJ/T 212-2005.
    Hj212_2005,
    /// `000001`: HJ 212-2017.
    Hj212_2017,
    /// Any other value of V5..V0.
    Unknown(u8),
}

/// PNUM/PNO of a split packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Split {
    /// PNUM: how many packets (>= 1).
    pub total: u32,
    /// PNO: which one this is (1..=`total`).
    pub number: u32,
}

/// The CP field: `CP=&&…&&`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Cp {
    /// `DataTime`: when the readings were taken. Required when there are
    /// pollutant items.
    pub data_time: Option<DateTime>,
    /// Items of the form `<code>-<field>=<value>`, grouped by code in order of
    /// first appearance.
    pub pollutants: Vec<Pollutant>,
    /// Other items (`RtdInterval`, `QnRtn`, `ExeRtn`, `SystemTime`, `PolId`,
    /// …), text as written, in order.
    pub params: Vec<Param>,
}

impl Cp {
    /// The group of a pollutant code, e.g. `"w01018"`.
    #[must_use]
    pub fn pollutant(&self, code: &str) -> Option<&Pollutant> {
        self.pollutants.iter().find(|p| p.code == code)
    }

    /// The text of a parameter, e.g. `param("RtdInterval")`.
    #[must_use]
    pub fn param(&self, key: &str) -> Option<&str> {
        find_param(&self.params, key)
    }
}

/// A `key=value` item kept as text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Param {
    /// The key (for a pollutant's extra item, the part after `-`).
    pub key: String,
    /// The value, as written.
    pub value: String,
}

/// All items of one pollutant code.
#[derive(Debug, Clone, PartialEq)]
pub struct Pollutant {
    /// The code as written, e.g. `w01018` (2017) or `011` (2005). Not checked
    /// against a code table.
    pub code: String,
    /// Numeric readings, in order.
    pub readings: Vec<Reading>,
    /// `<code>-Flag`, the data flag.
    pub flag: Option<DataFlag>,
    /// Other `<code>-<field>` items (e.g. `SampleTime`, `EFlag`, `Info`, `RS`),
    /// text as written, keyed by `<field>`.
    pub extras: Vec<Param>,
}

impl Pollutant {
    /// The reading of one field, e.g. `get(Field::Avg)`.
    #[must_use]
    pub fn get(&self, field: Field) -> Option<&Number> {
        self.readings
            .iter()
            .find(|r| r.field == field)
            .map(|r| &r.value)
    }

    /// The text of an extra item, e.g. `extra("SampleTime")`.
    #[must_use]
    pub fn extra(&self, field: &str) -> Option<&str> {
        find_param(&self.extras, field)
    }
}

/// One numeric reading of a pollutant.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Which value.
    pub field: Field,
    /// The value.
    pub value: Number,
}

/// The numeric fields of a pollutant (`<code>-<field>=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// Real-time value.
    Rtd,
    /// Minimum over the period.
    Min,
    /// Average over the period.
    Avg,
    /// Maximum over the period.
    Max,
    /// Cumulative amount over the period.
    Cou,
    /// Converted (折算) real-time value.
    ZsRtd,
    /// Converted minimum.
    ZsMin,
    /// Converted average.
    ZsAvg,
    /// Converted maximum.
    ZsMax,
}

impl Field {
    /// All numeric fields.
    pub const ALL: [Field; 9] = [
        Field::Rtd,
        Field::Min,
        Field::Avg,
        Field::Max,
        Field::Cou,
        Field::ZsRtd,
        Field::ZsMin,
        Field::ZsAvg,
        Field::ZsMax,
    ];

    /// The name as written after `-` (case-sensitive).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Rtd => "Rtd",
            Field::Min => "Min",
            Field::Avg => "Avg",
            Field::Max => "Max",
            Field::Cou => "Cou",
            Field::ZsRtd => "ZsRtd",
            Field::ZsMin => "ZsMin",
            Field::ZsAvg => "ZsAvg",
            Field::ZsMax => "ZsMax",
        }
    }

    /// The field of a name, if it is a numeric one.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decimal number with the exact text it was read from.
///
/// Accepted text: an optional `+` or `-`, one or more digits, and optionally
/// `.` followed by one or more digits. No exponent, no `inf`/`NaN`, no spaces.
#[derive(Debug, Clone, PartialEq)]
pub struct Number {
    text: String,
    value: f64,
}

impl Number {
    /// Parses a decimal number; on failure says why.
    pub fn parse(text: &str) -> Result<Number, &'static str> {
        const SHAPE: &str =
            "expected a decimal number (optional sign, digits, optional '.' and digits)";
        let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
        let (int, frac) = match unsigned.split_once('.') {
            Some((int, frac)) => (int, Some(frac)),
            None => (unsigned, None),
        };
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(int) || frac.is_some_and(|f| !all_digits(f)) {
            return Err(SHAPE);
        }
        let value: f64 = text.parse().map_err(|_| SHAPE)?;
        if !value.is_finite() {
            return Err("number too large for f64");
        }
        Ok(Number {
            text: text.to_owned(),
            value,
        })
    }

    /// The text as written in the packet, e.g. `"0.80"`.
    #[must_use]
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The value (nearest `f64`).
    #[must_use]
    pub fn value(&self) -> f64 {
        self.value
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A data flag `<code>-Flag=` (domain.md §3.6, table 8; extensible, so unknown
/// flags are kept).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DataFlag {
    /// `N`: instrument working normally.
    Normal,
    /// `F`: stopped.
    Stopped,
    /// `M`: maintenance.
    Maintenance,
    /// `S`: manually entered set value.
    Manual,
    /// `D`: fault.
    Fault,
    /// `C`: calibration.
    Calibration,
    /// `T`: over the measuring range.
    OverRange,
    /// `B`: communication failure with the data acquisition unit.
    CommFailure,
    /// Anything else (e.g. 2005's `P`, air stations' `0`–`3`), as written.
    Other(String),
}

impl DataFlag {
    /// The flag for its text (case-sensitive).
    #[must_use]
    pub fn from_code(code: &str) -> DataFlag {
        match code {
            "N" => DataFlag::Normal,
            "F" => DataFlag::Stopped,
            "M" => DataFlag::Maintenance,
            "S" => DataFlag::Manual,
            "D" => DataFlag::Fault,
            "C" => DataFlag::Calibration,
            "T" => DataFlag::OverRange,
            "B" => DataFlag::CommFailure,
            other => DataFlag::Other(other.to_owned()),
        }
    }

    /// The flag as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            DataFlag::Normal => "N",
            DataFlag::Stopped => "F",
            DataFlag::Maintenance => "M",
            DataFlag::Manual => "S",
            DataFlag::Fault => "D",
            DataFlag::Calibration => "C",
            DataFlag::OverRange => "T",
            DataFlag::CommFailure => "B",
            DataFlag::Other(text) => text,
        }
    }
}

/// Why a DATA segment is not a valid packet. `field` is the key concerned as
/// written (`"QN"`, `"CP"`, `"w01018-Avg"`…).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// A required field is absent.
    #[error("{field} is missing: {reason}")]
    Missing {
        /// The field.
        field: String,
        /// Why it is required.
        reason: &'static str,
    },
    /// A field appears twice.
    #[error("{field} appears more than once")]
    Duplicate {
        /// The field.
        field: String,
    },
    /// A field outside CP that HJ 212 does not define.
    #[error("{field} is not a field of the data segment (QN ST CN PW MN Flag PNUM PNO CP)")]
    Unknown {
        /// The field.
        field: String,
    },
    /// An item has no `=`.
    #[error("{item:?} in {part} is not key=value")]
    NotKeyValue {
        /// The item (bounded to 64 characters).
        item: String,
        /// `"the data segment"` or `"CP"`.
        part: &'static str,
    },
    /// A CP key is malformed (e.g. empty pollutant code).
    #[error("CP key {key:?}: {reason}")]
    BadKey {
        /// The key (bounded to 64 characters).
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// A field's value is invalid.
    #[error("{field}={value:?}: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// The value (bounded to 64 characters).
        value: String,
        /// Why.
        reason: String,
    },
}

/// Longest text copied into an error.
const ERROR_TEXT_MAX: usize = 64;

fn bounded(text: &str) -> String {
    match text.char_indices().nth(ERROR_TEXT_MAX) {
        Some((cut, _)) => format!("{}…", text.get(..cut).unwrap_or_default()),
        None => text.to_owned(),
    }
}

fn invalid(field: &str, value: &str, reason: impl Into<String>) -> PacketError {
    PacketError::Invalid {
        field: bounded(field),
        value: bounded(value),
        reason: reason.into(),
    }
}

fn duplicate(field: &str) -> PacketError {
    PacketError::Duplicate {
        field: bounded(field),
    }
}

fn find_param<'a>(params: &'a [Param], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|p| p.key == key)
        .map(|p| p.value.as_str())
}

/// Stores `value` in `slot`, or reports a duplicate of `field`.
fn set_once<T>(slot: &mut Option<T>, field: &str, value: T) -> Result<(), PacketError> {
    if slot.is_some() {
        return Err(duplicate(field));
    }
    *slot = Some(value);
    Ok(())
}

impl Packet {
    /// Parses a DATA segment (as given by [`crate::Frame::data`]).
    ///
    /// Fields before CP may come in any order; each at most once; CP must be
    /// last and DATA must end with its closing `&&`. Empty items (`;;`) are
    /// ignored.
    pub fn parse(data: &str) -> Result<Packet, PacketError> {
        let mut qn = None;
        let mut st = None;
        let mut cn = None;
        let mut pw = None;
        let mut mn = None;
        let mut flag = None;
        let mut pnum = None;
        let mut pno = None;

        let mut rest = data;
        let cp_text = loop {
            if let Some(cp) = rest.strip_prefix("CP=") {
                break cp;
            }
            let Some((item, tail)) = rest.split_once(';') else {
                return Err(PacketError::Missing {
                    field: "CP".into(),
                    reason: "the data segment must end with CP=&&…&&",
                });
            };
            rest = tail;
            if item.is_empty() {
                continue;
            }
            let Some((key, value)) = item.split_once('=') else {
                return Err(PacketError::NotKeyValue {
                    item: bounded(item),
                    part: "the data segment",
                });
            };
            if value.is_empty() {
                return Err(invalid(key, value, "empty value"));
            }
            match key {
                "QN" => set_once(
                    &mut qn,
                    key,
                    DateTime::parse_qn(value).map_err(|r| invalid(key, value, r))?,
                )?,
                "ST" => set_once(&mut st, key, parse_digits(key, value, 2, 2)?)?,
                "CN" => set_once(&mut cn, key, parse_digits(key, value, 4, 4)?)?,
                "PW" => set_once(&mut pw, key, value.to_owned())?,
                "MN" => set_once(&mut mn, key, value.to_owned())?,
                "Flag" => {
                    let bits = parse_digits(key, value, 1, 3)?;
                    let bits = u8::try_from(bits).map_err(|_| {
                        invalid(key, value, "Flag is a bit field of one byte (0-255)")
                    })?;
                    set_once(&mut flag, key, PacketFlag(bits))?;
                }
                "PNUM" => set_once(&mut pnum, key, (parse_digits(key, value, 1, 9)?, value))?,
                "PNO" => set_once(&mut pno, key, (parse_digits(key, value, 1, 9)?, value))?,
                _ => {
                    return Err(PacketError::Unknown {
                        field: bounded(key),
                    })
                }
            }
        };

        let required = |field: &str, reason| PacketError::Missing {
            field: field.into(),
            reason,
        };
        let st = st.ok_or_else(|| required("ST", "every packet has a system code"))?;
        let cn = cn.ok_or_else(|| required("CN", "every packet has a command code"))?;
        let pw = pw.ok_or_else(|| required("PW", "every packet has a password"))?;
        let mn = mn.ok_or_else(|| required("MN", "every packet has a device id"))?;
        let split = split_fields(flag, pnum, pno)?;
        let cp = parse_cp(cp_text)?;

        Ok(Packet {
            qn,
            st: u8::try_from(st).unwrap_or(u8::MAX),
            cn: Command::from_code(u16::try_from(cn).unwrap_or(u16::MAX)),
            pw,
            mn,
            flag,
            split,
            cp,
        })
    }
}

/// `min..=max` ASCII digits -> value (at most 9 digits, so it fits in u32).
fn parse_digits(field: &str, value: &str, min: usize, max: usize) -> Result<u32, PacketError> {
    let ok = (min..=max).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_digit());
    if !ok {
        let reason = if min == max {
            format!("expected {min} digits")
        } else {
            format!("expected {min} to {max} digits")
        };
        return Err(invalid(field, value, reason));
    }
    Ok(value.bytes().fold(0u32, |acc, b| {
        acc.saturating_mul(10).saturating_add(u32::from(b - b'0'))
    }))
}

fn split_fields(
    flag: Option<PacketFlag>,
    pnum: Option<(u32, &str)>,
    pno: Option<(u32, &str)>,
) -> Result<Option<Split>, PacketError> {
    if !flag.is_some_and(PacketFlag::is_split) {
        let not_split = "present, but the split bit (D) of Flag is not set";
        if let Some((_, text)) = pnum {
            return Err(invalid("PNUM", text, not_split));
        }
        if let Some((_, text)) = pno {
            return Err(invalid("PNO", text, not_split));
        }
        return Ok(None);
    }
    let because = "the split bit (D) of Flag is set";
    let (total, total_text) = pnum.ok_or(PacketError::Missing {
        field: "PNUM".into(),
        reason: because,
    })?;
    let (number, number_text) = pno.ok_or(PacketError::Missing {
        field: "PNO".into(),
        reason: because,
    })?;
    if total == 0 {
        return Err(invalid(
            "PNUM",
            total_text,
            "a split message has at least 1 packet",
        ));
    }
    if number == 0 || number > total {
        return Err(invalid(
            "PNO",
            number_text,
            format!("packet number must be 1 to PNUM ({total})"),
        ));
    }
    Ok(Some(Split { total, number }))
}

/// Parses what follows `CP=`: `&&` items `&&`, the end of DATA.
fn parse_cp(after_key: &str) -> Result<Cp, PacketError> {
    let content = after_key
        .strip_prefix("&&")
        .and_then(|s| s.strip_suffix("&&"))
        .ok_or_else(|| {
            invalid(
                "CP",
                after_key,
                "must be wrapped as CP=&&…&& and be the last field of the data segment",
            )
        })?;

    let mut cp = Cp::default();
    for item in content.split([';', ',']).filter(|item| !item.is_empty()) {
        let Some((key, value)) = item.split_once('=') else {
            return Err(PacketError::NotKeyValue {
                item: bounded(item),
                part: "CP",
            });
        };
        if key == "DataTime" {
            let time = DateTime::parse_data_time(value).map_err(|r| invalid(key, value, r))?;
            set_once(&mut cp.data_time, key, time)?;
        } else if let Some((code, field)) = key.split_once('-') {
            pollutant_item(&mut cp, key, code, field, value)?;
        } else {
            if !is_name(key) {
                return Err(PacketError::BadKey {
                    key: bounded(key),
                    reason: "a CP key must be letters and digits",
                });
            }
            if cp.param(key).is_some() {
                return Err(duplicate(key));
            }
            cp.params.push(Param {
                key: key.to_owned(),
                value: value.to_owned(),
            });
        }
    }
    if cp.data_time.is_none() && !cp.pollutants.is_empty() {
        return Err(PacketError::Missing {
            field: "DataTime".into(),
            reason: "CP has pollutant items, which cannot be dated without it",
        });
    }
    Ok(cp)
}

fn pollutant_item(
    cp: &mut Cp,
    key: &str,
    code: &str,
    field: &str,
    value: &str,
) -> Result<(), PacketError> {
    if !is_name(code) {
        return Err(PacketError::BadKey {
            key: bounded(key),
            reason: "the pollutant code before '-' must be letters and digits",
        });
    }
    if !is_name(field) {
        return Err(PacketError::BadKey {
            key: bounded(key),
            reason: "the field after '-' must be letters and digits",
        });
    }
    let index = match cp.pollutants.iter().position(|p| p.code == code) {
        Some(index) => index,
        None => {
            cp.pollutants.push(Pollutant {
                code: code.to_owned(),
                readings: Vec::new(),
                flag: None,
                extras: Vec::new(),
            });
            cp.pollutants.len() - 1
        }
    };
    let Some(group) = cp.pollutants.get_mut(index) else {
        return Ok(()); // Unreachable: the index was just found or pushed.
    };

    if field == "Flag" {
        if value.is_empty() {
            return Err(invalid(key, value, "empty data flag"));
        }
        set_once(&mut group.flag, key, DataFlag::from_code(value))
    } else if let Some(field) = Field::from_name(field) {
        if group.get(field).is_some() {
            return Err(duplicate(key));
        }
        let number = Number::parse(value).map_err(|r| invalid(key, value, r))?;
        group.readings.push(Reading {
            field,
            value: number,
        });
        Ok(())
    } else {
        if group.extra(field).is_some() {
            return Err(duplicate(key));
        }
        group.extras.push(Param {
            key: field.to_owned(),
            value: value.to_owned(),
        });
        Ok(())
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric())
}
