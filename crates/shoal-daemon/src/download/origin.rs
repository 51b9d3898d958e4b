//! Back-to-source: talking to the origin (an HTTP server, registry or object store).
//!
//! `stat` learns the content length (HEAD, then `GET` with `Range: bytes=0-0`); `fetch_piece`
//! gets one piece with a ranged GET and tells the caller when the origin ignored the range and
//! is sending the whole body instead. Retries with backoff for transient failures live here.

use std::collections::HashMap;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use shoal_types::ByteRange;

/// What the origin told us about the content before downloading.
#[derive(Debug)]
pub(crate) enum OriginStat {
    /// The length is known.
    Length(u64),
    /// The origin sends the whole body without a length; the response is already open.
    Unknown(reqwest::Response),
}

/// One ranged GET's answer.
#[derive(Debug)]
pub(crate) enum PieceBody {
    /// 206: exactly the requested bytes follow in the body.
    Range(reqwest::Response),
    /// 200: the origin ignored `Range` and streams the whole content from byte 0.
    Whole(reqwest::Response),
}

/// The origin refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("origin answered {status} for {url}")]
    Status {
        status: StatusCode,
        url: String,
        /// The origin's response headers, relayed by the proxy (e.g. `WWW-Authenticate`).
        headers: Box<HeaderMap>,
    },
    #[error("fetch from origin {url}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("origin sent {actual} bytes for {url}, expected {expected}")]
    ShortBody {
        url: String,
        expected: u64,
        actual: u64,
    },
    #[error("invalid request header {name:?}")]
    Header { name: String },
}

impl OriginError {
    /// Whether trying again may help (5xx, connection trouble, truncated bodies).
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Self::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            Self::Request { .. } | Self::ShortBody { .. } => true,
            Self::Header { .. } => false,
        }
    }

    /// The HTTP status the origin answered, when it answered one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The origin's status and headers, when it answered with an error status.
    pub fn response(&self) -> Option<(StatusCode, &HeaderMap)> {
        match self {
            Self::Status {
                status, headers, ..
            } => Some((*status, headers)),
            _ => None,
        }
    }
}

/// Client for one origin URL with the caller's request headers.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    http: reqwest::Client,
    url: String,
    headers: HeaderMap,
    retries: u32,
}

impl Origin {
    pub(crate) fn new(
        http: reqwest::Client,
        url: &str,
        headers: &HashMap<String, String>,
        retries: u32,
    ) -> Result<Self, OriginError> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            // X-Dragonfly-* steer shoal and never reach the origin; Range is ours to set.
            let lower = name.to_ascii_lowercase();
            if lower.starts_with("x-dragonfly-") || lower == "range" || lower == "host" {
                continue;
            }
            let header_name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| OriginError::Header { name: name.clone() })?;
            let header_value = HeaderValue::from_str(value)
                .map_err(|_| OriginError::Header { name: name.clone() })?;
            map.append(header_name, header_value);
        }
        Ok(Self {
            http,
            url: url.to_string(),
            headers: map,
            retries: retries.max(1),
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Learns the content length: HEAD first (no body travels), then `GET bytes=0-0`.
    pub(crate) async fn stat(&self) -> Result<OriginStat, OriginError> {
        let head = self.retry(|| self.send(reqwest::Method::HEAD, None)).await;
        match head {
            Ok(response) => {
                // A zero length on HEAD is often a framework default; the GET below confirms it.
                if let Some(length) =
                    content_length(response.headers()).filter(|length| *length > 0)
                {
                    return Ok(OriginStat::Length(length));
                }
            }
            // Some servers refuse HEAD; the GET below decides.
            Err(OriginError::Status { status, .. })
                if status == StatusCode::METHOD_NOT_ALLOWED
                    || status == StatusCode::NOT_IMPLEMENTED
                    || status == StatusCode::FORBIDDEN => {}
            Err(err) => return Err(err),
        }
        let response = self
            .retry(|| self.send(reqwest::Method::GET, Some(ByteRange::new(0, 1))))
            .await?;
        if response.status() == StatusCode::PARTIAL_CONTENT {
            if let Some(total) = content_range_total(response.headers()) {
                return Ok(OriginStat::Length(total));
            }
        }
        if response.status() == StatusCode::RANGE_NOT_SATISFIABLE {
            return Ok(OriginStat::Length(0));
        }
        match content_length(response.headers()) {
            Some(length) if response.status() == StatusCode::OK => Ok(OriginStat::Length(length)),
            _ => Ok(OriginStat::Unknown(response)),
        }
    }

    /// GETs `range`; retries transient failures with backoff.
    /// Opens a ranged GET (retrying transient failures); the body is left for the caller to
    /// stream.
    pub(crate) async fn open_range(&self, range: ByteRange) -> Result<PieceBody, OriginError> {
        self.retry(|| async {
            let response = self.send(reqwest::Method::GET, Some(range)).await?;
            if response.status() == StatusCode::OK {
                return Ok(PieceBody::Whole(response));
            }
            Ok(PieceBody::Range(response))
        })
        .await
    }

    /// Attempts allowed per request.
    pub(crate) fn retries(&self) -> u32 {
        self.retries
    }

    async fn send(
        &self,
        method: reqwest::Method,
        range: Option<ByteRange>,
    ) -> Result<reqwest::Response, OriginError> {
        let mut request = self
            .http
            .request(method, &self.url)
            .headers(self.headers.clone());
        if let Some(range) = range {
            // HTTP ranges are inclusive; ours are half-open.
            request = request.header(
                http::header::RANGE,
                format!("bytes={}-{}", range.start, range.end - 1),
            );
        }
        let response = request
            .send()
            .await
            .map_err(|source| OriginError::Request {
                url: self.url.clone(),
                source,
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(OriginError::Status {
                status,
                url: self.url.clone(),
                headers: Box::new(response.headers().clone()),
            });
        }
        Ok(response)
    }

    async fn retry<T, F, Fut>(&self, mut attempt: F) -> Result<T, OriginError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, OriginError>>,
    {
        let mut delay = Duration::from_millis(200);
        let mut tries = 0;
        loop {
            tries += 1;
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(err) if err.is_transient() && tries < self.retries => {
                    tracing::debug!(url = %self.url, error = %err, tries, "origin request failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(err) => return Err(err),
            }
        }
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The total from `Content-Range: bytes 0-0/TOTAL`.
fn content_range_total(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(http::header::CONTENT_RANGE)?.to_str().ok()?;
    let (_, total) = value.rsplit_once('/')?;
    total.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_range_total() {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_RANGE,
            HeaderValue::from_static("bytes 0-0/12345"),
        );
        assert_eq!(content_range_total(&headers), Some(12345));
        headers.insert(
            http::header::CONTENT_RANGE,
            HeaderValue::from_static("bytes 0-0/*"),
        );
        assert_eq!(content_range_total(&headers), None);
    }

    #[test]
    fn dragonfly_headers_never_reach_the_origin() {
        let headers = HashMap::from([
            ("X-Dragonfly-Tag".to_string(), "t".to_string()),
            ("Authorization".to_string(), "Bearer x".to_string()),
            ("Range".to_string(), "bytes=1-2".to_string()),
        ]);
        let origin = Origin::new(reqwest::Client::new(), "http://o/x", &headers, 1).unwrap();
        assert_eq!(origin.headers.len(), 1);
        assert!(origin.headers.contains_key("authorization"));
    }
}
