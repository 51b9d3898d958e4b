//! Channels to the configured schedulers and the choice of scheduler per task.
//!
//! Task-scoped calls go to one scheduler picked by the consistent-hash ring upstream clients use
//! (wire reference §5.3: 512 virtual nodes per member, SipHash-2-4 with zero keys), so shoal and
//! upstream peers of one task meet on the same replica. Host-scoped calls go to every scheduler.

use std::sync::{Arc, RwLock};

use shoal_protocol::scheduler::scheduler_client::SchedulerClient;
use shoal_types::TaskId;
use tonic::transport::Channel;

/// Virtual nodes per scheduler on the ring.
const VIRTUAL_NODES: u64 = 512;

/// The scheduler set; cheap to clone. Clones share one membership, which discovery through a
/// manager may replace at any time.
#[derive(Debug, Clone)]
pub(crate) struct Schedulers {
    current: Arc<RwLock<Arc<Ring>>>,
}

/// One scheduler: its URL and the name it has on the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchedulerEntry {
    pub(crate) url: String,
    /// The manager's hostname for it; `ip:port` when it has none (static configuration).
    pub(crate) name: String,
}

impl SchedulerEntry {
    /// An entry from a configured URL, named `ip:port` as upstream names static members.
    pub(crate) fn from_url(url: &str) -> Self {
        Self {
            url: url.to_string(),
            name: ring_name(url),
        }
    }
}

#[derive(Debug, Default)]
struct Ring {
    members: Vec<Member>,
    positions: Vec<(u64, usize)>,
}

#[derive(Debug, Clone)]
struct Member {
    entry: SchedulerEntry,
    channel: Channel,
}

impl Schedulers {
    /// Lazy channels to each URL; nothing is dialled until the first call.
    pub(crate) fn new(urls: &[String]) -> Result<Self, shoal_client::channel::ChannelError> {
        let entries: Vec<SchedulerEntry> = urls
            .iter()
            .map(|url| SchedulerEntry::from_url(url))
            .collect();
        let ring = Ring::build(&entries, &[])?;
        Ok(Self {
            current: Arc::new(RwLock::new(Arc::new(ring))),
        })
    }

    /// Replaces the membership; keeps the channels of members that stay. Returns whether the
    /// membership changed.
    pub(crate) fn replace(
        &self,
        entries: &[SchedulerEntry],
    ) -> Result<bool, shoal_client::channel::ChannelError> {
        let current = self.snapshot();
        let unchanged = current.members.len() == entries.len()
            && current
                .members
                .iter()
                .zip(entries)
                .all(|(member, entry)| member.entry == *entry);
        if unchanged {
            return Ok(false);
        }
        let ring = Ring::build(entries, &current.members)?;
        *self
            .current
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = Arc::new(ring);
        Ok(true)
    }

    /// The client for calls about `task_id`; `None` while no scheduler is known.
    pub(crate) fn client_for(&self, task_id: &TaskId) -> Option<SchedulerClient<Channel>> {
        let ring = self.snapshot();
        let key = key_position(task_id.as_str());
        let index = ring
            .positions
            .iter()
            .find(|(position, _)| *position >= key)
            .or_else(|| ring.positions.first())
            .map(|(_, member)| *member)?;
        ring.members
            .get(index)
            .map(|member| client(&member.channel))
    }

    /// Clients for every scheduler, with their URLs.
    pub(crate) fn all(&self) -> Vec<(String, SchedulerClient<Channel>)> {
        self.snapshot()
            .members
            .iter()
            .map(|member| (member.entry.url.clone(), client(&member.channel)))
            .collect()
    }

    fn snapshot(&self) -> Arc<Ring> {
        self.current
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }
}

impl Ring {
    fn build(
        entries: &[SchedulerEntry],
        previous: &[Member],
    ) -> Result<Self, shoal_client::channel::ChannelError> {
        let mut ring = Ring::default();
        for entry in entries {
            let channel = match previous.iter().find(|member| member.entry.url == entry.url) {
                Some(member) => member.channel.clone(),
                None => shoal_client::channel::lazy(&entry.url)?,
            };
            for index in 0..VIRTUAL_NODES {
                ring.positions
                    .push((node_position(index, &entry.name), ring.members.len()));
            }
            ring.members.push(Member {
                entry: entry.clone(),
                channel,
            });
        }
        ring.positions.sort_unstable();
        Ok(ring)
    }
}

fn client(channel: &Channel) -> SchedulerClient<Channel> {
    SchedulerClient::new(channel.clone())
        .max_decoding_message_size(shoal_protocol::MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(shoal_protocol::MAX_GRPC_MESSAGE_BYTES)
}

/// `ip:port` of a scheduler URL, as upstream names ring members without a hostname.
fn ring_name(url: &str) -> String {
    let without_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    without_scheme.trim_end_matches('/').to_string()
}

#[allow(deprecated)] // std's SipHasher is exactly SipHash-2-4 with zero keys, as upstream uses.
fn hasher() -> std::hash::SipHasher {
    std::hash::SipHasher::new()
}

fn node_position(index: u64, name: &str) -> u64 {
    use std::hash::Hasher;
    let mut hasher = hasher();
    hasher.write(&index.to_le_bytes());
    hasher.write(name.as_bytes());
    hasher.write_u8(0xff);
    hasher.finish()
}

fn key_position(key: &str) -> u64 {
    use std::hash::Hasher;
    let mut hasher = hasher();
    hasher.write(key.as_bytes());
    hasher.write_u8(0xff);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TASK: &str = "7fcf06e5f0b1e443065c1a563eed788eb2e168a05c6ad9c4b319f7a976322be0";

    #[test]
    fn ring_positions_match_upstream_vectors() {
        assert_eq!(key_position(TASK), 0x41d2bac3b2f92404);
        assert_eq!(node_position(0, "scheduler-0"), 0xcafde51ef5d5f137);
    }

    #[tokio::test]
    async fn ring_picks_the_upstream_member() {
        let urls: Vec<String> = ["10.0.0.1:8002", "10.0.0.2:8002", "10.0.0.3:8002"]
            .iter()
            .map(|addr| format!("http://{addr}"))
            .collect();
        let schedulers = Schedulers::new(&urls).unwrap();
        let ring = schedulers.snapshot();
        let key = key_position(TASK);
        let member = ring
            .positions
            .iter()
            .find(|(position, _)| *position >= key)
            .or(ring.positions.first())
            .unwrap()
            .1;
        assert_eq!(ring.members[member].entry.url, "http://10.0.0.3:8002");
    }

    #[tokio::test]
    async fn an_empty_set_has_no_client_until_replaced() {
        let schedulers = Schedulers::new(&[]).unwrap();
        let task: TaskId = TASK.parse().unwrap();
        assert!(schedulers.client_for(&task).is_none());
        let entry = SchedulerEntry {
            url: "http://127.0.0.1:8002".into(),
            name: "scheduler-0".into(),
        };
        assert!(schedulers.replace(std::slice::from_ref(&entry)).unwrap());
        assert!(!schedulers.replace(std::slice::from_ref(&entry)).unwrap());
        assert!(schedulers.client_for(&task).is_some());
        assert_eq!(schedulers.all().len(), 1);
    }
}
