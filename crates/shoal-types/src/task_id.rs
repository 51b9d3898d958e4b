//! Task id derivation, bit for bit as Dragonfly v2 (wire reference §11.1, §11.2).
//!
//! The first matching rule wins:
//!
//! 1. `content_for_calculating_task_id` set: SHA-256 of that content.
//! 2. Blob-digest flag on and the URL is an OCI blob URL with a parsable digest: the digest's
//!    encoded part, verbatim.
//! 3. Blob-digest flag on and the URL is an OCI manifest URL referenced by digest: likewise.
//! 4. Otherwise: SHA-256 of the canonical URL ([`canonical_url`]), tag, application, hub
//!    revision, requested piece length and `STANDARD`, concatenated without separators.
//!
//! Upstream rejects a blob URL whose digest does not parse; shoal falls back to rule 4 instead
//! (wire reference §16 item 8). Upstream peers cannot serve such tasks anyway, so nothing is lost.
//!
//! ```
//! use shoal_types::task_id::{derive, TaskIdInputs};
//! let inputs = TaskIdInputs { url: "https://example.com/file.txt".into(), ..Default::default() };
//! assert_eq!(
//!     derive(&inputs).unwrap().as_str(),
//!     "7fcf06e5f0b1e443065c1a563eed788eb2e168a05c6ad9c4b319f7a976322be0"
//! );
//! ```

use std::sync::LazyLock;

use regex::Regex;
use url::{form_urlencoded, Position, Url};

use crate::TaskId;

#[cfg(test)]
mod tests;

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

/// The default filtered query parameters of dfget and the proxy (wire reference §11.3).
pub const DEFAULT_FILTERED_QUERY_PARAMS: &[&str] = &[
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
    "X-Amz-User-Agent",
    "X-Goog-Algorithm",
    "X-Goog-Credential",
    "X-Goog-Date",
    "X-Goog-Expires",
    "X-Goog-SignedHeaders",
    "X-Goog-Signature",
    "OSSAccessKeyId",
    "Expires",
    "Signature",
    "SecurityToken",
    "AccessKeyId",
    "X-Obs-Date",
    "X-Obs-Security-Token",
    "q-sign-algorithm",
    "q-ak",
    "q-sign-time",
    "q-key-time",
    "q-header-list",
    "q-url-param-list",
    "q-signature",
    "x-cos-security-token",
    "ns",
];

/// OCI blob URLs: `<scheme>://<registry>/v2/<repository>/blobs/<digest>[?query]`. The pattern is
/// upstream's, including its greedy groups; the digest is the last capture.
static BLOB_URL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(.*)://(.*)/v2/(.*)/blobs/([^?]+)(?:\?.*)?$").expect("blob url pattern is valid")
});

/// OCI manifest URLs, the same shape as [`BLOB_URL`] with `/manifests/`.
static MANIFEST_URL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(.*)://(.*)/v2/(.*)/manifests/([^?]+)(?:\?.*)?$")
        .expect("manifest url pattern is valid")
});

/// Derives the task id for `inputs`.
///
/// Fails only when the URL must be canonicalised (non-empty filter list) and does not parse.
pub fn derive(inputs: &TaskIdInputs) -> Result<TaskId, TaskIdError> {
    if let Some(content) = &inputs.content_for_calculating_task_id {
        return Ok(TaskId::sha256_of(content.as_bytes()));
    }
    if inputs.enable_task_id_based_blob_digest {
        let by_digest = oci_digest_task_id(&BLOB_URL, &inputs.url)
            .or_else(|| oci_digest_task_id(&MANIFEST_URL, &inputs.url));
        if let Some(task_id) = by_digest {
            return Ok(task_id);
        }
    }
    url_based_task_id(inputs)
}

