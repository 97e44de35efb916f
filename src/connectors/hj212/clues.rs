//! From a station's stored hourly data to the clues the contract asks for (§4): discharge
//! exceedances and signs of monitoring tampering, as canonical leads.
//!
//! Promise: these functions are pure — the same hours give the same lead, byte for byte, so a
//! lead is revised exactly when its evidence changed. Only hourly averages (`-Avg` of CN 2061)
//! are judged; minute data and `-Max` values never make a lead. Each lead rests on the packets
//! it cites: their SHA-256 and size are its attachments. One lead per station, pollutant, day
//! and kind of clue: its case number is made of them.

use chrono::{Duration, NaiveDate, NaiveDateTime};
use serde_json::{json, Value};

use super::config::{ListenerConfig, Station};

/// The contract's time zone for `DataTime` (stations send local time without a zone).
pub const OFFSET: &str = "+08:00";

/// One pollutant's reading of one hourly packet.
#[derive(Clone, Debug, PartialEq)]
pub struct HourValue {
    pub data_time: NaiveDateTime,
    /// `-Avg` as sent (its exact text) and as a number.
    pub avg: Option<(String, f64)>,
    pub flag: Option<String>,
    pub packet_sha256: String,
    pub packet_size: u64,
}

/// A lead as its evidence makes it, before it gets its revision and `reported_at`.
#[derive(Clone, Debug, PartialEq)]
pub struct Draft {
    pub case_id: String,
    pub lead_type: &'static str,
    pub mn: String,
    pub pollutant: String,
    pub day: NaiveDate,
    /// The end of the last hour cited: when the evidence was complete. The lead's
    /// `reported_at` is this (or now, if that is earlier), so a lead made again from the same
    /// packets — after its store was lost — is the same lead, and the hub answers a replay.
    pub evidence_until: NaiveDateTime,
    pub lead: Value,
}

pub const EXCEEDANCE: &str = "environment.discharge_exceedance";
pub const TAMPERING: &str = "environment.monitoring_tampering";

/// Flags that say the data are not the instrument's normal measurement (domain.md §3.6).
const ABNORMAL_FLAGS: [&str; 5] = ["M", "S", "C", "D", "B"];

/// The case number of a station's clue of one kind, for one pollutant and day.
pub fn case_id(lead_type: &str, mn: &str, pollutant: &str, day: NaiveDate) -> String {
    let tag = if lead_type == EXCEEDANCE { "E" } else { "T" };
    format!("HJ212-{tag}-{mn}-{pollutant}-{}", day.format("%Y%m%d"))
}

/// The day's exceeding hourly averages of `pollutant`, or `None` when no hour exceeded.
/// `hours` are the pollutant's hourly values of that day.
pub fn exceedance(
    config: &ListenerConfig,
    station: &Station,
    pollutant: &str,
    day: NaiveDate,
    hours: &[HourValue],
) -> Option<Draft> {
    let limit = *station.limits.get(pollutant)?;
    let unit = station.unit_of(pollutant);
    let mut exceeding: Vec<&HourValue> = hours
        .iter()
        .filter(|hour| hour.data_time.date() == day)
        .filter(|hour| hour.avg.as_ref().is_some_and(|(_, value)| *value > limit))
        .collect();
    exceeding.sort_by_key(|hour| hour.data_time);
    let first = exceeding.first()?;
    let until = exceeding.iter().map(|h| h.data_time).max()? + Duration::hours(1);
    let measurements: Vec<Value> = exceeding
        .iter()
        .map(|hour| {
            json!({
                "pollutant_code": pollutant,
                "value": hour.avg.as_ref().map(|(_, value)| *value),
                "limit": limit,
                "unit": unit,
                "sampled_at": local(hour.data_time),
                "method": "online",
            })
        })
        .collect();
    let listed: Vec<String> = exceeding
        .iter()
        .map(|hour| {
            let (text, _) = hour.avg.as_ref().expect("filtered on avg");
            format!("{}时 {text}", hour.data_time.format("%H"))
        })
        .collect();
    let summary = format!(
        "{}（MN {}）{} {}小时均值超过排放限值 {limit} {unit}，共 {} 小时：{}。在线监测数据（HJ 212 小时数据），需现场核查。",
        station.name,
        station.mn,
        day.format("%Y年%m月%d日"),
        pollutant_name(pollutant),
        exceeding.len(),
        listed.join("；"),
    );
    let lead = lead(
        config,
        station,
        EXCEEDANCE,
        case_id(EXCEEDANCE, &station.mn, pollutant, day),
        first.data_time,
        summary,
        json!({ "unit_type": station.unit_type, "measurements": measurements }),
        &exceeding,
    );
    Some(Draft {
        case_id: case_id(EXCEEDANCE, &station.mn, pollutant, day),
        lead_type: EXCEEDANCE,
        mn: station.mn.clone(),
        pollutant: pollutant.to_owned(),
        day,
        evidence_until: until,
        lead,
    })
}

