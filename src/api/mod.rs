//! The HTTP API: Prometheus metrics, health probes for orchestrators, and the status report.
//!
//! Why this exists: an operator must be able to see what the server believes (every address's
//! state and why, every name's answer, every zone's serial) without reading logs, and a
//! monitoring system must be able to scrape it. It sits at the end of the data flow, beside
//! `dns`: it reads the publisher's report through a [`StatusHandle`] (which cannot change
//! anything) and the metrics recorder's handle.
//!
//! Endpoints (`[api] listen`, loopback by default):
//! - `GET /metrics`: the Prometheus text format.
//! - `GET /healthz`: 200 while the process runs.
//! - `GET /readyz`: 200 once the first probe round is done and DNS is being answered, 503
//!   before.
//! - `GET /status`: the status report as JSON.
//! - `GET /`: the same report as a self-refreshing HTML page (see [`page`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::publish::StatusHandle;

pub mod page;

/// What the handlers share.
#[derive(Clone)]
pub struct Api {
    status: StatusHandle,
    metrics: Option<PrometheusHandle>,
    ready: Arc<AtomicBool>,
}

impl Api {
    /// `metrics` is None when no recorder is installed (tests that run servers in-process).
    pub fn new(
        status: StatusHandle,
        metrics: Option<PrometheusHandle>,
        ready: Arc<AtomicBool>,
    ) -> Self {
        Self {
            status,
            metrics,
            ready,
        }
    }

    fn router(self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/status", get(status))
            .route("/", get(status_page))
            .with_state(self)
    }
}

/// Serves the API on `listener` (bound by the caller) until `shutdown`.
pub async fn serve(
    listener: std::net::TcpListener,
    api: Api,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let address: SocketAddr = listener.local_addr()?;
    tracing::info!(%address, "serving the HTTP API");
    axum::serve(listener, api.router())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn metrics(State(api): State<Api>) -> Response {
    match &api.metrics {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no metrics recorder in this process\n",
        )
            .into_response(),
    }
}

async fn readyz(State(api): State<Api>) -> Response {
    if api.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: the first probe round is not done\n",
        )
            .into_response()
    }
}

async fn status(State(api): State<Api>) -> Response {
    match api.status.report().await {
        Some(report) => axum::Json(report).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the publisher has stopped\n",
        )
            .into_response(),
    }
}

async fn status_page(State(api): State<Api>) -> Response {
    match api.status.report().await {
        Some(report) => axum::response::Html(page::render(&report)).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the publisher has stopped\n",
        )
            .into_response(),
    }
}