/// Canonicalises `url` the way Dragonfly v2 does before hashing it (wire reference §11.2).
///
/// With an empty `filtered_query_params` the URL is returned verbatim. Otherwise it is parsed
/// (WHATWG), query segments containing `;` are dropped, pairs whose decoded key is filtered are
/// removed, the rest are stably sorted by key and re-encoded with Go `url.QueryEscape` rules.
/// An empty query loses its `?`; the fragment stays; a URL written without a path does not gain
/// the `/` the parser adds.
pub fn canonical_url(url: &str, filtered_query_params: &[String]) -> Result<String, TaskIdError> {
    if filtered_query_params.is_empty() {
        return Ok(url.to_string());
    }
    let mut parsed = Url::parse(url).map_err(|source| TaskIdError::InvalidUrl {
        url: url.to_string(),
        source,
    })?;

    let mut pairs: Vec<(String, String)> = parsed
        .query()
        .unwrap_or_default()
        .split('&')
        // Go's url.ParseQuery refuses segments with `;`; the scheduler drops them.
        .filter(|segment| !segment.contains(';'))
        .flat_map(|segment| form_urlencoded::parse(segment.as_bytes()))
        .filter(|(key, _)| !filtered_query_params.iter().any(|name| name == key))
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    // `sort_by` is stable: values of a repeated key keep their order, as in Go's url.Values.
    pairs.sort_by(|(a, _), (b, _)| a.cmp(b));

    if pairs.is_empty() {
        parsed.set_query(None);
    } else {
        let query = pairs
            .iter()
            .map(|(key, value)| format!("{}={}", go_query_escape(key), go_query_escape(value)))
            .collect::<Vec<_>>()
            .join("&");
        parsed.set_query(Some(&query));
    }

    if parsed.path() == "/" && parser_added_root_path(&parsed, url) {
        return Ok(format!(
            "{}{}",
            &parsed[..Position::BeforePath],
            &parsed[Position::AfterPath..]
        ));
    }
    Ok(parsed.into())
}

/// Rules 2 and 3: the encoded part of the digest in an OCI URL matched by `pattern`, or `None`
/// when the URL does not match or its digest does not parse (then rule 4 applies).
fn oci_digest_task_id(pattern: &Regex, url: &str) -> Option<TaskId> {
    let digest = pattern.captures(url)?.get(4)?.as_str();
    let encoded = parse_oci_digest(digest)?;
    // A task id names files and travels on the wire: anything other than ascii letters and
    // digits is refused by `TaskId` and falls back to the URL-based id.
    encoded.parse().ok()
}

/// The encoded part of `<algorithm>:<encoded>` when upstream would accept the digest: sha256
/// with 64 characters, sha512 with 128, crc32 non-empty.
fn parse_oci_digest(digest: &str) -> Option<&str> {
    let (algorithm, encoded) = digest.split_once(':')?;
    let accepted = match algorithm {
        "sha256" => encoded.len() == 64,
        "sha512" => encoded.len() == 128,
        "crc32" => !encoded.is_empty(),
        _ => false,
    };
    accepted.then_some(encoded)
}

/// Rule 4. The parts are concatenated without separators, exactly as upstream (wire reference
/// §16 item 9: collisions are possible in theory, but the recipe is the compatibility contract).
fn url_based_task_id(inputs: &TaskIdInputs) -> Result<TaskId, TaskIdError> {
    let mut material = canonical_url(&inputs.url, &inputs.filtered_query_params)?;
    for part in [&inputs.tag, &inputs.application, &inputs.hub_revision]
        .into_iter()
        .flatten()
    {
        material.push_str(part);
    }
    if let Some(piece_length) = inputs.piece_length {
        material.push_str(&piece_length.to_string());
    }
    material.push_str("STANDARD");
    Ok(TaskId::sha256_of(material.as_bytes()))
}

/// Go's `url.QueryEscape`: unreserved bytes stay, space becomes `+`, the rest `%XX` (uppercase).
fn go_query_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                escaped.push(char::from(byte));
            }
            b' ' => escaped.push('+'),
            _ => escaped.push_str(&format!("%{byte:02X}")),
        }
    }
    escaped
}

/// Whether the `/` path of `parsed` was invented by the parser because `original` had no path.
///
/// Only special schemes other than `file` get an implicit `/`. Their authority is whatever
/// follows `scheme:` and any run of `/` or `\`, up to the first `/`, `\`, `?` or `#` (WHATWG
/// authority state), so the path is empty when that terminator is `?`, `#` or the end.
fn parser_added_root_path(parsed: &Url, original: &str) -> bool {
    if !matches!(parsed.scheme(), "http" | "https" | "ws" | "wss" | "ftp") {
        return false;
    }
    // The parser trims C0 controls and spaces at both ends and ignores tabs and newlines.
    let cleaned: String = original
        .trim_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let Some((_, after_scheme)) = cleaned.split_once(':') else {
        return false;
    };
    let authority_and_rest = after_scheme.trim_start_matches(['/', '\\']);
    match authority_and_rest.find(['/', '\\', '?', '#']) {
        None => true,
        Some(end) => matches!(authority_and_rest.as_bytes()[end], b'?' | b'#'),
    }
}