/// A run of consecutive hours that is a sign of tampering.
#[derive(Debug)]
struct Run<'a> {
    hours: Vec<&'a HourValue>,
    what: String,
    method: &'static str,
}

/// The tampering signs of `pollutant` whose run starts on `day`: a run of abnormal flags
/// longer than `tampering_flag_hours`, or the same reading (to the last digit, not while the
/// plant is stopped) longer than `flatline_hours`. `hours` are the pollutant's hourly values
/// around the day, long enough to hold the runs that start on it.
pub fn tampering(
    config: &ListenerConfig,
    station: &Station,
    pollutant: &str,
    day: NaiveDate,
    hours: &[HourValue],
) -> Option<Draft> {
    let mut signs = signs(config, hours);
    signs.retain(|run| run.hours[0].data_time.date() == day);
    signs.sort_by_key(|run| run.hours[0].data_time);
    let first = signs.first()?;
    let method = first.method;
    let occurred = first.hours[0].data_time;
    let mut cited: Vec<&HourValue> = signs.iter().flat_map(|run| run.hours.clone()).collect();
    cited.sort_by(|a, b| (a.data_time, &a.packet_sha256).cmp(&(b.data_time, &b.packet_sha256)));
    cited.dedup_by(|a, b| a.packet_sha256 == b.packet_sha256);
    let until = cited.iter().map(|h| h.data_time).max()? + Duration::hours(1);
    let summary = format!(
        "{}（MN {}）{}在线监测数据异常：{}。疑似篡改或干扰自动监测，系启发式信号而非定论，需现场核查。",
        station.name,
        station.mn,
        pollutant_name(pollutant),
        signs.iter().map(|run| run.what.as_str()).collect::<Vec<_>>().join("；"),
    );
    let case_id = case_id(TAMPERING, &station.mn, pollutant, day);
    let lead = lead(
        config,
        station,
        TAMPERING,
        case_id.clone(),
        occurred,
        summary,
        json!({
            "unit_type": station.unit_type,
            "station_mn": station.mn,
            "method": method,
            "pollutant_codes": [pollutant],
        }),
        &cited,
    );
    Some(Draft {
        case_id,
        lead_type: TAMPERING,
        mn: station.mn.clone(),
        pollutant: pollutant.to_owned(),
        day,
        evidence_until: until,
        lead,
    })
}

/// Every tampering sign in `hours`, in no particular order.
fn signs<'a>(config: &ListenerConfig, hours: &'a [HourValue]) -> Vec<Run<'a>> {
    let mut sorted: Vec<&HourValue> = hours.iter().collect();
    sorted.sort_by_key(|hour| hour.data_time);
    let mut signs: Vec<Run> = Vec::new();
    let abnormal = |hour: &HourValue| {
        hour.flag
            .as_deref()
            .is_some_and(|flag| ABNORMAL_FLAGS.contains(&flag))
    };
    for run in runs(&sorted, |first, hour| abnormal(first) && abnormal(hour)) {
        if run.len() > config.tampering_flag_hours as usize {
            let flags: Vec<&str> = {
                let mut flags: Vec<&str> = run.iter().filter_map(|h| h.flag.as_deref()).collect();
                flags.sort_unstable();
                flags.dedup();
                flags
            };
            signs.push(Run {
                what: format!(
                    "{}至{}连续 {} 小时数据标记为 {}（{}）",
                    run[0].data_time.format("%m月%d日%H时"),
                    run[run.len() - 1].data_time.format("%m月%d日%H时"),
                    run.len(),
                    flags.join("、"),
                    flags
                        .iter()
                        .map(|f| flag_name(f))
                        .collect::<Vec<_>>()
                        .join("、"),
                ),
                hours: run,
                method: "equipment_interfered",
            });
        }
    }
    let same = |first: &HourValue, hour: &HourValue| {
        let stopped = |h: &HourValue| h.flag.as_deref() == Some("F");
        first.avg.is_some()
            && hour.avg.as_ref().map(|(text, _)| text) == first.avg.as_ref().map(|(text, _)| text)
            && !stopped(first)
            && !stopped(hour)
    };
    for run in runs(&sorted, same) {
        if run.len() > config.flatline_hours as usize {
            let text = run[0]
                .avg
                .as_ref()
                .map(|(text, _)| text.as_str())
                .unwrap_or("");
            signs.push(Run {
                what: format!(
                    "{}至{}连续 {} 小时均值恒为 {text}",
                    run[0].data_time.format("%m月%d日%H时"),
                    run[run.len() - 1].data_time.format("%m月%d日%H时"),
                    run.len(),
                ),
                hours: run,
                method: "data_altered",
            });
        }
    }
    signs
}

