//! Terminating `CONNECT` tunnels for the hosts listed in `proxy.mitm.hosts`, so HTTPS pulls can
//! go P2P too. Each such host gets a leaf certificate signed by the configured CA (clients must
//! trust that CA); inside the TLS session HTTP/1.1 and HTTP/2 requests are served by the same
//! handler as plain proxy requests, as `https://host/...`. Hosts not listed are never touched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

use super::ProxyState;

/// Validated MITM settings.
#[derive(Debug, Clone)]
pub struct MitmConfig {
    /// Host names (without port) to terminate.
    pub hosts: Vec<regex::Regex>,
    pub ca: Arc<CertificateAuthority>,
}

/// Signs leaf certificates for terminated hosts; leaves are cached per host.
pub struct CertificateAuthority {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    leaves: Mutex<HashMap<String, Arc<rustls::ServerConfig>>>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

/// The CA could not be loaded or a leaf not issued.
#[derive(Debug, thiserror::Error)]
pub enum MitmError {
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse CA certificate or key")]
    Ca(#[source] rcgen::Error),
    #[error("issue certificate for {host}")]
    Issue {
        host: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("build TLS server config for {host}")]
    Tls {
        host: String,
        #[source]
        source: rustls::Error,
    },
}

impl CertificateAuthority {
    /// Loads a PEM CA certificate and its PEM private key.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, MitmError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| MitmError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        Self::from_pem(&read(cert)?, &read(key)?)
    }

    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, MitmError> {
        let key = rcgen::KeyPair::from_pem(key_pem).map_err(MitmError::Ca)?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(cert_pem, key).map_err(MitmError::Ca)?;
        Ok(Self {
            issuer,
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// A TLS server config presenting a certificate for `host`.
    fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, MitmError> {
        if let Some(config) = self.leaves.lock().expect("leaf cache lock").get(host) {
            return Ok(config.clone());
        }
        let issue = |source| MitmError::Issue {
            host: host.to_string(),
            source,
        };
        let key = rcgen::KeyPair::generate().map_err(issue)?;
        let mut params = rcgen::CertificateParams::new(vec![host.to_string()]).map_err(issue)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, host);
        let leaf = params.signed_by(&key, &self.issuer).map_err(issue)?;
        let chain = vec![CertificateDer::from(leaf.der().to_vec())];
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let tls = |source| MitmError::Tls {
            host: host.to_string(),
            source,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls)?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(tls)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let config = Arc::new(config);
        self.leaves
            .lock()
            .expect("leaf cache lock")
            .insert(host.to_string(), config.clone());
        Ok(config)
    }
}

impl MitmConfig {
    /// Whether `host` (no port) is terminated.
    pub(crate) fn matches(&self, host: &str) -> bool {
        self.hosts.iter().any(|pattern| pattern.is_match(host))
    }
}

/// Serves HTTP inside a terminated tunnel to `authority` (`host:port`).
pub(crate) async fn serve(
    state: Arc<ProxyState>,
    mitm: &MitmConfig,
    upgraded: hyper::upgrade::Upgraded,
    authority: String,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let host = authority
        .rsplit_once(':')
        .map_or(authority.as_str(), |(host, _)| host)
        .trim_matches(['[', ']'])
        .to_string();
    let config = mitm.ca.server_config(&host)?;
    let tls = TlsAcceptor::from(config)
        .accept(TokioIo::new(upgraded))
        .await?;
    let base = if authority.ends_with(":443") {
        host.clone()
    } else {
        authority.clone()
    };
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let state = state.clone();
        let path = request
            .uri()
            .path_and_query()
            .map_or("/".to_string(), |value| value.to_string());
        let absolute = format!("https://{base}{path}");
        async move {
            match absolute.parse() {
                Ok(uri) => *request.uri_mut() = uri,
                Err(_) => {
                    return Ok::<_, std::convert::Infallible>(super::error_response(
                        http::StatusCode::BAD_REQUEST,
                        "proxy",
                        "invalid request path",
                    ));
                }
            }
            Ok(super::handle(state, request).await)
        }
    });
    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(tls), service)
        .await
}
