//! Residents' personal data (个人信息): ID-card numbers (身份证号, GB 11643) and phone numbers.
//!
//! Lists and exports show only masked forms; errors never echo the value.
//!
//! ## Personal data stays out of the record documents
//!
//! A record's Automerge document holds only the **masked** forms (`5323**********1234`,
//! `138****5678`). The full values are [`Personal`] data kept beside the document: the server
//! holds them and hands them only to those whose work needs them ([`needs_personal`]); a phone
//! that must hold them keeps them sealed with a key it gets at login ([`DataKey`]) and never
//! writes to its disk.
//!
//! Why not a sealed field inside the document: a CRDT document cannot be redacted per reader —
//! every device in scope receives every change and keeps its whole history — so a sealed value
//! would need one key shared by every device that may ever read it, which then opens every
//! record of the town for as long as that device lives. Kept outside, the server decides per
//! request and per person, stops serving a revoked device at once, and no document's history
//! ever holds a clear number. A document that does hold one is refused ([`check_masked`]).

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::org::{Access, Role};
use crate::record::RecordBody;
use crate::workflow::RecordKind;

/// The personal data of one record, held outside its document: the resident's full ID number
/// and phone (a service request), the parties' phones by their place in the list (an incident).
/// `Debug` shows masked forms only.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Personal {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub party_phones: Vec<Option<String>>,
}

impl fmt::Debug for Personal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Personal")
            .field("id_number", &self.id_number.as_deref().map(mask_id_number))
            .field("phone", &self.phone.as_deref().map(mask_phone))
            .field("party_phones", &self.party_phones.iter().map(|p| p.as_deref().map(mask_phone)).collect::<Vec<_>>())
            .finish()
    }
}

impl Personal {
    /// Nothing to keep.
    pub fn is_empty(&self) -> bool {
        self.id_number.is_none() && self.phone.is_none() && self.party_phones.iter().all(Option::is_none)
    }

    /// Takes the full values out of a body about to become a document, leaving their masked
    /// forms in it.
    pub fn split(body: &mut RecordBody) -> Personal {
        let mut out = Personal::default();
        match body {
            RecordBody::ServiceRequest(f) => {
                out.id_number = f.resident.id_number.clone();
                out.phone = f.resident.phone.clone();
                f.resident.id_number = f.resident.id_number.as_deref().map(mask_id_number);
                f.resident.phone = f.resident.phone.as_deref().map(mask_phone);
            }
            RecordBody::Incident(f) => {
                out.party_phones = f.parties.iter().map(|p| p.phone.clone()).collect();
                for p in &mut f.parties {
                    p.phone = p.phone.as_deref().map(mask_phone);
                }
                if out.party_phones.iter().all(Option::is_none) {
                    out.party_phones.clear();
                }
            }
        }
        out
    }

    /// Checks the values (a valid ID number, valid phones) and that the record's document shows
    /// exactly their masked forms. Errors name the field, never the value.
    pub fn check_against(&self, body: &RecordBody) -> Result<()> {
        let fits = |clear: &Option<String>, shown: &Option<String>, mask: fn(&str) -> String| match (clear, shown) {
            (Some(c), Some(s)) => mask(c) == *s,
            (None, _) => true,
            (Some(_), None) => false,
        };
        if let Some(n) = &self.id_number {
            IdNumber::parse(n)?;
        }
        for p in self.phone.iter().chain(self.party_phones.iter().flatten()) {
            validate_phone(p)?;
        }
        let ok = match body {
            RecordBody::ServiceRequest(f) => {
                self.party_phones.is_empty()
                    && fits(&self.id_number, &f.resident.id_number, mask_id_number)
                    && fits(&self.phone, &f.resident.phone, mask_phone)
            }
            RecordBody::Incident(f) => {
                self.id_number.is_none()
                    && self.phone.is_none()
                    && self.party_phones.len() <= f.parties.len()
                    && self.party_phones.iter().zip(&f.parties).all(|(c, p)| fits(c, &p.phone, mask_phone))
            }
        };
        if ok { Ok(()) } else { Err(CoreError::InvalidInput("个人信息与记录中显示的遮蔽号码不一致".into())) }
    }
}

/// The values a record's document shows unmasked: (field label, value).
fn unmasked(body: &RecordBody) -> Vec<(&'static str, &str)> {
    let mut out = Vec::new();
    match body {
        RecordBody::ServiceRequest(f) => {
            out.extend(f.resident.id_number.as_deref().filter(|s| mask_id_number(s) != *s).map(|s| ("身份证号", s)));
            out.extend(f.resident.phone.as_deref().filter(|s| mask_phone(s) != *s).map(|s| ("联系电话", s)));
        }
        RecordBody::Incident(f) => {
            out.extend(f.parties.iter().filter_map(|p| p.phone.as_deref()).filter(|s| mask_phone(s) != *s).map(|s| ("当事人电话", s)));
        }
    }
    out
}