/// The days on which the tampering signs that include the hour `at` start: the leads a new
/// value at `at` may revise.
pub fn tampering_days(
    config: &ListenerConfig,
    hours: &[HourValue],
    at: NaiveDateTime,
) -> Vec<NaiveDate> {
    let mut days: Vec<NaiveDate> = signs(config, hours)
        .iter()
        .filter(|run| run.hours.iter().any(|hour| hour.data_time == at))
        .map(|run| run.hours[0].data_time.date())
        .collect();
    days.sort_unstable();
    days.dedup();
    days
}

/// Maximal runs of consecutive hours (one hour apart) in which every hour goes with the run's
/// first one.
fn runs<'a>(
    sorted: &[&'a HourValue],
    goes_with: impl Fn(&HourValue, &HourValue) -> bool,
) -> Vec<Vec<&'a HourValue>> {
    let mut runs: Vec<Vec<&HourValue>> = Vec::new();
    for &hour in sorted {
        let extends = runs
            .last()
            .is_some_and(|run| match (run.first(), run.last()) {
                (Some(first), Some(last)) => {
                    hour.data_time - last.data_time == Duration::hours(1) && goes_with(first, hour)
                }
                _ => false,
            });
        match runs.last_mut() {
            Some(run) if extends => run.push(hour),
            // An hour that starts no run still breaks the one before: an empty run marks it.
            _ => runs.push(if goes_with(hour, hour) {
                vec![hour]
            } else {
                Vec::new()
            }),
        }
    }
    runs.retain(|run| !run.is_empty());
    runs
}

/// Attachments hold at most this many packets (the lead contract's limit).
const MAX_ATTACHMENTS: usize = 100;

#[allow(clippy::too_many_arguments)]
fn lead(
    config: &ListenerConfig,
    station: &Station,
    lead_type: &str,
    case_id: String,
    occurred: NaiveDateTime,
    summary: String,
    facts: Value,
    cited: &[&HourValue],
) -> Value {
    let attachments: Vec<Value> = cited
        .iter()
        .take(MAX_ATTACHMENTS)
        .map(|hour| {
            json!({
                "kind": "monitoring_report",
                "title": format!("HJ 212 小时数据 MN {} DataTime {}", station.mn, hour.data_time.format("%Y%m%d%H%M%S")),
                "sha256": hour.packet_sha256,
                "size": hour.packet_size,
                "media_type": "text/plain",
            })
        })
        .collect();
    json!({
        "lead_type": lead_type,
        "schema_version": 1,
        "kind": "clue",
        "source": {
            "agency": "environment",
            "unit": config.unit,
            "unit_division": config.unit_division.as_str(),
            "case_id": case_id,
        },
        "occurred_at": local(occurred),
        "location": {
            "division_code": station.division_code.as_str(),
            "address": station.address,
        },
        "subjects": [{
            "type": "organization",
            "name": station.name,
            "uscc": station.uscc.as_str(),
        }],
        "summary": summary,
        "facts": facts,
        "attachments": attachments,
        "extensions": { "environment.station_mn": station.mn },
    })
}

/// A `DataTime` in the contract's zone, RFC 3339.
pub fn local(time: NaiveDateTime) -> String {
    format!("{}{OFFSET}", time.format("%Y-%m-%dT%H:%M:%S"))
}

/// Chinese names of the common codes (domain.md §3.5); others are named by their code.
fn pollutant_name(code: &str) -> String {
    let name = match code {
        "w00000" => "污水流量",
        "w01001" => "pH值",
        "w01018" => "化学需氧量",
        "w21003" => "氨氮",
        "w21001" => "总氮",
        "w21011" => "总磷",
        "w20111" => "总汞",
        "w20115" => "总镉",
        "w20116" => "总铬",
        "w20117" => "六价铬",
        "w20119" => "总砷",
        "w20120" => "总铅",
        "w20121" => "总镍",
        "w20122" => "总铜",
        "w20123" => "总锌",
        "a21026" => "二氧化硫",
        "a21002" => "氮氧化物",
        "a34013" => "烟尘",
        _ => return code.to_owned(),
    };
    format!("{name}（{code}）")
}

