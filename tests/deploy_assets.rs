//! The files in deploy/ against the service and each other: every metric the
//! Grafana dashboard and the Prometheus alerts query is one tailsift exports,
//! and the Kubernetes manifests agree with the configuration they ship
//! (probe port = metrics.listen, grace period > shutdown.timeout, ...).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use tailsift::config::Config;
use tailsift::telemetry::{CONNECTOR_METRICS, Kind, METRICS};

const DASHBOARD: &str = "deploy/grafana/dashboards/tailsift.json";
const ALERTS: &str = "deploy/prometheus/rules/alerts.yml";
const PROMETHEUS: &str = "deploy/prometheus/prometheus.yml";
const KUBERNETES: &str = "deploy/kubernetes";
/// Partitions of `jaeger-spans` in the design documents' production setting.
const PRODUCTION_PARTITIONS: u64 = 12;

fn path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(path(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// Every document of a (multi-document) YAML file, as JSON values.
fn yaml_docs(rel: &str) -> Vec<Value> {
    let text = read(rel);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {v}"))
}

// ---------------------------------------------------------------------------
// Metric names

/// The exported metric a PromQL token refers to: itself, or for a histogram
/// series (`_bucket`, `_sum`, `_count`) the histogram.
fn exported_metric(token: &str) -> Option<&'static str> {
    let all = METRICS
        .iter()
        .map(|m| (m.0, m.1))
        .chain(CONNECTOR_METRICS.iter().copied());
    let find = |name: &str| all.clone().find(|m| m.0 == name);
    if let Some(m) = find(token) {
        return Some(m.0);
    }
    ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|s| token.strip_suffix(s))
        .filter_map(find)
        .find(|m| m.1 == Kind::Histogram)
        .map(|m| m.0)
}

fn metric_tokens(promql: &str) -> Vec<String> {
    // tailsift's own metrics, Prometheus' standard process_* ones and the
    // connector-named span metrics and service graph.
    let re = Regex::new(r"\b(?:tailsift|process|traces)_[a-z0-9_]+").expect("valid regex");
    re.find_iter(promql)
        .map(|m| m.as_str().to_string())
        .collect()
}

/// Checks every metric token of `exprs` and returns the metrics used.
fn check_exprs(source: &str, exprs: &[String]) -> BTreeSet<&'static str> {
    assert!(!exprs.is_empty(), "{source}: no PromQL expressions found");
    let mut used = BTreeSet::new();
    for expr in exprs {
        for token in metric_tokens(expr) {
            let metric = exported_metric(&token).unwrap_or_else(|| {
                panic!("{source}: {token} is not exported (telemetry::METRICS); in: {expr}")
            });
            used.insert(metric);
        }
    }
    used
}

/// PromQL of a Grafana dashboard: panel targets (rows may nest panels) and
/// query variables.
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    fn panels(list: &Value, out: &mut Vec<String>) {
        for panel in list.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or_default();
                assert!(
                    !expr.is_empty(),
                    "panel {} has an empty query",
                    panel["title"]
                );
                out.push(expr.to_string());
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    let variables = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten();
    for var in variables.filter(|v| v["type"] == "query") {
        out.push(str_at(var, "/definition").to_string());
        out.push(str_at(var, "/query/query").to_string());
    }
    out
}

fn alert_rules() -> Vec<Value> {
    let docs = yaml_docs(ALERTS);
    let [file] = docs.as_slice() else {
        panic!("{ALERTS}: expected one YAML document");
    };
    let groups = file["groups"].as_array().expect("groups");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").clone())
        .collect()
}

#[test]
fn dashboard_queries_only_exported_metrics() {
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("dashboard JSON");
    let used = check_exprs(DASHBOARD, &dashboard_exprs(&dashboard));
    // The extraction found the histogram series too, not just plain names.
    assert!(used.contains("tailsift_decision_latency_seconds"));
    assert!(used.contains("tailsift_es_bulk_duration_seconds"));
}

#[test]
fn dashboard_shows_every_exported_metric() {
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("dashboard JSON");
    let used = check_exprs(DASHBOARD, &dashboard_exprs(&dashboard));
    let missing: Vec<_> = METRICS
        .iter()
        .map(|m| m.0)
        .chain(CONNECTOR_METRICS.iter().map(|m| m.0))
        .filter(|name| !used.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "{DASHBOARD} has no panel for {missing:?}"
    );
}

