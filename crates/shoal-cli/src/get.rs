//! `shoal get URL -O PATH`: download through the local daemon.
//!
//! The daemon writes the content to a temporary file beside PATH and renames it on success, so
//! PATH is either the complete, verified content or untouched. Progress is drawn on a terminal;
//! the summary says how many bytes came from parents, the origin and the local cache.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use shoal_protocol::common::{Download, TrafficType};
use shoal_protocol::dfdaemon::dfdaemon_download_client::DfdaemonDownloadClient;
use shoal_protocol::dfdaemon::download_task_response::Response as TaskResponse;
use shoal_protocol::dfdaemon::DownloadTaskRequest;
use shoal_types::task_id::DEFAULT_FILTERED_QUERY_PARAMS;
use shoal_types::ContentDigest;

/// Options of `shoal get`.
#[derive(Debug, Clone, Default)]
pub struct GetOptions {
    pub url: String,
    pub output: PathBuf,
    pub socket: PathBuf,
    pub digest: Option<String>,
    /// `Name: value` strings.
    pub headers: Vec<String>,
    pub tag: Option<String>,
    pub application: Option<String>,
    /// Empty means dfget's default list (signed-URL parameters).
    pub filtered_query_params: Vec<String>,
    pub piece_length: Option<u64>,
    pub disable_back_to_source: bool,
    pub no_progress: bool,
}

/// What a successful `shoal get` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetSummary {
    pub task_id: String,
    pub content_length: u64,
    pub from_parents: u64,
    pub from_origin: u64,
    pub from_cache: u64,
    pub parents: Vec<String>,
}

/// Why `shoal get` failed; the message is the one line the user sees.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("invalid header {0:?}: expected 'Name: value'")]
    Header(String),
    #[error("invalid --digest")]
    Digest(#[source] shoal_types::DigestParseError),
    #[error("output directory {0} does not exist")]
    OutputDir(PathBuf),
    #[error("output path {0} is a directory")]
    OutputIsDir(PathBuf),
    #[error("output path {0} exists and is not a regular file")]
    OutputNotRegular(PathBuf),
    #[error("writing to stdout is not supported: give a file path to -O")]
    Stdout,
    #[error("resolve current directory")]
    CurrentDir(#[source] std::io::Error),
    #[error("no shoal daemon is answering on {socket}: start one with `shoal daemon --scheduler http://SCHEDULER:8002` or pass --socket")]
    NoDaemon {
        socket: PathBuf,
        #[source]
        source: shoal_client::channel::ChannelError,
    },
    #[error("{}", .0.message())]
    Daemon(tonic::Status),
    #[error("the daemon ended the download without finishing it")]
    Incomplete,
}

impl GetOptions {
    fn download(&self, output: &Path) -> Result<Download, GetError> {
        let mut request_header = HashMap::new();
        for header in &self.headers {
            let (name, value) = header
                .split_once(':')
                .ok_or_else(|| GetError::Header(header.clone()))?;
            let name = name.trim();
            if name.is_empty()
                || name
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            {
                return Err(GetError::Header(header.clone()));
            }
            request_header.insert(name.to_string(), value.trim().to_string());
        }
        let digest = match &self.digest {
            Some(digest) => Some(
                digest
                    .parse::<ContentDigest>()
                    .map_err(GetError::Digest)?
                    .to_string(),
            ),
            None => None,
        };
        let filtered_query_params = if self.filtered_query_params.is_empty() {
            DEFAULT_FILTERED_QUERY_PARAMS
                .iter()
                .map(|name| name.to_string())
                .collect()
        } else {
            self.filtered_query_params.clone()
        };
        Ok(Download {
            url: self.url.clone(),
            digest,
            tag: self.tag.clone(),
            application: self.application.clone(),
            priority: 6,
            filtered_query_params,
            request_header,
            piece_length: self.piece_length,
            output_path: Some(output.display().to_string()),
            disable_back_to_source: self.disable_back_to_source,
            ..Default::default()
        })
    }
}

/// Runs `shoal get`.
pub async fn get(options: &GetOptions) -> Result<GetSummary, GetError> {
    let output = absolute_output(&options.output)?;
    let download = options.download(&output)?;
    let channel = shoal_client::channel::connect_unix(&options.socket)
        .await
        .map_err(|source| GetError::NoDaemon {
            socket: options.socket.clone(),
            source,
        })?;
    let mut client = DfdaemonDownloadClient::new(channel)
        .max_decoding_message_size(shoal_protocol::MAX_GRPC_MESSAGE_BYTES);
    let mut stream = client
        .download_task(DownloadTaskRequest {
            download: Some(download),
        })
        .await
        .map_err(GetError::Daemon)?
        .into_inner();
    let show = !options.no_progress && std::io::stderr().is_terminal();
    let bar = if show {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bytes}/{total_bytes} {wide_bar} {bytes_per_sec} eta {eta}")
            .expect("the progress template is valid"),
    );
    let mut summary = GetSummary::default();
    let mut started = false;
    while let Some(response) = stream.message().await.map_err(|status| {
        bar.abandon();
        GetError::Daemon(status)
    })? {
        if summary.task_id.is_empty() {
            summary.task_id = response.task_id.clone();
        }
        match response.response {
            Some(TaskResponse::DownloadTaskStartedResponse(started_response)) => {
                started = true;
                summary.content_length = started_response.content_length;
                bar.set_length(started_response.content_length);
                for piece in &started_response.pieces {
                    summary.from_cache += piece.length;
                    bar.inc(piece.length);
                }
            }
            Some(TaskResponse::DownloadPieceFinishedResponse(finished)) => {
                let Some(piece) = finished.piece else {
                    continue;
                };
                match piece
                    .traffic_type
                    .and_then(|value| TrafficType::try_from(value).ok())
                {
                    Some(TrafficType::RemotePeer) => {
                        summary.from_parents += piece.length;
                        if let Some(parent) =
                            piece.parent_id.filter(|id| !summary.parents.contains(id))
                        {
                            summary.parents.push(parent);
                        }
                    }
                    Some(TrafficType::BackToSource) => summary.from_origin += piece.length,
                    _ => summary.from_cache += piece.length,
                }
                bar.inc(piece.length);
            }
            None => {}
        }
    }
    bar.finish_and_clear();
    if !started {
        return Err(GetError::Incomplete);
    }
    Ok(summary)
}