fn flag_name(flag: &str) -> &'static str {
    match flag {
        "M" => "维护",
        "S" => "手工输入",
        "C" => "校准",
        "D" => "故障",
        "B" => "通讯异常",
        _ => "异常",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../../connectors/samples/environment/HJ212.toml");
    const MN: &str = "370305A00000000000000017";

    fn hours(from: &str, values: &[(&str, &str)]) -> Vec<HourValue> {
        let start = NaiveDateTime::parse_from_str(&format!("{from}:00"), "%Y-%m-%d %H:%M").unwrap();
        values
            .iter()
            .enumerate()
            .map(|(index, (avg, flag))| HourValue {
                data_time: start + Duration::hours(index as i64),
                avg: Some(((*avg).to_owned(), avg.parse().unwrap())),
                flag: Some((*flag).to_owned()),
                packet_sha256: format!("{index:064x}"),
                packet_size: 491,
            })
            .collect()
    }

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn a_sign_must_last_longer_than_its_configured_hours() {
        let config = ListenerConfig::parse("HJ212.toml", SAMPLE).unwrap();
        let station = &config.stations[MN];
        let varied = [
            "30.1", "31.2", "29.8", "33.0", "32.4", "30.9", "31.7", "28.8",
        ];
        let flagged = |n: usize| -> Vec<(&str, &str)> {
            (0..8)
                .map(|i| (varied[i], if i < n { "M" } else { "N" }))
                .collect()
        };
        // Six hours flagged with tampering_flag_hours = 6: not longer, no lead; seven: a lead.
        let six = hours("2026-11-12 14", &flagged(6));
        assert!(tampering(&config, station, "w01018", day("2026-11-12"), &six).is_none());
        let seven = hours("2026-11-12 14", &flagged(7));
        let lead = tampering(&config, station, "w01018", day("2026-11-12"), &seven).unwrap();
        assert_eq!(lead.lead["facts"]["method"], "equipment_interfered");
        assert_eq!(lead.lead["attachments"].as_array().unwrap().len(), 7);
        assert_eq!(lead.lead["occurred_at"], "2026-11-12T14:00:00+08:00");
        // A run that crosses midnight belongs to the day it starts, not the next.
        let late = hours("2026-11-12 20", &flagged(7));
        assert!(tampering(&config, station, "w01018", day("2026-11-12"), &late).is_some());
        assert!(tampering(&config, station, "w01018", day("2026-11-13"), &late).is_none());
        assert_eq!(
            tampering_days(&config, &late, late[6].data_time),
            vec![day("2026-11-12")]
        );

        // Thirteen identical readings with flatline_hours = 12 make a lead; twelve do not; and
        // a stopped plant's identical readings do not count.
        let flat = |n: usize, flag: &'static str| -> Vec<(&'static str, &'static str)> {
            let mut values = vec![("41.0", flag); n];
            values.push(("39.5", "N"));
            values
        };
        let twelve = hours("2026-11-12 00", &flat(12, "N"));
        assert!(tampering(&config, station, "w01018", day("2026-11-12"), &twelve).is_none());
        let thirteen = hours("2026-11-12 00", &flat(13, "N"));
        let lead = tampering(&config, station, "w01018", day("2026-11-12"), &thirteen).unwrap();
        assert_eq!(lead.lead["facts"]["method"], "data_altered");
        let stopped = hours("2026-11-12 00", &flat(13, "F"));
        assert!(tampering(&config, station, "w01018", day("2026-11-12"), &stopped).is_none());
        // A gap of one hour breaks a run.
        let mut gapped = hours("2026-11-12 00", &flat(13, "N"));
        gapped.remove(6);
        assert!(tampering(&config, station, "w01018", day("2026-11-12"), &gapped).is_none());
    }

    #[test]
    fn only_averages_above_the_limit_count_and_the_same_hours_give_the_same_lead() {
        let config = ListenerConfig::parse("HJ212.toml", SAMPLE).unwrap();
        let station = &config.stations[MN];
        let day_hours = hours(
            "2026-11-12 01",
            &[("49.9", "N"), ("50.0", "N"), ("50.1", "N"), ("63.7", "N")],
        );
        let lead = exceedance(&config, station, "w01018", day("2026-11-12"), &day_hours).unwrap();
        let values: Vec<f64> = lead.lead["facts"]["measurements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["value"].as_f64().unwrap())
            .collect();
        assert_eq!(values, vec![50.1, 63.7], "above the limit, not at it");
        let mut shuffled = day_hours.clone();
        shuffled.reverse();
        assert_eq!(
            exceedance(&config, station, "w01018", day("2026-11-12"), &shuffled),
            Some(lead)
        );
        // No limit configured for the pollutant: never a lead.
        assert!(exceedance(&config, station, "w00000", day("2026-11-12"), &day_hours).is_none());
    }
}
