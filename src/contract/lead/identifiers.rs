//! 统一社会信用代码 (GB 32100-2015) and 公民身份号码 (GB 11643-1999).
//!
//! Both are parsed once into newtypes that guarantee format and check character. The ID
//! number's address code is deliberately not checked against today's division table: the code
//! is the one in force when the number was assigned (`domain.md` §1.2), so retired codes stay
//! valid on existing numbers.

use std::fmt;

use chrono::{Datelike, NaiveDate};

/// The 31 characters of GB 32100, in value order (I, O, S, V, Z are excluded).
const USCC_CHARSET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
/// `3^(i-1) mod 31` for positions 1..=17.
const USCC_WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];

/// A unified social credit code with a correct check character.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Uscc(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsccError {
    #[error(
        "a unified social credit code has 18 characters from 0-9 and A-Y without I, O, S, V, Z"
    )]
    Format,
    #[error("check character should be '{expected}'")]
    Checksum { expected: char },
}

impl Uscc {
    pub fn parse(text: &str) -> Result<Self, UsccError> {
        let bytes = text.as_bytes();
        if bytes.len() != 18 {
            return Err(UsccError::Format);
        }
        let mut values = [0u32; 18];
        for (slot, byte) in values.iter_mut().zip(bytes) {
            let value = USCC_CHARSET
                .iter()
                .position(|c| c == byte)
                .ok_or(UsccError::Format)?;
            *slot = value as u32;
        }
        // Positions 3–8 are a registration division code: six digits.
        if !bytes[2..8].iter().all(u8::is_ascii_digit) {
            return Err(UsccError::Format);
        }
        let sum: u32 = values[..17]
            .iter()
            .zip(USCC_WEIGHTS)
            .map(|(value, weight)| value * weight)
            .sum();
        let expected = USCC_CHARSET[((31 - sum % 31) % 31) as usize];
        if bytes[17] != expected {
            return Err(UsccError::Checksum {
                expected: expected as char,
            });
        }
        Ok(Uscc(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Uscc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `2^(18-i) mod 11` for positions 1..=17 (ISO 7064 MOD 11-2).
const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const ID_CHECK_CHARS: &[u8; 11] = b"10X98765432";

/// An 18-character resident identity number with a real birth date and a correct check
/// character. A lowercase `x` is accepted and stored upper-case.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdNumber {
    text: String,
    birth_date: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdNumberError {
    #[error("an identity number has 17 digits and a check character (digit or X)")]
    Format,
    #[error("{0} is not a real birth date")]
    Date(String),
    #[error("birth date {0} is in the future")]
    FutureDate(NaiveDate),
    #[error("check character should be '{expected}'")]
    Checksum { expected: char },
}

impl IdNumber {
    /// Parses `text`; `today` bounds the birth date.
    pub fn parse(text: &str, today: NaiveDate) -> Result<Self, IdNumberError> {
        let upper = text.to_ascii_uppercase();
        let bytes = upper.as_bytes();
        if bytes.len() != 18
            || !bytes[..17].iter().all(u8::is_ascii_digit)
            || !(bytes[17].is_ascii_digit() || bytes[17] == b'X')
        {
            return Err(IdNumberError::Format);
        }
        let date_text = &upper[6..14];
        let birth_date = NaiveDate::parse_from_str(date_text, "%Y%m%d")
            .map_err(|_| IdNumberError::Date(date_text.to_owned()))?;
        if birth_date.year() < 1800 {
            return Err(IdNumberError::Date(date_text.to_owned()));
        }
        if birth_date > today {
            return Err(IdNumberError::FutureDate(birth_date));
        }
        let sum: u32 = bytes[..17]
            .iter()
            .zip(ID_WEIGHTS)
            .map(|(digit, weight)| u32::from(digit - b'0') * weight)
            .sum();
        let expected = ID_CHECK_CHARS[(sum % 11) as usize];
        if bytes[17] != expected {
            return Err(IdNumberError::Checksum {
                expected: expected as char,
            });
        }
        Ok(IdNumber {
            text: upper,
            birth_date,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn birth_date(&self) -> NaiveDate {
        self.birth_date
    }

    /// The sequence code's parity: odd for men, even for women.
    pub fn is_male(&self) -> bool {
        (self.text.as_bytes()[16] - b'0') % 2 == 1
    }

    /// The address code in force when the number was assigned.
    pub fn address_code(&self) -> &str {
        &self.text[..6]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()
    }

    #[test]
    fn the_domain_reference_usccs_pass() {
        for code in [
            "91110000600037341L",
            "91370303MA3C4B2D1E",
            "11370300004188000F",
        ] {
            assert_eq!(Uscc::parse(code).unwrap().as_str(), code);
        }
    }

    #[test]
    fn a_wrong_uscc_check_character_names_the_right_one() {
        assert_eq!(
            Uscc::parse("91110000600037341A"),
            Err(UsccError::Checksum { expected: 'L' })
        );
    }

    #[test]
    fn malformed_usccs_are_format_errors() {
        for code in [
            "",
            "9111000060003734",
            "91110000600037341LL",
            "9111000060003734IL",
            "91AB0000600037341L",
        ] {
            assert_eq!(Uscc::parse(code), Err(UsccError::Format), "{code}");
        }
    }

    #[test]
    fn the_domain_reference_id_numbers_pass() {
        for id in [
            "370303199003070013",
            "370323199012310029",
            "37032119950520108X",
            "370305198506151518",
            "11010519491231002X",
        ] {
            assert_eq!(IdNumber::parse(id, today()).unwrap().as_str(), id);
        }
    }

    #[test]
    fn a_lowercase_x_is_accepted_and_upper_cased() {
        let id = IdNumber::parse("37032119950520108x", today()).unwrap();
        assert_eq!(id.as_str(), "37032119950520108X");
    }

    #[test]
    fn id_number_facts_are_read_from_the_number() {
        let id = IdNumber::parse("370303199003070013", today()).unwrap();
        assert_eq!(
            id.birth_date(),
            NaiveDate::from_ymd_opt(1990, 3, 7).unwrap()
        );
        assert!(id.is_male());
        assert_eq!(id.address_code(), "370303");
        assert!(!IdNumber::parse("370323199012310029", today())
            .unwrap()
            .is_male());
    }

    #[test]
    fn historical_address_codes_are_not_rejected() {
        // 370323 沂源县 dates from 1989; a 1985 birth under it is still a valid number.
        assert!(IdNumber::parse("370323198512310020", today()).is_ok());
    }

    #[test]
    fn a_wrong_id_check_character_names_the_right_one() {
        assert_eq!(
            IdNumber::parse("370303199003070010", today()),
            Err(IdNumberError::Checksum { expected: '3' })
        );
    }

    #[test]
    fn impossible_and_future_birth_dates_are_rejected() {
        assert_eq!(
            IdNumber::parse("370303199002300013", today()),
            Err(IdNumberError::Date("19900230".into()))
        );
        assert!(matches!(
            IdNumber::parse("370303203003070013", today()),
            Err(IdNumberError::FutureDate(_))
        ));
    }

    #[test]
    fn malformed_id_numbers_are_format_errors() {
        for id in [
            "",
            "37030319900307001",
            "3703031990030700133",
            "37030319900307001Y",
            "3703031990030700X3",
        ] {
            assert_eq!(
                IdNumber::parse(id, today()),
                Err(IdNumberError::Format),
                "{id}"
            );
        }
    }
}
