//! Pasting OpenTelemetry Collector configuration: the design documents'
//! `tail_sampling` block and whole collector config, and a policy set with
//! every type, through the real command line (`check-config`,
//! `import-otel`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FIXTURES: &str = "tests/fixtures/collector";

fn tailsift(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tailsift"))
        .args(args)
        .output()
        .expect("run tailsift")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn fixture(name: &str) -> String {
    Path::new(FIXTURES).join(name).display().to_string()
}

fn check(path: &str) -> String {
    let out = tailsift(&["check-config", path]);
    let t = text(&out);
    assert!(out.status.success(), "{path}: {t}");
    t
}

#[test]
fn the_design_tail_sampling_block_checks_verbatim() {
    let t = check(&fixture("tail-sampling-block.yaml"));
    assert!(
        t.contains("policies (4): errors, slow, checkout-errors, baseline"),
        "{t}"
    );
    assert!(
        t.contains("num_traces: 100000 → accepted, no trace-count limit"),
        "{t}"
    );
    assert!(
        t.contains("expected_new_traces_per_sec: 1000 → accepted"),
        "{t}"
    );
}

#[test]
fn every_policy_type_checks() {
    let t = check(&fixture("every-policy-type.yaml"));
    assert!(t.contains("policies (18):"), "{t}");
}

#[test]
fn a_whole_collector_config_imports_and_checks() {
    let out = tailsift(&["import-otel", &fixture("collector.yaml")]);
    let imported = text(&out);
    assert!(out.status.success(), "{imported}");
    assert!(imported.contains("filter:"), "{imported}");
    let path: PathBuf =
        std::env::temp_dir().join(format!("tailsift-import-{}.yaml", std::process::id()));
    std::fs::write(&path, &imported).expect("write imported config");
    let t = check(&path.display().to_string());
    let _ = std::fs::remove_file(&path);
    assert!(
        t.contains("policies (4): errors, slow-server-spans, vip, baseline"),
        "{t}"
    );
    assert!(t.contains("filter.spans: 3 span condition(s)"), "{t}");
    for mapped in [
        "decision_wait_after_root_received: 2s → sampling.root_idle",
        "decision_cache.sampled_cache_size: 100000 → sampling.decision_cache.kept",
        "decision_cache.non_sampled_cache_size: 1000000 → sampling.decision_cache.dropped",
        "drop_pending_traces_on_shutdown: false → shutdown.pending: decide",
        "maximum_trace_size_bytes: 8388608 → sampling.max_bytes_per_trace",
        "block_on_overflow: false → accepted",
        "num_shards: 1 → accepted",
    ] {
        assert!(t.contains(mapped), "missing `{mapped}` in\n{t}");
    }
}

#[test]
fn unsupported_ottl_fails_check_config_naming_policy_and_function() {
    let path = std::env::temp_dir().join(format!("tailsift-ottl-bad-{}.yaml", std::process::id()));
    std::fs::write(
        &path,
        "sampling:\n  policies:\n    - name: hashed\n      type: ottl_condition\n      ottl_condition:\n        span: ['SHA256(name) == \"x\"']\n",
    )
    .expect("write config");
    let out = tailsift(&["check-config", &path.display().to_string()]);
    let _ = std::fs::remove_file(&path);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("policy 'hashed' (ottl_condition): ottl_condition: span[0] `SHA256(name) == \"x\"`: not supported by tailsift: function `SHA256`"),
        "{t}"
    );
}
