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
//! - `POST /pools/{pool}/addresses/{address}/force` with `{"state": "down" | "up" | "auto"}`:
//!   an admin override (maintenance). With `[api] token_file` it needs
//!   `Authorization: Bearer <token>` (else 401); without one it is allowed only from loopback
//!   (else 403). A malformed body gets 400, an unknown pool or address 404.
//! - `POST /reload`: re-reads the config and zone files (see `reload`), with the same
//!   authorization. 200 with a JSON report, or 422 with `{"errors": [...]}` when the new
//!   config is invalid (the old one is still served).

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

use crate::publish::{ControlHandle, StatusHandle};
use crate::reload::{ReloadError, ReloadHandle};

pub mod page;

/// What the handlers share.
#[derive(Clone)]
pub struct Api {
    status: StatusHandle,
    control: ControlHandle,
    reload: Option<ReloadHandle>,
    metrics: Option<PrometheusHandle>,
    ready: Arc<AtomicBool>,
    /// Required as `Authorization: Bearer …` by endpoints that change state; without one,
    /// they are allowed only from loopback.
    token: Option<Arc<str>>,
    /// Files the snapshot writer cannot write now, added to the status report.
    writes: crate::export::WriteProblemsReader,
}

impl Api {
    /// `metrics` is None when no recorder is installed (tests that run servers in-process).
    pub fn new(
        status: StatusHandle,
        control: ControlHandle,
        reload: Option<ReloadHandle>,
        metrics: Option<PrometheusHandle>,
        ready: Arc<AtomicBool>,
        token: Option<String>,
    ) -> Self {
        Self {
            status,
            control,
            reload,
            metrics,
            ready,
            token: token.map(Arc::from),
            writes: Default::default(),
        }
    }

    /// Reports the files the snapshot writer cannot write (a full disk) in the status.
    pub fn with_write_problems(mut self, writes: crate::export::WriteProblemsReader) -> Self {
        self.writes = writes;
        self
    }

    async fn report(&self) -> Option<crate::publish::StatusReport> {
        let mut report = self.status.report().await?;
        report.write_errors = self.writes.problems();
        Some(report)
    }

    fn router(self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/status", get(status))
            .route("/", get(status_page))
            .route(
                "/pools/{pool}/addresses/{address}/force",
                axum::routing::post(force),
            )
            .route("/reload", axum::routing::post(reload))
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
    axum::serve(
        listener,
        api.router()
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}

async fn metrics(State(api): State<Api>) -> Response {
    match &api.metrics {
        Some(handle) => {
            api.status.refresh_ages().await;
            (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                handle.render(),
            )
                .into_response()
        }
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
    match api.report().await {
        Some(report) => axum::Json(report).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the publisher has stopped\n",
        )
            .into_response(),
    }
}

async fn status_page(State(api): State<Api>) -> Response {
    match api.report().await {
        Some(report) => axum::response::Html(page::render(&report)).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the publisher has stopped\n",
        )
            .into_response(),
    }
}

/// Whether a state-changing request may proceed: None if so, else the refusal.
fn authorize(api: &Api, peer: SocketAddr, headers: &axum::http::HeaderMap) -> Option<Response> {
    match &api.token {
        Some(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "))
                .unwrap_or_default();
            // Compared in constant time.
            let same = given.len() == token.len()
                && given
                    .bytes()
                    .zip(token.bytes())
                    .fold(0u8, |difference, (left, right)| difference | (left ^ right))
                    == 0;
            (!same).then(|| {
                metrics::counter!("healthdns_api_refused_total", "why" => "token").increment(1);
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    "a valid bearer token is required (Authorization: Bearer <token from [api] token_file>)\n",
                )
                    .into_response()
            })
        }
        None => (!peer.ip().is_loopback()).then(|| {
            metrics::counter!("healthdns_api_refused_total", "why" => "not loopback").increment(1);
            (
                StatusCode::FORBIDDEN,
                "without [api] token_file, changes are allowed only from loopback\n",
            )
                .into_response()
        }),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ForceBody {
    state: String,
}

/// The forced state a `POST /pools/{pool}/{address}/force` body asks for: `Some(false)`
/// down, `Some(true)` up, `None` back to the probes; or why the body is refused. Any bytes
/// are accepted as input (the fuzz target `api_body` feeds it garbage).
pub fn parse_force_body(body: &[u8]) -> Result<Option<bool>, String> {
    let body: ForceBody = serde_json::from_slice(body).map_err(|error| {
        format!("the body must be {{\"state\": \"down\" | \"up\" | \"auto\"}}: {error}")
    })?;
    match body.state.as_str() {
        "down" => Ok(Some(false)),
        "up" => Ok(Some(true)),
        "auto" => Ok(None),
        other => Err(format!(
            "state {other:?} is not \"down\", \"up\" or \"auto\""
        )),
    }
}

async fn force(
    State(api): State<Api>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    axum::extract::Path((pool, address)): axum::extract::Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refusal) = authorize(&api, peer, &headers) {
        return refusal;
    }
    let bad = |message: String| {
        metrics::counter!("healthdns_api_malformed_total").increment(1);
        (StatusCode::BAD_REQUEST, message + "\n").into_response()
    };
    let Ok(address) = address.parse::<std::net::IpAddr>() else {
        return bad(format!("{address:?} is not an IP address"));
    };
    let forced = match parse_force_body(&body) {
        Ok(forced) => forced,
        Err(message) => return bad(message),
    };
    let state = match forced {
        Some(false) => "down",
        Some(true) => "up",
        None => "auto",
    };
    match api.control.force(&pool, address, forced).await {
        Some(Ok(())) => (StatusCode::OK, format!("{pool} {address}: {state}\n")).into_response(),
        Some(Err(error)) => (StatusCode::NOT_FOUND, format!("{error}\n")).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the publisher has stopped\n",
        )
            .into_response(),
    }
}

async fn reload(
    State(api): State<Api>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
) -> Response {
    if let Some(refusal) = authorize(&api, peer, &headers) {
        return refusal;
    }
    let Some(handle) = &api.reload else {
        return (StatusCode::NOT_FOUND, "this server cannot reload\n").into_response();
    };
    match handle.reload().await {
        Ok(report) => axum::Json(report).into_response(),
        Err(error @ ReloadError::Stopping) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")).into_response()
        }
        Err(error) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(serde_json::json!({ "errors": error.errors() })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_force_body;

    #[test]
    fn force_bodies_give_a_state_or_a_reason() {
        assert_eq!(parse_force_body(br#"{"state": "down"}"#), Ok(Some(false)));
        assert_eq!(parse_force_body(br#"{"state":"up"}"#), Ok(Some(true)));
        assert_eq!(parse_force_body(br#"{"state": "auto"}"#), Ok(None));
        for bad in [
            &b""[..],
            b"{",
            br#"{"state": "sideways"}"#,
            br#"{"state": 1}"#,
            br#"{"state": "down", "extra": 1}"#,
            b"\xff\xfe",
        ] {
            let reason = parse_force_body(bad).unwrap_err();
            assert!(reason.contains("state"), "{reason}");
        }
    }
}
