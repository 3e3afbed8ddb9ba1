//! The partition task on its own: fed from a channel, writing to a
//! collecting sink, on real time with short windows.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{Incoming, Input, PartitionTask, Rules};
use crate::app::build_rules;
use crate::config::{Config, PendingOnShutdown};
use crate::deadletter::CountOnly;
use crate::decode::Encoding;
use crate::loadgen::encode;
use crate::loadgen::generator::{GenSpan, GenValue};
use crate::model::{SpanId, TraceId};
use crate::sink::null::{Collected, CollectingSink};
use crate::source::{PartitionHandle, Registry, Shared};
use crate::telemetry::LogLimiter;
use crate::window::{DecisionCache, Occupancy};

const WAIT: Duration = Duration::from_millis(300);

fn config(policies: &str, dry_run: bool) -> Config {
    let mut cfg = Config::default();
    cfg.sampling.decision_wait = WAIT;
    cfg.sampling.dry_run = dry_run;
    cfg.sampling.policies = serde_json::from_str(policies).expect("test policies are JSON");
    cfg
}

struct Task {
    sink: Arc<CollectingSink>,
    rules: watch::Sender<Arc<Rules>>,
    input: mpsc::Sender<Incoming>,
    stop: CancellationToken,
    next_offset: i64,
}

fn start(cfg: &Config) -> Task {
    let sink = Arc::new(CollectingSink::default());
    let stop = CancellationToken::new();
    let shared = Arc::new(Shared {
        sink: sink.clone(),
        dead_letters: Arc::new(CountOnly),
        window: crate::app::window_config(cfg),
        cache: Arc::new(DecisionCache::new(1000, 1000)),
        decision_log: OnceLock::new(),
        occupancy: Arc::new(Occupancy::default()),
        span_metrics: None,
        dependencies: None,
        trace_budget: usize::MAX,
        registry: Arc::new(Registry::new("t")),
        outage: Arc::default(),
        stop: stop.clone(),
        on_shutdown: PendingOnShutdown::Decide,
        log_limiter: LogLimiter::default(),
        rekey: None,
    });
    let (rules, rx) = watch::channel(Arc::new(build_rules(cfg).expect("test rules")));
    let (input, messages) = mpsc::channel(16);
    let task = PartitionTask::new(PartitionHandle::new(0), shared, rx);
    tokio::spawn(task.run(Input {
        queue: None,
        handover: messages,
    }));
    Task {
        sink,
        rules,
        input,
        stop,
        next_offset: 0,
    }
}

fn span(id: u8, attributes: Vec<(String, GenValue)>) -> GenSpan {
    GenSpan {
        span_id: SpanId([id; 8]),
        // Not a root: the trace waits out `decision_wait`.
        parent: SpanId([0xff; 8]),
        service: "shop".into(),
        name: "op".into(),
        kind: 2,
        start_unix_nano: 1_700_000_000_000_000_000,
        end_unix_nano: 1_700_000_000_001_000_000,
        error: false,
        attributes,
    }
}

impl Task {
    async fn send(&mut self, trace: TraceId, span: &GenSpan) {
        let payload = encode::encode(Encoding::OtlpProto, &[(trace, span)]).remove(0);
        let m = Incoming {
            offset: self.next_offset,
            timestamp: None,
            payload: Bytes::from(payload),
            key: None,
            content_type: None,
        };
        self.next_offset += 1;
        self.input.send(m).await.expect("task running");
    }

    async fn collected_after_decisions(&self) -> Vec<Collected> {
        tokio::time::sleep(WAIT * 3).await;
        self.stop.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.sink.take()
    }
}

/// A reload that removes the only policy naming an attribute, mid-trace:
/// the trace started under the old policies is still decided by them, so
/// the attribute must still be scanned in its later spans.
#[tokio::test]
async fn a_reload_keeps_scanning_what_buffered_traces_need() {
    let vip = r#"[{"name": "vip", "type": "string_attribute",
                   "string_attribute": {"key": "tenant", "values": ["vip"]}}]"#;
    let errors = r#"[{"name": "errors", "type": "status_code",
                      "status_code": {"status_codes": ["ERROR"]}}]"#;
    let mut t = start(&config(vip, false));
    let trace = TraceId([7; 16]);
    t.send(trace, &span(1, vec![])).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = build_rules(&config(errors, false)).expect("rules");
    let before = t.rules.borrow().clone();
    t.rules
        .send_replace(Arc::new(after.replacing(&before, WAIT)));
    let tenant = vec![("tenant".to_string(), GenValue::Str("vip".into()))];
    t.send(trace, &span(2, tenant)).await;
    let kept = t.collected_after_decisions().await;
    assert_eq!(kept.len(), 1, "the vip trace was dropped");
    assert_eq!(&*kept[0].decision.policy, "vip");
    assert_eq!(kept[0].spans.len(), 2);
}

/// A dry run writes everything: a span arriving after its trace was
/// decided (would-drop) is written too, marked like the rest.
#[tokio::test]
async fn a_dry_run_writes_late_spans_of_would_drop_traces() {
    let errors = r#"[{"name": "errors", "type": "status_code",
                      "status_code": {"status_codes": ["ERROR"]}}]"#;
    let mut t = start(&config(errors, true));
    let trace = TraceId([9; 16]);
    t.send(trace, &span(1, vec![])).await;
    tokio::time::sleep(WAIT * 2).await;
    t.send(trace, &span(2, vec![])).await;
    let written = t.collected_after_decisions().await;
    let spans: usize = written.iter().map(|c| c.spans.len()).sum();
    assert_eq!(spans, 2, "{written:?}");
    assert!(written.iter().all(|c| c.would_drop));
}
