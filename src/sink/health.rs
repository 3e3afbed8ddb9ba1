//! Sink health for `/readyz`: a background probe of Elasticsearch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{ElasticsearchSink, KeptTrace, TraceSink};

/// How often Elasticsearch is probed.
const PROBE_EVERY: Duration = Duration::from_secs(5);

/// The Elasticsearch sink plus the last probe's verdict.
pub struct Monitored {
    sink: Arc<ElasticsearchSink>,
    healthy: Arc<AtomicBool>,
}

impl Monitored {
    /// Probes once now, then every few seconds in the background.
    pub async fn new(sink: ElasticsearchSink) -> Self {
        let sink = Arc::new(sink);
        let healthy = Arc::new(AtomicBool::new(sink.ping().await));
        let (s, h) = (Arc::downgrade(&sink), healthy.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                let Some(sink) = s.upgrade() else { return };
                h.store(sink.ping().await, Ordering::Relaxed);
            }
        });
        Self { sink, healthy }
    }
}

impl TraceSink for Monitored {
    fn submit(&self, trace: KeptTrace) -> impl Future<Output = ()> + Send {
        self.sink.submit(trace)
    }

    fn is_ready(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}
