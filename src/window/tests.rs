use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::model::{ByteRange, Payload, ScanBatch, SpanId, SpanLayout, SpanStatus, WireFormat};

fn engine(policies: serde_json::Value) -> Arc<PolicyEngine> {
    let list = policies.as_array().cloned().unwrap_or_default();
    Arc::new(PolicyEngine::from_config(&list).expect("valid policies"))
}

fn errors_only() -> Arc<PolicyEngine> {
    engine(serde_json::json!([
        {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}
    ]))
}

fn cfg() -> WindowConfig {
    WindowConfig {
        decision_wait: Duration::from_secs(10),
        root_idle: Duration::from_secs(2),
        max_spans_per_trace: 5,
        max_bytes_per_trace: 1 << 20,
        dry_run: false,
        tracked_bytes_per_span: 0,
    }
}

struct Fixture {
    window: TraceWindow,
    occupancy: Arc<Occupancy>,
    payload: Arc<Payload>,
}

fn fixture(cfg: WindowConfig, engine: Arc<PolicyEngine>) -> Fixture {
    let occupancy = Arc::new(Occupancy::default());
    let cache = Arc::new(DecisionCache::new(64, 64));
    Fixture {
        window: TraceWindow::new(cfg, engine, cache, occupancy.clone()),
        occupancy,
        payload: Arc::new(Payload {
            bytes: Bytes::from_static(&[0u8; 100]),
            format: WireFormat::Otlp,
            partition: 0,
            offset: 7,
            times: crate::span_time::TimeBounds::UNBOUNDED,
        }),
    }
}

fn span(trace: u8, id: u8, parent: u8, status: SpanStatus) -> ScannedSpan {
    ScannedSpan {
        trace_id: TraceId([trace; 16]),
        span_id: SpanId([id; 8]),
        parent_span_id: SpanId([parent; 8]),
        start_unix_nano: 1_000,
        end_unix_nano: 2_000,
        status,
        layout: SpanLayout {
            span: ByteRange::new(0, 40),
            ..Default::default()
        },
        ..Default::default()
    }
}

impl Fixture {
    fn insert(&mut self, s: ScannedSpan, now: Instant) -> Inserted {
        let mut batch = ScanBatch::default();
        batch.spans.push(s);
        let view = batch.view(0, &self.payload.bytes);
        let span_ref = SpanRef {
            payload: self.payload.clone(),
            layout: batch.spans[0].layout,
        };
        self.window.insert(&batch.spans[0], &view, span_ref, now, 1)
    }
}

#[test]
fn decides_after_decision_wait() {
    let mut f = fixture(cfg(), errors_only());
    let t0 = Instant::now();
    assert!(matches!(
        f.insert(span(1, 1, 9, SpanStatus::Error), t0),
        Inserted::Buffered
    ));
    assert!(matches!(
        f.insert(span(1, 2, 1, SpanStatus::Ok), t0),
        Inserted::Buffered
    ));
    assert!(f.window.expire(t0 + Duration::from_secs(9)).is_empty());
    let d = f.window.expire(t0 + Duration::from_secs(10));
    assert_eq!(d.len(), 1);
    assert!(d[0].decision.keep);
    assert_eq!(d[0].reason, DecisionReason::Timeout);
    assert_eq!(d[0].spans.len(), 2);
    assert_eq!(d[0].resolved.offsets, vec![(7, 2)]);
    assert_eq!(f.occupancy.bytes(), 0);
    assert_eq!(f.window.trace_count(), 0);
}

#[test]
fn root_idle_decides_early_and_waits_for_stragglers() {
    let mut f = fixture(cfg(), errors_only());
    let t0 = Instant::now();
    f.insert(span(2, 1, 0, SpanStatus::Ok), t0);
    f.insert(span(2, 2, 1, SpanStatus::Ok), t0 + Duration::from_secs(1));
    // The root arrived at t0, but a child came at t0+1s: idle until t0+3s.
    assert!(f.window.expire(t0 + Duration::from_millis(2500)).is_empty());
    let d = f.window.expire(t0 + Duration::from_secs(3));
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].reason, DecisionReason::Root);
    assert!(!d[0].decision.keep);
}

