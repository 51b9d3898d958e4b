//! A minimal HTTPS origin: serves one blob at every path over TLS (HTTP/1.1 and HTTP/2) with a
//! certificate for 127.0.0.1 from its own CA, so tests can check TLS termination by the proxy.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_util::sync::CancellationToken;

/// A running HTTPS origin; stops when dropped.
#[derive(Debug)]
pub struct TlsOrigin {
    pub addr: SocketAddr,
    /// PEM of the CA that signed the origin's certificate.
    pub ca_pem: String,
    served: Arc<AtomicU64>,
    cancel: CancellationToken,
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A fresh CA: (certificate PEM, key PEM, issuer).
pub fn new_ca(
    name: &str,
) -> anyhow::Result<(String, String, rcgen::Issuer<'static, rcgen::KeyPair>)> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key)?;
    let key_pem = key.serialize_pem();
    let issuer = rcgen::Issuer::new(params, key);
    Ok((cert.pem(), key_pem, issuer))
}

impl TlsOrigin {
    /// Serves `content` on 127.0.0.1 at every path.
    pub async fn start(content: Vec<u8>) -> anyhow::Result<Self> {
        let (ca_pem, _, issuer) = new_ca("shoal test origin CA")?;
        let key = rcgen::KeyPair::generate()?;
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])?
            .signed_by(&key, &issuer)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(leaf.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let served = Arc::new(AtomicU64::new(0));
        let content = Bytes::from(content);
        let token = cancel.clone();
        let counter = served.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = token.cancelled() => return,
                    accepted = listener.accept() => match accepted { Ok(accepted) => accepted, Err(_) => continue },
                };
                let acceptor = acceptor.clone();
                let content = content.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |request: http::Request<hyper::body::Incoming>| {
                            let content = content.clone();
                            let counter = counter.clone();
                            async move {
                                Ok::<_, std::convert::Infallible>(respond(
                                    &request, content, &counter,
                                ))
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            ca_pem,
            served,
            cancel,
        })
    }

    /// Body bytes sent so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }
}

fn respond(
    request: &http::Request<hyper::body::Incoming>,
    content: Bytes,
    served: &AtomicU64,
) -> http::Response<Full<Bytes>> {
    let total = content.len() as u64;
    let range = request
        .headers()
        .get(http::header::RANGE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("bytes="))
        .and_then(|value| value.split_once('-'))
        .and_then(|(start, end)| Some((start.parse::<u64>().ok()?, end.parse::<u64>().ok()?)))
        .filter(|(start, end)| start <= end && *start < total);
    let builder = http::Response::builder().header(http::header::ACCEPT_RANGES, "bytes");
    if request.method() == http::Method::HEAD {
        return builder
            .header(http::header::CONTENT_LENGTH, total)
            .body(Full::new(Bytes::new()))
            .expect("valid response");
    }
    match range {
        Some((start, end)) => {
            let end = end.min(total - 1);
            let body = content.slice(start as usize..=end as usize);
            served.fetch_add(body.len() as u64, Ordering::SeqCst);
            builder
                .status(206)
                .header(
                    http::header::CONTENT_RANGE,
                    format!("bytes {start}-{end}/{total}"),
                )
                .body(Full::new(body))
                .expect("valid response")
        }
        None => {
            served.fetch_add(total, Ordering::SeqCst);
            builder.body(Full::new(content)).expect("valid response")
        }
    }
}
