//! gRPC channels with shoal's connection policy.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// Time allowed to open a TCP connection to a peer or scheduler.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A channel could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("invalid endpoint {endpoint:?}")]
    InvalidEndpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("connect to {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// A lazily connecting channel to `url` (`http://host:port`): no I/O until the first call.
pub fn lazy(url: &str) -> Result<Channel, ChannelError> {
    Ok(endpoint(url)?.connect_lazy())
}

/// A channel to `url`, connected now.
pub async fn connect(url: &str) -> Result<Channel, ChannelError> {
    endpoint(url)?
        .connect()
        .await
        .map_err(|source| ChannelError::Connect {
            endpoint: url.to_string(),
            source,
        })
}

fn endpoint(url: &str) -> Result<Endpoint, ChannelError> {
    let endpoint =
        Endpoint::from_shared(url.to_string()).map_err(|source| ChannelError::InvalidEndpoint {
            endpoint: url.to_string(),
            source,
        })?;
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(300))
        .keep_alive_timeout(Duration::from_secs(20)))
}

/// A channel over the daemon's unix socket, connected now.
pub async fn connect_unix(path: &Path) -> Result<Channel, ChannelError> {
    let path: PathBuf = path.to_path_buf();
    let display = path.display().to_string();
    // The URI is required by tonic but ignored: the connector always dials the socket.
    Endpoint::from_static("http://localhost")
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|source| ChannelError::Connect {
            endpoint: display,
            source,
        })
}
