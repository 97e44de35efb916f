//! Routing: which police units receive a lead, and which units see which leads.
//!
//! Promise: every lead gets at least one unit. The unit whose division prefix matches the
//! lead's location most specifically receives it and holds it (it decides); with no match, the
//! fallback unit holds it as a forwarding task (Decree 310 art 7: it forwards the lead to the
//! competent organ), never silently as its own case; a high-priority lead also goes to the
//! city-level unit. Units form a hierarchy (`parent`): a unit sees and may act on its own
//! leads and those of every unit below it, and no other.

use std::collections::{BTreeMap, BTreeSet};

use super::settings::{PoliceSettings, SinkSettings};

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("police.{field} names unit {unit}, which is not among police.units")]
    UnknownUnit { field: &'static str, unit: String },
    #[error("police unit {0} is configured twice")]
    DuplicateUnit(String),
    #[error("police unit {unit} has division {division:?}, which is not 2 to 6 digits")]
    BadDivision { unit: String, division: String },
    #[error("police unit {unit} has parent {parent}, which is not among police.units")]
    UnknownParent { unit: String, parent: String },
    #[error("police units {0} are each other's parents: the hierarchy must be a tree")]
    Cycle(String),
}

/// Where one delivery of a lead goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub unit: String,
    /// `inbox` or `http`.
    pub sink: &'static str,
}

/// The units a lead goes to; the first holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routed {
    pub routes: Vec<Route>,
    /// No unit covers the lead's division: the first unit (the fallback) holds it only to
    /// forward it.
    pub forwarding_task: bool,
}

impl Routed {
    pub fn holder(&self) -> &str {
        &self.routes[0].unit
    }
}

#[derive(Clone, Debug)]
struct Unit {
    name: String,
    parent: Option<String>,
    sink: &'static str,
}

#[derive(Clone, Debug)]
pub struct Routing {
    /// (division prefix, unit), longest prefix first.
    prefixes: Vec<(String, String)>,
    units: BTreeMap<String, Unit>,
    city_unit: String,
    fallback_unit: String,
}

impl Routing {
    pub fn new(settings: &PoliceSettings) -> Result<Routing, RoutingError> {
        let mut units = BTreeMap::new();
        let mut prefixes = Vec::new();
        for unit in &settings.units {
            let sink = match unit.sink {
                SinkSettings::Http(_) => "http",
                SinkSettings::Inbox => "inbox",
            };
            let known = Unit {
                name: unit.name.clone(),
                parent: unit.parent.clone(),
                sink,
            };
            if units.insert(unit.id.clone(), known).is_some() {
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
            if !units.contains_key(unit) {
                return Err(RoutingError::UnknownUnit {
                    field,
                    unit: unit.clone(),
                });
            }
        }
        for (id, unit) in &units {
            let Some(parent) = &unit.parent else { continue };
            if !units.contains_key(parent) {
                return Err(RoutingError::UnknownParent {
                    unit: id.clone(),
                    parent: parent.clone(),
                });
            }
            // Walking up from any unit must end at a root within as many steps as there are
            // units.
            let mut seen = vec![id.as_str()];
            let mut at = unit.parent.as_deref();
            while let Some(next) = at {
                if seen.contains(&next) {
                    return Err(RoutingError::Cycle(seen.join(", ")));
                }
                seen.push(next);
                at = units[next].parent.as_deref();
            }
        }
        prefixes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Ok(Routing {
            prefixes,
            units,
            city_unit: settings.city_unit.clone(),
            fallback_unit: settings.fallback_unit.clone(),
        })
    }

    /// The units that receive a lead located in `division_code`, the holder first.
    pub fn route(&self, division_code: &str, high_priority: bool) -> Routed {
        let matched = self
            .prefixes
            .iter()
            .find(|(prefix, _)| division_code.starts_with(prefix.as_str()))
            .map(|(_, unit)| unit.clone());
        let forwarding_task = matched.is_none();
        let primary = matched.unwrap_or_else(|| self.fallback_unit.clone());
        let mut units = vec![primary];
        if high_priority && !units.contains(&self.city_unit) {
            units.push(self.city_unit.clone());
        }
        Routed {
            routes: units.into_iter().map(|unit| self.route_to(unit)).collect(),
            forwarding_task,
        }
    }

    /// How `unit` (a configured unit) receives its deliveries.
    pub fn route_to(&self, unit: String) -> Route {
        let sink = self.units.get(&unit).map_or("inbox", |known| known.sink);
        Route { unit, sink }
    }

    pub fn is_unit(&self, unit: &str) -> bool {
        self.units.contains_key(unit)
    }

    pub fn unit_name(&self, unit: &str) -> Option<&str> {
        self.units.get(unit).map(|known| known.name.as_str())
    }

    /// The units whose leads `unit` sees: itself and every unit below it. A unit not in the
    /// table sees only its own.
    pub fn visible_units(&self, unit: &str) -> Vec<String> {
        let mut visible = BTreeSet::from([unit.to_owned()]);
        // The table is a tree (checked in `new`), so adding children until nothing changes
        // ends.
        loop {
            let before = visible.len();
            for (id, known) in &self.units {
                if known.parent.as_ref().is_some_and(|p| visible.contains(p)) {
                    visible.insert(id.clone());
                }
            }
            if visible.len() == before {
                break;
            }
        }
        visible.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing() -> Routing {
        Routing::new(&PoliceSettings::default()).unwrap()
    }

    fn units(routed: &Routed) -> Vec<&str> {
        routed.routes.iter().map(|r| r.unit.as_str()).collect()
    }

    #[test]
    fn each_zibo_district_goes_to_its_own_unit() {
        for code in [
            "370302", "370303", "370304", "370305", "370306", "370321", "370322", "370323",
        ] {
            let routed = routing().route(code, false);
            assert_eq!(units(&routed), vec![code]);
            assert!(!routed.forwarding_task);
        }
    }

    #[test]
    fn high_priority_leads_also_reach_the_city_unit() {
        assert_eq!(
            units(&routing().route("370305", true)),
            vec!["370305", "370300"]
        );
    }

    #[test]
    fn a_lead_outside_every_unit_is_a_forwarding_task_of_the_fallback() {
        for high in [false, true] {
            let routed = routing().route("110105", high);
            assert_eq!(units(&routed), vec!["370300"]);
            assert!(routed.forwarding_task, "high = {high}");
        }
        assert!(
            !routing().route("370399", false).forwarding_task,
            "370300 covers 3703"
        );
    }

    #[test]
    fn the_city_unit_sees_every_district_and_a_district_only_itself() {
        let routing = routing();
        let city = routing.visible_units("370300");
        assert_eq!(city.len(), 9, "{city:?}");
        assert!(city.contains(&"370323".to_owned()));
        assert_eq!(routing.visible_units("370303"), vec!["370303".to_owned()]);
        assert_eq!(routing.visible_units("999999"), vec!["999999".to_owned()]);
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
        let mut settings = PoliceSettings::default();
        settings.units[0].parent = Some("999999".into());
        assert!(matches!(
            Routing::new(&settings),
            Err(RoutingError::UnknownParent { .. })
        ));
        let mut settings = PoliceSettings::default();
        let city = settings
            .units
            .iter_mut()
            .find(|u| u.id == "370300")
            .unwrap();
        city.parent = Some("370303".into());
        let error = Routing::new(&settings).unwrap_err();
        assert!(matches!(error, RoutingError::Cycle(_)), "{error}");
    }
}
