//! The partition task on its own: fed from a channel, writing to a
//! collecting sink that can be made to wait, with short windows. The
//! tests of ordering, deadlines, backpressure, revoke and shutdown run on
//! paused tokio time, which advances only when every task waits.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;

use super::{Incoming, Input, PartitionTask, Rules};
use crate::app::build_rules;
use crate::config::{Config, PendingOnShutdown};
use crate::deadletter::CountOnly;
use crate::decode::Encoding;
use crate::loadgen::encode;
use crate::loadgen::generator::{GenSpan, GenValue};
use crate::model::{SpanId, TraceId};
use crate::plan::Plan;
use crate::sink::null::{Collected, CollectingSink};
use crate::sink::{KeptTrace, TraceSink};
use crate::source::{Observers, Outputs, PartitionHandle, Registry, Shared, WindowContext};
use crate::telemetry::LogLimiter;
use crate::window::{DecisionCache, Occupancy};

const WAIT: Duration = Duration::from_millis(300);
/// Messages the test channel holds (the pump's channel is larger).
const CHANNEL: usize = 16;
const ALWAYS: &str = r#"[{"name": "all", "type": "always_sample"}]"#;

fn config(policies: &str, dry_run: bool) -> Config {
    let mut cfg = Config::default();
    cfg.sampling.decision_wait = WAIT;
    cfg.sampling.dry_run = dry_run;
    cfg.sampling.policies = serde_json::from_str(policies).expect("test policies are JSON");
    cfg
}

/// Collects kept traces; while closed, `submit` waits, as a full sink does.
struct GatedSink {
    collected: CollectingSink,
    open: watch::Sender<bool>,
}

impl GatedSink {
    fn new() -> Self {
        Self {
            collected: CollectingSink::default(),
            open: watch::Sender::new(true),
        }
    }

    fn set_open(&self, open: bool) {
        self.open.send_replace(open);
    }
}

impl TraceSink for GatedSink {
    async fn submit(&self, trace: KeptTrace) {
        let _ = self.open.subscribe().wait_for(|open| *open).await;
        self.collected.submit(trace).await;
    }
}

struct Task {
    sink: Arc<GatedSink>,
    rules: watch::Sender<Arc<Rules>>,
    input: mpsc::Sender<Incoming>,
    handle: Arc<PartitionHandle>,
    stop: CancellationToken,
    task: JoinHandle<()>,
    next_offset: i64,
}

