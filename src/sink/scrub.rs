//! Secrets inside attribute values: e-mail addresses, card numbers, social
//! security numbers, bearer tokens, or any regex. Only what a rule finds is
//! replaced or hashed; the rest of the value stays readable (`user
//! a@b.example logged in` becomes `user [redacted:email] logged in`).
//!
//! A regex alone flags every 16-digit order number as a card number; the
//! built-in detectors check what they match (Luhn, the SSN ranges never
//! issued) before they touch it.

use regex::{Captures, Regex};
use sha2::{Digest, Sha256};

use crate::config::{ValueAction, ValueDetector, ValueRule};

/// `sha256:<hex>` of salt + value: equal values still group together, and
/// the salt keeps them from being looked up in a table of likely values.
pub fn salted_sha256(salt: &str, value: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(value.as_bytes());
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// What a match must pass besides the regex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    None,
    Luhn,
    Ssn,
}

impl Check {
    fn passes(self, found: &str) -> bool {
        match self {
            Self::None => true,
            Self::Luhn => luhn(found),
            Self::Ssn => issuable_ssn(found),
        }
    }
}

fn builtin(detector: ValueDetector) -> (&'static str, Check) {
    match detector {
        ValueDetector::Email => (
            r"(?i)[a-z0-9._%+-]+@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.[a-z]{2,}",
            Check::None,
        ),
        ValueDetector::CardNumber => (r"\b\d(?:[ -]?\d){12,18}\b", Check::Luhn),
        ValueDetector::Ssn => (r"\b\d{3}-\d{2}-\d{4}\b", Check::Ssn),
        ValueDetector::BearerToken => (r"(?i)\bbearer\s+[a-z0-9._~+/-]{8,}=*", Check::None),
    }
}

/// The Luhn checksum over the digits of `s` (separators ignored), for 13
/// to 19 digits: the lengths of payment card numbers.
fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| match (i % 2, d * 2) {
            (0, _) => d,
            (_, doubled) if doubled > 9 => doubled - 9,
            (_, doubled) => doubled,
        })
        .sum();
    sum.is_multiple_of(10)
}

