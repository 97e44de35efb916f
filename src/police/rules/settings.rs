//! The operator's choices where the law leaves one (domain.md §2): how an exceed multiple is
//! computed, the province's mining amounts within the national ranges, which pollutant codes
//! belong to which rule, and an optional rule file replacing the built-in one.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::RulesError;

/// National range of the MIN-1 amount (法释〔2016〕25号 art. 3(1), art. 15).
pub const MINING_VALUE_RANGE_CNY: RangeInclusive<u64> = 100_000..=300_000;
/// National range of the MIN-2 amount (法释〔2016〕25号 art. 3(2), art. 15).
pub const MINING_RESTRICTED_RANGE_CNY: RangeInclusive<u64> = 50_000..=150_000;

/// How the exceed multiple of a measurement against its discharge limit is computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExceedMultipleFormula {
    /// `measured / limit`: "three times the standard" means a reading of 3 × the limit.
    #[default]
    Ratio,
    /// `(measured − limit) / limit`, the 超标倍数 of environmental practice: "three times"
    /// then needs a reading of 4 × the limit.
    Excess,
}

impl ExceedMultipleFormula {
    /// The exceed multiple of one reading; `None` when it is not a finite number (a limit of
    /// zero, or values beyond the range of `f64`).
    pub fn multiple(self, measured: f64, limit: f64) -> Option<f64> {
        if limit <= 0.0 {
            return None;
        }
        let multiple = match self {
            ExceedMultipleFormula::Ratio => measured / limit,
            ExceedMultipleFormula::Excess => (measured - limit) / limit,
        };
        multiple.is_finite().then_some(multiple)
    }
}

/// Settings of the criminal-threshold rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesSettings {
    /// How the exceed multiple of ENV-3 and ENV-4 is computed: `ratio` (measured / limit, the
    /// default) or `excess` ((measured − limit) / limit). 法释〔2023〕7号 says "超过…排放标准三倍
    /// 以上" without defining the multiple; which reading the courts use is an open question
    /// awaiting legal sign-off (domain.md §2.1). `ratio` is the default because it flags more
    /// leads, and a flag is a screening signal the police review, not a conclusion.
    pub exceed_multiple: ExceedMultipleFormula,
    /// MIN-1 amount X in CNY: the value of minerals mined (or resources destroyed) from which
    /// illegal mining is 情节严重. The province sets it within 100000–300000; Shandong's figure
    /// was not found, so the default is the national floor, 100000, which flags every case that
    /// would be criminal in any province. Set the provincial figure once it is known.
    pub mining_value_threshold_cny: u64,
    /// MIN-2 amount Y in CNY: the same for state-planned or important mining areas, protected
    /// minerals, and prohibited zones or periods. The province sets it within 50000–150000;
    /// the default is the national floor, 50000, for the same reason as for X.
    pub mining_restricted_threshold_cny: u64,
    /// HJ 212-2017 codes of the pollutants of ENV-3 (Pb, Hg, Cd, Cr, As, Tl, Sb; three times the
    /// standard). Default: w20120 总铅, w20111 总汞, w20115 总镉, w20116 总铬, w20117 六价铬,
    /// w20119 总砷 (domain.md §3.5); w20089 铊 and w20004 锑, from public code tables only and
    /// not confirmed against the standard; and w20141–w20144, variant codes of As, Hg, Cd and
    /// Pb (which is which was not confirmed), counted as the same metals. The rule file's ENV-3
    /// note says the same.
    pub env3_pollutant_codes: Vec<String>,
    /// HJ 212-2017 codes of the pollutants of ENV-4 (Ni, Cu, Zn, Ag, V, Mn, Co; ten times the
    /// standard). Default: w20121 总镍, w20122 总铜, w20123 总锌 (domain.md §3.5); w20126 银,
    /// w20101 钒, w20124 锰 and w20038 钴, from public code tables only and not confirmed
    /// against the standard; and w20138 and w20139, variant codes of Cu and Zn, counted as the
    /// same metals.
    pub env4_pollutant_codes: Vec<String>,
    /// HJ 212-2017 codes of the pollutants whose discharge with tampered monitoring meets ENV-7
    /// (化学需氧量、氨氮、二氧化硫、氮氧化物等). Default: w01018 COD, w21003 NH3-N, a21026 SO2,
    /// a21002 NOx; the law's "等" lets an operator add others.
    pub env7_pollutant_codes: Vec<String>,
    /// Read the rule tables from this file instead of the built-in
    /// `schemas/rules/thresholds.v1.json`. The file is checked completely at start-up.
    pub rules_file: Option<PathBuf>,
}

