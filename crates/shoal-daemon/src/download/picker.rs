//! Which piece to fetch next, and from which parent (the choice behind [`super::p2p`]).
//!
//! Pure functions over what the P2P round knows: the pieces still missing, which parent holds
//! which, and how many requests each parent carries for us. The policy, measured in the shaped
//! lab (`docs/benchmarks.md`): the seed's uplink is the swarm's scarcest resource, so children
//! take from each other what they can and from the seed only what nobody else has yet, in a
//! random order per child so that children starting together fetch different pieces and can
//! trade them.

use std::collections::{BTreeSet, HashMap, HashSet};

use shoal_types::PieceNumber;

/// How many pieces each parent may carry for us at once. A lone parent gets every slot. With
/// several, a normal parent gets half of them and a seed one: the seed's uplink is the swarm's
/// scarcest resource, so children fetch from each other what they can and take from the seed
/// only the few pieces nobody else has yet, and those pieces finish sooner to be passed on.
pub(crate) fn parent_caps(limit: usize, live: &[bool], seeds: &[bool]) -> Vec<usize> {
    let live_parents = live.iter().filter(|alive| **alive).count();
    live.iter()
        .zip(seeds)
        .map(|(alive, seed)| match (*alive, *seed) {
            (false, _) => 0,
            _ if live_parents <= 1 => limit,
            (true, true) => limit.min(SEED_PIECES_PER_CHILD),
            (true, false) => limit.div_ceil(2).max(1),
        })
        .collect()
}

/// Pieces one child fetches at once from a seed when it has other parents too.
const SEED_PIECES_PER_CHILD: usize = 1;

/// Chooses up to `slots` pieces to fetch next, each with the parent to fetch it from.
///
/// The lowest pending piece goes first, so a reader streaming the task in order (the proxy)
/// always progresses. Then each parent with free capacity (below `caps`, counting `loads`),
/// least loaded first and normal peers before seeds (see [`parent_caps`]), is given the pieces
/// it holds, rarest first (fewest holders among our parents), ties broken by an order `salt`
/// makes random per download: children that start together ask for different pieces, and so
/// have pieces to trade with each other. `loads` is updated with the picks.
pub(crate) fn pick_pieces(
    pending: &BTreeSet<PieceNumber>,
    available: &HashMap<PieceNumber, Vec<usize>>,
    dispatched: &HashSet<PieceNumber>,
    loads: &mut [usize],
    caps: &[usize],
    slots: usize,
    salt: u64,
) -> Vec<(PieceNumber, usize)> {
    let mut candidates: Vec<(PieceNumber, &[usize])> = pending
        .iter()
        .filter(|piece| !dispatched.contains(piece))
        .filter_map(|piece| {
            let holders = available.get(piece)?;
            (!holders.is_empty()).then_some((*piece, holders.as_slice()))
        })
        .collect();
    let lowest = pending.iter().find(|piece| !dispatched.contains(piece));
    candidates.sort_by_key(|(piece, holders)| {
        (
            Some(piece) != lowest,
            holders.len(),
            mix(salt ^ u64::from(piece.get())),
        )
    });
    let free = |loads: &[usize], parent: usize| {
        loads
            .get(parent)
            .zip(caps.get(parent))
            .is_some_and(|(load, cap)| load < cap)
    };
    let mut picks = Vec::new();
    let mut taken = vec![false; candidates.len()];
    // The lowest piece first, from its least loaded free holder.
    if let Some((piece, holders)) = candidates.first() {
        if Some(piece) == lowest && slots > 0 {
            let parent = holders
                .iter()
                .copied()
                .filter(|index| free(loads, *index))
                .min_by_key(|index| {
                    (
                        caps[*index] < caps.iter().copied().max().unwrap_or(0),
                        loads[*index],
                    )
                });
            if let Some(parent) = parent {
                loads[parent] += 1;
                picks.push((*piece, parent));
                taken[0] = true;
            }
        }
    }
    // Then fill parents: normal ones (larger caps) before seeds, least loaded first.
    let mut order: Vec<usize> = (0..loads.len()).collect();
    order.sort_by_key(|index| (std::cmp::Reverse(caps[*index]), loads[*index]));
    for parent in order {
        for (slot, (piece, holders)) in candidates.iter().enumerate() {
            if picks.len() >= slots || !free(loads, parent) {
                break;
            }
            if taken[slot] || !holders.contains(&parent) {
                continue;
            }
            loads[parent] += 1;
            picks.push((*piece, parent));
            taken[slot] = true;
        }
    }
    picks
}

