//! Static checks of docker-compose.yml (no Docker engine here): the services exist and
//! their names, ports and config mounts agree with config/ and deploy/.

use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn load(rel: &str) -> Value {
    let path = repo(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
}

fn compose() -> Value {
    load("docker-compose.yml")
}

fn service<'a>(c: &'a Value, name: &str) -> &'a Value {
    c.get("services")
        .and_then(|s| s.get(name))
        .unwrap_or_else(|| panic!("docker-compose.yml has no service {name:?}"))
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Sequence(items)) => items.iter().map(scalar).collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

/// `environment:` as map or as a list of `KEY=VALUE`.
fn env_var(svc: &Value, key: &str) -> Option<String> {
    match svc.get("environment")? {
        Value::Mapping(m) => m.get(key).map(scalar),
        Value::Sequence(items) => items.iter().map(scalar).find_map(|kv| {
            kv.split_once('=')
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        }),
        _ => None,
    }
}

/// Short-syntax bind mounts `SRC:TARGET[:MODE]` -> (SRC, TARGET).
fn binds(svc: &Value) -> Vec<(String, String)> {
    strings(svc.get("volumes"))
        .into_iter()
        .filter_map(|v| {
            let mut parts = v.splitn(3, ':');
            let (src, dst) = (parts.next()?, parts.next()?);
            src.starts_with('.')
                .then(|| (src.to_string(), dst.to_string()))
        })
        .collect()
}

fn port_of(hostport: &str) -> u16 {
    let hostport = hostport.rsplit("://").next().unwrap_or(hostport);
    let hostport = hostport.split('/').next().unwrap_or(hostport);
    hostport
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {hostport:?}"))
}

fn host_of(hostport: &str) -> String {
    let hostport = hostport.rsplit("://").next().unwrap_or(hostport);
    hostport
        .split([':', '/'])
        .next()
        .unwrap_or_default()
        .to_string()
}

