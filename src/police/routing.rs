//! Routing: which police units receive a lead.
//!
//! Promise: every lead gets at least one unit. The unit whose division prefix matches the
//! lead's location most specifically receives it; with no match, the fallback unit does; a
//! high-priority lead also goes to the city-level unit.

use super::settings::PoliceSettings;

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("police.{field} names unit {unit}, which is not among police.units")]
    UnknownUnit { field: &'static str, unit: String },
    #[error("police unit {0} is configured twice")]
    DuplicateUnit(String),
    #[error("police unit {unit} has division {division:?}, which is not 2 to 6 digits")]
    BadDivision { unit: String, division: String },
}

#[derive(Clone, Debug)]
pub struct Routing {
    /// (division prefix, unit), longest prefix first.
    prefixes: Vec<(String, String)>,
    city_unit: String,
    fallback_unit: String,
}

impl Routing {
    pub fn new(settings: &PoliceSettings) -> Result<Routing, RoutingError> {
        let mut seen = std::collections::HashSet::new();
        let mut prefixes = Vec::new();
        for unit in &settings.units {
            if !seen.insert(unit.id.clone()) {
                return Err(RoutingError::DuplicateUnit(unit.id.clone()));
            }
            for division in &unit.divisions {
                let digits_ok = (2..=6).contains(&division.len())
                    && division.bytes().all(|b| b.is_ascii_digit());
                if !digits_ok {
                    return Err(RoutingError::BadDivision {
                        unit: unit.id.clone(),
                        division: division.clone(),
                    });
                }
                // "370300" covers the whole prefecture: compare on the significant digits.
                let prefix = division.trim_end_matches("00").to_owned();
                prefixes.push((
                    if prefix.len() < 2 {
                        division.clone()
                    } else {
                        prefix
                    },
                    unit.id.clone(),
                ));
            }
        }
        for (field, unit) in [
            ("city_unit", &settings.city_unit),
            ("fallback_unit", &settings.fallback_unit),
        ] {
            if !seen.contains(unit) {
                return Err(RoutingError::UnknownUnit {
                    field,
                    unit: unit.clone(),
                });
            }
        }
        prefixes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Ok(Routing {
            prefixes,
            city_unit: settings.city_unit.clone(),
            fallback_unit: settings.fallback_unit.clone(),
        })
    }

    /// The units that receive a lead located in `division_code`, primary unit first.
    pub fn route(&self, division_code: &str, high_priority: bool) -> Vec<String> {
        let primary = self
            .prefixes
            .iter()
            .find(|(prefix, _)| division_code.starts_with(prefix.as_str()))
            .map_or_else(|| self.fallback_unit.clone(), |(_, unit)| unit.clone());
        let mut units = vec![primary];
        if high_priority && !units.contains(&self.city_unit) {
            units.push(self.city_unit.clone());
        }
        units
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing() -> Routing {
        Routing::new(&PoliceSettings::default()).unwrap()
    }

    #[test]
    fn each_zibo_district_goes_to_its_own_unit() {
        for code in [
            "370302", "370303", "370304", "370305", "370306", "370321", "370322", "370323",
        ] {
            assert_eq!(routing().route(code, false), vec![code.to_owned()]);
        }
    }

    #[test]
    fn high_priority_leads_also_reach_the_city_unit() {
        assert_eq!(
            routing().route("370305", true),
            vec!["370305".to_owned(), "370300".to_owned()]
        );
    }

    #[test]
    fn a_lead_outside_every_unit_goes_to_the_fallback() {
        assert_eq!(routing().route("110105", false), vec!["370300".to_owned()]);
        assert_eq!(routing().route("110105", true), vec!["370300".to_owned()]);
    }

    #[test]
    fn broken_unit_tables_are_refused() {
        let settings = PoliceSettings {
            fallback_unit: "999999".into(),
            ..PoliceSettings::default()
        };
        assert!(matches!(
            Routing::new(&settings),
            Err(RoutingError::UnknownUnit { .. })
        ));
        let mut settings = PoliceSettings::default();
        settings.units.push(settings.units[0].clone());
        assert!(matches!(
            Routing::new(&settings),
            Err(RoutingError::DuplicateUnit(_))
        ));
        let mut settings = PoliceSettings::default();
        settings.units[0].divisions = vec!["37a".into()];
        assert!(matches!(
            Routing::new(&settings),
            Err(RoutingError::BadDivision { .. })
        ));
    }
}