#[test]
fn span_limit_decides_immediately() {
    let mut f = fixture(cfg(), errors_only());
    let t0 = Instant::now();
    for i in 1..5 {
        assert!(matches!(
            f.insert(span(3, i, 9, SpanStatus::Ok), t0),
            Inserted::Buffered
        ));
    }
    match f.insert(span(3, 5, 9, SpanStatus::Ok), t0) {
        Inserted::Decided(d) => {
            assert_eq!(d.reason, DecisionReason::Limit);
            assert_eq!(d.spans.len(), 5);
        }
        other => panic!("expected a limit decision, got {other:?}"),
    }
}

#[test]
fn late_spans_follow_the_cached_decision() {
    let mut f = fixture(cfg(), errors_only());
    let t0 = Instant::now();
    f.insert(span(4, 1, 0, SpanStatus::Error), t0);
    f.insert(span(5, 1, 0, SpanStatus::Ok), t0);
    assert_eq!(f.window.expire(t0 + Duration::from_secs(10)).len(), 2);
    let later = t0 + Duration::from_secs(11);
    match f.insert(span(4, 2, 1, SpanStatus::Ok), later) {
        Inserted::Late(Remembered::Kept(d), Found::Memory) => assert_eq!(&*d.policy, "errors"),
        other => panic!("expected late kept, got {other:?}"),
    }
    assert!(matches!(
        f.insert(span(5, 2, 1, SpanStatus::Ok), later),
        Inserted::Late(Remembered::Dropped, Found::Memory)
    ));
}

#[test]
fn shed_decides_oldest_for_memory() {
    let mut f = fixture(cfg(), errors_only());
    let t0 = Instant::now();
    f.insert(span(6, 1, 9, SpanStatus::Ok), t0);
    f.insert(span(7, 1, 9, SpanStatus::Ok), t0 + Duration::from_secs(1));
    let d = f.window.shed(1, t0 + Duration::from_secs(2));
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].trace_id, TraceId([6; 16]));
    assert_eq!(d[0].reason, DecisionReason::Memory);
    assert_eq!(f.window.trace_count(), 1);
}

/// A partition at the head of its topic beside one catching up a backlog:
/// together they are over the budget, but the small window holds only a
/// trace still receiving spans. Decided now from its first (OK) span, its
/// error span, next, would follow a drop: the window over its share sheds
/// instead, its oldest first, by the excess.
#[test]
fn only_windows_over_their_share_shed() {
    let mut backlog = fixture(cfg(), errors_only());
    let cache = Arc::new(DecisionCache::new(64, 64));
    let window = TraceWindow::new(cfg(), errors_only(), cache, backlog.occupancy.clone());
    let mut head = Fixture {
        window,
        occupancy: backlog.occupancy.clone(),
        payload: backlog.payload.clone(),
    };
    let t0 = Instant::now();
    for trace in 10..20 {
        backlog.insert(span(trace, 1, 0, SpanStatus::Ok), t0);
    }
    head.insert(span(30, 1, 9, SpanStatus::Ok), t0 + Duration::from_secs(1));
    let per_trace = backlog.occupancy.bytes() / 11;
    let budget = 6 * per_trace;
    let now = t0 + Duration::from_secs(2);

    assert!(head.window.relieve(budget, 2, now).is_empty());
    let shed = backlog.window.relieve(budget, 2, now);
    let ids: Vec<u8> = shed.iter().map(|d| d.trace_id.0[0]).collect();
    assert_eq!(ids, vec![10, 11, 12, 13, 14]);
    assert!(shed.iter().all(|d| d.reason == DecisionReason::Memory));
    assert!(matches!(
        head.insert(span(30, 2, 1, SpanStatus::Error), now),
        Inserted::Buffered
    ));
    let decided = head.window.expire(t0 + Duration::from_secs(11));
    assert_eq!(decided.len(), 1);
    assert!(decided[0].decision.keep, "the error trace is kept whole");
    assert_eq!(decided[0].spans.len(), 2);
}

