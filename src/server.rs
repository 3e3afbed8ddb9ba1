//! The HTTP endpoints operators and orchestrators poll: Prometheus
//! `/metrics`, liveness `/healthz`, readiness `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::series::Exposition;
use crate::telemetry::ProcessMetrics;

/// What readiness depends on; implemented by the running service.
pub trait Readiness: Send + Sync + 'static {
    /// `Ok` when ready, else the reason it is not.
    fn ready(&self) -> Result<(), String>;
}

struct AppState {
    metrics: PrometheusHandle,
    /// Families kept outside the registry (span metrics, service graph).
    families: Vec<Arc<dyn Exposition>>,
    process: ProcessMetrics,
    readiness: Arc<dyn Readiness>,
}

/// Serves until `stop` fires.
pub async fn serve(
    listen: SocketAddr,
    metrics: PrometheusHandle,
    families: Vec<Arc<dyn Exposition>>,
    readiness: Arc<dyn Readiness>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let state = Arc::new(AppState {
        metrics,
        families,
        process: ProcessMetrics::default(),
        readiness,
    });
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "serving /metrics, /healthz, /readyz");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

async fn render_metrics(State(s): State<Arc<AppState>>) -> String {
    s.process.collect();
    let mut out = s.metrics.render();
    for family in &s.families {
        family.render(&mut out);
    }
    out
}

/// Ready or not, with what an operator must fix even so: input that is not
/// keyed by trace ID is sampled wrongly but flows, so it does not make the
/// instance unready (a rollout would stall on a producer's setting).
async fn ready(State(s): State<Arc<AppState>>) -> (StatusCode, String) {
    let note = crate::keying::note().map(|n| format!("warning: {n}\n"));
    let note = note.unwrap_or_default();
    match s.readiness.ready() {
        Ok(()) => (StatusCode::OK, format!("ready\n{note}")),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n{note}"),
        ),
    }
}
