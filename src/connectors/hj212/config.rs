//! `HJ212.toml` (connector contract §4): where the listener listens, its limits, its store,
//! and the registry of stations with their passwords and discharge limits.
//!
//! Promise: a configuration that loads is usable as it stands — every station has a distinct
//! MN, a valid credit code and division code, and positive limits for well-formed pollutant
//! codes; anything else is refused at start-up with the file, the station and the field named.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::contract::lead::{DivisionCode, Uscc};

/// The listener's configuration, checked.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    pub listen: SocketAddr,
    pub idle_timeout: Duration,
    /// A frame begun must be complete within this time (a client trickling bytes is closed).
    pub frame_timeout: Duration,
    pub max_connections: usize,
    pub max_packet_bytes: usize,
    pub store: String,
    pub unit: String,
    pub unit_division: DivisionCode,
    pub tampering_flag_hours: u32,
    pub flatline_hours: u32,
    pub stations: BTreeMap<String, Station>,
}

/// A registered monitoring station (数采仪), by MN.
#[derive(Clone, Debug)]
pub struct Station {
    pub mn: String,
    pub password: String,
    pub name: String,
    pub uscc: Uscc,
    pub division_code: DivisionCode,
    /// Where the outlet is; the station's name when not configured.
    pub address: String,
    pub unit_type: String,
    /// Pollutant code → discharge limit, in the data's unit.
    pub limits: BTreeMap<String, f64>,
    /// Pollutant code → unit of its data and limit; `mg/L` for water codes (`w…`) and
    /// `mg/m3` for air codes (`a…`) when not configured.
    pub units: BTreeMap<String, String>,
}

impl Station {
    pub fn unit_of(&self, pollutant: &str) -> String {
        if let Some(unit) = self.units.get(pollutant) {
            return unit.clone();
        }
        // domain.md §3.5: the codes whose data are not concentrations.
        let unit = match pollutant {
            "w00000" => "L/s",
            "w01001" => "pH",
            "a00000" => "m3/s",
            "a19001" | "a01014" => "%",
            "a01011" => "m/s",
            "a01012" => "℃",
            "a01013" => "kPa",
            code if code.starts_with('a') => "mg/m3",
            _ => "mg/L",
        };
        unit.to_owned()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: String,
    #[serde(default = "default_idle")]
    idle_timeout_secs: u64,
    /// Extension (optional): seconds a begun frame may take to arrive whole.
    #[serde(default = "default_frame_timeout")]
    frame_timeout_secs: u64,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default = "default_max_packet")]
    max_packet_bytes: usize,
    store: String,
    unit: String,
    unit_division: String,
    #[serde(default = "default_flag_hours")]
    tampering_flag_hours: u32,
    #[serde(default = "default_flatline_hours")]
    flatline_hours: u32,
    #[serde(default)]
    stations: Vec<RawStation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStation {
    mn: String,
    password: String,
    name: String,
    uscc: String,
    division_code: String,
    /// Extension (optional): the outlet's address for the leads' `location.address`.
    address: Option<String>,
    unit_type: String,
    #[serde(default)]
    limits: BTreeMap<String, f64>,
    /// Extension (optional): pollutant code → unit.
    #[serde(default)]
    units: BTreeMap<String, String>,
}

fn default_idle() -> u64 {
    300
}
fn default_frame_timeout() -> u64 {
    30
}
fn default_max_connections() -> usize {
    2000
}
fn default_max_packet() -> usize {
    1100
}
fn default_flag_hours() -> u32 {
    6
}
fn default_flatline_hours() -> u32 {
    12
}

const UNIT_TYPES: [&str; 3] = ["key_discharger", "permit_key", "other"];

