//! Attribute redaction before documents are written: secrets such as
//! `http.request.header.authorization` or `db.statement` are deleted, or
//! replaced by a salted SHA-256 so equal values still group together, by
//! key; what value rules find inside the other string values
//! (`super::scrub`) is replaced or hashed.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use regex::Regex;

use super::scrub::{ValueScrubber, salted_sha256};
use crate::config::{RedactionAction, RedactionConfig};
use crate::decode::{DecodedSpan, OtlpSpan, jaeger};

struct Rule {
    keys: Vec<String>,
    pattern: Option<Regex>,
    action: RedactionAction,
}

impl Rule {
    fn matches(&self, key: &str) -> bool {
        self.keys.iter().any(|k| k == key) || self.pattern.as_ref().is_some_and(|p| p.is_match(key))
    }
}

/// Compiled redaction rules; the first matching rule applies.
#[derive(Default)]
pub struct Redactor {
    rules: Vec<Rule>,
    values: ValueScrubber,
    salt: String,
}

impl Redactor {
    /// Compiles the rules (validated when the config was loaded).
    pub fn new(cfg: &RedactionConfig) -> Result<Self, regex::Error> {
        let rules = cfg
            .rules
            .iter()
            .map(|r| {
                Ok(Rule {
                    keys: r.keys.clone(),
                    pattern: r.key_pattern.as_deref().map(Regex::new).transpose()?,
                    action: r.action,
                })
            })
            .collect::<Result<_, regex::Error>>()?;
        Ok(Self {
            rules,
            values: ValueScrubber::new(&cfg.values, &cfg.salt)?,
            salt: cfg.salt.clone(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.values.is_empty()
    }

    pub fn apply(&self, span: &mut DecodedSpan) {
        if self.is_empty() {
            return;
        }
        match span {
            DecodedSpan::Otlp(s) => self.otlp(s),
            DecodedSpan::Jaeger(s) => self.jaeger(s),
        }
    }

    fn action(&self, key: &str) -> Option<RedactionAction> {
        self.rules.iter().find(|r| r.matches(key)).map(|r| r.action)
    }

    fn otlp(&self, s: &mut OtlpSpan) {
        self.otlp_attributes(&mut s.span.attributes);
        for e in &mut s.span.events {
            self.otlp_attributes(&mut e.attributes);
        }
        for l in &mut s.span.links {
            self.otlp_attributes(&mut l.attributes);
        }
        if let Some(r) = &mut s.resource {
            self.otlp_attributes(&mut r.attributes);
        }
    }

    fn otlp_attributes(&self, attrs: &mut Vec<KeyValue>) {
        attrs.retain_mut(|kv| match self.action(&kv.key) {
            None => {
                if let Some(v) = kv.value.as_mut() {
                    self.otlp_value(v);
                }
                true
            }
            Some(RedactionAction::Delete) => false,
            Some(RedactionAction::Hash) => {
                let text = otlp_text(kv.value.as_ref());
                kv.value = Some(AnyValue {
                    value: Some(any_value::Value::StringValue(self.hash(&text))),
                });
                true
            }
        });
    }

    /// Scrubs string values, also inside arrays and maps.
    fn otlp_value(&self, v: &mut AnyValue) {
        match v.value.as_mut() {
            Some(any_value::Value::StringValue(s)) => {
                if let Some(clean) = self.values.scrub(s) {
                    *s = clean;
                }
            }
            Some(any_value::Value::ArrayValue(a)) => {
                a.values.iter_mut().for_each(|v| self.otlp_value(v));
            }
            Some(any_value::Value::KvlistValue(kvs)) => self.otlp_attributes(&mut kvs.values),
            _ => {}
        }
    }

    fn jaeger(&self, s: &mut jaeger::Span) {
        self.jaeger_tags(&mut s.tags);
        for log in &mut s.logs {
            self.jaeger_tags(&mut log.fields);
        }
        if let Some(p) = &mut s.process {
            self.jaeger_tags(&mut p.tags);
        }
    }

    fn jaeger_tags(&self, tags: &mut Vec<jaeger::KeyValue>) {
        tags.retain_mut(|kv| match self.action(&kv.key) {
            None => {
                let is_string = kv.v_type == jaeger::ValueType::String as i32;
                if let Some(clean) = is_string.then(|| self.values.scrub(&kv.v_str)).flatten() {
                    kv.v_str = clean;
                }
                true
            }
            Some(RedactionAction::Delete) => false,
            Some(RedactionAction::Hash) => {
                let hashed = self.hash(&jaeger_text(kv));
                *kv = jaeger::KeyValue {
                    key: std::mem::take(&mut kv.key),
                    v_type: jaeger::ValueType::String as i32,
                    v_str: hashed,
                    ..Default::default()
                };
                true
            }
        });
    }

    fn hash(&self, value: &str) -> String {
        salted_sha256(&self.salt, value)
    }
}

/// The value as text, so equal values hash equally whatever their type.
fn otlp_text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex::encode(b),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn jaeger_text(kv: &jaeger::KeyValue) -> String {
    match jaeger::ValueType::try_from(kv.v_type) {
        Ok(jaeger::ValueType::Bool) => kv.v_bool.to_string(),
        Ok(jaeger::ValueType::Int64) => kv.v_int64.to_string(),
        Ok(jaeger::ValueType::Float64) => kv.v_float64.to_string(),
        Ok(jaeger::ValueType::Binary) => hex::encode(&kv.v_binary),
        _ => kv.v_str.clone(),
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{Span, span::Event};

    use super::*;
    use crate::config::{RedactionRule, ValueAction, ValueDetector, ValueRule};

    fn kv(key: &str, s: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(s.into())),
            }),
            ..Default::default()
        }
    }