#[test]
fn dry_run_marks_would_drop() {
    let mut c = cfg();
    c.dry_run = true;
    let mut f = fixture(c, errors_only());
    let t0 = Instant::now();
    f.insert(span(8, 1, 0, SpanStatus::Ok), t0);
    let d = f.window.drain(t0);
    assert_eq!(d.len(), 1);
    assert!(d[0].would_drop && d[0].write());
    assert_eq!(d[0].reason, DecisionReason::Shutdown);
}

#[test]
fn dropping_a_window_releases_its_memory() {
    let mut f = fixture(cfg(), errors_only());
    f.insert(span(9, 1, 9, SpanStatus::Ok), Instant::now());
    assert!(f.occupancy.bytes() > 0);
    drop(f.window);
    assert_eq!(f.occupancy.bytes(), 0);
    assert_eq!(
        f.occupancy
            .traces
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn extra_charges_count_until_the_trace_is_decided() {
    let mut f = fixture(cfg(), errors_only());
    let t0 = Instant::now();
    f.insert(span(1, 1, 0, SpanStatus::Unset), t0);
    let base = f.occupancy.bytes();
    f.window.charge(&TraceId([1; 16]), 500);
    assert_eq!(f.occupancy.bytes(), base + 500);
    // Unknown (or already decided) traces are not charged.
    f.window.charge(&TraceId([9; 16]), 500);
    assert_eq!(f.occupancy.bytes(), base + 500);
    let decided = f.window.expire(t0 + Duration::from_secs(11));
    assert_eq!(decided.len(), 1);
    assert_eq!(f.occupancy.bytes(), 0);
}

#[test]
fn a_new_window_follows_the_earlier_assignments_decisions() {
    let mut f = fixture(cfg(), errors_only());
    let t0 = Instant::now();
    f.insert(span(1, 1, 0, SpanStatus::Unset), t0);
    assert_eq!(f.window.expire(t0 + Duration::from_secs(11)).len(), 1);
    // The partition assigned again (new window, same shared cache): a late
    // span of the trace follows the decision made before, as it would
    // with the decision read back from the log in another process.
    let cache = f.window.cache.clone();
    f.window = TraceWindow::new(cfg(), errors_only(), cache, f.occupancy.clone());
    assert!(matches!(
        f.insert(span(1, 2, 1, SpanStatus::Error), t0),
        Inserted::Late(Remembered::Dropped, Found::Memory)
    ));
}

#[test]
fn shutdown_decisions_are_not_remembered() {
    let mut f = fixture(cfg(), errors_only());
    let t0 = Instant::now();
    f.insert(span(1, 1, 0, SpanStatus::Unset), t0);
    assert_eq!(f.window.drain(t0).len(), 1);
    // The next owner decides the replayed trace whole.
    assert!(matches!(
        f.insert(span(1, 2, 1, SpanStatus::Error), t0),
        Inserted::Buffered
    ));
}

#[test]
fn deadlines_come_up_in_time_order_across_both_queues() {
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    let id = |n| TraceId([n; 16]);
    let mut d = Deadlines::default();
    d.push_wait(at(10), id(1));
    d.push_wait(at(30), id(2));
    d.push_idle(at(20), id(3));
    // Earlier than the last idle entry (a re-checked deadline): sorted in.
    d.push_idle(at(15), id(4));
    assert_eq!(d.next(), Some(at(10)));
    assert_eq!(d.pop(Some(at(5))), None);
    let due: Vec<u8> = std::iter::from_fn(|| d.pop(Some(at(25))))
        .map(|(_, t)| t.0[0])
        .collect();
    assert_eq!(due, [1, 4, 3]);
    assert_eq!(d.pop(None), Some((at(30), id(2))));
    assert_eq!(d.next(), None);
}
