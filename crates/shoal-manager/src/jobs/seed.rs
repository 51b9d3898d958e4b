//! Asking a seed daemon to download one blob or file: `dfdaemon.v2.DfdaemonUpload/DownloadTask`
//! on the seed's upload port, draining the progress stream to its end (upstream seeds stall when
//! nobody reads it). The seed downloads like any peer, announcing to its scheduler, so the task
//! is then found on the seed by every daemon of the cluster.
//!
//! A seed goes on with a download whose caller went away, so a manager that dies mid-trigger
//! leaves the download running; the replica that takes the job over triggers the same task
//! again and the seed joins the running download or answers from its store.

use std::time::Duration;

use shoal_protocol::common::Download;
use shoal_protocol::dfdaemon::dfdaemon_upload_client::DfdaemonUploadClient;
use shoal_protocol::dfdaemon::DownloadTaskRequest;
use shoal_protocol::MAX_GRPC_MESSAGE_BYTES;

/// A seed that cannot accept a TCP connection this fast is not healthy.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Upper bound for the seed to accept the call (response headers).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound between two progress messages (a piece on a slow origin).
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(360);

/// Triggering a seed failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TriggerError {
    #[error("connect to seed {addr}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("connect to seed {addr}: timed out")]
    ConnectTimeout { addr: String },
    #[error("seed {addr} refused the download: {message}")]
    Refused { addr: String, message: String },
    #[error("call DownloadTask on seed {addr}: timed out")]
    CallTimeout { addr: String },
    #[error("seed {addr} failed the download: {message}")]
    Failed { addr: String, message: String },
    #[error("seed {addr} sent no progress for {PROGRESS_TIMEOUT:?}")]
    ProgressTimeout { addr: String },
}

/// Runs `download` on the seed whose upload gRPC listens on `addr` (`ip:port`) to its end.
pub(crate) async fn trigger(addr: &str, download: Download) -> Result<(), TriggerError> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|source| TriggerError::Connect {
            addr: addr.to_string(),
            source,
        })?
        .connect_timeout(CONNECT_TIMEOUT);
    let channel = tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect())
        .await
        .map_err(|_| TriggerError::ConnectTimeout {
            addr: addr.to_string(),
        })?
        .map_err(|source| TriggerError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    let mut client = DfdaemonUploadClient::new(channel)
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    let request = DownloadTaskRequest {
        download: Some(download),
    };
    let mut progress = tokio::time::timeout(CALL_TIMEOUT, client.download_task(request))
        .await
        .map_err(|_| TriggerError::CallTimeout {
            addr: addr.to_string(),
        })?
        .map_err(|status| TriggerError::Refused {
            addr: addr.to_string(),
            message: status.message().to_string(),
        })?
        .into_inner();
    loop {
        match tokio::time::timeout(PROGRESS_TIMEOUT, progress.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(status)) => {
                return Err(TriggerError::Failed {
                    addr: addr.to_string(),
                    message: status.message().to_string(),
                })
            }
            Err(_) => {
                return Err(TriggerError::ProgressTimeout {
                    addr: addr.to_string(),
                })
            }
        }
    }
}