impl ListenerConfig {
    pub fn load(path: &Path) -> Result<ListenerConfig, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
            path: name.clone(),
            message: format!("cannot read: {error}"),
        })?;
        Self::parse(&name, &text)
    }

    pub fn parse(path: &str, text: &str) -> Result<ListenerConfig, ConfigError> {
        let fail = |message: String| ConfigError {
            path: path.to_owned(),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|error| fail(error.to_string()))?;
        let listen = raw
            .listen
            .parse()
            .map_err(|_| fail(format!("listen: \"{}\" is not an address:port", raw.listen)))?;
        if raw.idle_timeout_secs == 0 || raw.frame_timeout_secs == 0 {
            return Err(fail(
                "idle_timeout_secs and frame_timeout_secs must be at least 1".into(),
            ));
        }
        if raw.max_connections == 0 {
            return Err(fail("max_connections must be at least 1".into()));
        }
        // Smaller than the frame's own 12 bytes plus a minimal data segment is a typo.
        if !(64..=9999 + leadbridge_hj212::FRAME_OVERHEAD).contains(&raw.max_packet_bytes) {
            return Err(fail(format!(
                "max_packet_bytes must be between 64 and {}, not {}",
                9999 + leadbridge_hj212::FRAME_OVERHEAD,
                raw.max_packet_bytes
            )));
        }
        if !(raw.store.starts_with("sqlite:")
            || raw.store.starts_with("postgres://")
            || raw.store.starts_with("postgresql://"))
        {
            return Err(fail(format!(
                "store must be a sqlite: or postgres:// URL, not \"{}\"",
                raw.store
            )));
        }
        // The leads' schema limits these fields; a value it would refuse is refused here, not
        // in every lead.
        if raw.unit.trim().is_empty() || raw.unit.chars().count() > 200 {
            return Err(fail("unit must be 1 to 200 characters".into()));
        }
        let unit_division = DivisionCode::parse(&raw.unit_division).ok_or_else(|| {
            fail(format!(
                "unit_division \"{}\" is not a division code",
                raw.unit_division
            ))
        })?;
        if raw.tampering_flag_hours == 0 || raw.flatline_hours == 0 {
            return Err(fail(
                "tampering_flag_hours and flatline_hours must be at least 1".into(),
            ));
        }
        let mut stations = BTreeMap::new();
        for (index, station) in raw.stations.into_iter().enumerate() {
            let at = |field: &str, message: String| {
                fail(format!(
                    "stations[{index}] ({}): {field}: {message}",
                    station.mn
                ))
            };
            if station.mn.is_empty()
                || station.mn.len() > 32
                || !station.mn.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return Err(at("mn", "1 to 32 ASCII letters and digits".into()));
            }
            if station.password.is_empty()
                || !station.password.bytes().all(|b| b.is_ascii_graphic())
                || station.password.contains([';', '&', ',', '='])
            {
                return Err(at("password", "printable ASCII without ; & , =".into()));
            }
            if station.name.trim().is_empty() || station.name.chars().count() > 200 {
                return Err(at("name", "1 to 200 characters".into()));
            }
            if station
                .address
                .as_ref()
                .is_some_and(|address| address.trim().is_empty() || address.chars().count() > 500)
            {
                return Err(at("address", "1 to 500 characters".into()));
            }
            let uscc = Uscc::parse(&station.uscc).map_err(|error| at("uscc", error.to_string()))?;
            let division_code = DivisionCode::parse(&station.division_code)
                .ok_or_else(|| at("division_code", "not a division code".into()))?;
            if !UNIT_TYPES.contains(&station.unit_type.as_str()) {
                return Err(at(
                    "unit_type",
                    format!("\"{}\" is not one of {UNIT_TYPES:?}", station.unit_type),
                ));
            }
            for (code, limit) in &station.limits {
                if !is_pollutant_code(code) {
                    return Err(at("limits", format!("\"{code}\" is not a pollutant code")));
                }
                if !(limit.is_finite() && *limit > 0.0) {
                    return Err(at("limits", format!("{code}: the limit must be above 0")));
                }
            }
            for (code, unit) in &station.units {
                if !is_pollutant_code(code) || unit.is_empty() || unit.len() > 32 {
                    return Err(at("units", format!("{code} = \"{unit}\"")));
                }
            }
            let mn = station.mn.clone();
            let value = Station {
                address: station.address.unwrap_or_else(|| station.name.clone()),
                mn: station.mn,
                password: station.password,
                name: station.name,
                uscc,
                division_code,
                unit_type: station.unit_type,
                limits: station.limits,
                units: station.units,
            };
            if stations.insert(mn.clone(), value).is_some() {
                return Err(fail(format!("station {mn} is listed twice")));
            }
        }
        Ok(ListenerConfig {
            listen,
            idle_timeout: Duration::from_secs(raw.idle_timeout_secs),
            frame_timeout: Duration::from_secs(raw.frame_timeout_secs),
            max_connections: raw.max_connections,
            max_packet_bytes: raw.max_packet_bytes,
            store: raw.store,
            unit: raw.unit,
            unit_division,
            tampering_flag_hours: raw.tampering_flag_hours,
            flatline_hours: raw.flatline_hours,
            stations,
        })
    }
}

/// `w` or `a` and five digits (the leads' schemas require this form).
pub fn is_pollutant_code(code: &str) -> bool {
    let bytes = code.as_bytes();
    bytes.len() == 6 && matches!(bytes[0], b'w' | b'a') && bytes[1..].iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../../connectors/samples/environment/HJ212.toml");

    #[test]
    fn the_sample_loads_and_bad_stations_are_refused_by_name() {
        let config = ListenerConfig::parse("HJ212.toml", SAMPLE).unwrap();
        let station = &config.stations["370305A00000000000000017"];
        assert_eq!(station.limits["w01018"], 50.0);
        assert_eq!(station.unit_of("w01018"), "mg/L");
        assert_eq!(config.max_packet_bytes, 1100);

        for (from, to, expect) in [
            ("91370305MA3K56CR16", "91370305MA3K56CR17", "uscc"),
            ("w01018 = 50.0", "w01018 = 0.0", "the limit must be above 0"),
            ("w01018 = 50.0", "x01018 = 50.0", "is not a pollutant code"),
            ("\"key_discharger\"", "\"big\"", "unit_type"),
            ("\"0.0.0.0:9212\"", "\"nowhere\"", "listen"),
            ("sqlite://", "mysql://", "store must be"),
            (
                "max_packet_bytes = 1100",
                "max_packet_bytes = 10",
                "max_packet_bytes",
            ),
        ] {
            let broken = SAMPLE.replacen(from, to, 1);
            assert_ne!(broken, SAMPLE, "{from}");
            let error = ListenerConfig::parse("HJ212.toml", &broken).unwrap_err();
            assert!(error.to_string().contains(expect), "{from}: {error}");
        }
        let twice = format!(
            "{SAMPLE}\n{}",
            &SAMPLE[SAMPLE.find("[[stations]]").unwrap()..]
        );
        let error = ListenerConfig::parse("HJ212.toml", &twice).unwrap_err();
        assert!(error.to_string().contains("listed twice"), "{error}");
    }
}
