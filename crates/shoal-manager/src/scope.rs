//! Which scheduler cluster serves a client: its scopes against the client's IP, hostname, IDC
//! and location.
//!
//! Weights follow what an operator means by a scope, most specific first: a CIDR that contains
//! the client's IP (8), a hostname pattern that matches (4), the same IDC (2), a location that is
//! a prefix of the client's, level by level (1). Clusters that match nothing are left out, except
//! the default cluster, which catches everyone and ranks after every match.

use std::net::IpAddr;

use regex::Regex;

use crate::db::{Cluster, Scopes};

/// What a client tells about itself.
#[derive(Debug, Clone, Default)]
pub(crate) struct Client<'a> {
    pub(crate) hostname: &'a str,
    pub(crate) ip: Option<IpAddr>,
    pub(crate) idc: Option<&'a str>,
    pub(crate) location: Option<&'a str>,
}

/// Cluster ids best first: matching clusters by score (ties by id), then the default cluster.
pub(crate) fn rank(clusters: &[Cluster], client: &Client<'_>) -> Vec<i64> {
    let mut scored: Vec<(u32, i64)> = clusters
        .iter()
        .filter_map(|cluster| {
            let score = score(&cluster.scopes, client);
            (score > 0 || cluster.is_default).then_some((score, cluster.id))
        })
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, id)| id).collect()
}

fn score(scopes: &Scopes, client: &Client<'_>) -> u32 {
    let mut score = 0;
    if let Some(ip) = client.ip {
        if scopes.cidrs.iter().any(|cidr| cidr_contains(cidr, ip)) {
            score += 8;
        }
    }
    if !client.hostname.is_empty()
        && scopes
            .hostnames
            .iter()
            .any(|pattern| Regex::new(pattern).is_ok_and(|regex| regex.is_match(client.hostname)))
    {
        score += 4;
    }
    if let Some(idc) = client.idc {
        if !scopes.idc.is_empty()
            && scopes
                .idc
                .split('|')
                .any(|candidate| candidate.trim().eq_ignore_ascii_case(idc))
        {
            score += 2;
        }
    }
    if let Some(location) = client.location {
        if !scopes.location.is_empty() && location_prefix(&scopes.location, location) {
            score += 1;
        }
    }
    score
}

/// Whether every `|`-separated level of `scope` equals the client's level at that position.
fn location_prefix(scope: &str, client: &str) -> bool {
    let client: Vec<&str> = client.split('|').map(str::trim).collect();
    let scope: Vec<&str> = scope.split('|').map(str::trim).collect();
    scope.len() <= client.len()
        && scope
            .iter()
            .zip(&client)
            .all(|(a, b)| a.eq_ignore_ascii_case(b))
}

/// Whether `cidr` (`a.b.c.d/n`, `x::/n`, or a bare address) contains `ip`; false when malformed.
pub(crate) fn cidr_contains(cidr: &str, ip: IpAddr) -> bool {
    let (network, bits) = match cidr.trim().split_once('/') {
        Some((network, bits)) => (network, bits.parse::<u32>().ok()),
        None => (cidr.trim(), None),
    };
    let Ok(network) = network.parse::<IpAddr>() else {
        return false;
    };
    match (network, ip) {
        (IpAddr::V4(network), IpAddr::V4(ip)) => {
            let bits = bits.unwrap_or(32);
            if bits > 32 {
                return false;
            }
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(network) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(network), IpAddr::V6(ip)) => {
            let bits = bits.unwrap_or(128);
            if bits > 128 {
                return false;
            }
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(network) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(id: i64, scopes: Scopes, is_default: bool) -> Cluster {
        Cluster {
            id,
            name: format!("c{id}"),
            bio: String::new(),
            scopes,
            config: serde_json::json!({}),
            client_config: serde_json::json!({}),
            seed_client_config: serde_json::json!({}),
            is_default,
            created_ms: 0,
            updated_ms: 0,
        }
    }

    #[test]
    fn cidrs_match_by_prefix() {
        let ip = "10.1.2.3".parse().unwrap();
        assert!(cidr_contains("10.0.0.0/8", ip));
        assert!(cidr_contains("10.1.2.3", ip));
        assert!(cidr_contains("0.0.0.0/0", ip));
        assert!(!cidr_contains("10.2.0.0/16", ip));
        assert!(!cidr_contains("10.0.0.0/33", ip));
        assert!(!cidr_contains("garbage", ip));
        assert!(!cidr_contains("fd00::/8", ip));
        assert!(cidr_contains("fd00::/8", "fd12::1".parse().unwrap()));
    }

    #[test]
    fn the_most_specific_cluster_wins_and_the_default_catches_the_rest() {
        let clusters = vec![
            cluster(1, Scopes::default(), true),
            cluster(
                2,
                Scopes {
                    idc: "idc-a|idc-b".into(),
                    ..Scopes::default()
                },
                false,
            ),
            cluster(
                3,
                Scopes {
                    cidrs: vec!["192.168.0.0/16".into()],
                    ..Scopes::default()
                },
                false,
            ),
            cluster(
                4,
                Scopes {
                    location: "cn|hz".into(),
                    hostnames: vec!["^gpu-.*".into(), "(".into()],
                    ..Scopes::default()
                },
                false,
            ),
        ];
        let client = Client {
            hostname: "gpu-7",
            ip: Some("192.168.3.4".parse().unwrap()),
            idc: Some("IDC-B"),
            location: Some("cn|hz|xihu"),
        };
        assert_eq!(rank(&clusters, &client), vec![3, 4, 2, 1]);
        let nobody = Client {
            hostname: "cpu-1",
            ip: Some("172.16.0.1".parse().unwrap()),
            idc: None,
            location: Some("cn|sh"),
        };
        assert_eq!(rank(&clusters, &nobody), vec![1]);
    }
}