    fn redactor() -> Redactor {
        Redactor::new(&RedactionConfig {
            salt: "pepper".into(),
            rules: vec![
                RedactionRule {
                    keys: vec!["http.request.header.authorization".into()],
                    key_pattern: None,
                    action: RedactionAction::Delete,
                },
                RedactionRule {
                    keys: vec![],
                    key_pattern: Some(r"^db\.(statement|query)$".into()),
                    action: RedactionAction::Hash,
                },
            ],
            values: vec![ValueRule {
                name: None,
                detect: Some(ValueDetector::Email),
                pattern: None,
                luhn: false,
                action: ValueAction::Replace,
                replacement: None,
            }],
        })
        .expect("valid rules")
    }

    fn value(attrs: &[KeyValue], key: &str) -> Option<String> {
        attrs
            .iter()
            .find(|a| a.key == key)
            .map(|a| otlp_text(a.value.as_ref()))
    }

    #[test]
    fn otlp_attributes_deleted_and_hashed_everywhere() {
        let mut span = DecodedSpan::Otlp(Box::new(OtlpSpan {
            span: Span {
                attributes: vec![
                    kv("http.request.header.authorization", "Bearer secret"),
                    kv("db.statement", "SELECT * FROM users WHERE pw='x'"),
                    kv("http.route", "/login"),
                ],
                events: vec![Event {
                    attributes: vec![kv("db.query", "DELETE FROM t")],
                    ..Default::default()
                }],
                ..Default::default()
            },
            scope: None,
            resource: Some(Resource {
                attributes: vec![kv("http.request.header.authorization", "Basic x")],
                ..Default::default()
            }),
        }));
        redactor().apply(&mut span);
        let DecodedSpan::Otlp(s) = span else {
            unreachable!()
        };
        let attrs = &s.span.attributes;
        assert_eq!(value(attrs, "http.request.header.authorization"), None);
        assert_eq!(value(attrs, "http.route").as_deref(), Some("/login"));
        let hashed = value(attrs, "db.statement").expect("kept, hashed");
        assert!(
            hashed.starts_with("sha256:") && !hashed.contains("SELECT"),
            "{hashed}"
        );
        assert_eq!(hashed, redactor().hash("SELECT * FROM users WHERE pw='x'"));
        assert!(
            value(&s.span.events[0].attributes, "db.query")
                .is_some_and(|v| v.starts_with("sha256:"))
        );
        assert!(s.resource.as_ref().is_some_and(|r| r.attributes.is_empty()));
    }

