//! The HTTP proxy and registry mirror (`--proxy-listen`, default `IP:4001` on loopback).
//!
//! Three ways in: origin-form requests from a container runtime's mirror configuration
//! (`GET /v2/<name>/blobs/sha256:...`; the upstream registry comes from `X-Dragonfly-Registry`,
//! else containerd's `ns=` parameter, else the configured default registry), absolute-form
//! requests from `HTTP_PROXY` clients, and `CONNECT` tunnels (passed through untouched).
//! GET requests whose URL matches a rule (default `blobs/sha256.*`) or that carry
//! `X-Dragonfly-Use-P2P: true` go through the download engine (`p2p`); everything else passes
//! straight through with headers and status intact (`passthrough`).
//!
//! When bound to a non-loopback address only clients in `allow_cidrs` are served, so the proxy
//! is never an open proxy.

mod cidr;
mod headers;
pub mod mitm;
mod p2p;
mod passthrough;
pub(crate) mod range;
mod tunnel;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::download::Engine;
pub use cidr::{Cidr, CidrParseError};

/// Response bodies of the proxy.
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// Validated proxy configuration.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where to listen; `None` disables the proxy.
    pub listen: Option<SocketAddr>,
    /// Clients allowed when listening beyond loopback (loopback clients are always allowed).
    pub allow_cidrs: Vec<Cidr>,
    /// URLs matching any of these go P2P (GET only).
    pub rules: Vec<regex::Regex>,
    /// Upstream for origin-form requests without `X-Dragonfly-Registry` or `ns=`.
    pub default_registry: Option<url::Url>,
    /// Hosts whose `CONNECT` tunnels are terminated; `None` tunnels everything untouched.
    pub mitm: Option<mitm::MitmConfig>,
}

/// Default P2P rule: registry blobs by digest.
pub const DEFAULT_RULE: &str = "blobs/sha256.*";

#[derive(Debug)]
pub(crate) struct ProxyState {
    pub(crate) config: ProxyConfig,
    pub(crate) engine: Engine,
    pub(crate) tracker: TaskTracker,
    pub(crate) cancel: CancellationToken,
    /// Client for pass-through requests: no redirects followed (the client sees them), no
    /// proxy from the environment (we may be that proxy).
    pub(crate) passthrough: reqwest::Client,
    pub(crate) server_ip: IpAddr,
}

/// Serves the proxy on `listener` until cancelled.
pub(crate) async fn serve(listener: TcpListener, state: Arc<ProxyState>) {
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = state.cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "failed to accept proxy connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if !allowed(&state.config, peer.ip()) {
            tracing::warn!(%peer, "refused proxy client outside the allowed networks");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let connection_state = state.clone();
        state.tracker.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = connection_state.clone();
                async move { Ok::<_, Infallible>(handle(state, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .preserve_header_case(true)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(err) = connection.await {
                tracing::debug!(%peer, error = %err, "proxy connection ended with an error");
            }
        });
    }
}

fn allowed(config: &ProxyConfig, client: IpAddr) -> bool {
    client.is_loopback() || config.allow_cidrs.iter().any(|cidr| cidr.contains(client))
}

/// Handles one request. Boxed: terminated tunnels (`mitm`) call back into it.
pub(crate) fn handle(
    state: Arc<ProxyState>,
    request: Request<Incoming>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<ProxyBody>> + Send>> {
    Box::pin(handle_request(state, request))
}

async fn handle_request(state: Arc<ProxyState>, request: Request<Incoming>) -> Response<ProxyBody> {
    if request.method() == Method::CONNECT {
        return tunnel::connect(&state, request).await;
    }
    let target = match target_url(&state.config, &request) {
        Ok(target) => target,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, "proxy", &message),
    };
    let p2p_url = headers::use_p2p(request.headers())
        || state
            .config
            .rules
            .iter()
            .any(|rule| rule.is_match(target.url.as_str()));
    let use_p2p = request.method() == Method::GET && p2p_url;
    tracing::debug!(method = %request.method(), url = %target.url, use_p2p, "proxy request");
    if use_p2p {
        return p2p::serve(&state, request, target).await;
    }
    if request.method() == Method::HEAD && p2p_url {
        // A blob we hold completely is answered from its metadata, without the registry.
        if let Some(response) = p2p::head_from_store(&state, &request, &target).await {
            return response;
        }
    }
    passthrough::forward(&state, request, target.url).await
}

/// Where a request goes.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) url: url::Url,
    /// The request came in as a registry mirror request (origin-form).
    pub(crate) mirror: bool,
}

fn target_url(config: &ProxyConfig, request: &Request<Incoming>) -> Result<Target, String> {
    let uri = request.uri();
    if uri.scheme().is_some() {
        let url = url::Url::parse(&uri.to_string())
            .map_err(|err| format!("invalid request url: {err}"))?;
        return Ok(Target { url, mirror: false });
    }
    let path_and_query = uri.path_and_query().map_or("/", |value| value.as_str());
    let registry_header = request
        .headers()
        .get(headers::REGISTRY)
        .and_then(|value| value.to_str().ok());
    mirror_target(config, path_and_query, registry_header)
}