#[test]
fn dashboard_uses_the_datasource_and_instance_variables() {
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("dashboard JSON");
    let names: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .map(|v| str_at(v, "/name"))
        .collect();
    assert_eq!(names, ["datasource", "instance"]);
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{}",
                panel["title"]
            );
        }
    }
    for expr in dashboard_exprs(&dashboard) {
        assert!(
            expr.contains(r#"instance=~"$instance""#) || expr.starts_with("label_values"),
            "not filtered by $instance: {expr}"
        );
    }
}

#[test]
fn alert_rules_query_only_exported_metrics() {
    let rules = alert_rules();
    let exprs: Vec<String> = rules
        .iter()
        .map(|r| str_at(r, "/expr").to_string())
        .collect();
    check_exprs(ALERTS, &exprs);
    for rule in &rules {
        let name = str_at(rule, "/alert");
        for key in [
            "/labels/severity",
            "/annotations/summary",
            "/annotations/description",
        ] {
            assert!(!str_at(rule, key).is_empty(), "{name}: {key}");
        }
        if let Some(pending) = rule["for"].as_str() {
            humantime::parse_duration(pending).unwrap_or_else(|e| panic!("{name}: for: {e}"));
        }
    }
}

#[test]
fn prometheus_loads_the_alert_rules() {
    let docs = yaml_docs(PROMETHEUS);
    let rule_files = docs[0]["rule_files"].as_array().expect("rule_files");
    // docker-compose.yml mounts deploy/prometheus/rules at /etc/prometheus/rules.
    assert!(
        rule_files
            .iter()
            .any(|f| f == "/etc/prometheus/rules/*.yml"),
        "{PROMETHEUS}: rule_files does not load {ALERTS}"
    );
}

// ---------------------------------------------------------------------------
// Kubernetes

struct Manifests {
    docs: Vec<Value>,
}

impl Manifests {
    /// The documents of every file kustomization.yaml lists; each must exist.
    fn load() -> Self {
        let kustomization = &yaml_docs(&format!("{KUBERNETES}/kustomization.yaml"))[0];
        let resources = kustomization["resources"].as_array().expect("resources");
        let mut docs = Vec::new();
        for file in resources {
            let file = file.as_str().expect("resource path");
            let rel = format!("{KUBERNETES}/{file}");
            assert!(
                path(&rel).is_file(),
                "kustomization.yaml lists missing {file}"
            );
            docs.extend(yaml_docs(&rel));
        }
        Self { docs }
    }

    fn one(&self, kind: &str) -> &Value {
        let found: Vec<_> = self.docs.iter().filter(|d| d["kind"] == kind).collect();
        let [doc] = found.as_slice() else {
            panic!("expected one {kind}, found {}", found.len());
        };
        doc
    }

    fn pod_spec(&self) -> &Value {
        &self.one("Deployment")["spec"]["template"]["spec"]
    }

    fn container(&self) -> &Value {
        &self.pod_spec()["containers"][0]
    }

    fn env(&self, name: &str) -> Option<&str> {
        let env = self.container()["env"].as_array()?;
        env.iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
    }

    /// The ConfigMap's tailsift.yaml, loaded as tailsift loads it.
    fn config(&self) -> Config {
        let yaml = str_at(self.one("ConfigMap"), "/data/tailsift.yaml");
        // Tests run in parallel: one file per call.
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "deploy-assets-{}-{}-tailsift.yaml",
            std::process::id(),
            CALLS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&file, yaml).expect("write config");
        let cfg = Config::load(&file).unwrap_or_else(|e| panic!("ConfigMap config: {e}"));
        let _ = std::fs::remove_file(&file);
        cfg
    }

    /// The port tailsift listens on: metrics.listen, or its env override.
    fn metrics_port(&self) -> u16 {
        let cfg = self.config();
        let listen = self
            .env("TAILSIFT_METRICS__LISTEN")
            .unwrap_or(&cfg.metrics.listen);
        listen.parse::<SocketAddr>().expect("metrics.listen").port()
    }

    /// A container port given by name or number.
    fn resolve_port(&self, port: &Value) -> u16 {
        if let Some(n) = port.as_u64() {
            return u16::try_from(n).expect("port number");
        }
        let name = port.as_str().expect("port name or number");
        let ports = self.container()["ports"].as_array().expect("ports");
        let found = ports.iter().find(|p| p["name"] == name);
        let number = found.and_then(|p| p["containerPort"].as_u64());
        u16::try_from(number.unwrap_or_else(|| panic!("no container port {name}")))
            .expect("port number")
    }
}

