//! 64-bit trace IDs through tailsift and back out of unmodified Jaeger readers. Older
//! Jaeger clients make them, and the Jaeger proto path carries them as an 8-byte
//! `trace_id`: `tailsift loadgen` with 64-bit IDs and `jaeger_proto` sends exactly that.
//! One topic, two tailsift pipelines (a consumer group each, everything kept), two
//! index prefixes:
//!
//! - the default (`short_trace_ids: false`, `traceID` as 32 hex chars): Jaeger v2 finds
//!   every trace by its 32-hex form and by its 16-hex form (it pads what it is given);
//! - `short_trace_ids: true` (`traceID` as 16 hex chars): Jaeger v1 finds every trace by
//!   its 16-hex form, the only one v1 looks up, and finds none of them in the default
//!   indices. That is why v1 needs the setting and v2 the default;
//! - Jaeger v2 on the 16-hex indices (a site that moved from v1 to v2): v2 looks up the
//!   32-hex form only (its `jaeger.es.disableLegacyId` gate is stable), so it finds none
//!   of them. Such a site must reindex, or keep a v1 reader for the old days.
//!
//! The v2 part runs when `JAEGER_READERS` has v2 (the default), the v1 part when it has
//! v1; gated like tests/jaeger_query.rs (see tests/common/jaeger.rs).

mod common;

use anyhow::{Context, Result, ensure};

use common::es::Es;
use common::jaeger::{self, JaegerQuery, Reader, check_trace};
use common::{kafka, pipeline};
use tailsift::config::{Config, EncodingSetting};
use tailsift::decode::Encoding;
use tailsift::loadgen::LoadOptions;
use tailsift::loadgen::generator::{GenTrace, Profile, TraceGenerator};

const PARTITIONS: i32 = 2;
const TRACES: u64 = 12;
const SEED: u64 = 6464;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_bit_trace_ids_are_found_by_each_reader() -> Result<()> {
    if !jaeger::enabled("sixty_four_bit_trace_ids_are_found_by_each_reader") {
        return Ok(());
    }
    let readers = jaeger::readers()?;
    let brokers = common::kafka_brokers();
    let es_url = common::es_url();
    let run = common::unique_name("ids64");
    let topic = format!("tailsift-{run}");
    let long_ids = config(&brokers, &topic, &es_url, &format!("{run}-long"), false);
    let short_ids = config(&brokers, &topic, &es_url, &format!("{run}-short"), true);

    // The readers first (the first run builds them).
    let mut queries = Vec::new();
    if readers.contains(&Reader::V2) {
        queries.push((
            Check::V2Default,
            start(Reader::V2, &es_url, &long_ids).await?,
        ));
        queries.push((
            Check::V2Short,
            start(Reader::V2, &es_url, &short_ids).await?,
        ));
    }
    if readers.contains(&Reader::V1) {
        queries.push((
            Check::V1Short,
            start(Reader::V1, &es_url, &short_ids).await?,
        ));
        queries.push((
            Check::V1Default,
            start(Reader::V1, &es_url, &long_ids).await?,
        ));
    }

    kafka::create_topic(&brokers, &topic, PARTITIONS).await?;
    let opts = LoadOptions {
        brokers: brokers.clone(),
        topic: topic.clone(),
        encoding: Encoding::JaegerProto,
        keyed: true,
        rate: 0.0,
        max_traces: Some(TRACES),
        profile: Profile {
            short_trace_ids: true,
            ..Default::default()
        },
        seed: SEED,
        keep_truth: true,
        ..Default::default()
    };
    let summary =
        pipeline::write_to_elasticsearch(&[long_ids.clone(), short_ids.clone()], &opts, PARTITIONS)
            .await?;
    ensure!(summary.failed_messages == 0, "loadgen: produce failures");
    let es = Es::new(&es_url)?;
    for cfg in [&long_ids, &short_ids] {
        es.refresh(&format!("{}jaeger-*", cfg.index_prefix()))
            .await?;
    }
    let mut generator = TraceGenerator::new(opts.profile.clone(), opts.seed);
    let traces: Vec<GenTrace> = (0..summary.traces).map(|_| generator.trace(0)).collect();
    ensure!(
        traces.len() as u64 == TRACES && traces.iter().all(|t| t.trace_id.is_64bit()),
        "the generator did not make {TRACES} 64-bit traces"
    );

    for (check, q) in &queries {
        let what = check.label();
        let mut found = 0;
        for t in &traces {
            let long = t.trace_id.to_hex();
            let short = &long[16..];
            match check {
                Check::V2Default => {
                    found += check_trace(&q.api, t, &long).await.context(what)?;
                    found += check_trace(&q.api, t, short).await.context(what)?;
                }
                Check::V2Short => {
                    q.api.ensure_absent(&long).await.context(what)?;
                    q.api.ensure_absent(short).await.context(what)?;
                }
                Check::V1Short => found += check_trace(&q.api, t, short).await.context(what)?,
                Check::V1Default => q.api.ensure_absent(short).await.context(what)?,
            }
        }
        common::report(&format!(
            "64-bit trace IDs, {what}: {} traces, {found} spans found by ID",
            traces.len()
        ));
    }
    queries.into_iter().for_each(|(_, q)| q.finish());
    for cfg in [&long_ids, &short_ids] {
        es.delete_run(&cfg.index_prefix()).await;
    }
    Ok(())
}

/// Which reader reads which indices, and what it must find there.
enum Check {
    /// v2 on the default (32-hex) indices: found by the 32- and the 16-hex form.
    V2Default,
    /// v2 on `short_trace_ids` (16-hex) indices: found by neither form.
    V2Short,
    /// v1 on `short_trace_ids` (16-hex) indices: found by the 16-hex form.
    V1Short,
    /// v1 on the default indices: not found by the 16-hex form it looks up.
    V1Default,
}

impl Check {
    fn label(&self) -> &'static str {
        match self {
            Self::V2Default => "Jaeger v2 on 32-hex traceIDs (the default)",
            Self::V2Short => "Jaeger v2 on 16-hex traceIDs (expected: none found)",
            Self::V1Short => "Jaeger v1 on 16-hex traceIDs (short_trace_ids: true)",
            Self::V1Default => "Jaeger v1 on 32-hex traceIDs (expected: none found)",
        }
    }
}

/// Everything kept, Jaeger proto input, `traceID` in the form `short_trace_ids` says.
fn config(brokers: &str, topic: &str, es_url: &str, prefix: &str, short_ids: bool) -> Config {
    let mut cfg = pipeline::config(brokers, topic, &format!("{prefix}-group"), "[]");
    cfg.kafka.encoding = EncodingSetting::JaegerProto;
    cfg.elasticsearch.urls = vec![es_url.to_string()];
    cfg.elasticsearch.index_prefix = prefix.to_string();
    cfg.elasticsearch.short_trace_ids = short_ids;
    cfg
}

async fn start(reader: Reader, es_url: &str, cfg: &Config) -> Result<JaegerQuery> {
    let mut all =
        JaegerQuery::start_all(&[reader], es_url, &cfg.elasticsearch.index_prefix).await?;
    all.pop().context("no reader started")
}