fn start(cfg: &Config) -> Task {
    let sink = Arc::new(GatedSink::new());
    let stop = CancellationToken::new();
    let shared = Arc::new(Shared {
        registry: Arc::new(Registry::new("t")),
        stop: stop.clone(),
        log_limiter: LogLimiter::default(),
        window: WindowContext {
            config: Plan::resolve(cfg).expect("test config resolves").window,
            cache: Arc::new(DecisionCache::new(1000, 1000)),
            occupancy: Arc::new(Occupancy::default()),
            trace_budget: usize::MAX,
            outage: Arc::default(),
            on_shutdown: cfg.shutdown.pending,
        },
        outputs: Outputs {
            sink: sink.clone(),
            dead_letters: Arc::new(CountOnly),
            decision_log: OnceLock::new(),
            rekey: None,
        },
        observers: Observers {
            span_metrics: None,
            dependencies: None,
        },
    });
    let (rules, rx) = watch::channel(Arc::new(build_rules(cfg).expect("test rules")));
    let (input, messages) = mpsc::channel(CHANNEL);
    let handle = PartitionHandle::new(0);
    let task = PartitionTask::new(handle.clone(), shared, rx);
    Task {
        sink,
        rules,
        input,
        handle,
        stop,
        task: tokio::spawn(task.run(Input {
            queue: None,
            handover: messages,
        })),
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

/// A root span: its trace is decided once it was idle for `root_idle`.
fn root(id: u8) -> GenSpan {
    GenSpan {
        parent: SpanId([0; 8]),
        ..span(id, vec![])
    }
}

impl Task {
    fn message(&mut self, trace: TraceId, span: &GenSpan) -> Incoming {
        let payload = encode::encode(Encoding::OtlpProto, &[(trace, span)]).remove(0);
        let m = Incoming {
            offset: self.next_offset,
            timestamp: None,
            payload: Bytes::from(payload),
            key: None,
            content_type: None,
        };
        self.next_offset += 1;
        m
    }

    async fn send(&mut self, trace: TraceId, span: &GenSpan) {
        let m = self.message(trace, span);
        self.input.send(m).await.expect("task running");
    }

    async fn collected_after_decisions(&self) -> Vec<Collected> {
        sleep(WAIT * 3).await;
        self.stop.cancel();
        sleep(Duration::from_millis(100)).await;
        self.sink.collected.take()
    }

    /// The offset the partition would commit; -1 before it published one.
    fn watermark(&self) -> i64 {
        self.handle.watermark.load(Ordering::Acquire)
    }

    /// Whether the task ended within a (virtual) minute.
    async fn ended(&mut self) -> bool {
        tokio::time::timeout(Duration::from_secs(60), &mut self.task)
            .await
            .is_ok()
    }
}

fn ids(collected: &[Collected]) -> Vec<TraceId> {
    collected.iter().map(|c| c.trace_id).collect()
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
    sleep(Duration::from_millis(50)).await;
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
    sleep(WAIT * 2).await;
    t.send(trace, &span(2, vec![])).await;
    let written = t.collected_after_decisions().await;
    let spans: usize = written.iter().map(|c| c.spans.len()).sum();
    assert_eq!(spans, 2, "{written:?}");
    assert!(written.iter().all(|c| c.would_drop));
}

/// A trace without a root is decided once `decision_wait` passed, not
/// before; a root span's trace once it was idle for `root_idle`.
#[tokio::test(start_paused = true)]
async fn traces_are_decided_at_their_deadlines() {
    let mut cfg = config(ALWAYS, false);
    cfg.sampling.root_idle = Duration::from_millis(100);
    let mut t = start(&cfg);
    let (waiting, rooted) = (TraceId([1; 16]), TraceId([2; 16]));
    t.send(waiting, &span(1, vec![])).await;
    t.send(rooted, &root(2)).await;
    sleep(Duration::from_millis(250)).await;
    assert_eq!(
        ids(&t.sink.collected.take()),
        vec![rooted],
        "root + root_idle"
    );
    sleep(WAIT - Duration::from_millis(250) - Duration::from_millis(10)).await;
    assert!(
        t.sink.collected.take().is_empty(),
        "decided before decision_wait"
    );
    // Deadlines are checked every tick (100 ms).
    sleep(Duration::from_millis(120)).await;
    assert_eq!(ids(&t.sink.collected.take()), vec![waiting]);
}

/// A trace's spans reach the sink in offset order, and the watermark never
/// passes a message whose trace is still undecided, however many later
/// messages were resolved first.
#[tokio::test(start_paused = true)]
async fn the_watermark_waits_for_the_oldest_undecided_message() {
    let mut cfg = config(ALWAYS, false);
    cfg.sampling.root_idle = Duration::from_millis(50);
    let mut t = start(&cfg);
    let (slow, quick) = (TraceId([3; 16]), TraceId([4; 16]));
    t.send(slow, &span(1, vec![])).await; // offset 0
    for id in 2..5 {
        t.send(quick, &span(id, vec![])).await; // offsets 1..=3
    }
    t.send(quick, &root(5)).await; // offset 4
    sleep(Duration::from_millis(200)).await;
    let kept = t.sink.collected.take();
    assert_eq!(ids(&kept), vec![quick]);
    let offsets: Vec<i64> = kept[0].spans.iter().map(|s| s.payload.offset).collect();
    assert_eq!(offsets, vec![1, 2, 3, 4]);
    assert_eq!(t.watermark(), 0, "committed past the undecided offset 0");
    sleep(WAIT).await;
    assert_eq!(ids(&t.sink.collected.take()), vec![slow]);
    assert_eq!(t.watermark(), 5);
}

/// While the sink makes `submit` wait, the task reads nothing more (its
/// channel fills, and the pump would pause the partition), and the
/// windows' clock stands still: a trace buffered before the stall gets the
/// rest of its `decision_wait` after it, not a deadline that passed
/// during it.
#[tokio::test(start_paused = true)]
async fn a_waiting_sink_stops_consumption_and_the_windows_clock() {
    let mut cfg = config(ALWAYS, false);
    cfg.sampling.root_idle = Duration::from_millis(50);
    let mut t = start(&cfg);
    let (buffered, first) = (TraceId([5; 16]), TraceId([6; 16]));
    t.sink.set_open(false);
    t.send(buffered, &span(1, vec![])).await;
    t.send(first, &root(2)).await;
    // `first` is decided and its submit waits.
    sleep(Duration::from_millis(200)).await;
    let mut queued = 0;
    loop {
        let m = t.message(TraceId([7; 16]), &span(3, vec![]));
        if t.input.try_send(m).is_err() {
            break;
        }
        queued += 1;
    }
    assert_eq!(queued, CHANNEL, "the task went on reading");
    sleep(WAIT * 10).await;
    assert!(t.sink.collected.take().is_empty());
    t.sink.set_open(true);
    sleep(Duration::from_millis(10)).await;
    assert_eq!(ids(&t.sink.collected.take()), vec![first]);
    // `buffered` had waited 100 ms of its 300 ms when the stall began (the
    // tick that decided `first`); on the wall clock it would be due now.
    sleep(Duration::from_millis(150)).await;
    assert!(!ids(&t.sink.collected.take()).contains(&buffered));
    sleep(WAIT).await;
    assert!(ids(&t.sink.collected.take()).contains(&buffered));
}

/// On revoke the task ends at once and forgets its buffered traces: the
/// next owner replays them from the watermark, which stays before them.
#[tokio::test(start_paused = true)]
async fn a_revoked_partition_forgets_its_traces() {
    let mut t = start(&config(ALWAYS, false));
    t.send(TraceId([8; 16]), &span(1, vec![])).await;
    sleep(Duration::from_millis(150)).await;
    t.handle.revoked.cancel();
    assert!(t.ended().await, "the task outlived its revoke");
    sleep(WAIT * 3).await;
    assert!(t.sink.collected.take().is_empty());
    assert!(t.watermark() <= 0, "committed past a forgotten trace");
}

/// At shutdown, `pending: decide` decides what is buffered and writes the
/// kept traces, but holds the watermark at their first message: they may
/// be incomplete, and the next owner decides them whole.
#[tokio::test(start_paused = true)]
async fn shutdown_decides_buffered_traces_but_does_not_commit_them() {
    let mut t = start(&config(ALWAYS, false));
    let (a, b) = (TraceId([9; 16]), TraceId([10; 16]));
    t.send(a, &span(1, vec![])).await;
    t.send(b, &span(2, vec![])).await;
    sleep(Duration::from_millis(150)).await;
    t.stop.cancel();
    assert!(t.ended().await, "shutdown did not finish");
    let mut written = ids(&t.sink.collected.take());
    written.sort_by_key(|id| id.0);
    assert_eq!(written, vec![a, b]);
    assert_eq!(t.watermark(), 0);
}

/// `pending: drop` forgets buffered traces at shutdown.
#[tokio::test(start_paused = true)]
async fn shutdown_with_pending_drop_writes_nothing() {
    let mut cfg = config(ALWAYS, false);
    cfg.shutdown.pending = PendingOnShutdown::Drop;
    let mut t = start(&cfg);
    t.send(TraceId([11; 16]), &span(1, vec![])).await;
    sleep(Duration::from_millis(150)).await;
    t.stop.cancel();
    assert!(t.ended().await, "shutdown did not finish");
    assert!(t.sink.collected.take().is_empty());
    assert_eq!(t.watermark(), 0);
}
