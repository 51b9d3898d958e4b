//! Task id derivation, bit for bit as Dragonfly v2 (wire reference §11.1, §11.2).
//!
//! The first matching rule wins: content-for-id, blob digest, manifest digest, then the SHA-256
//! of the canonical URL, tag, application, hub revision, requested piece length and `STANDARD`.

use crate::TaskId;

/// Every input that takes part in a task id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskIdInputs {
    pub url: String,
    pub tag: Option<String>,
    pub application: Option<String>,
    /// Query parameter names dropped from the URL before hashing. Empty: URL hashed verbatim.
    pub filtered_query_params: Vec<String>,
    /// The piece length the request asked for (not the computed one).
    pub piece_length: Option<u64>,
    pub content_for_calculating_task_id: Option<String>,
    pub enable_task_id_based_blob_digest: bool,
    /// Revision of the first present hub source (Hugging Face, ModelScope, OpenCSG).
    pub hub_revision: Option<String>,
}

/// Why no task id can be derived.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TaskIdError {
    #[error("parse url {url:?}")]
    InvalidUrl {
        url: String,
        #[source]
        source: url::ParseError,
    },
}

/// Derives the task id for `inputs`.
pub fn derive(inputs: &TaskIdInputs) -> Result<TaskId, TaskIdError> {
    if let Some(content) = &inputs.content_for_calculating_task_id {
        return Ok(TaskId::sha256_of(content.as_bytes()));
    }
    // TODO(#2): blob-digest rules and URL canonicalisation with filtered params.
    let mut material = inputs.url.clone();
    for part in [&inputs.tag, &inputs.application, &inputs.hub_revision].into_iter().flatten() {
        material.push_str(part);
    }
    if let Some(piece_length) = inputs.piece_length {
        material.push_str(&piece_length.to_string());
    }
    material.push_str("STANDARD");
    Ok(TaskId::sha256_of(material.as_bytes()))
}

/// The default filtered query parameters of dfget and the proxy (wire reference §11.3).
pub const DEFAULT_FILTERED_QUERY_PARAMS: &[&str] = &[
    "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders",
    "X-Amz-Signature", "X-Amz-Security-Token", "X-Amz-User-Agent", "X-Goog-Algorithm",
    "X-Goog-Credential", "X-Goog-Date", "X-Goog-Expires", "X-Goog-SignedHeaders",
    "X-Goog-Signature", "OSSAccessKeyId", "Expires", "Signature", "SecurityToken", "AccessKeyId",
    "X-Obs-Date", "X-Obs-Security-Token", "q-sign-algorithm", "q-ak", "q-sign-time",
    "q-key-time", "q-header-list", "q-url-param-list", "q-signature", "x-cos-security-token", "ns",
];
