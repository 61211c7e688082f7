//! Why a reconcile failed in a way that a retry may fix. What the user must fix is not an
//! error here: it becomes a `Ready=False` condition with a reason (see `conditions.rs`).

use kube::runtime::finalizer;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Store(#[from] mail_provision::Error),
    #[error("key generation: {0}")]
    KeyGeneration(String),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl From<finalizer::Error<Error>> for Error {
    fn from(e: finalizer::Error<Error>) -> Self {
        match e {
            // Unwrap our own errors so that the metric label names the real cause.
            finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
            other => Error::Finalizer(Box::new(other)),
        }
    }
}

impl Error {
    /// The `error` label of the error metric.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "Kube",
            Error::Store(mail_provision::Error::Blob(_)) => "BlobStore",
            Error::Store(_) => "Database",
            Error::KeyGeneration(_) => "KeyGeneration",
            Error::Finalizer(_) => "Finalizer",
        }
    }
}
