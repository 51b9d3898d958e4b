//! Ranking of valid parents. Weights sum to 1.0, so a score is comparable across children.

use super::{ChildView, HostView, PeerView};

/// Parents that already hold more of the task can feed a child without waiting.
const HELD_WEIGHT: f64 = 0.35;
/// Fewer current children leaves more upload bandwidth for this one.
const UPLOAD_WEIGHT: f64 = 0.25;
/// Seeds are provisioned to serve and already face the origin.
const SEED_WEIGHT: f64 = 0.15;
/// Same data centre: cheap, fast links.
const IDC_WEIGHT: f64 = 0.15;
/// Shared location prefix (`country|region|zone|...`): nearer is better.
const LOCATION_WEIGHT: f64 = 0.10;
/// Location elements compared; the Go scheduler uses the same depth.
const MAX_LOCATION_ELEMENTS: usize = 5;

/// The score of `peer` (on `host`, serving `children` others) as a parent of `child`.
pub(super) fn score(
    child: &ChildView<'_>,
    peer: &PeerView<'_>,
    host: &HostView<'_>,
    children: usize,
) -> f64 {
    let held = peer.held_fraction.clamp(0.0, 1.0);
    let free_upload = 1.0 / (1.0 + children as f64);
    let seed = if host.is_seed { 1.0 } else { 0.0 };
    HELD_WEIGHT * held
        + UPLOAD_WEIGHT * free_upload
        + SEED_WEIGHT * seed
        + IDC_WEIGHT * idc_affinity(child.idc, host.idc)
        + LOCATION_WEIGHT * location_affinity(child.location, host.location)
}

fn idc_affinity(child: Option<&str>, parent: Option<&str>) -> f64 {
    match (child, parent) {
        (Some(child), Some(parent)) if !child.is_empty() && child.eq_ignore_ascii_case(parent) => {
            1.0
        }
        _ => 0.0,
    }
}

/// The fraction of leading `|`-separated location elements the two hosts share.
fn location_affinity(child: Option<&str>, parent: Option<&str>) -> f64 {
    let (Some(child), Some(parent)) = (child, parent) else {
        return 0.0;
    };
    if child.is_empty() || parent.is_empty() {
        return 0.0;
    }
    if child.eq_ignore_ascii_case(parent) {
        return 1.0;
    }
    let child: Vec<&str> = child.split('|').take(MAX_LOCATION_ELEMENTS).collect();
    let parent: Vec<&str> = parent.split('|').take(MAX_LOCATION_ELEMENTS).collect();
    let shared = child
        .iter()
        .zip(&parent)
        .take_while(|(a, b)| a.eq_ignore_ascii_case(b))
        .count();
    shared as f64 / MAX_LOCATION_ELEMENTS as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idc_matches_case_insensitively_and_never_on_empty() {
        assert_eq!(idc_affinity(Some("IDC-A"), Some("idc-a")), 1.0);
        assert_eq!(idc_affinity(Some(""), Some("")), 0.0);
        assert_eq!(idc_affinity(None, Some("a")), 0.0);
        assert_eq!(idc_affinity(Some("a"), Some("b")), 0.0);
    }

    #[test]
    fn location_counts_the_shared_prefix() {
        assert_eq!(location_affinity(Some("cn|hz|a"), Some("cn|hz|a")), 1.0);
        assert!((location_affinity(Some("cn|hz|a"), Some("cn|hz|b")) - 0.4).abs() < 1e-9);
        assert!((location_affinity(Some("cn|hz"), Some("cn|sh")) - 0.2).abs() < 1e-9);
        assert_eq!(location_affinity(Some("us"), Some("cn")), 0.0);
        assert_eq!(location_affinity(None, Some("cn")), 0.0);
        assert_eq!(location_affinity(Some(""), Some("")), 0.0);
    }
}
