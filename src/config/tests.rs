use super::*;
use std::io::Write;

fn write(yaml: &str) -> tempfile_path::TempPath {
    tempfile_path::TempPath::with(yaml)
}

/// A throwaway file under the system temp dir, removed on drop.
pub(crate) mod tempfile_path {
    use super::Write;
    pub struct TempPath(pub std::path::PathBuf);
    impl TempPath {
        pub fn with(content: &str) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "tailsift-cfg-{}-{}.yaml",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let mut f = std::fs::File::create(&p).expect("create temp config");
            f.write_all(content.as_bytes()).expect("write temp config");
            Self(p)
        }
    }
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[test]
fn shipped_config_file_loads() {
    let cfg = Config::load(Path::new("config/tailsift.yaml")).expect("config/tailsift.yaml");
    assert_eq!(cfg.kafka.topic, "jaeger-spans");
    assert!(!cfg.sampling.policies.is_empty());
}

#[test]
fn defaults_and_units_parse() {
    let f = write(
        "kafka:\n  properties:\n    security.protocol: plaintext\n\
         sampling:\n  decision_wait: 3s\n  root_idle: 500ms\nmemory:\n  limit: 256MiB\n",
    );
    let cfg = Config::load(&f.0).unwrap();
    assert_eq!(cfg.sampling.decision_wait, Duration::from_secs(3));
    assert_eq!(cfg.sampling.root_idle, Duration::from_millis(500));
    assert_eq!(cfg.memory.limit, ByteSize::mib(256));
    assert_eq!(
        cfg.kafka
            .properties
            .get("security.protocol")
            .map(String::as_str),
        Some("plaintext")
    );
    assert_eq!(cfg.kafka.group_id, "tailsift");
}

#[test]
fn repartition_is_auto_or_an_input_topic() {
    let auto = Config::load(&write("kafka:\n  repartition: auto\n").0).unwrap();
    assert!(auto.kafka.rekeys_unkeyed());
    assert_eq!(auto.kafka.repartition_input(), None);
    let topic = write("kafka:\n  repartition:\n    input_topic: otlp-spans\n");
    let topic = Config::load(&topic.0).unwrap();
    assert_eq!(topic.kafka.repartition_input(), Some("otlp-spans"));
    assert!(!topic.kafka.rekeys_unkeyed());
    assert_eq!(Config::default().kafka.repartition, None);
    for (bad, named) in [
        ("  repartition: yes\n", "`auto` or `{input_topic"),
        ("  repartition:\n    topic: x\n", "expected `input_topic`"),
    ] {
        let err = Config::load(&write(&format!("kafka:\n{bad}")).0).unwrap_err();
        assert!(err.to_string().contains(named), "{err}");
    }
}

#[test]
fn unknown_key_is_named() {
    let f = write("kafka:\n  brokerz: x\n");
    let err = Config::load(&f.0).unwrap_err().to_string();
    assert!(err.contains("brokerz"), "{err}");
}

#[test]
fn bad_duration_is_an_error() {
    let f = write("sampling:\n  decision_wait: soon\n");
    let err = Config::load(&f.0).unwrap_err().to_string();
    assert!(err.contains("decision_wait"), "{err}");
}

#[test]
fn bad_redaction_rule_is_named() {
    let f = write(
        "elasticsearch:\n  redaction:\n    rules:\n      - key_pattern: '(unclosed'\n        action: hash\n",
    );
    let err = Config::load(&f.0).unwrap_err().to_string();
    assert!(err.contains("redaction.rules[0]"), "{err}");
}

#[test]
fn dead_letters_go_to_a_topic_unless_switched_off() {
    let mut k = KafkaConfig::default();
    assert_eq!(k.dead_letter_topic().as_deref(), Some("jaeger-spans-dlq"));
    k.dead_letter_topic = Some("bad-spans".into());
    assert_eq!(k.dead_letter_topic().as_deref(), Some("bad-spans"));
    k.dead_letter_topic = Some("none".into());
    assert_eq!(k.dead_letter_topic(), None);
    let f = write("kafka:\n  dead_letter_topic: jaeger-spans\n");
    let err = Config::load(&f.0).unwrap_err().to_string();
    assert!(err.contains("kafka.dead_letter_topic"), "{err}");
}

#[test]
fn bad_index_prefixes_are_named() {
    for bad in [
        "Prod", "a b", "a*", "-x", "_x", "+x", "a#b", "a,b", "a\\\\b", ".",
    ] {
        let f = write(&format!("elasticsearch:\n  index_prefix: '{bad}'\n"));
        let err = Config::load(&f.0).unwrap_err().to_string();
        assert!(err.contains("elasticsearch.index_prefix"), "{bad}: {err}");
    }
    let long = "p".repeat(240);
    let f = write(&format!("elasticsearch:\n  index_prefix: {long}\n"));
    let err = Config::load(&f.0).unwrap_err().to_string();
    assert!(err.contains("255"), "{err}");
    let f = write("elasticsearch:\n  index_prefix: prod.eu-1\n");
    assert!(Config::load(&f.0).is_ok());
}

#[test]
fn index_prefix_gets_a_dash() {
    let mut cfg = Config::default();
    assert_eq!(cfg.index_prefix(), "");
    cfg.elasticsearch.index_prefix = "prod".into();
    assert_eq!(cfg.index_prefix(), "prod-");
}
