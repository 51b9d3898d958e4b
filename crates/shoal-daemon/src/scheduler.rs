//! Channels to the configured schedulers and the choice of scheduler per task.
//!
//! Task-scoped calls go to one scheduler picked by the consistent-hash ring upstream clients use
//! (wire reference §5.3: 512 virtual nodes per member, SipHash-2-4 with zero keys), so shoal and
//! upstream peers of one task meet on the same replica. Host-scoped calls go to every scheduler.

use shoal_protocol::scheduler::scheduler_client::SchedulerClient;
use shoal_types::TaskId;
use tonic::transport::Channel;

/// Virtual nodes per scheduler on the ring.
const VIRTUAL_NODES: u64 = 512;

/// The scheduler set; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Schedulers {
    members: Vec<Member>,
    ring: Vec<(u64, usize)>,
}

#[derive(Debug, Clone)]
struct Member {
    url: String,
    channel: Channel,
}

impl Schedulers {
    /// Lazy channels to each URL; nothing is dialled until the first call.
    pub(crate) fn new(urls: &[String]) -> Result<Self, shoal_client::channel::ChannelError> {
        let mut members = Vec::new();
        let mut ring = Vec::new();
        for url in urls {
            let channel = shoal_client::channel::lazy(url)?;
            let name = ring_name(url);
            for index in 0..VIRTUAL_NODES {
                ring.push((node_position(index, &name), members.len()));
            }
            members.push(Member {
                url: url.clone(),
                channel,
            });
        }
        ring.sort_unstable();
        Ok(Self { members, ring })
    }

    /// The client for calls about `task_id`.
    pub(crate) fn client_for(&self, task_id: &TaskId) -> SchedulerClient<Channel> {
        let key = key_position(task_id.as_str());
        let index = self
            .ring
            .iter()
            .find(|(position, _)| *position >= key)
            .or_else(|| self.ring.first())
            .map(|(_, member)| *member)
            .unwrap_or(0);
        client(&self.members[index].channel)
    }

    /// Clients for every scheduler, with their URLs.
    pub(crate) fn all(&self) -> Vec<(String, SchedulerClient<Channel>)> {
        self.members
            .iter()
            .map(|member| (member.url.clone(), client(&member.channel)))
            .collect()
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
        let key = key_position(TASK);
        let member = schedulers
            .ring
            .iter()
            .find(|(position, _)| *position >= key)
            .or(schedulers.ring.first())
            .unwrap()
            .1;
        assert_eq!(schedulers.members[member].url, "http://10.0.0.3:8002");
    }
}
