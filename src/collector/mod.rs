//! Compatibility with OpenTelemetry Collector configurations: the
//! `tail_sampling` processor's options pasted under `sampling:` are mapped
//! onto tailsift's equivalents (or accepted with a note where they have no
//! meaning here), and `import` turns a whole collector config into a
//! tailsift one.

pub mod import;

use bytesize::ByteSize;

use crate::config::{Config, PendingOnShutdown};

/// Applies the collector options found in `cfg.sampling` and records what
/// each became in `cfg.sampling.collector_mapping`.
pub fn apply_options(cfg: &mut Config) {
    let mut notes = Vec::new();
    let mut note = |key: &str, value: String, meaning: String| {
        notes.push(format!("{key}: {value} → {meaning}"));
    };
    let s = &mut cfg.sampling;
    if let Some(d) = s.decision_wait_after_root_received {
        s.root_idle = d;
        note(
            "decision_wait_after_root_received",
            humantime::format_duration(d).to_string(),
            "sampling.root_idle (decide once the root arrived and the trace is idle that long)"
                .into(),
        );
    }
    let cache = &mut s.decision_cache;
    if let Some(n) = cache.sampled_cache_size {
        note(
            "decision_cache.sampled_cache_size",
            n.to_string(),
            cache_size(&mut cache.kept, n, "kept"),
        );
    }
    if let Some(n) = cache.non_sampled_cache_size {
        note(
            "decision_cache.non_sampled_cache_size",
            n.to_string(),
            cache_size(&mut cache.dropped, n, "dropped"),
        );
    }
    if let Some(n) = s.maximum_trace_size_bytes {
        s.max_bytes_per_trace = ByteSize::b(n);
        note(
            "maximum_trace_size_bytes",
            n.to_string(),
            "sampling.max_bytes_per_trace (a trace reaching it is decided at once, reason=limit, not dropped)".into(),
        );
    }
    if let Some(drop) = s.drop_pending_traces_on_shutdown {
        cfg.shutdown.pending = if drop {
            PendingOnShutdown::Drop
        } else {
            PendingOnShutdown::Decide
        };
        note(
            "drop_pending_traces_on_shutdown",
            drop.to_string(),
            format!(
                "shutdown.pending: {} (left undecided traces are replayed from Kafka by the next owner, never lost)",
                if drop { "drop" } else { "decide" }
            ),
        );
    }
    let s = &cfg.sampling;
    if s.sample_on_first_match {
        note(
            "sample_on_first_match",
            "true".into(),
            "the first sampling policy in order decides; later ones are not evaluated (drop policies still run first)".into(),
        );
    }
    if let Some(n) = s.num_traces {
        note(
            "num_traces",
            n.to_string(),
            format!(
                "accepted, no trace-count limit: buffered traces are bounded by memory.limit ({})",
                cfg.memory.limit
            ),
        );
    }
    if let Some(n) = s.expected_new_traces_per_sec {
        note(
            "expected_new_traces_per_sec",
            n.to_string(),
            "accepted, an allocation hint with no meaning here (windows grow as needed)".into(),
        );
    }
    if let Some(b) = s.block_on_overflow {
        note(
            "block_on_overflow",
            b.to_string(),
            "accepted: tailsift never evicts undecided traces; it decides early under memory.limit and pauses Kafka partitions while Elasticsearch lags".into(),
        );
    }
    if let Some(n) = s.num_shards {
        note(
            "num_shards",
            n.to_string(),
            "accepted: windows are sharded by Kafka partition, one task each".into(),
        );
    }
    if let Some(v) = &s.sampling_strategy {
        note(
            "sampling_strategy",
            v.clone(),
            "accepted: tailsift always decides whole traces".into(),
        );
    }
    cfg.sampling.collector_mapping = notes;
}

/// The collector's 0 means "no cache"; tailsift always keeps one, at its
/// own default size then.
fn cache_size(slot: &mut usize, n: usize, name: &str) -> String {
    if n == 0 {
        return format!(
            "0 disables the collector's cache; tailsift keeps decision_cache.{name} = {slot}"
        );
    }
    *slot = n;
    format!("sampling.decision_cache.{name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::tempfile_path::TempPath;

    #[test]
    fn the_whole_processor_block_maps_onto_tailsift() {
        let f = TempPath::with(
            r#"
sampling:
  decision_wait: 10s
  num_traces: 100000
  expected_new_traces_per_sec: 1000
  decision_wait_after_root_received: 3s
  decision_cache: {sampled_cache_size: 50000, non_sampled_cache_size: 0}
  sample_on_first_match: true
  drop_pending_traces_on_shutdown: true
  maximum_trace_size_bytes: 1048576
  block_on_overflow: false
  num_shards: 4
  sampling_strategy: trace-complete
  policies: [{name: all, type: always_sample}]
"#,
        );
        let cfg = Config::load(&f.0).unwrap();
        let s = &cfg.sampling;
        assert_eq!(s.decision_wait, std::time::Duration::from_secs(10));
        assert_eq!(s.root_idle, std::time::Duration::from_secs(3));
        assert_eq!(s.decision_cache.kept, 50_000);
        assert_eq!(s.decision_cache.dropped, 1_000_000, "0 keeps the default");
        assert_eq!(s.max_bytes_per_trace, ByteSize::mib(1));
        assert_eq!(cfg.shutdown.pending, PendingOnShutdown::Drop);
        assert!(s.sample_on_first_match);
        let keys: Vec<&str> = s
            .collector_mapping
            .iter()
            .map(|l| l.split(':').next().unwrap_or_default())
            .collect();
        assert_eq!(
            keys,
            [
                "decision_wait_after_root_received",
                "decision_cache.sampled_cache_size",
                "decision_cache.non_sampled_cache_size",
                "maximum_trace_size_bytes",
                "drop_pending_traces_on_shutdown",
                "sample_on_first_match",
                "num_traces",
                "expected_new_traces_per_sec",
                "block_on_overflow",
                "num_shards",
                "sampling_strategy",
            ]
        );
    }

    #[test]
    fn unknown_processor_options_are_still_rejected() {
        let f = TempPath::with("sampling: {num_trace: 5}");
        let e = Config::load(&f.0).unwrap_err().to_string();
        assert!(e.contains("num_trace"), "{e}");
    }
}