/// Refuses a change that writes an unmasked ID number or phone into a record's document:
/// personal data is never written into a document (see the module doc). A value the record
/// already showed before the change (a record made by an older app) does not count against it.
/// Returns the field's label, never the value.
pub fn check_masked(before: Option<&RecordBody>, after: &RecordBody) -> std::result::Result<(), &'static str> {
    let had = before.map(unmasked).unwrap_or_default();
    match unmasked(after).into_iter().find(|v| !had.contains(v)) {
        Some((field, _)) => Err(field),
        None => Ok(()),
    }
}

/// Who needs the full personal data of a record: those who work the case with full access to
/// it. Service requests: the station clerk (代办员) and the department handling it. Incidents
/// (the parties' phones): the grid member, the station, the center and the department that
/// handle it. Village heads, town leaders, administrators, and anyone reading only, see masked
/// forms.
pub fn needs_personal(kind: RecordKind, role: Role, access: Access) -> bool {
    if access != Access::Full {
        return false;
    }
    match kind {
        RecordKind::ServiceRequest => matches!(role, Role::StationStaff | Role::DepartmentHandler),
        RecordKind::Incident => matches!(role, Role::GridMember | Role::StationStaff | Role::CenterOperator | Role::DepartmentHandler),
    }
}

/// A device's key for the personal data it keeps (32 bytes). The server makes one per device at
/// login and forgets it when the device is revoked; the phone keeps it in memory (and, in the
/// app, in the platform's key store), never in its database. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey([u8; 32]);

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(…)")
    }
}

impl DataKey {
    /// A new random key.
    pub fn generate() -> Self {
        Self(rand::random())
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let key: [u8; 32] = bytes.try_into().map_err(|_| CoreError::InvalidInput("个人信息密钥应为32字节".into()))?;
        Ok(Self(key))
    }

    /// The key's bytes (to hand to the platform's key store).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Seals a record's personal data: a random 12-byte nonce, then ChaCha20-Poly1305 ciphertext
    /// bound to the record's id.
    pub fn seal(&self, doc_id: &str, data: &Personal) -> Vec<u8> {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        let nonce: [u8; 12] = rand::random();
        let msg = serde_json::to_vec(data).expect("serialisable");
        let sealed =
            cipher.encrypt(Nonce::from_slice(&nonce), Payload { msg: &msg, aad: doc_id.as_bytes() }).expect("in-memory encryption");
        let mut out = nonce.to_vec();
        out.extend(sealed);
        out
    }

    /// Opens what [`DataKey::seal`] sealed for the same record with the same key.
    pub fn open(&self, doc_id: &str, sealed: &[u8]) -> Result<Personal> {
        let bad = || CoreError::InvalidInput("个人信息无法用本机密钥解开".into());
        if sealed.len() < 12 {
            return Err(bad());
        }
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        let msg =
            cipher.decrypt(Nonce::from_slice(&sealed[..12]), Payload { msg: &sealed[12..], aad: doc_id.as_bytes() }).map_err(|_| bad())?;
        serde_json::from_slice(&msg).map_err(|_| bad())
    }
}

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
    fn sealed_personal_data_opens_only_with_its_key_and_record() {
        let data = Personal { id_number: Some("11010519491231002X".into()), phone: Some("13812345678".into()), party_phones: vec![] };
        let key = DataKey::generate();
        let sealed = key.seal("doc-1", &data);
        assert!(!sealed.windows(11).any(|w| w == b"13812345678"));
        assert_eq!(key.open("doc-1", &sealed).unwrap(), data);
        assert!(key.open("doc-2", &sealed).is_err(), "bound to its record");
        assert!(DataKey::generate().open("doc-1", &sealed).is_err(), "another device's key");
        assert!(!format!("{data:?}").contains("13812345678"));
    }

    #[test]
    fn masked_forms_are_fixed_points() {
        for v in ["11010519491231002X", "13812345678", "0871-6123456"] {
            let m = if v.len() == 18 { mask_id_number(v) } else { mask_phone(v) };
            assert_ne!(m, v);
            assert_eq!(if v.len() == 18 { mask_id_number(&m) } else { mask_phone(&m) }, m);
        }
    }

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
