//! Prometheus metrics of the daemon and the `/metrics` HTTP endpoint.

use std::sync::Arc;

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Where downloaded bytes came from.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub(crate) enum Source {
    Parent,
    Origin,
}

/// How a download ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub(crate) enum TaskResult {
    Succeeded,
    Failed,
}

impl EncodeLabelValue for Source {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            Self::Parent => "parent",
            Self::Origin => "origin",
        })
    }
}

impl EncodeLabelValue for TaskResult {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: Source,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: TaskResult,
}

/// The daemon's metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    download_bytes: Family<SourceLabels, Counter>,
    upload_bytes: Counter,
    upload_pieces: Counter,
    tasks: Family<StateLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("shoal_daemon");
        let download_bytes = Family::<SourceLabels, Counter>::default();
        let upload_bytes = Counter::default();
        let upload_pieces = Counter::default();
        let tasks = Family::<StateLabels, Counter>::default();
        registry.register(
            "download_bytes",
            "Bytes downloaded, by source",
            download_bytes.clone(),
        );
        registry.register(
            "upload_bytes",
            "Piece bytes sent to children",
            upload_bytes.clone(),
        );
        registry.register(
            "upload_pieces",
            "Pieces sent to children",
            upload_pieces.clone(),
        );
        registry.register("tasks", "Downloads finished, by final state", tasks.clone());
        Self {
            registry: Arc::new(registry),
            download_bytes,
            upload_bytes,
            upload_pieces,
            tasks,
        }
    }

    pub(crate) fn downloaded(&self, source: Source, bytes: u64) {
        self.download_bytes
            .get_or_create(&SourceLabels { source })
            .inc_by(bytes);
    }

    pub(crate) fn uploaded(&self, bytes: u64) {
        self.upload_bytes.inc_by(bytes);
        self.upload_pieces.inc();
    }

    pub(crate) fn task_done(&self, state: TaskResult) {
        self.tasks.get_or_create(&StateLabels { state }).inc();
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// Serves `/metrics` on `listener` until cancelled.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_follow_the_convention() {
        let metrics = Metrics::new();
        metrics.downloaded(Source::Parent, 5);
        metrics.downloaded(Source::Origin, 7);
        metrics.uploaded(3);
        metrics.task_done(TaskResult::Succeeded);
        let text = metrics.encode();
        assert!(
            text.contains("shoal_daemon_download_bytes_total{source=\"parent\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("shoal_daemon_download_bytes_total{source=\"origin\"} 7"),
            "{text}"
        );
        assert!(text.contains("shoal_daemon_upload_bytes_total 3"), "{text}");
        assert!(
            text.contains("shoal_daemon_tasks_total{state=\"succeeded\"} 1"),
            "{text}"
        );
    }
}
