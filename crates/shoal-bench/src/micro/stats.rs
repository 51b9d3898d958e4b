//! The arithmetic of the reports: percentiles, throughput and ratios, and a plain-text table.
//!
//! Pure functions only, so every figure printed by a micro-benchmark is unit-tested here.

use std::fmt::Write as _;
use std::time::Duration;

/// Summary of a set of samples (seconds or any other unit); all `NaN` when there are none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Summary {
    pub(crate) count: usize,
    pub(crate) min: f64,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

impl Summary {
    /// Summarises `samples` (order does not matter).
    pub(crate) fn of(samples: &[f64]) -> Self {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| !v.is_nan()).collect();
        sorted.sort_by(f64::total_cmp);
        Self {
            count: sorted.len(),
            min: sorted.first().copied().unwrap_or(f64::NAN),
            p50: percentile_sorted(&sorted, 50.0),
            p99: percentile_sorted(&sorted, 99.0),
            max: sorted.last().copied().unwrap_or(f64::NAN),
        }
    }

    /// Summarises durations in seconds.
    pub(crate) fn of_durations(samples: &[Duration]) -> Self {
        let seconds: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
        Self::of(&seconds)
    }

    /// The summary as JSON, values multiplied by `scale` (e.g. 1000 for milliseconds).
    pub(crate) fn to_json(self, scale: f64) -> serde_json::Value {
        serde_json::json!({
            "count": self.count,
            "min": self.min * scale,
            "p50": self.p50 * scale,
            "p99": self.p99 * scale,
            "max": self.max * scale,
        })
    }
}

/// The nearest-rank percentile of ascending `sorted` samples: the smallest sample such that at
/// least `pct` percent of the samples are less than or equal to it. `NaN` when empty.
///
/// Nearest rank never invents a value between samples, so with 20 samples p99 is the maximum,
/// which is what a tail latency over few samples honestly is.
pub(crate) fn percentile_sorted(sorted: &[f64], pct: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pct = pct.clamp(0.0, 100.0);
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Bytes per second; `NaN` for a zero duration.
pub(crate) fn throughput(bytes: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 {
        return f64::NAN;
    }
    bytes as f64 / seconds
}

/// `measured / baseline`; `NaN` when the baseline is zero or not a number.
pub(crate) fn ratio(measured: f64, baseline: f64) -> f64 {
    if baseline == 0.0 || baseline.is_nan() {
        return f64::NAN;
    }
    measured / baseline
}

/// Rate per unit of a resource, e.g. registrations per CPU-second; `NaN` when none was used.
pub(crate) fn per_unit(count: f64, units: f64) -> f64 {
    ratio(count, units)
}

/// Bytes per second as MiB/s.
pub(crate) fn mib_per_s(bytes_per_second: f64) -> f64 {
    bytes_per_second / (1024.0 * 1024.0)
}

/// KiB (as `/proc` reports them) as MiB.
pub(crate) fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A left-aligned text table with a header row.
#[derive(Debug, Default)]
pub(crate) struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|cell| cell.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as Markdown (pipes), aligned for reading in a terminal too.
    pub(crate) fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(String::len).collect();
        for row in &self.rows {
            for (index, cell) in row.iter().enumerate().take(columns) {
                widths[index] = widths[index].max(cell.len());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &[String]| {
            out.push('|');
            for (index, width) in widths.iter().enumerate() {
                let cell = cells.get(index).map(String::as_str).unwrap_or("");
                let _ = write!(out, " {cell:<width$} |");
            }
            out.push('\n');
        };
        line(&mut out, &self.header);
        let rule: Vec<String> = widths.iter().map(|width| "-".repeat(*width)).collect();
        line(&mut out, &rule);
        for row in &self.rows {
            line(&mut out, row);
        }
        out
    }
}

/// A number with `digits` decimals, or `n/a` for `NaN`.
pub(crate) fn fmt(value: f64, digits: usize) -> String {
    if value.is_nan() {
        return "n/a".to_string();
    }
    format!("{value:.digits$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_uses_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile_sorted(&samples, 50.0), 50.0);
        assert_eq!(percentile_sorted(&samples, 99.0), 99.0);
        assert_eq!(percentile_sorted(&samples, 100.0), 100.0);
        assert_eq!(percentile_sorted(&samples, 0.0), 1.0);
    }

    #[test]
    fn percentile_of_few_samples_is_a_sample() {
        let samples: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile_sorted(&samples, 50.0), 10.0);
        assert_eq!(percentile_sorted(&samples, 99.0), 20.0);
        assert_eq!(percentile_sorted(&[7.0], 50.0), 7.0);
        assert_eq!(percentile_sorted(&[7.0], 99.0), 7.0);
        assert!(percentile_sorted(&[], 50.0).is_nan());
    }

    #[test]
    fn summary_sorts_and_skips_nan() {
        let summary = Summary::of(&[3.0, f64::NAN, 1.0, 2.0]);
        assert_eq!(summary.count, 3);
        assert_eq!(summary.min, 1.0);
        assert_eq!(summary.p50, 2.0);
        assert_eq!(summary.p99, 3.0);
        assert_eq!(summary.max, 3.0);
        assert!(Summary::of(&[]).p50.is_nan());
    }

    #[test]
    fn summary_of_durations_is_in_seconds() {
        let summary = Summary::of_durations(&[Duration::from_millis(5), Duration::from_millis(1)]);
        assert_eq!(summary.min, 0.001);
        assert_eq!(summary.max, 0.005);
        assert_eq!(summary.to_json(1000.0)["max"], 5.0);
    }

    #[test]
    fn throughput_and_ratio() {
        let rate = throughput(1024 * 1024 * 100, Duration::from_secs(2));
        assert_eq!(mib_per_s(rate), 50.0);
        assert!(throughput(1, Duration::ZERO).is_nan());
        assert_eq!(ratio(80.0, 100.0), 0.8);
        assert!(ratio(1.0, 0.0).is_nan());
        assert!(ratio(1.0, f64::NAN).is_nan());
        assert_eq!(per_unit(40_000.0, 2.0), 20_000.0);
        assert_eq!(kib_to_mib(20 * 1024), 20.0);
    }

    #[test]
    fn table_aligns_columns() {
        let mut table = Table::new(&["name", "value"]);
        table.row(vec!["a".into(), "12345".into()]);
        let text = table.render();
        assert_eq!(
            text,
            "| name | value |\n| ---- | ----- |\n| a    | 12345 |\n"
        );
        assert_eq!(fmt(f64::NAN, 2), "n/a");
        assert_eq!(fmt(1.234, 1), "1.2");
    }
}
