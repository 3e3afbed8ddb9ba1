use super::*;
use crate::config::tests::tempfile_path::TempPath;

fn plan(yaml: &str) -> Plan {
    let f = TempPath::with(yaml);
    let cfg = Config::load(&f.0).expect("test config loads");
    Plan::resolve(&cfg).expect("test config resolves")
}

#[test]
fn memory_limit_is_shared_out_unless_parts_are_set() {
    let p = plan("memory:\n  limit: 128MiB\n");
    assert_eq!(p.memory.traces, 128 * MIB / 8);
    assert_eq!(p.memory.sink_queue, 128 * MIB / 16);
    assert_eq!(p.memory.prefetch, 8 * MIB);
    assert_eq!(p.memory.dead_letters, 8 * MIB);
    assert_eq!(p.sink.queue_bytes, 128 * MIB / 16);
    // Prefetch: the plan's share over the topic's partitions, bounded.
    assert_eq!(p.prefetch.per_partition(8), MIB);
    assert_eq!(p.prefetch.per_partition(512), MIB / 4);
    let d = Plan::resolve(&Config::default()).expect("defaults resolve");
    assert_eq!(d.prefetch.per_partition(1), 16 * MIB);
    assert_eq!(d.prefetch.per_partition(16), 4 * MIB);
    // The sink queue of a 1 GiB limit, also for a config built in code.
    assert_eq!(d.sink.queue_bytes, 64 * MIB);

    // The defaults of a 1 GiB limit, and explicit settings win.
    let p = plan(
        "kafka:\n  properties:\n    queued.max.messages.kbytes: \"4096\"\n\
         elasticsearch:\n  queue_bytes: 100MiB\n",
    );
    assert_eq!(p.memory.traces, 1024 * MIB / 8);
    assert_eq!(p.sink.queue_bytes, 100 * MIB);
    assert_eq!(p.prefetch.per_partition(100), 4 * MIB);

    let f = TempPath::with("memory:\n  limit: 16MiB\n");
    let err = Config::load(&f.0).unwrap_err().to_string();
    assert!(err.contains("memory.limit"), "{err}");
}

#[test]
fn the_plan_leaves_the_config_as_written() {
    let f = TempPath::with("memory:\n  limit: 128MiB\n");
    let cfg = Config::load(&f.0).expect("test config loads");
    let p = Plan::resolve(&cfg).expect("resolves");
    assert_eq!(cfg.elasticsearch.queue_bytes, None);
    assert_eq!(p.sink.queue_bytes, 128 * MIB / 16);
}

#[test]
fn a_config_built_in_code_is_validated() {
    let mut cfg = Config::default();
    cfg.kafka.topic = " ".into();
    let err = Plan::resolve(&cfg).unwrap_err().to_string();
    assert!(err.contains("kafka.topic"), "{err}");
}

/// With an input topic two consumers prefetch: each gets half.
#[test]
fn repartition_stage_and_sampler_share_the_prefetch() {
    let direct = plan("memory:\n  limit: 256MiB\n");
    let split = plan("memory:\n  limit: 256MiB\nkafka:\n  repartition:\n    input_topic: raw\n");
    assert_eq!(direct.prefetch.total, 16 * MIB);
    assert_eq!(split.prefetch.total, 8 * MIB);
    let auto = plan("memory:\n  limit: 256MiB\nkafka:\n  repartition: auto\n");
    assert_eq!(auto.prefetch.total, 16 * MIB);
}

#[test]
fn the_decision_cache_is_scaled_to_its_share() {
    let d = Plan::resolve(&Config::default()).expect("defaults resolve");
    assert_eq!(
        (d.decision_cache.kept, d.decision_cache.dropped),
        (300_000, 1_000_000)
    );
    assert!(!d.decision_cache.scaled);
    let small = plan("memory:\n  limit: 32MiB\n");
    let c = small.decision_cache;
    assert!(c.scaled);
    assert!(
        (c.kept + c.dropped) * CACHE_ENTRY_BYTES <= (4 * MIB) as usize,
        "{c:?}"
    );
    assert!(c.kept > 0 && c.dropped > c.kept, "{c:?}");
}

#[test]
fn bulk_requests_stay_small_next_to_the_queue() {
    let cfg = BulkConfig::default();
    assert_eq!(bulk_limits(&cfg, 64 << 20).max_bytes, cfg.max_bytes);
    assert_eq!(bulk_limits(&cfg, 16 << 20).max_bytes.as_u64(), 2 << 20);
    assert_eq!(bulk_limits(&cfg, 1 << 20).max_bytes.as_u64(), 256 * 1024);
    let p = plan("memory:\n  limit: 128MiB\n");
    assert_eq!(p.sink.bulk.max_bytes.as_u64(), 128 * MIB / 16 / 8);
}

#[test]
fn windows_take_the_sampling_settings() {
    let p =
        plan("sampling:\n  decision_wait: 3s\n  dry_run: true\ndependencies:\n  enabled: false\n");
    assert_eq!(p.window.decision_wait, std::time::Duration::from_secs(3));
    assert!(p.window.dry_run);
    assert_eq!(p.window.tracked_bytes_per_span, 0);
}