/// A Kubernetes memory quantity in bytes (`1536Mi`, `2G`, `1073741824`).
fn quantity_bytes(q: &str) -> u64 {
    const UNITS: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let (digits, factor) = UNITS
        .iter()
        .find_map(|(suffix, f)| q.strip_suffix(suffix).map(|d| (d, *f)))
        .unwrap_or((q, 1));
    digits.parse::<u64>().expect("integer quantity") * factor
}

#[test]
fn quantities_parse() {
    assert_eq!(quantity_bytes("1536Mi"), 1536 << 20);
    assert_eq!(quantity_bytes("2G"), 2_000_000_000);
    assert_eq!(quantity_bytes("4096"), 4096);
}

#[test]
fn configmap_holds_a_valid_in_cluster_config() {
    let m = Manifests::load();
    let cfg = m.config();
    assert_eq!(cfg.kafka.brokers, "kafka:9092");
    assert_eq!(cfg.elasticsearch.urls, ["http://elasticsearch:9200"]);
    let listen: SocketAddr = cfg.metrics.listen.parse().expect("metrics.listen");
    assert!(
        listen.ip().is_unspecified(),
        "probes need metrics on all interfaces"
    );
}

#[test]
fn deployment_mounts_the_config_it_runs_with() {
    let m = Manifests::load();
    let deployment = m.one("Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let args: Vec<&str> = m.container()["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg"))
        .collect();
    let ["run", "--config", config_path] = args.as_slice() else {
        panic!("unexpected args {args:?}");
    };
    let mount = m.container()["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|v| config_path.starts_with(str_at(v, "/mountPath")))
        .expect("the config file is under a volume mount");
    let volume = m.pod_spec()["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("mounted volume");
    assert_eq!(
        volume["configMap"]["name"],
        m.one("ConfigMap")["metadata"]["name"]
    );
    let file = Path::new(config_path).file_name().expect("file name");
    let key = file.to_str().expect("utf-8");
    assert!(m.one("ConfigMap")["data"][key].is_string(), "no key {key}");
    for var in ["TAILSIFT_KAFKA__BROKERS", "TAILSIFT_ELASTICSEARCH__URLS"] {
        assert!(m.env(var).is_some(), "{var} is not set");
    }
}

#[test]
fn grace_period_outlasts_the_shutdown_timeout() {
    let m = Manifests::load();
    let cfg = m.config();
    let timeout = match m.env("TAILSIFT_SHUTDOWN__TIMEOUT") {
        Some(t) => humantime::parse_duration(t).expect("shutdown timeout"),
        None => cfg.shutdown.timeout,
    };
    let grace = m.pod_spec()["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        Duration::from_secs(grace) > timeout,
        "terminationGracePeriodSeconds {grace}s <= shutdown.timeout {timeout:?}"
    );
}

#[test]
fn probes_hit_health_endpoints_on_the_metrics_port() {
    let m = Manifests::load();
    let port = m.metrics_port();
    assert_eq!(
        port,
        m.config()
            .metrics
            .listen
            .parse::<SocketAddr>()
            .expect("listen")
            .port()
    );
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &m.container()[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(m.resolve_port(&get["port"]), port, "{probe}");
    }
}

#[test]
fn memory_limit_exceeds_the_configured_budget() {
    let m = Manifests::load();
    let limit = str_at(m.container(), "/resources/limits/memory");
    let budget = m.config().memory.limit.as_u64();
    assert!(
        quantity_bytes(limit) > budget,
        "container memory limit {limit} <= memory.limit {budget} bytes"
    );
}

#[test]
fn service_exposes_the_metrics_port_for_scraping() {
    let m = Manifests::load();
    let service = m.one("Service");
    let port = m.metrics_port();
    let annotations = &service["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], port.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    let sp = &service["spec"]["ports"][0];
    assert_eq!(m.resolve_port(&sp["targetPort"]), port);
    let pod_labels = &m.one("Deployment")["spec"]["template"]["metadata"]["labels"];
    assert_selects(&service["spec"]["selector"], pod_labels);
    assert_selects(
        &m.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        pod_labels,
    );
    assert_eq!(m.one("PodDisruptionBudget")["spec"]["maxUnavailable"], 1);
}

fn assert_selects(selector: &Value, labels: &Value) {
    let selector = selector.as_object().expect("selector");
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(&labels[k], v, "selector {k}={v} does not match the pods");
    }
}

#[test]
fn autoscalers_follow_the_consumer_group() {
    let m = Manifests::load();
    let cfg = m.config();
    let deployment = str_at(m.one("Deployment"), "/metadata/name");
    let keda = m.one("ScaledObject");
    assert_eq!(str_at(keda, "/spec/scaleTargetRef/name"), deployment);
    let trigger = &keda["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "kafka");
    assert_eq!(
        str_at(trigger, "/metadata/consumerGroup"),
        cfg.kafka.group_id
    );
    assert_eq!(str_at(trigger, "/metadata/topic"), cfg.kafka.topic);
    assert_eq!(
        str_at(trigger, "/metadata/bootstrapServers"),
        cfg.kafka.brokers
    );
    assert!(
        str_at(trigger, "/metadata/lagThreshold")
            .parse::<u64>()
            .is_ok()
    );
    // More consumers than partitions sit idle: both autoscalers stop at the
    // production topic's partition count (docker-compose.yml creates 12 too).
    assert_eq!(keda["spec"]["maxReplicaCount"], PRODUCTION_PARTITIONS);

    // The KEDA-less alternative, kept out of the kustomization.
    let hpa = &yaml_docs(&format!("{KUBERNETES}/hpa.yaml"))[0];
    assert_eq!(hpa["kind"], "HorizontalPodAutoscaler");
    assert_eq!(hpa["spec"]["maxReplicas"], PRODUCTION_PARTITIONS);
    assert_eq!(str_at(hpa, "/spec/scaleTargetRef/name"), deployment);
    let metric = str_at(hpa, "/spec/metrics/0/external/metric/name");
    assert_eq!(
        exported_metric(metric),
        Some("tailsift_consumer_lag_messages")
    );
}

#[test]
fn cronjob_prunes_old_indices() {
    let m = Manifests::load();
    let cron = m.one("CronJob");
    let container = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg"))
        .collect();
    assert_eq!(args.first(), Some(&"prune-indices"), "{args:?}");
    let keep = args
        .iter()
        .position(|a| *a == "--keep-days")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse::<u32>().ok())
        .expect("--keep-days N");
    assert!(keep > 0);
    assert!(
        !args.contains(&"--dry-run"),
        "the scheduled run must delete"
    );
    assert_eq!(
        container["image"],
        m.container()["image"],
        "same image as the service"
    );
}

/// The rollover CronJob: opt-in (alias mode), so outside the kustomization.
const ROLLOVER_CRONJOB: &str = "deploy/kubernetes/cronjob-rollover.yaml";

fn job_container(cron: &Value) -> &Value {
    &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
}

fn string_args(container: &Value) -> Vec<&str> {
    container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg"))
        .collect()
}

/// The value after `flag` in `args`.
fn flag_value<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| *a == flag)?;
    args.get(i + 1).copied()
}

/// Clap stops at `--help` after parsing everything before it: unknown
/// flags or malformed values fail, the required checks are skipped.
fn assert_cli_accepts(args: &[&str]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tailsift"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run tailsift");
    assert!(
        out.status.success(),
        "tailsift {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Both index CronJobs read the service's ConfigMap and authenticate as it
/// does: every Elasticsearch variable of the Deployment (endpoint and the
/// Secret's credentials) is set the same way in the job.
#[test]
fn cronjobs_run_with_the_services_config_and_credentials() {
    let m = Manifests::load();
    let es_env: Vec<&Value> = m.container()["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter(|e| {
            let name = str_at(e, "/name");
            name.starts_with("TAILSIFT_ELASTICSEARCH__") && !name.contains("REDACTION")
        })
        .collect();
    for var in [
        "TAILSIFT_ELASTICSEARCH__URLS",
        "TAILSIFT_ELASTICSEARCH__USERNAME",
        "TAILSIFT_ELASTICSEARCH__PASSWORD",
    ] {
        assert!(
            es_env.iter().any(|e| e["name"] == var),
            "the Deployment does not set {var}"
        );
    }
    let rollover = yaml_docs(ROLLOVER_CRONJOB);
    for cron in [m.one("CronJob"), &rollover[0]] {
        let name = str_at(cron, "/metadata/name");
        let container = job_container(cron);
        let args = string_args(container);
        assert_cli_accepts(&args);
        let config = flag_value(&args, "--config").unwrap_or_else(|| panic!("{name}: no --config"));
        assert!(
            !args.contains(&"--es-url"),
            "{name}: the URL comes from the config"
        );
        let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        let mount = container["volumeMounts"]
            .as_array()
            .expect("volumeMounts")
            .iter()
            .find(|v| config.starts_with(str_at(v, "/mountPath")))
            .unwrap_or_else(|| panic!("{name}: {config} is not under a volume mount"));
        let volume = pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("mounted volume");
        assert_eq!(
            volume["configMap"]["name"],
            m.one("ConfigMap")["metadata"]["name"],
            "{name}"
        );
        let env = container["env"].as_array().expect("env");
        for var in &es_env {
            assert!(
                env.contains(var),
                "{name}: {} differs from the Deployment's",
                var["name"]
            );
        }
        assert_eq!(
            container["image"],
            m.container()["image"],
            "{name}: same image as the service"
        );
    }
}

#[test]
fn rollover_cronjob_is_opt_in_and_its_conditions_hold() {
    let kustomization = read(&format!("{KUBERNETES}/kustomization.yaml"));
    let resources = &yaml_docs(&format!("{KUBERNETES}/kustomization.yaml"))[0]["resources"];
    assert!(
        !resources
            .as_array()
            .expect("resources")
            .iter()
            .any(|r| r == "cronjob-rollover.yaml"),
        "the shipped ConfigMap writes daily indices: the rollover CronJob stays opt-in"
    );
    assert!(
        kustomization.contains("# - cronjob-rollover.yaml"),
        "not mentioned in the kustomization"
    );
    let cron = &yaml_docs(ROLLOVER_CRONJOB)[0];
    assert_eq!(cron["kind"], "CronJob");
    let args = string_args(job_container(cron));
    assert_eq!(args[..2], ["rollover", "rollover"]);
    let conditions = tailsift::rollover::Conditions {
        max_age: flag_value(&args, "--max-age").map(str::to_string),
        max_docs: flag_value(&args, "--max-docs").map(|d| d.parse().expect("--max-docs")),
        max_primary_shard_size: flag_value(&args, "--max-primary-shard-size").map(str::to_string),
    };
    conditions.body().expect("valid rollover conditions");
}

/// deploy/jaeger: Jaeger v2 on Kubernetes runs the shipped query-only config (the
/// file docker-compose.yml mounts), with its Elasticsearch URL set and its ports served.
#[test]
fn jaeger_query_manifests_run_the_shipped_config() {
    let kustomization = &yaml_docs("deploy/jaeger/kustomization.yaml")[0];
    let generated = &kustomization["configMapGenerator"][0];
    assert_eq!(generated["files"][0], "query.yaml");
    let query = &yaml_docs("deploy/jaeger/query.yaml")[0];
    let docs = yaml_docs("deploy/jaeger/kubernetes.yaml");
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert!(str_at(container, "/image").starts_with("jaegertracing/jaeger:2."));
    assert_eq!(container["args"][1], "/etc/jaeger/query.yaml");
    assert_eq!(container["volumeMounts"][0]["mountPath"], "/etc/jaeger");
    assert_eq!(pod["volumes"][0]["configMap"]["name"], generated["name"]);
    let env = container["env"].as_array().expect("env");
    assert!(env.iter().any(|e| e["name"] == "ES_SERVER_URLS"), "{env:?}");
    let ports: BTreeSet<u64> = container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p["containerPort"].as_u64())
        .collect();
    for endpoint in [
        "/extensions/jaeger_query/http/endpoint",
        "/extensions/jaeger_query/grpc/endpoint",
        "/extensions/healthcheckv2/http/endpoint",
    ] {
        let port: u64 = str_at(query, endpoint)
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {endpoint}"));
        assert!(
            ports.contains(&port),
            "{endpoint} port {port} not in {ports:?}"
        );
    }
}
