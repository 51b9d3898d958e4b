//! `X-Dragonfly-*` request headers (wire reference §14) and hop-by-hop header handling.

use http::{HeaderMap, HeaderName};

pub(crate) const REGISTRY: &str = "x-dragonfly-registry";
pub(crate) const USE_P2P: &str = "x-dragonfly-use-p2p";
pub(crate) const TAG: &str = "x-dragonfly-tag";
pub(crate) const APPLICATION: &str = "x-dragonfly-application";
pub(crate) const PRIORITY: &str = "x-dragonfly-priority";
pub(crate) const FILTERED_QUERY_PARAMS: &str = "x-dragonfly-filtered-query-params";
pub(crate) const PIECE_LENGTH: &str = "x-dragonfly-piece-length";
pub(crate) const BLOB_DIGEST_TASK_ID: &str = "x-dragonfly-enable-task-id-based-blob-digest";
pub(crate) const TASK_ID: &str = "x-dragonfly-task-id";
pub(crate) const SERVER_IP: &str = "x-dragonfly-server-ip";
pub(crate) const TASK_DOWNLOAD_FINISHED: &str = "x-dragonfly-task-download-finished";
pub(crate) const ERROR_TYPE: &str = "x-dragonfly-error-type";

/// Headers that describe one connection and never cross a proxy (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub(crate) fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)?
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

pub(crate) fn use_p2p(headers: &HeaderMap) -> bool {
    text(headers, USE_P2P).is_some_and(|value| value.eq_ignore_ascii_case("true"))
}

pub(crate) fn flag(headers: &HeaderMap, name: &str) -> Option<bool> {
    text(headers, name).map(|value| value.eq_ignore_ascii_case("true"))
}

/// `X-Dragonfly-Priority`: 0–6, default 6.
pub(crate) fn priority(headers: &HeaderMap) -> i32 {
    text(headers, PRIORITY)
        .and_then(|value| value.parse::<i32>().ok())
        .filter(|value| (0..=6).contains(value))
        .unwrap_or(6)
}

/// `X-Dragonfly-Filtered-Query-Params`: comma separated; replaces the default list.
pub(crate) fn filtered_query_params(headers: &HeaderMap) -> Option<Vec<String>> {
    text(headers, FILTERED_QUERY_PARAMS).map(|value| {
        value
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(String::from)
            .collect()
    })
}

/// `X-Dragonfly-Piece-Length` as a human size (`8mib`); `Err` when invalid or below 4 MiB.
pub(crate) fn piece_length(headers: &HeaderMap) -> Result<Option<u64>, String> {
    let Some(value) = text(headers, PIECE_LENGTH) else {
        return Ok(None);
    };
    let size: bytesize::ByteSize = value
        .parse()
        .map_err(|_| format!("invalid {PIECE_LENGTH} {value:?}"))?;
    if size.as_u64() < shoal_types::MIN_PIECE_LENGTH {
        return Err(format!("{PIECE_LENGTH} {value:?} is below 4MiB"));
    }
    Ok(Some(size.as_u64()))
}

/// Removes hop-by-hop headers, including those named in `Connection`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// Removes the `X-Dragonfly-*` headers: they steer shoal and never reach an origin.
pub(crate) fn strip_dragonfly(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-dragonfly-"))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dragonfly_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(PRIORITY, "3".parse().unwrap());
        headers.insert(FILTERED_QUERY_PARAMS, " a, b ,,c".parse().unwrap());
        headers.insert(PIECE_LENGTH, "8mib".parse().unwrap());
        headers.insert(USE_P2P, "TRUE".parse().unwrap());
        assert_eq!(priority(&headers), 3);
        assert_eq!(
            filtered_query_params(&headers).unwrap(),
            vec!["a", "b", "c"]
        );
        assert_eq!(piece_length(&headers).unwrap(), Some(8 * 1024 * 1024));
        assert!(use_p2p(&headers));
        headers.insert(PIECE_LENGTH, "1mib".parse().unwrap());
        assert!(piece_length(&headers).is_err());
        headers.insert(PRIORITY, "9".parse().unwrap());
        assert_eq!(priority(&headers), 6);
    }

    #[test]
    fn strips_hop_by_hop_and_dragonfly() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", "close, x-custom".parse().unwrap());
        headers.insert("x-custom", "1".parse().unwrap());
        headers.insert("transfer-encoding", "chunked".parse().unwrap());
        headers.insert("x-dragonfly-tag", "t".parse().unwrap());
        headers.insert("authorization", "Bearer x".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        strip_dragonfly(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("authorization"));
    }
}
