//! Why a download failed.

use shoal_protocol::ErrorCode;

use super::origin::OriginError;

/// A download failed; says whether the caller, the origin, the P2P network or local storage did.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("derive task id")]
    TaskId(#[source] shoal_types::task_id::TaskIdError),
    #[error("parse expected digest")]
    Digest(#[source] shoal_types::DigestParseError),
    #[error("{0}")]
    Origin(#[source] OriginError),
    #[error("store piece")]
    Store(#[source] shoal_storage::StoreError),
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("write output file {path}")]
    Output {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no parent could serve the task and back-to-source is disabled ({reason})")]
    NoSource { reason: String },
    #[error("scheduler unavailable ({code:?}): {message}")]
    Scheduler { code: tonic::Code, message: String },
    #[error("download cancelled")]
    Cancelled,
}

impl DownloadError {
    /// Whether a failure must leave nothing in the cache (origin errors and bad content);
    /// other failures keep verified pieces for the next attempt.
    pub(crate) fn discards_task(&self) -> bool {
        matches!(self, Self::Origin(_) | Self::DigestMismatch { .. })
    }

    /// The origin's error status and headers, when the origin refused the request.
    pub fn origin_response(&self) -> Option<(http::StatusCode, &http::HeaderMap)> {
        match self {
            Self::Origin(err) => err.response(),
            _ => None,
        }
    }

    /// The status the failure maps to on the wire.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidRequest(_) | Self::TaskId(_) | Self::Digest(_) => {
                ErrorCode::InvalidArgument
            }
            Self::Origin(err) => match err.status() {
                Some(status) if status.as_u16() == 404 => ErrorCode::NotFound,
                _ => ErrorCode::Unavailable,
            },
            Self::DigestMismatch { .. } => ErrorCode::FailedPrecondition,
            Self::NoSource { .. } | Self::Scheduler { .. } => ErrorCode::Unavailable,
            Self::Store(_) | Self::Output { .. } => ErrorCode::Internal,
            Self::Cancelled => ErrorCode::Cancelled,
        }
    }

    /// The error and its causes as one line, for status messages and CLI output.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        text
    }
}