fn arg_after(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

fn config_metrics_port() -> u16 {
    let cfg = load("config/tailsift.yaml");
    let listen = cfg
        .get("metrics")
        .and_then(|m| m.get("listen"))
        .map(scalar)
        .expect("config/tailsift.yaml has no metrics.listen");
    port_of(&listen)
}

#[test]
fn all_services_exist() {
    let c = compose();
    for name in [
        "kafka",
        "elasticsearch",
        "jaeger-query",
        "prometheus",
        "grafana",
        "tailsift",
        "loadgen",
    ] {
        let svc = service(&c, name);
        assert!(
            svc.get("image").is_some() || svc.get("build").is_some(),
            "service {name} has neither image nor build"
        );
    }
    assert!(
        repo("Dockerfile").is_file(),
        "tailsift builds from ./Dockerfile"
    );
}

#[test]
fn tailsift_has_two_replicas_and_mounts_the_repo_config() {
    let c = compose();
    let ts = service(&c, "tailsift");
    let replicas = ts
        .get("deploy")
        .and_then(|d| d.get("replicas"))
        .and_then(Value::as_u64);
    assert_eq!(replicas, Some(2), "tailsift deploy.replicas");

    let cmd = strings(ts.get("command"));
    assert_eq!(
        cmd.first().map(String::as_str),
        Some("run"),
        "command {cmd:?}"
    );
    let config_path = arg_after(&cmd, "--config").expect("tailsift command has --config");

    let mounts = binds(ts);
    let (src, _) = mounts
        .iter()
        .find(|(_, dst)| *dst == config_path)
        .unwrap_or_else(|| panic!("nothing mounted at {config_path}: {mounts:?}"));
    assert_eq!(src, "./config/tailsift.yaml");
    assert!(repo(src).is_file(), "{src} must exist in the repo");

    assert_eq!(
        env_var(ts, "TAILSIFT_KAFKA__BROKERS").as_deref(),
        Some("kafka:9092")
    );
    assert_eq!(
        env_var(ts, "TAILSIFT_ELASTICSEARCH__URLS").as_deref(),
        Some("http://elasticsearch:9200")
    );
}

#[test]
fn prometheus_scrapes_the_tailsift_metrics_port() {
    let metrics_port = config_metrics_port();
    assert_eq!(
        metrics_port, 9464,
        "metrics.listen port in config/tailsift.yaml"
    );

    let c = compose();
    let prom = service(&c, "prometheus");
    let (src, _) = binds(prom)
        .into_iter()
        .find(|(_, dst)| dst == "/etc/prometheus/prometheus.yml")
        .expect("prometheus mounts a config at /etc/prometheus/prometheus.yml");
    assert_eq!(src, "./deploy/prometheus/prometheus.yml");
    let prom_cfg = load(src.trim_start_matches("./"));

    let jobs = prom_cfg
        .get("scrape_configs")
        .and_then(Value::as_sequence)
        .expect("scrape_configs");
    let job = jobs
        .iter()
        .find(|j| j.get("job_name").map(scalar).as_deref() == Some("tailsift"))
        .expect("a scrape job named tailsift");
    // (host, port) of every target: static targets and DNS service discovery.
    let mut targets: Vec<(String, u16)> = Vec::new();
    for sc in job
        .get("static_configs")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        for t in strings(sc.get("targets")) {
            targets.push((host_of(&t), port_of(&t)));
        }
    }
    for sd in job
        .get("dns_sd_configs")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        let port = sd.get("port").and_then(Value::as_u64).expect("dns_sd port") as u16;
        for name in strings(sd.get("names")) {
            targets.push((name, port));
        }
    }
    assert!(!targets.is_empty(), "tailsift job has no targets");
    for (host, port) in &targets {
        assert_eq!(
            host, "tailsift",
            "scrape target host must be the compose service"
        );
        assert_eq!(*port, metrics_port, "scrape port must equal metrics.listen");
    }

    // The container must listen beyond loopback on that same port.
    let ts = service(&c, "tailsift");
    let listen = env_var(ts, "TAILSIFT_METRICS__LISTEN").expect("TAILSIFT_METRICS__LISTEN");
    assert_eq!(host_of(&listen), "0.0.0.0");
    assert_eq!(port_of(&listen), metrics_port);
    let exposed: Vec<u16> = strings(ts.get("expose"))
        .iter()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert!(
        exposed.contains(&metrics_port),
        "tailsift exposes {exposed:?}"
    );
}

