//! Test fixtures: a kube client on a `tower_test` mock API server that records every request
//! and answers it, real PostgreSQL (the shared harness) and a filesystem blob store.

use std::future::Future;
use std::sync::Arc;

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use mail_blobstore::FsBlobStore;
use mail_provision::Options;
use mail_provision::dns::DnsSettings;
use serde_json::Value;
use sqlx::PgPool;
use tower_test::mock::Handle;

use crate::context::Context;
use crate::metrics::Metrics;

pub type ApiHandle = Handle<Request<Body>, Response<Body>>;

/// One request the operator made.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub body: Value,
}

impl Seen {
    /// `METHOD path?query`, for asserting the order of requests at a glance.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.uri)
    }
}

/// A context whose client talks to the returned mock API server, on a fresh migrated database
/// and a blob directory that lives as long as the returned guard.
pub async fn context() -> (Arc<Context>, ApiHandle, tempfile::TempDir) {
    let pool = PgPool::connect(&mail_testkit::fresh_database())
        .await
        .expect("connect to the test database");
    mail_provision::migrate(&pool).await.expect("migrate");
    context_on(pool).await
}

/// Like [`context`], on a given pool (an unreachable one for the error paths).
pub async fn context_on(pool: PgPool) -> (Arc<Context>, ApiHandle, tempfile::TempDir) {
    let (client, handle) = mock_client();
    let blobs = tempfile::tempdir().expect("tempdir");
    let ctx = Context::new(
        client,
        pool,
        Arc::new(FsBlobStore::new(blobs.path())),
        Options::default(),
        DnsSettings {
            mail_host: "mail.example.net".to_string(),
            ttl: 3600,
        },
        Arc::new(Metrics::default()),
    );
    (Arc::new(ctx), handle, blobs)
}

/// A client whose requests arrive at the returned handle.
pub fn mock_client() -> (Client, ApiHandle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

/// Runs `work` to its end while answering each API request it makes with `respond`
/// (status code and JSON body); returns its output and the requests in order.
pub async fn serve<T: Send + 'static>(
    handle: &mut ApiHandle,
    work: impl Future<Output = T> + Send + 'static,
    mut respond: impl FnMut(&Seen) -> (u16, Value),
) -> (T, Vec<Seen>) {
    let task = tokio::spawn(work);
    tokio::pin!(task);
    let mut seen = Vec::new();
    loop {
        tokio::select! {
            // The work waits for each answer, so it cannot end with a request unanswered.
            out = &mut task => return (out.expect("the reconcile task"), seen),
            request = handle.next_request() => {
                let (request, send) = request.expect("the client is alive while work runs");
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.expect("request body");
                let body = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).expect("a JSON request body")
                };
                let request = Seen {
                    method: parts.method.to_string(),
                    uri: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                    body,
                };
                let (status, answer) = respond(&request);
                seen.push(request);
                let response = Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).expect("JSON")))
                    .expect("a response");
                send.send_response(response);
            }
        }
    }
}

/// The answer of a real API server to a GET of a missing object.
pub fn not_found(what: &str) -> (u16, Value) {
    (
        404,
        serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": "NotFound", "code": 404, "message": format!("{what} not found"),
        }),
    )
}

/// An Opaque Secret in `default` with one key.
pub fn secret(name: &str, key: &str, value: &[u8]) -> Value {
    use base64::Engine;
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "default"},
        "type": "Opaque",
        "data": {key: base64::engine::general_purpose::STANDARD.encode(value)},
    })
}

/// The Events the operator published, as `(type, reason)`.
pub fn events(seen: &[Seen]) -> Vec<(String, String)> {
    seen.iter()
        .filter(|s| s.method == "POST" && s.uri.contains("/events"))
        .map(|s| {
            (
                s.body["type"].as_str().unwrap_or_default().to_string(),
                s.body["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Answers as an API server holding `object` does: the object for patches, the request back
/// for Events, `gets` (by path) for GETs; anything else fails the test.
pub fn answers(
    object: Value,
    gets: Vec<(String, (u16, Value))>,
) -> impl FnMut(&Seen) -> (u16, Value) {
    move |seen| match seen.method.as_str() {
        "POST" if seen.uri.contains("/events") => (201, seen.body.clone()),
        "PATCH" => (200, object.clone()),
        "GET" => gets
            .iter()
            .find(|(path, _)| *path == seen.uri)
            .map(|(_, answer)| answer.clone())
            .unwrap_or_else(|| panic!("unexpected GET {}", seen.uri)),
        _ => panic!("unexpected request {}", seen.line()),
    }
}

pub fn lines(seen: &[Seen]) -> Vec<String> {
    seen.iter().map(Seen::line).collect()
}

/// The status the operator applied by the request to `uri`, parsed back.
pub fn applied_status<S: serde::de::DeserializeOwned>(seen: &[Seen], uri: &str) -> S {
    let patch = seen
        .iter()
        .find(|s| s.method == "PATCH" && s.uri == uri)
        .unwrap_or_else(|| panic!("no status patch in {:?}", lines(seen)));
    assert_eq!(patch.body["apiVersion"], "mail.kubemail.io/v1alpha1");
    serde_json::from_value(patch.body["status"].clone()).expect("a status")
}

/// `(status, reason)` of the Ready condition.
pub fn ready_of(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> (String, String) {
    let ready = conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("a Ready condition");
    (ready.status.clone(), ready.reason.clone())
}

/// Reconciles `obj` once against the mock API server; returns the result and the requests.
pub async fn run<K: crate::reconcile::Reconciled>(
    api: &mut ApiHandle,
    ctx: &Arc<Context>,
    obj: &K,
    respond: impl FnMut(&Seen) -> (u16, Value),
) -> (
    Result<kube::runtime::controller::Action, crate::error::Error>,
    Vec<Seen>,
) {
    let work = crate::reconcile::reconcile(Arc::new(obj.clone()), ctx.clone());
    serve(api, work, respond).await
}

/// Asserts that the only request was the finalizer's removal from `object` (a JSON patch
/// that first tests the finalizer is still ours).
pub fn assert_only_finalizer_removed(seen: &[Seen], object: &str, finalizer: &str) {
    assert_eq!(lines(seen), [format!("PATCH {object}?")]);
    assert_eq!(
        seen[0].body,
        serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers/0", "value": finalizer},
            {"op": "remove", "path": "/metadata/finalizers/0"},
        ])
    );
}

/// Validates Kubernetes objects in `files` (YAML or JSON) against the 1.33 schemas, strictly.
pub fn kubernetes_validate(files: &[std::path::PathBuf]) {
    let out = std::process::Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", "1.33.0"])
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("kubernetes-validate: {e}; scripts/deps.sh installs it (pip)"));
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