/// The upstream URL of an origin-form (registry mirror) request: the registry comes from the
/// `X-Dragonfly-Registry` header, else containerd's `ns=` parameter (percent-decoded; it is
/// dropped from the upstream query), else the configured default registry.
fn mirror_target(
    config: &ProxyConfig,
    path_and_query: &str,
    registry_header: Option<&str>,
) -> Result<Target, String> {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut namespace = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| match pair.strip_prefix("ns=") {
            Some(value) => {
                namespace = Some(
                    percent_encoding::percent_decode_str(value)
                        .decode_utf8_lossy()
                        .into_owned(),
                );
                false
            }
            None => true,
        })
        .collect();
    let base = if let Some(registry) = registry_header {
        parse_registry(registry)?
    } else if let Some(namespace) = namespace {
        namespace_registry(config, &namespace)?
    } else if let Some(default) = &config.default_registry {
        default.clone()
    } else {
        return Err(
            "no upstream registry: send X-Dragonfly-Registry or configure proxy.defaultRegistry"
                .into(),
        );
    };
    let mut url = base
        .join(path.trim_start_matches('/'))
        .map_err(|err| format!("invalid request path: {err}"))?;
    let query = kept.join("&");
    url.set_query(if query.is_empty() { None } else { Some(&query) });
    Ok(Target { url, mirror: true })
}

/// The registry named by containerd's `ns=` (a bare `host[:port]`): the default registry when it
/// is that host, so a plain-HTTP default keeps its scheme; otherwise HTTPS.
fn namespace_registry(config: &ProxyConfig, namespace: &str) -> Result<url::Url, String> {
    if let Some(default) = &config.default_registry {
        let authority = match (default.host_str(), default.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => String::new(),
        };
        if authority.eq_ignore_ascii_case(namespace.trim()) {
            return Ok(default.clone());
        }
    }
    parse_registry(namespace)
}

/// `https://host[:port]` from a registry header or `ns=` value (`docker.io` maps to its API host).
fn parse_registry(value: &str) -> Result<url::Url, String> {
    let value = value.trim();
    let with_scheme = if value.contains("://") {
        value.to_string()
    } else if value == "docker.io" {
        "https://registry-1.docker.io".to_string()
    } else {
        format!("https://{value}")
    };
    let mut url = url::Url::parse(&with_scheme)
        .map_err(|err| format!("invalid registry {value:?}: {err}"))?;
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// An error the proxy itself produced; `kind` goes to `X-Dragonfly-Error-Type`.
pub(crate) fn error_response(status: StatusCode, kind: &str, message: &str) -> Response<ProxyBody> {
    tracing::info!(%status, kind, message, "proxy answered with an error");
    let mut response = Response::new(full(format!("{message}\n")));
    *response.status_mut() = status;
    if let Ok(value) = http::HeaderValue::from_str(kind) {
        response.headers_mut().insert(headers::ERROR_TYPE, value);
    }
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(crate) fn empty() -> ProxyBody {
    full(Bytes::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_and_listed_networks_are_served() {
        let config = ProxyConfig {
            listen: None,
            allow_cidrs: vec!["10.0.0.0/8".parse().unwrap()],
            rules: Vec::new(),
            default_registry: None,
            mitm: None,
        };
        assert!(allowed(&config, "127.0.0.1".parse().unwrap()));
        assert!(allowed(&config, "::1".parse().unwrap()));
        assert!(allowed(&config, "10.1.2.3".parse().unwrap()));
        assert!(!allowed(&config, "192.168.1.1".parse().unwrap()));
    }

    fn config_with_default(default_registry: Option<&str>) -> ProxyConfig {
        ProxyConfig {
            listen: None,
            allow_cidrs: Vec::new(),
            rules: Vec::new(),
            default_registry: default_registry.map(|url| parse_registry(url).unwrap()),
            mitm: None,
        }
    }

    fn mirror_url(config: &ProxyConfig, path: &str, header: Option<&str>) -> String {
        mirror_target(config, path, header).unwrap().url.to_string()
    }

    #[test]
    fn containerd_namespace_is_decoded_and_dropped() {
        let config = config_with_default(None);
        assert_eq!(
            mirror_url(
                &config,
                "/v2/app/blobs/sha256:ab?ns=registry.example%3A5000&x=1",
                None
            ),
            "https://registry.example:5000/v2/app/blobs/sha256:ab?x=1"
        );
        assert_eq!(
            mirror_url(&config, "/v2/library/alpine/manifests/3?ns=docker.io", None),
            "https://registry-1.docker.io/v2/library/alpine/manifests/3"
        );
    }

    #[test]
    fn namespace_of_the_default_registry_keeps_its_scheme() {
        let config = config_with_default(Some("http://127.0.0.1:5000"));
        assert_eq!(
            mirror_url(&config, "/v2/a/manifests/1?ns=127.0.0.1%3A5000", None),
            "http://127.0.0.1:5000/v2/a/manifests/1"
        );
        // Another registry is reached over HTTPS; the header wins over `ns=`.
        assert_eq!(
            mirror_url(&config, "/v2/a/manifests/1?ns=127.0.0.1%3A6000", None),
            "https://127.0.0.1:6000/v2/a/manifests/1"
        );
        assert_eq!(
            mirror_url(
                &config,
                "/v2/a/manifests/1?ns=ghcr.io",
                Some("http://10.0.0.5:5000")
            ),
            "http://10.0.0.5:5000/v2/a/manifests/1"
        );
        assert_eq!(
            mirror_url(&config, "/v2/a/manifests/1", None),
            "http://127.0.0.1:5000/v2/a/manifests/1"
        );
    }

    #[test]
    fn registry_values() {
        assert_eq!(
            parse_registry("docker.io").unwrap().as_str(),
            "https://registry-1.docker.io/"
        );
        assert_eq!(
            parse_registry("http://127.0.0.1:5000").unwrap().as_str(),
            "http://127.0.0.1:5000/"
        );
        assert_eq!(
            parse_registry("ghcr.io").unwrap().as_str(),
            "https://ghcr.io/"
        );
        assert_eq!(
            parse_registry("https://r.example/base").unwrap().as_str(),
            "https://r.example/base/"
        );
    }
}
