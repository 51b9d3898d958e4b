//! Asking a seed daemon to download a task: `dfdaemon.v2.DfdaemonUpload/DownloadTask` on its
//! upload port, with the progress stream drained to its end (upstream seeds stall when nobody
//! reads it). Used by the scheduler's seed trigger and the manager's preheat jobs.

use std::time::Duration;

use shoal_protocol::common::Download;
use shoal_protocol::dfdaemon::dfdaemon_upload_client::DfdaemonUploadClient;
use shoal_protocol::dfdaemon::DownloadTaskRequest;
use shoal_protocol::MAX_GRPC_MESSAGE_BYTES;

/// How long each step of a seed download may take.
#[derive(Debug, Clone, Copy)]
pub struct SeedTimeouts {
    /// To connect; a seed that cannot accept a TCP connection this fast is not healthy.
    pub connect: Duration,
    /// For the seed to accept the call (response headers).
    pub call: Duration,
    /// Between two progress messages (a piece on a slow origin).
    pub progress: Duration,
}

/// Why a seed download failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedDownloadError {
    #[error("connect to seed {addr}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("connect to seed {addr}: timed out")]
    ConnectTimeout { addr: String },
    #[error("call DownloadTask on seed {addr}")]
    Call {
        addr: String,
        #[source]
        source: tonic::Status,
    },
    #[error("call DownloadTask on seed {addr}: timed out")]
    CallTimeout { addr: String },
    #[error("read DownloadTask progress from seed {addr}")]
    Progress {
        addr: String,
        #[source]
        source: tonic::Status,
    },
    #[error("read DownloadTask progress from seed {addr}: no progress for {timeout:?}")]
    ProgressTimeout { addr: String, timeout: Duration },
}

/// Runs `download` on the seed whose upload gRPC listens on `addr` (`ip:port`) until the seed
/// ends the progress stream.
pub async fn download_to_end(
    addr: &str,
    download: Download,
    timeouts: SeedTimeouts,
) -> Result<(), SeedDownloadError> {
    let owned = || addr.to_string();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|source| SeedDownloadError::Connect {
            addr: owned(),
            source,
        })?
        .connect_timeout(timeouts.connect);
    let channel = tokio::time::timeout(timeouts.connect, endpoint.connect())
        .await
        .map_err(|_| SeedDownloadError::ConnectTimeout { addr: owned() })?
        .map_err(|source| SeedDownloadError::Connect {
            addr: owned(),
            source,
        })?;
    let mut client = DfdaemonUploadClient::new(channel)
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    let request = DownloadTaskRequest {
        download: Some(download),
    };
    let mut progress = tokio::time::timeout(timeouts.call, client.download_task(request))
        .await
        .map_err(|_| SeedDownloadError::CallTimeout { addr: owned() })?
        .map_err(|source| SeedDownloadError::Call {
            addr: owned(),
            source,
        })?
        .into_inner();
    loop {
        match tokio::time::timeout(timeouts.progress, progress.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(source)) => {
                return Err(SeedDownloadError::Progress {
                    addr: owned(),
                    source,
                })
            }
            Err(_) => {
                return Err(SeedDownloadError::ProgressTimeout {
                    addr: owned(),
                    timeout: timeouts.progress,
                })
            }
        }
    }
}
