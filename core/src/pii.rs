//! Residents' personal data: ID-card numbers (身份证号, GB 11643) and phone numbers.
//!
//! Lists and exports show only masked forms; errors never echo the value.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};

/// A resident ID-card number whose check digit is valid. `Debug` and `Display` show it masked.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdNumber(String);

const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK: &[u8; 11] = b"10X98765432";

impl IdNumber {
    /// Validates an 18-character number: digits, a plausible birth date and the GB 11643 check digit.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_uppercase();
        let b = s.as_bytes();
        if b.len() != 18 || !b[..17].iter().all(u8::is_ascii_digit) {
            return Err(CoreError::InvalidIdNumber);
        }
        let digit = |i: usize| u32::from(b[i] - b'0');
        let birth = &s[6..14];
        if chrono::NaiveDate::parse_from_str(birth, "%Y%m%d").is_err() || &s[6..8] < "18" {
            return Err(CoreError::InvalidIdNumber);
        }
        let sum: u32 = (0..17).map(|i| digit(i) * WEIGHTS[i]).sum();
        if CHECK[(sum % 11) as usize] != b[17] {
            return Err(CoreError::InvalidIdNumber);
        }
        Ok(Self(s))
    }

    /// The full number, for those whose work needs it.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// The masked form shown in lists and exports: `5323**********1234`.
    pub fn masked(&self) -> String {
        mask_id_number(&self.0)
    }
}

/// Masks an ID-card number: keeps the first 4 and last 4 characters.
pub fn mask_id_number(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let mut out: String = chars[..4].iter().collect();
    out.push_str(&"*".repeat(chars.len() - 8));
    out.extend(&chars[chars.len() - 4..]);
    out
}

/// Masks a phone number: `138****5678`.
pub fn mask_phone(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() < 7 {
        return "*".repeat(chars.len());
    }
    let mut out: String = chars[..3].iter().collect();
    out.push_str(&"*".repeat(chars.len() - 7));
    out.extend(&chars[chars.len() - 4..]);
    out
}

/// Masks what looks like an ID number (17 digits and a digit or X) or a mainland mobile number
/// (11 digits starting with 13–19) inside free text, e.g. a description typed by a resident:
/// `联系13812345678` → `联系138****5678`. Digit runs of other lengths are left as they are.
pub fn mask_in_text(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && chars[i].is_ascii_digit() {
            i += 1;
        }
        if i - start == 17 && i < chars.len() && matches!(chars[i], 'X' | 'x') {
            i += 1;
        }
        let run: String = chars[start..i].iter().collect();
        let mobile = run.len() == 11 && run.starts_with('1') && matches!(run.as_bytes()[1], b'3'..=b'9');
        out.push_str(&match run.len() {
            18 => mask_id_number(&run),
            _ if mobile => mask_phone(&run),
            _ => run,
        });
    }
    out
}

/// Checks a mainland mobile (11 digits starting with 1) or landline (digits and one dash) number.
pub fn validate_phone(s: &str) -> Result<()> {
    let mobile = s.len() == 11 && s.starts_with('1') && s.bytes().all(|b| b.is_ascii_digit());
    let landline =
        (7..=13).contains(&s.len()) && s.bytes().filter(|b| *b == b'-').count() <= 1 && s.bytes().all(|b| b.is_ascii_digit() || b == b'-');
    if mobile || landline { Ok(()) } else { Err(CoreError::InvalidPhone) }
}

impl TryFrom<String> for IdNumber {
    type Error = CoreError;
    fn try_from(s: String) -> Result<Self> {
        IdNumber::parse(&s)
    }
}

impl From<IdNumber> for String {
    fn from(n: IdNumber) -> String {
        n.0
    }
}

impl fmt::Debug for IdNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdNumber({})", self.masked())
    }
}

impl fmt::Display for IdNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Masks a personal name for lists: `张*明` / `李*`.
pub fn mask_name(s: &str) -> String {
    let chars: Vec<char> = s.trim().chars().collect();
    match chars.len() {
        0 => String::new(),
        1 => chars[0].to_string(),
        2 => format!("{}*", chars[0]),
        n => format!("{}{}{}", chars[0], "*".repeat(n - 2), chars[n - 1]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_free_text_are_masked() {
        assert_eq!(mask_in_text("联系人13812345678,身份证11010519491231002X。"), "联系人138****5678,身份证1101**********002X。");
        assert_eq!(mask_in_text("532331196204151237号"), "5323**********1237号");
        // Other digit runs stay: a house number, a date, a 12-digit unit code, 11 digits not a mobile.
        assert_eq!(mask_in_text("东街4号 2026-11-23 532331101201 10012345678"), "东街4号 2026-11-23 532331101201 10012345678");
        assert_eq!(mask_in_text("138123456789"), "138123456789", "12 digits are not a mobile number");
    }

    #[test]
    fn check_digit() {
        // A well-known valid sample number (GB 11643 example).
        assert!(IdNumber::parse("11010519491231002X").is_ok());
        assert!(IdNumber::parse("110105194912310021").is_err());
        assert!(IdNumber::parse("11010519491331002X").is_err(), "month 13");
        assert!(IdNumber::parse("1101051949123100").is_err());
        let n = IdNumber::parse("11010519491231002x").unwrap();
        assert_eq!(n.masked(), "1101**********002X");
        assert!(!format!("{n:?}").contains("19491231"));
        let err = IdNumber::parse("110105194912310021").unwrap_err().to_string();
        assert!(!err.contains("110105"));
    }

    #[test]
    fn phones() {
        assert_eq!(mask_phone("13812345678"), "138****5678");
        assert!(validate_phone("13812345678").is_ok());
        assert!(validate_phone("0878-4123456").is_ok());
        assert!(validate_phone("2381234567a").is_err());
    }
}
