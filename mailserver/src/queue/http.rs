//! Queue inspection on the HTTP port: `GET /queue` (JSON), `POST /queue/{id}/retry` (due now),
//! `DELETE /queue/{id}` (dropped without a bounce). The port is for operators: keep it off the
//! Service that faces users.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};

use super::store;
use crate::Context;

/// Most messages one `GET /queue` lists.
const LIST_LIMIT: i64 = 1000;

pub fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/queue", get(list))
        .route("/queue/{id}/retry", post(retry))
        .route("/queue/{id}", delete(remove))
        .with_state(ctx)
}

async fn list(State(ctx): State<Arc<Context>>) -> Response {
    match store::list(ctx.store.db(), LIST_LIMIT).await {
        Ok(messages) => match serde_json::to_string(&messages) {
            Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
            Err(error) => failed(&error.to_string()),
        },
        Err(error) => failed(&error.to_string()),
    }
}

async fn retry(State(ctx): State<Arc<Context>>, Path(id): Path<i64>) -> Response {
    match store::retry(ctx.store.db(), id).await {
        Ok(true) => (StatusCode::OK, "due now\n").into_response(),
        Ok(false) => (StatusCode::NOT_FOUND, "no such queued message\n").into_response(),
        Err(error) => failed(&error.to_string()),
    }
}

async fn remove(State(ctx): State<Arc<Context>>, Path(id): Path<i64>) -> Response {
    match store::delete(&ctx.store, id).await {
        Ok(true) => {
            tracing::info!(queue_id = id, "queued message deleted by an operator");
            (StatusCode::OK, "deleted\n").into_response()
        }
        Ok(false) => (StatusCode::NOT_FOUND, "no such queued message\n").into_response(),
        Err(error) => failed(&error.to_string()),
    }
}

fn failed(reason: &str) -> Response {
    tracing::warn!(reason, "queue inspection failed");
    (StatusCode::SERVICE_UNAVAILABLE, "queue unavailable\n").into_response()
}
