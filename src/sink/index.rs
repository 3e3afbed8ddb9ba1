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

/// The two kinds of documents and where each goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Span,
    Service,
}

impl Kind {
    fn base(self) -> &'static str {
        match self {
            Kind::Span => "jaeger-span",
            Kind::Service => "jaeger-service",
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
