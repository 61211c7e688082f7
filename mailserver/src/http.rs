//! The HTTP port for operations: `/healthz` (liveness), `/readyz` (readiness: PostgreSQL
//! answers) and `/metrics` (Prometheus).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::{Context, metrics};

/// How long `/readyz` waits for PostgreSQL before calling the pod not ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// What the handlers see: the store, and whether the server is draining (not ready then).
#[derive(Clone)]
struct Ops {
    ctx: Arc<Context>,
    draining: watch::Receiver<bool>,
}

/// The routes; unknown paths get 404. `/readyz` turns false once `draining` is true.
pub fn router(ctx: Arc<Context>, draining: watch::Receiver<bool>) -> Router {
    // Client self-configuration too, for an ingress that terminates TLS in front of this port.
    let clientconfig = crate::clientconfig::router(ctx.clone());
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Ops { ctx, draining })
        .merge(clientconfig)
}

/// Serves `listener` until `shutdown` turns true; open requests finish first.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<Context>,
    draining: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let stop = async move {
        // An error means the server is gone, which is a shutdown too.
        let _ = shutdown.wait_for(|stopping| *stopping).await;
    };
    if let Err(err) = axum::serve(listener, router(ctx, draining))
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::warn!(%err, "HTTP listener stopped");
    }
    tracing::info!(protocol = "http", "listener stopping");
}

/// The process runs and answers: that is all liveness asks.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready while PostgreSQL answers `SELECT 1` in time; a pod that lost its database should
/// leave the Service instead of taking connections it cannot serve.
async fn readyz(State(ops): State<Ops>) -> Response {
    if *ops.draining.borrow() {
        // The load balancer takes the pod out first; open sessions are being drained.
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    let query = sqlx::query("SELECT 1").execute(ops.ctx.store.db());
    match tokio::time::timeout(READY_TIMEOUT, query).await {
        Ok(Ok(_)) => (StatusCode::OK, "ok\n").into_response(),
        Ok(Err(err)) => not_ready(&format!("database: {err}")),
        Err(_) => not_ready(&format!(
            "database: no answer within {}s",
            READY_TIMEOUT.as_secs()
        )),
    }
}

fn not_ready(reason: &str) -> Response {
    tracing::warn!(reason, "not ready");
    (StatusCode::SERVICE_UNAVAILABLE, one_line(reason)).into_response()
}

/// `reason` on a single line (driver errors may span several), newline-terminated.
fn one_line(reason: &str) -> String {
    let mut line = reason.split_whitespace().collect::<Vec<_>>().join(" ");
    line.push('\n');
    line
}

async fn metrics_text() -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_one_line() {
        for (reason, want) in [
            ("database: refused", "database: refused\n"),
            ("a\nb\r\nc", "a b c\n"),
            ("  spaced   out ", "spaced out\n"),
            ("", "\n"),
        ] {
            assert_eq!(one_line(reason), want, "{reason:?}");
        }
    }
}
