//! `elasticsearch.redaction`: attributes deleted or hashed, and secrets
//! found inside values, before documents are written (applied by
//! `sink::redact` and `sink::scrub`).

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RedactionConfig {
    /// Mixed into hashes, so hashed values cannot be looked up in a table
    /// of hashes of likely values.
    pub salt: String,
    pub rules: Vec<RedactionRule>,
    /// Rules over attribute values: what they find inside a string value is
    /// replaced or hashed, the rest of the value stays.
    pub values: Vec<ValueRule>,
}

/// Finds secrets inside string values: a built-in detector or a regex.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueRule {
    /// Names the rule in `tailsift_redacted_values_total{rule}` and in the
    /// default replacement; default: the detector's name, else "pattern".
    pub name: Option<String>,
    pub detect: Option<ValueDetector>,
    pub pattern: Option<String>,
    /// Only matches whose digits pass the Luhn check (card numbers).
    #[serde(default)]
    pub luhn: bool,
    pub action: ValueAction,
    /// Text for `replace`; default `[redacted:<name>]`.
    pub replacement: Option<String>,
}

impl ValueRule {
    pub fn name(&self) -> String {
        match (&self.name, self.detect) {
            (Some(n), _) => n.clone(),
            (None, Some(d)) => d.name().to_string(),
            (None, None) => "pattern".into(),
        }
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        match (&self.detect, &self.pattern) {
            (Some(_), Some(_)) => Err("set `detect` or `pattern`, not both".into()),
            (None, None) => Err("needs `detect` or `pattern`".into()),
            (None, Some(p)) => regex::Regex::new(p)
                .map(|_| ())
                .map_err(|e| format!("pattern: {e}")),
            (Some(_), None) => Ok(()),
        }
    }
}

/// Built-in detectors (their patterns and checks are in `sink::scrub`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ValueDetector {
    /// `local@domain.tld`.
    Email,
    /// 13–19 digits, optionally grouped by spaces or dashes, passing Luhn.
    CardNumber,
    /// US social security numbers `AAA-GG-SSSS`, without the never-issued
    /// areas 000, 666, 9xx, group 00 or serial 0000.
    Ssn,
    /// `Bearer <token>` with a token of 8 characters or more
    /// (Authorization header values).
    BearerToken,
}

impl ValueDetector {
    pub fn name(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::CardNumber => "card_number",
            Self::Ssn => "ssn",
            Self::BearerToken => "bearer_token",
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ValueAction {
    /// Replace the match with `replacement`.
    Replace,
    /// Replace the match with `sha256:<hex>` of salt + match, so equal
    /// values still group together.
    Hash,
}

/// Matches attribute keys (span and resource attributes, event fields,
/// Jaeger tags and log fields) exactly or by regex.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionRule {
    #[serde(default)]
    pub keys: Vec<String>,
    pub key_pattern: Option<String>,
    pub action: RedactionAction,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RedactionAction {
    /// Remove the attribute.
    Delete,
    /// Replace the value with `sha256:<hex>` of salt + value.
    Hash,
}

impl RedactionRule {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.keys.is_empty() && self.key_pattern.is_none() {
            return Err("needs `keys` or `key_pattern`".into());
        }
        match &self.key_pattern {
            Some(p) => regex::Regex::new(p)
                .map(|_| ())
                .map_err(|e| format!("key_pattern: {e}")),
            None => Ok(()),
        }
    }
}