fn absolute_output(output: &Path) -> Result<PathBuf, GetError> {
    if output.as_os_str() == "-" {
        return Err(GetError::Stdout);
    }
    let output = if output.is_absolute() {
        output.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(GetError::CurrentDir)?
            .join(output)
    };
    if output.is_dir() {
        return Err(GetError::OutputIsDir(output));
    }
    // Devices, FIFOs and sockets are never replaced by a download.
    if let Ok(metadata) = std::fs::metadata(&output) {
        if !metadata.is_file() {
            return Err(GetError::OutputNotRegular(output));
        }
    }
    let parent = output
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    if !parent.is_dir() {
        return Err(GetError::OutputDir(parent));
    }
    Ok(output)
}

/// The one-line summary printed after a successful download.
pub fn describe(summary: &GetSummary, output: &Path, elapsed: std::time::Duration) -> String {
    format!(
        "saved {} ({} bytes in {:.2}s): {} bytes from {} parent(s), {} bytes from origin, {} bytes from local cache",
        output.display(),
        summary.content_length,
        elapsed.as_secs_f64(),
        summary.from_parents,
        summary.parents.len(),
        summary.from_origin,
        summary.from_cache,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_validated() {
        let options = GetOptions {
            url: "http://o/x".into(),
            headers: vec!["nocolon".into()],
            ..Default::default()
        };
        assert!(matches!(
            options.download(Path::new("/tmp/x")),
            Err(GetError::Header(_))
        ));
        let options = GetOptions {
            url: "http://o/x".into(),
            headers: vec!["A: b: c".into()],
            ..Default::default()
        };
        let download = options.download(Path::new("/tmp/x")).unwrap();
        assert_eq!(
            download.request_header.get("A").map(String::as_str),
            Some("b: c")
        );
    }

    #[test]
    fn default_filters_apply() {
        let options = GetOptions {
            url: "http://o/x".into(),
            ..Default::default()
        };
        let download = options.download(Path::new("/tmp/x")).unwrap();
        assert!(download
            .filtered_query_params
            .iter()
            .any(|name| name == "X-Amz-Signature"));
    }

    #[test]
    fn special_outputs_are_refused() {
        assert!(matches!(
            absolute_output(Path::new("-")),
            Err(GetError::Stdout)
        ));
        assert!(matches!(
            absolute_output(Path::new("/dev/null")),
            Err(GetError::OutputNotRegular(_))
        ));
        assert!(matches!(
            absolute_output(Path::new("/tmp")),
            Err(GetError::OutputIsDir(_))
        ));
        assert!(matches!(
            absolute_output(Path::new("/nonexistent-dir/x")),
            Err(GetError::OutputDir(_))
        ));
    }

    #[test]
    fn bad_digest_is_refused() {
        let options = GetOptions {
            url: "http://o/x".into(),
            digest: Some("sha256:xyz".into()),
            ..Default::default()
        };
        assert!(matches!(
            options.download(Path::new("/tmp/x")),
            Err(GetError::Digest(_))
        ));
    }
}