/// Jaeger v2 with the shipped query-only config: the jaeger_query extension on the
/// Elasticsearch service, the same index prefix as tailsift, tailsift's templates left
/// alone, and nothing ingested.
#[test]
fn jaeger_query_reads_the_elasticsearch_service() {
    let c = compose();
    let jq = service(&c, "jaeger-query");
    let image = jq.get("image").map(scalar).unwrap_or_default();
    assert!(
        image.starts_with("jaegertracing/jaeger:2."),
        "jaeger-query runs Jaeger v2, not {image:?}"
    );
    let args = strings(jq.get("command"));
    let conf = arg_after(&args, "--config").expect("jaeger-query: --config FILE");
    let mount = binds(jq)
        .into_iter()
        .find(|(_, dst)| *dst == conf)
        .unwrap_or_else(|| panic!("{conf} is not mounted from the repo"));
    let q = load(mount.0.trim_start_matches("./"));
    let ui_port = port_of(&scalar(
        &q["extensions"]["jaeger_query"]["http"]["endpoint"],
    ));
    assert!(
        strings(jq.get("ports")).contains(&format!("{ui_port}:{ui_port}")),
        "jaeger-query publishes its UI port {ui_port}"
    );
    let extensions = strings(q["service"].get("extensions"));
    for ext in ["jaeger_storage", "jaeger_query"] {
        assert!(
            extensions.contains(&ext.to_string()),
            "extensions {extensions:?}"
        );
    }
    let pipeline = &q["service"]["pipelines"]["traces"];
    assert_eq!(
        strings(pipeline.get("receivers")),
        ["nop"],
        "query-only: no receiver"
    );
    assert_eq!(
        strings(pipeline.get("exporters")),
        ["nop"],
        "query-only: no exporter"
    );

    let storage = scalar(&q["extensions"]["jaeger_query"]["storage"]["traces"]);
    let backend = &q["extensions"]["jaeger_storage"]["backends"][storage.as_str()]["elasticsearch"];
    assert_eq!(
        backend["create_mappings"],
        Value::Bool(false),
        "tailsift owns the templates"
    );
    let cfg = load("config/tailsift.yaml");
    assert_eq!(
        scalar(&backend["indices"]["index_prefix"]),
        scalar(&cfg["elasticsearch"]["index_prefix"]),
        "Jaeger reads the prefix tailsift writes"
    );
    // ${env:ES_SERVER_URLS} is set on the service.
    let urls = strings(backend.get("server_urls"));
    assert_eq!(urls, ["${env:ES_SERVER_URLS}"]);
    let urls = env_var(jq, "ES_SERVER_URLS").expect("ES_SERVER_URLS");
    let es = service(&c, "elasticsearch");
    let es_port: u16 = env_var(es, "http.port")
        .map(|p| p.parse().expect("http.port"))
        .unwrap_or(9200);
    let published: Vec<u16> = strings(es.get("ports"))
        .iter()
        .map(|p| port_of(&format!("x:{p}")))
        .collect();
    assert!(
        published.contains(&es_port),
        "elasticsearch ports {published:?}"
    );
    for url in urls.split(',') {
        assert!(url.starts_with("http://"), "{url}");
        assert_eq!(host_of(url), "elasticsearch", "{url}");
        assert_eq!(port_of(url), es_port, "{url}");
    }
    assert_eq!(
        env_var(es, "discovery.type").as_deref(),
        Some("single-node")
    );
    assert_eq!(
        env_var(es, "xpack.security.enabled").as_deref(),
        Some("false")
    );
}

#[test]
fn loadgen_and_kafka_agree_on_brokers_and_topic() {
    let c = compose();
    let cfg = load("config/tailsift.yaml");
    let topic = cfg
        .get("kafka")
        .and_then(|k| k.get("topic"))
        .map(scalar)
        .expect("kafka.topic");

    let lg = service(&c, "loadgen");
    assert_eq!(
        lg.get("image"),
        service(&c, "tailsift").get("image"),
        "loadgen uses the tailsift image"
    );
    let cmd = strings(lg.get("command"));
    assert_eq!(cmd.first().map(String::as_str), Some("loadgen"));
    assert_eq!(arg_after(&cmd, "--topic"), Some(topic.clone()));
    assert_eq!(arg_after(&cmd, "--rate").as_deref(), Some("2000"));
    assert_eq!(arg_after(&cmd, "--duration").as_deref(), Some("1h"));
    let brokers = arg_after(&cmd, "--brokers").expect("--brokers");

    let kafka = service(&c, "kafka");
    let advertised = env_var(kafka, "KAFKA_ADVERTISED_LISTENERS").expect("advertised");
    assert!(
        advertised
            .split(',')
            .any(|l| l.trim_start_matches("PLAINTEXT://") == brokers),
        "{brokers} is not an advertised listener: {advertised}"
    );
    let roles = env_var(kafka, "KAFKA_PROCESS_ROLES").expect("KRaft roles");
    assert!(
        roles.contains("controller") && roles.contains("broker"),
        "{roles}"
    );
}

/// The span topic has the production shape's 12 partitions (the KEDA and HPA
/// maximums in deploy/kubernetes follow it; tests/deploy_assets.rs).
#[test]
fn span_topic_has_twelve_partitions() {
    let c = compose();
    let init = strings(service(&c, "kafka-init").get("command"));
    assert_eq!(arg_after(&init, "--topic").as_deref(), Some("jaeger-spans"));
    assert_eq!(arg_after(&init, "--partitions").as_deref(), Some("12"));
    assert_eq!(
        env_var(service(&c, "kafka"), "KAFKA_NUM_PARTITIONS").as_deref(),
        Some("12")
    );
}
