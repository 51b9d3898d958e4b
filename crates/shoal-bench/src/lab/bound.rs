//! The fluid-model lower bound on distribution time, and percentiles.
//!
//! With file size `F`, origin upload `u_s`, the slowest receiver download `d_min`, `N` receivers
//! and uploads `u_i` of every peer that can serve pieces (the `N` nodes and the `K` seeds),
//! no system can finish all receivers before
//! `T_min = max(F/u_s, F/d_min, N·F/(u_s + Σu_i))`.

/// Inputs of the bound, rates in bytes per second.
#[derive(Debug, Clone)]
pub(crate) struct FluidModel {
    pub(crate) file_bytes: f64,
    pub(crate) origin_up: f64,
    pub(crate) receiver_down: Vec<f64>,
    pub(crate) peer_up: Vec<f64>,
}

impl FluidModel {
    /// `T_min` in seconds.
    pub(crate) fn t_min(&self) -> f64 {
        self.terms().into_iter().fold(0.0, f64::max)
    }

    /// The three terms of the bound in seconds: `F/u_s`, `F/d_min` (0 without receivers) and
    /// `N·F/(u_s + Σu_i)`.
    pub(crate) fn terms(&self) -> [f64; 3] {
        let f = self.file_bytes;
        let n = self.receiver_down.len() as f64;
        let d_min = self
            .receiver_down
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let total_up = self.origin_up + self.peer_up.iter().sum::<f64>();
        let download = if d_min.is_finite() { f / d_min } else { 0.0 };
        [f / self.origin_up, download, n * f / total_up]
    }
}

/// Nearest-rank percentile (`p` in 0..=100) of unsorted values; 0 when empty.
pub(crate) fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MBIT: f64 = 1e6 / 8.0;

    #[test]
    fn swarm_term_dominates_with_many_nodes() {
        // 8 nodes at 50 Mbit/s, origin 100 Mbit/s, 1 seed, 64 MiB.
        let f = 64.0 * 1024.0 * 1024.0;
        let model = FluidModel {
            file_bytes: f,
            origin_up: 100.0 * MBIT,
            receiver_down: vec![50.0 * MBIT; 8],
            peer_up: vec![50.0 * MBIT; 9],
        };
        let swarm = 8.0 * f / (550.0 * MBIT);
        let download = f / (50.0 * MBIT);
        assert!((model.t_min() - download.max(swarm)).abs() < 1e-9);
        assert!((model.t_min() - download).abs() < 1e-9);
    }

    #[test]
    fn origin_term_dominates_with_a_slow_origin() {
        let model = FluidModel {
            file_bytes: 1000.0,
            origin_up: 10.0,
            receiver_down: vec![100.0; 2],
            peer_up: vec![100.0; 2],
        };
        assert!((model.t_min() - 100.0).abs() < 1e-9);
    }

    #[test]
    fn swarm_term_without_peers_is_direct_download() {
        let model = FluidModel {
            file_bytes: 1000.0,
            origin_up: 100.0,
            receiver_down: vec![1000.0; 4],
            peer_up: vec![0.0; 4],
        };
        assert!((model.t_min() - 40.0).abs() < 1e-9);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let values = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&values, 50.0), 3.0);
        assert_eq!(percentile(&values, 99.0), 5.0);
        assert_eq!(percentile(&values, 100.0), 5.0);
        assert_eq!(percentile(&values, 0.0), 1.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
