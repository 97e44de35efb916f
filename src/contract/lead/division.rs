//! GB/T 2260 administrative division codes, from a versioned table shipped inside the binary.
//!
//! The table keeps retired codes: they stay meaningful inside old identity numbers and old
//! records, but a lead's location must be a county-level code in force today.

use std::collections::HashMap;
use std::fmt;

/// The edition of `data/gbt2260_divisions.csv` compiled into this binary.
pub const DIVISION_TABLE_VERSION: &str = "gbt2260-stdnum-2026-01";

const DIVISIONS_CSV: &str = include_str!("../../../data/gbt2260_divisions.csv");

/// Six digits; whether the code exists is a question for [`DivisionTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DivisionCode([u8; 6]);

impl DivisionCode {
    pub fn parse(text: &str) -> Option<Self> {
        let bytes: [u8; 6] = text.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(u8::is_ascii_digit)
            .then_some(DivisionCode(bytes))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("division codes are ASCII digits")
    }

    /// The province code (`PP0000`) this code belongs to.
    pub fn province(&self) -> DivisionCode {
        DivisionCode([self.0[0], self.0[1], b'0', b'0', b'0', b'0'])
    }

    /// The prefecture code (`PPCC00`) this code belongs to.
    pub fn prefecture(&self) -> DivisionCode {
        DivisionCode([self.0[0], self.0[1], self.0[2], self.0[3], b'0', b'0'])
    }
}

impl fmt::Display for DivisionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DivisionLevel {
    Province,
    Prefecture,
    County,
    /// Historical 市辖区 roll-up codes: never valid for new records.
    Aggregate,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Division {
    pub code: DivisionCode,
    pub name: String,
    pub level: DivisionLevel,
    pub valid_from_year: Option<u16>,
    pub valid_until_year: Option<u16>,
}

impl Division {
    /// A code is in force when the table knows no year it went out of use.
    pub fn in_force(&self) -> bool {
        self.valid_until_year.is_none()
    }
}

/// The loaded division table.
#[derive(Debug)]
pub struct DivisionTable {
    by_code: HashMap<DivisionCode, Division>,
}

#[derive(Debug, thiserror::Error)]
#[error("division table line {line}: {reason}")]
pub struct DivisionTableError {
    line: usize,
    reason: String,
}

impl DivisionTable {
    /// The table compiled into the binary.
    pub fn built_in() -> Result<Self, DivisionTableError> {
        Self::from_csv(DIVISIONS_CSV)
    }

    pub fn from_csv(text: &str) -> Result<Self, DivisionTableError> {
        let mut by_code = HashMap::new();
        for (index, line) in text.lines().enumerate().skip(1) {
            let line_no = index + 1;
            if line.trim().is_empty() {
                continue;
            }
            let fail = |reason: String| DivisionTableError {
                line: line_no,
                reason,
            };
            let fields = split_csv_line(line).map_err(fail)?;
            let [code, name, level, from, until] = <[String; 5]>::try_from(fields)
                .map_err(|f| fail(format!("expected 5 fields, found {}", f.len())))?;
            let code =
                DivisionCode::parse(&code).ok_or_else(|| fail(format!("bad code {code:?}")))?;
            let level = match level.as_str() {
                "province" => DivisionLevel::Province,
                "prefecture" => DivisionLevel::Prefecture,
                "county" => DivisionLevel::County,
                "aggregate" => DivisionLevel::Aggregate,
                other => return Err(fail(format!("bad level {other:?}"))),
            };
            let year = |text: &str| -> Result<Option<u16>, DivisionTableError> {
                if text.is_empty() {
                    Ok(None)
                } else {
                    text.parse()
                        .map(Some)
                        .map_err(|_| fail(format!("bad year {text:?}")))
                }
            };
            let division = Division {
                code,
                name,
                level,
                valid_from_year: year(&from)?,
                valid_until_year: year(&until)?,
            };
            if by_code.insert(code, division).is_some() {
                return Err(fail(format!("duplicate code {code}")));
            }
        }
        Ok(DivisionTable { by_code })
    }

    pub fn get(&self, code: DivisionCode) -> Option<&Division> {
        self.by_code.get(&code)
    }

    pub fn len(&self) -> usize {
        self.by_code.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_code.is_empty()
    }
}

/// Splits one RFC 4180 line: fields may be quoted, quoted fields may hold commas and `""`.
fn split_csv_line(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (_, c) => field.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    fields.push(field);
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> DivisionTable {
        DivisionTable::built_in().expect("the built-in table loads")
    }

    #[test]
    fn the_built_in_table_covers_every_province() {
        let table = table();
        assert!(table.len() > 6000, "only {} codes", table.len());
        let provinces = table
            .by_code
            .values()
            .filter(|d| d.level == DivisionLevel::Province && d.in_force())
            .count();
        assert!(provinces >= 31, "only {provinces} provinces in force");
    }

    #[test]
    fn zibo_districts_are_county_level_and_in_force() {
        let table = table();
        for code in [
            "370302", "370303", "370304", "370305", "370306", "370321", "370322", "370323",
        ] {
            let division = table.get(DivisionCode::parse(code).unwrap()).unwrap();
            assert_eq!(division.level, DivisionLevel::County, "{code}");
            assert!(division.in_force(), "{code}");
        }
        assert_eq!(
            table
                .get(DivisionCode::parse("370303").unwrap())
                .unwrap()
                .name,
            "张店区"
        );
    }

    #[test]
    fn retired_aggregate_and_unknown_codes_are_told_apart() {
        let table = table();
        let old = table.get(DivisionCode::parse("372828").unwrap()).unwrap();
        assert!(!old.in_force());
        let aggregate = table.get(DivisionCode::parse("370301").unwrap()).unwrap();
        assert_eq!(aggregate.level, DivisionLevel::Aggregate);
        assert!(table.get(DivisionCode::parse("370399").unwrap()).is_none());
    }

    #[test]
    fn quoted_fields_with_commas_are_one_field() {
        assert_eq!(
            split_csv_line(r#"372300,"惠民地区,[1992-1999]滨州地区",prefecture,,1991"#).unwrap(),
            vec![
                "372300",
                "惠民地区,[1992-1999]滨州地区",
                "prefecture",
                "",
                "1991"
            ]
        );
        assert!(split_csv_line(r#"1,"open"#).is_err());
    }

    #[test]
    fn malformed_tables_are_rejected_with_the_line() {
        let error =
            DivisionTable::from_csv("code,name,level,from,until\n37030X,x,county,,\n").unwrap_err();
        assert!(error.to_string().contains("line 2"), "{error}");
        assert!(DivisionTable::from_csv("h\n370303,x,town,,\n").is_err());
    }

    #[test]
    fn division_codes_know_their_parents() {
        let code = DivisionCode::parse("370303").unwrap();
        assert_eq!(code.province().as_str(), "370000");
        assert_eq!(code.prefecture().as_str(), "370300");
        assert!(DivisionCode::parse("37030").is_none());
        assert!(DivisionCode::parse("37030a").is_none());
    }
}