    #[test]
    fn jaeger_tags_logs_and_process() {
        let tag = |k: &str, v: &str| jaeger::KeyValue {
            key: k.into(),
            v_str: v.into(),
            ..Default::default()
        };
        let mut span = DecodedSpan::Jaeger(Box::new(jaeger::Span {
            tags: vec![tag("db.statement", "SELECT 1"), tag("component", "db")],
            logs: vec![jaeger::Log {
                fields: vec![tag("http.request.header.authorization", "x")],
                ..Default::default()
            }],
            process: Some(jaeger::Process {
                service_name: "svc".into(),
                tags: vec![tag("http.request.header.authorization", "y")],
            }),
            ..Default::default()
        }));
        redactor().apply(&mut span);
        let DecodedSpan::Jaeger(s) = span else {
            unreachable!()
        };
        assert!(s.tags[0].v_str.starts_with("sha256:"));
        assert_eq!(s.tags[1].v_str, "db");
        assert!(s.logs[0].fields.is_empty());
        assert!(s.process.as_ref().is_some_and(|p| p.tags.is_empty()));
    }

    #[test]
    fn values_are_scrubbed_in_strings_arrays_and_tags() {
        use opentelemetry_proto::tonic::common::v1::ArrayValue;
        let mail = "ann@example.org";
        let array = AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(any_value::Value::StringValue(format!("to {mail}"))),
                }],
            })),
        };
        let mut span = DecodedSpan::Otlp(Box::new(OtlpSpan {
            span: Span {
                attributes: vec![
                    kv("enduser.note", &format!("mail {mail} twice {mail}")),
                    KeyValue {
                        key: "recipients".into(),
                        value: Some(array),
                        ..Default::default()
                    },
                    // A key rule wins: hashed whole, not scrubbed.
                    kv("db.statement", &format!("WHERE mail='{mail}'")),
                ],
                ..Default::default()
            },
            scope: None,
            resource: None,
        }));
        redactor().apply(&mut span);
        let DecodedSpan::Otlp(s) = span else {
            unreachable!()
        };
        let attrs = &s.span.attributes;
        assert_eq!(
            value(attrs, "enduser.note").as_deref(),
            Some("mail [redacted:email] twice [redacted:email]")
        );
        let Some(any_value::Value::ArrayValue(a)) =
            attrs[1].value.as_ref().and_then(|v| v.value.clone())
        else {
            panic!("array kept")
        };
        assert_eq!(otlp_text(Some(&a.values[0])), "to [redacted:email]");
        assert_eq!(
            value(attrs, "db.statement"),
            Some(redactor().hash(&format!("WHERE mail='{mail}'")))
        );

        let mut jaeger_span = DecodedSpan::Jaeger(Box::new(jaeger::Span {
            tags: vec![jaeger::KeyValue {
                key: "user".into(),
                v_str: mail.into(),
                ..Default::default()
            }],
            ..Default::default()
        }));
        redactor().apply(&mut jaeger_span);
        let DecodedSpan::Jaeger(j) = jaeger_span else {
            unreachable!()
        };
        assert_eq!(j.tags[0].v_str, "[redacted:email]");
    }

    #[test]
    fn salt_changes_the_hash() {
        let other = Redactor {
            salt: "other".into(),
            ..redactor()
        };
        assert_ne!(redactor().hash("v"), other.hash("v"));
    }
}
