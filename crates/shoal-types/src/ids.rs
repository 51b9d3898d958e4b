//! Opaque identifiers: tasks, hosts and peers. They are compared as strings and never parsed.

use std::fmt;
use std::str::FromStr;

/// A task id: 64 lowercase hex characters for every id shoal derives, but ids from other peers
/// are kept verbatim (sha512 blob digests give 128 characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(String);

/// Why a string is not a task id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TaskIdParseError {
    #[error("task id is empty")]
    Empty,
    #[error("task id {0:?} contains characters other than ascii letters and digits")]
    InvalidCharacter(String),
}

impl TaskId {
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the id fits a Vortex `DownloadPiece` request (exactly 64 bytes).
    pub fn fits_vortex(&self) -> bool {
        self.0.len() == 64
    }

    /// The task id of a SHA-256 over `bytes`, as lowercase hex.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        Self(hex::encode(sha2::Sha256::digest(bytes)))
    }
}

impl FromStr for TaskId {
    type Err = TaskIdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(TaskIdParseError::Empty);
        }
        if !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(TaskIdParseError::InvalidCharacter(s.to_string()));
        }
        Ok(Self(s.to_string()))
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A host id: `{ip}-{hostname}`, with `-seed` appended in seed mode. Opaque once built.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(String);

impl HostId {
    /// Builds the id the way Dragonfly v2 does.
    pub fn new(ip: &str, hostname: &str, seed: bool) -> Self {
        if seed {
            Self(format!("{ip}-{hostname}-seed"))
        } else {
            Self(format!("{ip}-{hostname}"))
        }
    }

    /// Wraps an id received from the wire.
    pub fn from_wire(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A peer id: `{ip}-{hostname}-{uuid v4}`, with `-seed` appended in seed mode; fresh per download.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(String);

impl PeerId {
    /// Builds a fresh id the way Dragonfly v2 does.
    pub fn generate(ip: &str, hostname: &str, seed: bool) -> Self {
        let uuid = uuid::Uuid::new_v4();
        if seed {
            Self(format!("{ip}-{hostname}-{uuid}-seed"))
        } else {
            Self(format!("{ip}-{hostname}-{uuid}"))
        }
    }

    /// Wraps an id received from the wire.
    pub fn from_wire(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_id_matches_upstream_format() {
        assert_eq!(
            HostId::new("127.0.0.1", "localhost", false).as_str(),
            "127.0.0.1-localhost"
        );
        assert_eq!(
            HostId::new("127.0.0.1", "localhost", true).as_str(),
            "127.0.0.1-localhost-seed"
        );
    }

    #[test]
    fn peer_id_has_uuid_and_seed_suffix() {
        let peer = PeerId::generate("127.0.0.1", "localhost", true);
        let rest = peer.as_str().strip_prefix("127.0.0.1-localhost-").unwrap();
        let uuid = rest.strip_suffix("-seed").unwrap();
        assert_eq!(uuid::Uuid::parse_str(uuid).unwrap().get_version_num(), 4);
        assert_eq!(uuid, uuid.to_lowercase());
    }

    #[test]
    fn task_id_parse_rejects_garbage() {
        assert_eq!("".parse::<TaskId>(), Err(TaskIdParseError::Empty));
        assert!("../etc".parse::<TaskId>().is_err());
        assert!("ab12".parse::<TaskId>().is_ok());
    }
}