impl Default for RulesSettings {
    fn default() -> Self {
        RulesSettings {
            exceed_multiple: ExceedMultipleFormula::Ratio,
            mining_value_threshold_cny: *MINING_VALUE_RANGE_CNY.start(),
            mining_restricted_threshold_cny: *MINING_RESTRICTED_RANGE_CNY.start(),
            env3_pollutant_codes: codes(ENV3_DEFAULT_CODES),
            env4_pollutant_codes: codes(ENV4_DEFAULT_CODES),
            env7_pollutant_codes: codes(&["w01018", "w21003", "a21026", "a21002"]),
            rules_file: None,
        }
    }
}

/// The default ENV-3 group: Pb, Hg, Cd, 总铬, 六价铬, As (domain.md §3.5), Tl, Sb (unconfirmed
/// codes), and the variant codes of As, Hg, Cd and Pb.
pub(crate) const ENV3_DEFAULT_CODES: &[&str] = &[
    "w20120", "w20111", "w20115", "w20116", "w20117", "w20119", "w20089", "w20004", "w20141",
    "w20142", "w20143", "w20144",
];
/// The default ENV-4 group: Ni, Cu, Zn (domain.md §3.5), Ag, V, Mn, Co (unconfirmed codes), and
/// the variant codes of Cu and Zn.
pub(crate) const ENV4_DEFAULT_CODES: &[&str] = &[
    "w20121", "w20122", "w20123", "w20126", "w20101", "w20124", "w20038", "w20138", "w20139",
];

fn codes(list: &[&str]) -> Vec<String> {
    list.iter().map(|code| (*code).to_owned()).collect()
}

impl RulesSettings {
    /// Checks every setting; the error names the first bad one.
    pub fn validate(&self) -> Result<(), RulesError> {
        check_range(
            "mining_value_threshold_cny",
            self.mining_value_threshold_cny,
            MINING_VALUE_RANGE_CNY,
        )?;
        check_range(
            "mining_restricted_threshold_cny",
            self.mining_restricted_threshold_cny,
            MINING_RESTRICTED_RANGE_CNY,
        )?;
        let env3 = check_codes("env3_pollutant_codes", &self.env3_pollutant_codes)?;
        let env4 = check_codes("env4_pollutant_codes", &self.env4_pollutant_codes)?;
        check_codes("env7_pollutant_codes", &self.env7_pollutant_codes)?;
        if let Some(code) = env3.intersection(&env4).next() {
            return Err(RulesError::Setting {
                setting: "env4_pollutant_codes",
                problem: format!(
                    "{code} is also in env3_pollutant_codes; a pollutant belongs to one group"
                ),
            });
        }
        Ok(())
    }
}

fn check_range(
    setting: &'static str,
    value: u64,
    range: RangeInclusive<u64>,
) -> Result<(), RulesError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(RulesError::Setting {
        setting,
        problem: format!(
            "{value} is outside the national range {}–{} (法释〔2016〕25号 第十五条)",
            range.start(),
            range.end()
        ),
    })
}

fn check_codes<'a>(
    setting: &'static str,
    codes: &'a [String],
) -> Result<BTreeSet<&'a str>, RulesError> {
    if codes.is_empty() {
        return Err(RulesError::Setting {
            setting,
            problem: "is empty, which would silently disable its rule".to_owned(),
        });
    }
    let mut seen = BTreeSet::new();
    for code in codes {
        if !is_pollutant_code(code) {
            return Err(RulesError::Setting {
                setting,
                problem: format!(
                    "{code:?} is not an HJ 212-2017 pollutant code (w or a and five digits)"
                ),
            });
        }
        seen.insert(code.as_str());
    }
    Ok(seen)
}

/// `w` or `a` followed by five digits, the shape the facts schemas accept.
pub(crate) fn is_pollutant_code(code: &str) -> bool {
    let bytes = code.as_bytes();
    bytes.len() == 6 && matches!(bytes[0], b'w' | b'a') && bytes[1..].iter().all(u8::is_ascii_digit)
}
