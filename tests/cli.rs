//! The command line as users meet it: `check-config` on good and broken
//! files, environment overrides, exit codes and messages.

use std::path::PathBuf;
use std::process::{Command, Output};

fn tailsift(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tailsift"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run tailsift")
}

fn temp_config(name: &str, yaml: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("tailsift-cli-{}-{name}.yaml", std::process::id()));
    std::fs::write(&path, yaml).expect("write config");
    path
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn shipped_config_checks_and_env_overrides_apply() {
    let out = tailsift(
        &["check-config", "config/tailsift.yaml"],
        &[
            ("TAILSIFT_KAFKA__BROKERS", "kafka-a:9092,kafka-b:9092"),
            (
                "TAILSIFT_ELASTICSEARCH__URLS",
                "http://es1:9200,http://es2:9200",
            ),
            // A script's own setting, not an override: must be ignored.
            ("TAILSIFT_STACK_DIR", "/tmp/somewhere"),
        ],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("brokers=kafka-a:9092,kafka-b:9092"), "{t}");
    assert!(t.contains("http://es1:9200,http://es2:9200"), "{t}");
    assert!(t.contains("policies (3): errors, slow, baseline"), "{t}");
}

#[test]
fn unknown_key_fails_and_names_it() {
    let path = temp_config("unknown", "sampling:\n  decison_wait: 5s\n");
    let out = tailsift(&["check-config", path.to_str().expect("utf-8 path")], &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("decison_wait"), "{}", text(&out));
}

#[test]
fn invalid_policy_fails_and_names_the_policy() {
    let yaml = "sampling:\n  policies:\n    - name: pct\n      type: probabilistic\n      probabilistic: {sampling_percentage: 250}\n";
    let path = temp_config("policy", yaml);
    let out = tailsift(&["check-config", path.to_str().expect("utf-8 path")], &[]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("'pct'") && t.contains("probabilistic"), "{t}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = tailsift(&["check-config", "/nonexistent/tailsift.yaml"], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("/nonexistent/tailsift.yaml"),
        "{}",
        text(&out)
    );
}

#[test]
fn index_tools_take_elasticsearch_settings_from_the_environment_without_a_file() {
    // A CronJob's Secret arrives as variables: both kinds of credentials at
    // once is a configuration error, so seeing it proves they were read.
    let both = [
        ("TAILSIFT_ELASTICSEARCH__USERNAME", "tailsift"),
        ("TAILSIFT_ELASTICSEARCH__API_KEY", "a2V5"),
    ];
    for args in [
        &["prune-indices", "--keep-days", "7"][..],
        &["rollover", "lookback"][..],
    ] {
        let out = tailsift(args, &both);
        assert!(!out.status.success());
        assert!(
            text(&out).contains("api_key or username/password"),
            "{args:?}: {}",
            text(&out)
        );
    }
    // The URL too: nothing listens on port 9.
    let out = tailsift(
        &["prune-indices", "--keep-days", "7"],
        &[("TAILSIFT_ELASTICSEARCH__URLS", "http://127.0.0.1:9")],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("127.0.0.1:9"), "{}", text(&out));
}

#[test]
fn rollover_needs_a_condition_and_alias_mode() {
    let out = tailsift(
        &["rollover", "rollover", "--es-url", "http://127.0.0.1:9"],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no rollover condition"),
        "{}",
        text(&out)
    );
    let out = tailsift(
        &[
            "rollover",
            "rollover",
            "--es-url",
            "http://127.0.0.1:9",
            "--max-age",
            "1w",
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("max_age '1w'"), "{}", text(&out));
    // A config file that writes daily indices is not rolled over.
    let daily = temp_config("daily", "elasticsearch:\n  use_aliases: false\n");
    let path = daily.to_str().expect("utf-8 path");
    let out = tailsift(&["rollover", "init", "--config", path], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("use_aliases is false"),
        "{}",
        text(&out)
    );
}

#[test]
fn repartition_auto_as_an_environment_override() {
    let out = tailsift(
        &["check-config", "config/tailsift.yaml"],
        &[("TAILSIFT_KAFKA__REPARTITION", "auto")],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("repartition: auto"), "{t}");
    let out = tailsift(
        &["check-config", "config/tailsift.yaml"],
        &[("TAILSIFT_KAFKA__REPARTITION", "always")],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("`auto` or `{input_topic"),
        "{}",
        text(&out)
    );
}