/// `AAA-GG-SSSS` outside the ranges never issued: area 000, 666 and
/// 900–999, group 00, serial 0000.
fn issuable_ssn(s: &str) -> bool {
    let mut parts = s.split('-');
    let (Some(area), Some(group), Some(serial)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

struct Matcher {
    regex: Regex,
    check: Check,
    action: ValueAction,
    replacement: String,
    redacted: metrics::Counter,
}

/// Compiled value rules, applied in order to every string value.
#[derive(Default)]
pub struct ValueScrubber {
    matchers: Vec<Matcher>,
    salt: String,
}

impl ValueScrubber {
    /// Compiles the rules (validated when the config was loaded).
    pub fn new(rules: &[ValueRule], salt: &str) -> Result<Self, regex::Error> {
        let matchers = rules
            .iter()
            .map(|r| {
                let name = r.name();
                let (pattern, check) = match (r.detect, &r.pattern) {
                    (Some(d), _) => builtin(d),
                    (None, Some(p)) => (p.as_str(), Check::None),
                    // Rejected by config validation; matches nothing.
                    (None, None) => ("$^", Check::None),
                };
                let check = if r.luhn { Check::Luhn } else { check };
                Ok(Matcher {
                    regex: Regex::new(pattern)?,
                    check,
                    action: r.action,
                    replacement: r
                        .replacement
                        .clone()
                        .unwrap_or_else(|| format!("[redacted:{name}]")),
                    redacted: metrics::counter!("tailsift_redacted_values_total", "rule" => name),
                })
            })
            .collect::<Result<_, regex::Error>>()?;
        Ok(Self {
            matchers,
            salt: salt.to_string(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.matchers.is_empty()
    }

    /// The value with every finding replaced, or None if nothing was found
    /// (the common case: no allocation).
    pub fn scrub(&self, value: &str) -> Option<String> {
        let mut changed: Option<String> = None;
        for m in &self.matchers {
            let current = changed.as_deref().unwrap_or(value);
            if !m.regex.is_match(current) {
                continue;
            }
            let mut found = 0u64;
            let replaced = m.regex.replace_all(current, |c: &Captures<'_>| {
                let text = &c[0];
                if !m.check.passes(text) {
                    return text.to_string();
                }
                found += 1;
                match m.action {
                    ValueAction::Replace => m.replacement.clone(),
                    ValueAction::Hash => salted_sha256(&self.salt, text),
                }
            });
            if found > 0 {
                m.redacted.increment(found);
                changed = Some(replaced.into_owned());
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(detect: ValueDetector, action: ValueAction) -> ValueRule {
        ValueRule {
            name: None,
            detect: Some(detect),
            pattern: None,
            luhn: false,
            action,
            replacement: None,
        }
    }

    fn scrubber(rules: Vec<ValueRule>) -> ValueScrubber {
        ValueScrubber::new(&rules, "pepper").expect("valid rules")
    }

    #[test]
    fn emails_are_replaced_inside_the_value() {
        let s = scrubber(vec![rule(ValueDetector::Email, ValueAction::Replace)]);
        assert_eq!(
            s.scrub("user Jane.Doe+x@mail.example.co.uk logged in, cc bob@b.io")
                .as_deref(),
            Some("user [redacted:email] logged in, cc [redacted:email]")
        );
        assert_eq!(s.scrub("no address @ here, user@localhost"), None);
    }

    #[test]
    fn card_numbers_need_a_valid_luhn_checksum() {
        let s = scrubber(vec![rule(ValueDetector::CardNumber, ValueAction::Replace)]);
        // Test numbers of the card networks, plain and grouped.
        for card in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "5500-0000-0000-0004",
            "378282246310005",
        ] {
            assert_eq!(
                s.scrub(&format!("paid with {card}.")).as_deref(),
                Some("paid with [redacted:card_number]."),
                "{card}"
            );
        }
        // Same shape, wrong checksum: an order number, left alone.
        assert_eq!(s.scrub("order 4111111111111112"), None);
        assert_eq!(s.scrub("too short 4242424242"), None);
        assert!(!luhn("79927398713"), "a valid checksum, but 11 digits");
        assert!(luhn("4242424242424242"));
    }

    #[test]
    fn ssn_like_numbers_outside_unissued_ranges() {
        let s = scrubber(vec![rule(ValueDetector::Ssn, ValueAction::Replace)]);
        assert_eq!(
            s.scrub("ssn=123-45-6789;").as_deref(),
            Some("ssn=[redacted:ssn];")
        );
        for never_issued in [
            "000-12-3456",
            "666-12-3456",
            "912-34-5678",
            "123-00-4567",
            "123-45-0000",
        ] {
            assert_eq!(s.scrub(never_issued), None, "{never_issued}");
        }
        assert_eq!(s.scrub("2024-01-1234"), None);
    }

    #[test]
    fn bearer_tokens_and_hashing() {
        let s = scrubber(vec![rule(ValueDetector::BearerToken, ValueAction::Hash)]);
        let out = s
            .scrub("Authorization: Bearer eyJhbGciOi.J9.x-y_z== trailing")
            .expect("found");
        let hash = salted_sha256("pepper", "Bearer eyJhbGciOi.J9.x-y_z==");
        assert_eq!(out, format!("Authorization: {hash} trailing"));
        // Tokens are long: prose about a bearer is left alone.
        assert_eq!(s.scrub("a bearer of news"), None);
    }

    #[test]
    fn custom_patterns_with_luhn_and_replacement_apply_in_order() {
        let s = scrubber(vec![
            ValueRule {
                name: Some("user_id".into()),
                detect: None,
                pattern: Some(r"\buid-\d+\b".into()),
                luhn: false,
                action: ValueAction::Hash,
                replacement: None,
            },
            ValueRule {
                name: Some("pan".into()),
                detect: None,
                pattern: Some(r"\d{16}".into()),
                luhn: true,
                action: ValueAction::Replace,
                replacement: Some("****".into()),
            },
        ]);
        let out = s.scrub("uid-42 paid 4111111111111111 ref 1234567812345678");
        let hash = salted_sha256("pepper", "uid-42");
        assert_eq!(
            out.as_deref(),
            Some(format!("{hash} paid **** ref 1234567812345678").as_str())
        );
        assert_eq!(s.scrub("nothing to see"), None);
    }
}