/// splitmix64's finaliser: a cheap bijection that scatters piece numbers.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(numbers: impl IntoIterator<Item = u32>) -> BTreeSet<PieceNumber> {
        numbers.into_iter().map(PieceNumber::new).collect()
    }

    fn held(entries: &[(u32, &[usize])]) -> HashMap<PieceNumber, Vec<usize>> {
        entries
            .iter()
            .map(|(piece, holders)| (PieceNumber::new(*piece), holders.to_vec()))
            .collect()
    }

    #[test]
    fn lowest_first_then_peers_before_the_seed() {
        // Parent 0 is a seed holding everything; parent 1 a peer holding pieces 0, 1 and 2.
        let available = held(&[
            (0, &[0, 1]),
            (1, &[0, 1]),
            (2, &[0, 1]),
            (3, &[0]),
            (4, &[0]),
        ]);
        let caps = parent_caps(8, &[true, true], &[true, false]);
        assert_eq!(caps, vec![1, 4]);
        let mut loads = vec![0, 0];
        let picks = pick_pieces(
            &pieces(0..5),
            &available,
            &HashSet::new(),
            &mut loads,
            &caps,
            8,
            7,
        );
        assert_eq!(
            picks[0],
            (PieceNumber::new(0), 1),
            "the lowest piece, from the peer"
        );
        let from_peer: BTreeSet<u32> = picks
            .iter()
            .filter(|(_, p)| *p == 1)
            .map(|(n, _)| n.get())
            .collect();
        let from_seed: BTreeSet<u32> = picks
            .iter()
            .filter(|(_, p)| *p == 0)
            .map(|(n, _)| n.get())
            .collect();
        assert_eq!(from_peer, [0, 1, 2].into_iter().collect());
        assert_eq!(from_seed.len(), 1, "the seed carries one piece");
        assert!(
            from_seed.is_subset(&[3, 4].into_iter().collect()),
            "the seed gets what only it has: {from_seed:?}"
        );
        assert_eq!(loads, vec![1, 3]);
    }

    #[test]
    fn caps_bound_each_parent() {
        let available: HashMap<PieceNumber, Vec<usize>> = (0..16)
            .map(|n| (PieceNumber::new(n), vec![0, 1, 2]))
            .collect();
        let caps = parent_caps(8, &[true, true, false], &[true, false, false]);
        assert_eq!(caps, vec![1, 4, 0]);
        let mut loads = vec![0, 0, 0];
        let picks = pick_pieces(
            &pieces(0..16),
            &available,
            &HashSet::new(),
            &mut loads,
            &caps,
            8,
            1,
        );
        assert_eq!(picks.len(), 5);
        assert_eq!(loads, vec![1, 4, 0], "a dead parent gets nothing");
        assert_eq!(
            parent_caps(8, &[true], &[true]),
            vec![8],
            "a lone seed gets every slot"
        );
    }

    #[test]
    fn salts_diversify_the_order() {
        let available: HashMap<PieceNumber, Vec<usize>> =
            (0..64).map(|n| (PieceNumber::new(n), vec![0])).collect();
        let order = |salt| {
            let mut loads = vec![0];
            pick_pieces(
                &pieces(0..64),
                &available,
                &HashSet::new(),
                &mut loads,
                &[8],
                8,
                salt,
            )
            .into_iter()
            .map(|(piece, _)| piece.get())
            .collect::<Vec<_>>()
        };
        let (a, b) = (order(1), order(2));
        assert_eq!(
            (a[0], b[0]),
            (0, 0),
            "the lowest piece leads for in-order readers"
        );
        assert_ne!(a[1..], b[1..], "two children ask for different pieces");
        // Dispatched pieces and pieces nobody holds are never picked.
        let dispatched: HashSet<PieceNumber> = [PieceNumber::new(0)].into_iter().collect();
        let mut loads = vec![0];
        let picks = pick_pieces(
            &pieces(0..2),
            &HashMap::new(),
            &dispatched,
            &mut loads,
            &[8],
            8,
            3,
        );
        assert!(picks.is_empty());
    }
}
