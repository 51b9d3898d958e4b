//! Tracing setup, shared log field names and the metrics registry.
//!
//! Every shoal binary calls [`init`] once, early in `main`, before any role starts. It installs
//! a `tracing` subscriber that writes human-readable lines to stderr, filtered by the first
//! non-empty variable of `SHOAL_LOG` and `RUST_LOG` (`tracing-subscriber` `EnvFilter` syntax,
//! e.g. `info,shoal_daemon=debug`), or by the default the caller passes. Calling it again, or
//! after a test harness installed its own subscriber, does nothing.
//!
//! [`fields`] names the fields shared across crates (`task_id`, `peer_id`, ...). `tracing`
//! macros only take literal field names, so write the literal there; the constants are the one
//! list of those names, for code that records fields dynamically and for reviews.
//!
//! ```
//! shoal_telemetry::init("info");
//! shoal_telemetry::init("debug"); // no effect: the first subscriber stays
//! tracing::info!(task_id = "7fcf06e5", "task completed");
//! assert_eq!(shoal_telemetry::fields::TASK_ID, "task_id");
//! ```

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Environment variables that hold the log filter, in order of precedence.
const FILTER_VARIABLES: [&str; 2] = ["SHOAL_LOG", "RUST_LOG"];

/// Filter used when both the environment and the caller's default are unusable.
const FALLBACK_FILTER: &str = "info";

/// Names of log and span fields shared by every crate. Use these exact names so that logs of
/// different roles can be joined on them.
pub mod fields {
    /// A task id (`TaskId`), as 64 lowercase hex characters for derived ids.
    pub const TASK_ID: &str = "task_id";
    /// A peer id (`PeerId`): one download on one host.
    pub const PEER_ID: &str = "peer_id";
    /// A host id (`HostId`): one daemon.
    pub const HOST_ID: &str = "host_id";
    /// A piece number within a task.
    pub const PIECE: &str = "piece";
    /// The origin URL of a task. Redact credentials before recording it.
    pub const URL: &str = "url";
}

/// A filter setting that could not be used, reported once the subscriber is running.
#[derive(Debug)]
struct RejectedFilter {
    source: &'static str,
    directives: String,
    error: tracing_subscriber::filter::ParseError,
}

/// Installs the global subscriber: fmt lines on stderr, filtered by `SHOAL_LOG`, else
/// `RUST_LOG`, else `default_filter`.
///
/// Idempotent: if a global subscriber is already set (an earlier call, or a test harness), this
/// call changes nothing. An unparsable filter is replaced by the next candidate and reported as a
/// warning once logging works.
pub fn init(default_filter: &str) {
    let (filter, rejected) = build_filter(|name| std::env::var(name).ok(), default_filter);
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .is_ok();
    if !installed {
        return;
    }
    for RejectedFilter {
        source,
        directives,
        error,
    } in rejected
    {
        tracing::warn!(source, directives, %error, "ignoring invalid log filter");
    }
}

/// Picks the first candidate filter that parses: each non-empty variable of
/// [`FILTER_VARIABLES`], then `default_filter`, then [`FALLBACK_FILTER`]. `env` reads a variable,
/// so tests can inject the environment.
fn build_filter(
    env: impl Fn(&str) -> Option<String>,
    default_filter: &str,
) -> (EnvFilter, Vec<RejectedFilter>) {
    let from_env = FILTER_VARIABLES.iter().filter_map(|&name| {
        env(name)
            .filter(|value| !value.trim().is_empty())
            .map(|v| (name, v))
    });
    let candidates = from_env.chain([("default filter", default_filter.to_string())]);
    let mut rejected = Vec::new();
    for (source, directives) in candidates {
        match EnvFilter::builder().parse(&directives) {
            Ok(filter) => return (filter, rejected),
            Err(error) => rejected.push(RejectedFilter {
                source,
                directives,
                error,
            }),
        }
    }
    (EnvFilter::new(FALLBACK_FILTER), rejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        }
    }

    fn chosen(pairs: &'static [(&'static str, &'static str)], default: &str) -> String {
        build_filter(env_of(pairs), default).0.to_string()
    }

    #[test]
    fn shoal_log_wins_over_rust_log_and_default() {
        let env = &[("SHOAL_LOG", "debug"), ("RUST_LOG", "trace")];
        assert_eq!(chosen(env, "warn"), "debug");
    }

    #[test]
    fn rust_log_is_used_without_shoal_log() {
        assert_eq!(
            chosen(&[("RUST_LOG", "shoal_daemon=trace")], "warn"),
            "shoal_daemon=trace"
        );
        assert_eq!(
            chosen(&[("SHOAL_LOG", " "), ("RUST_LOG", "error")], "warn"),
            "error"
        );
    }

    #[test]
    fn default_applies_without_environment() {
        assert_eq!(
            chosen(&[], "warn,shoal_scheduler=debug"),
            "shoal_scheduler=debug,warn"
        );
    }

    #[test]
    fn invalid_filters_fall_through_and_are_reported() {
        let (filter, rejected) = build_filter(env_of(&[("SHOAL_LOG", "info,=[bad")]), "also=[bad");
        assert_eq!(filter.to_string(), FALLBACK_FILTER);
        let sources: Vec<_> = rejected.iter().map(|rejected| rejected.source).collect();
        assert_eq!(sources, ["SHOAL_LOG", "default filter"]);
    }

    #[test]
    fn init_is_idempotent() {
        init("info");
        init("debug");
        tracing::info!(piece = 1, "still logging after a second init");
    }

    #[test]
    fn field_names_are_snake_case() {
        for name in [
            fields::TASK_ID,
            fields::PEER_ID,
            fields::HOST_ID,
            fields::PIECE,
            fields::URL,
        ] {
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
        }
    }
}
