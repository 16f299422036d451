//! The status endpoints: `/healthz`, `/readyz`, `/metrics`, `/stats`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

/// What the endpoints report on; the stage implements it, so this module
/// needs to know nothing about Kafka or plugins.
pub trait StatusSource: Send + Sync + 'static {
    /// `Err(reason)`: the process is stuck and should be restarted.
    fn liveness(&self) -> Result<(), String>;
    /// `Err(reason)`: the stage cannot process messages right now.
    fn readiness(&self) -> Result<(), String>;
    /// Thresholds the stage crosses while it still works: `/readyz` lists
    /// them and stays 200.
    fn degraded(&self) -> Vec<String> {
        Vec::new()
    }
    /// Everything `/stats` shows, as JSON.
    fn stats(&self) -> serde_json::Value;
}

/// The HTTP server for the status endpoints, running on the Tokio runtime
/// it was started on. Stops when dropped.
pub struct StatusServer {
    address: SocketAddr,
    stop: CancellationToken,
}

impl StatusServer {
    /// Bind `listen` (port 0 picks a free port) and serve until dropped.
    pub async fn start(listen: SocketAddr, source: Arc<dyn StatusSource>) -> io::Result<StatusServer> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let address = listener.local_addr()?;
        let app = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_text))
            .route("/stats", get(stats))
            .with_state(source);
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let serving = axum::serve(listener, app).with_graceful_shutdown(async move { stopped.cancelled().await });
            if let Err(error) = serving.await {
                tracing::error!(%error, "the status server stopped");
            }
        });
        tracing::info!(%address, "serving /healthz, /readyz, /metrics and /stats");
        Ok(StatusServer { address, stop })
    }

    /// Where it listens (the real port when asked for port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

type Source = State<Arc<dyn StatusSource>>;

async fn healthz(State(source): Source) -> Response {
    verdict(source.liveness())
}

/// 200 or 503 with a JSON body: `{"ready": true, "degraded": [...]}`, or
/// `{"ready": false, "reason": "...", "degraded": [...]}`.
async fn readyz(State(source): Source) -> Response {
    let degraded = source.degraded();
    match source.readiness() {
        Ok(()) => axum::Json(serde_json::json!({ "ready": true, "degraded": degraded })).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "ready": false, "reason": reason, "degraded": degraded })),
        )
            .into_response(),
    }
}

fn verdict(result: Result<(), String>) -> Response {
    match result {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
    }
}

async fn metrics_text() -> Response {
    let Some(handle) = super::metrics::prometheus() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics go to another recorder in this process\n",
        )
            .into_response();
    };
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        handle.render(),
    )
        .into_response()
}

async fn stats(State(source): Source) -> Response {
    axum::Json(source.stats()).into_response()
}
