//! The Prometheus alert rules, loaded and evaluated by Prometheus' own
//! promtool: `promtool check rules` on deploy/prometheus/rules/alerts.yml and
//! `promtool test rules` on deploy/prometheus/tests/alerts_test.yml, where every
//! alert fires on a series that should trigger it and stays quiet on one
//! that should not.
//!
//! promtool comes from `deploy/local/prometheus.sh build` (built from the Go
//! module proxy; `.ci/run` builds it). `PROMTOOL` points at another binary.
//! In CI a missing promtool fails the tests; elsewhere they say so and pass.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

const RULES: &str = "deploy/prometheus/rules/alerts.yml";
const TESTS: &str = "deploy/prometheus/tests/alerts_test.yml";

fn path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn yaml(rel: &str) -> Value {
    let text = std::fs::read_to_string(path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let doc = serde_yaml_ng::Deserializer::from_str(&text)
        .next()
        .unwrap_or_else(|| panic!("{rel}: empty"));
    Value::deserialize(doc).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The promtool binary, or None outside CI when it has not been built.
fn promtool() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PROMTOOL").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let out = Command::new("bash")
        .arg(path("deploy/local/prometheus.sh"))
        .arg("path")
        .output()
        .expect("run deploy/local/prometheus.sh");
    let found = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && !found.is_empty() {
        return Some(PathBuf::from(found));
    }
    let hint = "build it: deploy/local/prometheus.sh build (or set PROMTOOL)";
    assert!(!common::in_ci(), "promtool is missing (CI=true); {hint}");
    common::report(&format!(
        "promtool is missing, alert rules not evaluated; {hint}"
    ));
    None
}

fn run_promtool(args: &[&str]) {
    let Some(promtool) = promtool() else {
        return;
    };
    let out = Command::new(&promtool)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    common::report(&format!("promtool {}: {}", args.join(" "), text.trim()));
}

#[test]
fn promtool_accepts_the_rules() {
    run_promtool(&["check", "rules", RULES]);
}

#[test]
fn promtool_unit_tests_pass() {
    run_promtool(&["test", "rules", TESTS]);
}

/// Per alert: (cases where it must fire, cases where it must stay quiet).
fn cases() -> BTreeMap<String, (usize, usize)> {
    let mut found = BTreeMap::new();
    let tests = yaml(TESTS);
    for group in tests["tests"].as_array().expect("tests") {
        let has_input = group["input_series"]
            .as_array()
            .is_some_and(|s| !s.is_empty());
        assert!(has_input, "test {} has no input series", group["name"]);
        for case in group["alert_rule_test"].as_array().into_iter().flatten() {
            let name = case["alertname"].as_str().expect("alertname");
            let fires = case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
            let entry: &mut (usize, usize) = found.entry(name.to_string()).or_default();
            if fires {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
    }
    found
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_case() {
    let rules = yaml(RULES);
    let alerts: Vec<&str> = rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .filter_map(|r| r["alert"].as_str())
        .collect();
    assert!(alerts.len() > 10, "only {} alerts", alerts.len());
    let cases = cases();
    for alert in &alerts {
        let (fires, quiet) = cases.get(*alert).copied().unwrap_or_default();
        assert!(fires > 0, "{TESTS}: no case where {alert} fires");
        assert!(quiet > 0, "{TESTS}: no case where {alert} stays quiet");
    }
    for tested in cases.keys() {
        assert!(
            alerts.contains(&tested.as_str()),
            "{TESTS} tests {tested}, which {RULES} does not define"
        );
    }
}
