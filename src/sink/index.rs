//! Index names: Jaeger's daily indices (`<prefix>jaeger-span-YYYY-MM-DD`,
//! day = the span's start in UTC) or, in alias mode, the rollover write
//! aliases (`<prefix>jaeger-span-write`).

use chrono::{Datelike, NaiveDate};

const MICROS_PER_DAY: u64 = 86_400_000_000;
/// Days from 0001-01-01 (chrono's day 1) to 1970-01-01.
const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// A UTC calendar day, as days since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Day(pub u32);

impl Day {
    pub fn from_micros(unix_micros: u64) -> Self {
        Self(u32::try_from(unix_micros / MICROS_PER_DAY).unwrap_or(u32::MAX))
    }

    /// `YYYY-MM-DD`.
    pub fn date(&self) -> String {
        let days = i32::try_from(self.0).unwrap_or(i32::MAX - UNIX_EPOCH_DAYS_FROM_CE);
        let date = NaiveDate::from_num_days_from_ce_opt(UNIX_EPOCH_DAYS_FROM_CE + days)
            .unwrap_or(NaiveDate::MAX);
        format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day())
    }
}

/// The kinds of documents and where each goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Span,
    Service,
    /// Service dependency links (`dependencies`).
    Dependencies,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Span, Kind::Service, Kind::Dependencies];
}

impl Kind {
    /// The index family, `jaeger-span` or `jaeger-service`.
    pub fn base(self) -> &'static str {
        match self {
            Kind::Span => "jaeger-span",
            Kind::Service => "jaeger-service",
            Kind::Dependencies => "jaeger-dependencies",
        }
    }
}

#[derive(Clone, Debug)]
pub struct IndexNames {
    /// Empty, or ending in `-` (see `Config::index_prefix`).
    prefix: String,
    use_aliases: bool,
}

impl IndexNames {
    pub fn new(prefix: &str, use_aliases: bool) -> Self {
        Self {
            prefix: prefix.to_string(),
            use_aliases,
        }
    }

    /// Where documents of `kind` starting on `day` are written.
    pub fn write_target(&self, kind: Kind, day: Day) -> String {
        match self.use_aliases {
            true => self.write_alias(kind),
            false => format!("{}{}-{}", self.prefix, kind.base(), day.date()),
        }
    }

    /// Empty, or ending in `-`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn uses_aliases(&self) -> bool {
        self.use_aliases
    }

    /// `<prefix>jaeger-span-*`: what the templates apply to.
    pub fn pattern(&self, kind: Kind) -> String {
        format!("{}{}-*", self.prefix, kind.base())
    }

    /// Template name; the same as Jaeger's, so the two never fight over
    /// overlapping patterns.
    pub fn template(&self, kind: Kind) -> String {
        format!("{}{}", self.prefix, kind.base())
    }

    pub fn write_alias(&self, kind: Kind) -> String {
        format!("{}{}-write", self.prefix, kind.base())
    }

    pub fn read_alias(&self, kind: Kind) -> String {
        format!("{}{}-read", self.prefix, kind.base())
    }

    /// The first rollover index behind the aliases, as Jaeger's
    /// `es-rollover init` names it.
    pub fn initial_rollover_index(&self, kind: Kind) -> String {
        format!("{}{}-000001", self.prefix, kind.base())
    }

    /// Checks the prefix and every name made from it against
    /// Elasticsearch's index-name rules, so that a bad prefix fails at
    /// load instead of every bulk item failing with 400. The action lines
    /// rely on it too: names are written into JSON unescaped.
    pub fn validate(&self) -> Result<(), String> {
        let prefix = self.prefix.trim_end_matches('-');
        if matches!(prefix, "." | "..") {
            return Err(format!("'{}' is not allowed", self.prefix));
        }
        // The longest day name stands for every day.
        let day = Day(2_932_896); // 9999-12-31
        for kind in Kind::ALL {
            for name in [
                format!("{}{}-{}", self.prefix, kind.base(), day.date()),
                self.write_alias(kind),
                self.read_alias(kind),
                self.initial_rollover_index(kind),
            ] {
                check_index_name(&name)?;
            }
        }
        Ok(())
    }
}

/// Elasticsearch's rules for index and alias names.
fn check_index_name(name: &str) -> Result<(), String> {
    const FORBIDDEN: &[char] = &['\\', '/', '*', '?', '"', '<', '>', '|', ',', '#', ' ', ':'];
    if name.len() > 255 {
        return Err(format!("'{name}' is longer than 255 bytes"));
    }
    if name.chars().any(|c| c.is_uppercase()) {
        return Err(format!("'{name}' must be lowercase"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| FORBIDDEN.contains(c) || c.is_control())
    {
        return Err(format!("'{name}' must not contain {c:?}"));
    }
    if name.starts_with(['-', '_', '+']) {
        return Err(format!("'{name}' must not start with '-', '_' or '+'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_names_by_utc_start_day() {
        let names = IndexNames::new("prod-", false);
        // 2024-02-29T23:59:59.999999Z and one microsecond later.
        let before = 1_709_251_199_999_999;
        assert_eq!(
            names.write_target(Kind::Span, Day::from_micros(before)),
            "prod-jaeger-span-2024-02-29"
        );
        assert_eq!(
            names.write_target(Kind::Service, Day::from_micros(before + 1)),
            "prod-jaeger-service-2024-03-01"
        );
        assert_eq!(Day::from_micros(0).date(), "1970-01-01");
        assert_eq!(names.pattern(Kind::Span), "prod-jaeger-span-*");
    }

    #[test]
    fn names_follow_elasticsearch_rules() {
        assert!(IndexNames::new("prod.eu-1-", true).validate().is_ok());
        assert!(IndexNames::new("", false).validate().is_ok());
        for bad in ["Prod-", "a b-", "a:b-", "_x-", "..-", "a\tb-"] {
            assert!(IndexNames::new(bad, false).validate().is_err(), "{bad}");
        }
        // The longest derived name decides: 225 bytes of prefix + 30
        // (`jaeger-dependencies-9999-12-31`).
        assert!(IndexNames::new(&"p".repeat(225), false).validate().is_ok());
        let err = IndexNames::new(&"p".repeat(226), false)
            .validate()
            .unwrap_err();
        assert!(err.contains("255 bytes"), "{err}");
        assert_eq!(Day(2_932_896).date(), "9999-12-31");
    }

    #[test]
    fn alias_mode_writes_to_write_aliases() {
        let names = IndexNames::new("", true);
        assert_eq!(names.write_target(Kind::Span, Day(0)), "jaeger-span-write");
        assert_eq!(
            names.write_target(Kind::Service, Day(0)),
            "jaeger-service-write"
        );
        assert_eq!(names.read_alias(Kind::Span), "jaeger-span-read");
        assert_eq!(
            names.initial_rollover_index(Kind::Service),
            "jaeger-service-000001"
        );
    }
}
