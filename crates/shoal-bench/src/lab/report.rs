//! The lab's results: one [`SystemReport`] per system, written as `report.json` and
//! `report.md`.
//!
//! Every entry carries the fields the issue fixes (`system`, `nodes`, `size_bytes`, `t_min_s`,
//! `completion_s` with `p50`/`p99`/`max`, `origin_bytes`) plus the ratios to `T_min` and to `F`,
//! the origin's peak rate and every node's result. Skipped and failed systems keep the same keys
//! with `null` figures, so a reader never has to guess which shape an entry has.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use super::bound::percentile;
use super::netns::Mode;
use super::systems::{Measured, NodeResult};
use super::{Scenario, System};
use crate::micro::stats::Table;

/// How a system's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    /// Every node finished with the origin's sha256.
    Ok,
    /// The run broke, or some node's copy is missing or wrong.
    Failed,
    /// The system could not run on this machine (see `reason`).
    Skipped,
}

impl Status {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

/// p50, p99 and max of a set of values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Percentiles {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

impl Percentiles {
    fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        Some(Self {
            p50: percentile(values, 50.0),
            p99: percentile(values, 99.0),
            max: percentile(values, 100.0),
        })
    }

    fn scaled(self, divisor: f64) -> Self {
        Self {
            p50: self.p50 / divisor,
            p99: self.p99 / divisor,
            max: self.max / divisor,
        }
    }
}

/// One system's entry in the report.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SystemReport {
    /// `file` or `image` ([`Scenario::kind`]).
    pub(crate) scenario: &'static str,
    pub(crate) system: &'static str,
    pub(crate) status: Status,
    /// Why the system was skipped or failed.
    pub(crate) reason: Option<String>,
    /// `netns` (shaped by tc) or `loopback` (shaped by the tools' own rate limits).
    pub(crate) network: &'static str,
    pub(crate) nodes: usize,
    pub(crate) seeds: usize,
    pub(crate) size_bytes: u64,
    pub(crate) t_min_s: f64,
    /// Per-node completion time, seconds from the node's own arrival.
    pub(crate) completion_s: Option<Percentiles>,
    /// `completion_s` divided by `t_min_s`.
    pub(crate) completion_ratio: Option<Percentiles>,
    /// Payload bytes the origin sent (HTTP bodies, the registry's included; the BitTorrent
    /// seeder's upload).
    pub(crate) origin_bytes: Option<u64>,
    /// `origin_bytes / size_bytes`.
    pub(crate) origin_bytes_ratio: Option<f64>,
    /// Bytes on the origin's link, headers included (netns mode only).
    pub(crate) origin_wire_bytes: Option<u64>,
    /// Highest origin rate over any 1 s window, bytes per second.
    pub(crate) origin_peak_bytes_per_s: Option<f64>,
    pub(crate) per_node: Vec<NodeResult>,
    /// (seconds, origin bytes since start), for the bandwidth chart.
    #[serde(skip)]
    pub(crate) samples: Vec<(f64, u64)>,
}

impl SystemReport {
    fn empty(system: System, scenario: &Scenario, mode: &Mode, status: Status) -> Self {
        Self {
            scenario: scenario.kind(),
            system: system.name(),
            status,
            reason: None,
            network: if mode.is_netns() { "netns" } else { "loopback" },
            nodes: scenario.nodes,
            seeds: scenario.seeds,
            size_bytes: scenario.size,
            t_min_s: scenario.t_min(),
            completion_s: None,
            completion_ratio: None,
            origin_bytes: None,
            origin_bytes_ratio: None,
            origin_wire_bytes: None,
            origin_peak_bytes_per_s: None,
            per_node: Vec::new(),
            samples: Vec::new(),
        }
    }

    pub(crate) fn skipped(
        system: System,
        scenario: &Scenario,
        mode: &Mode,
        reason: String,
    ) -> Self {
        Self {
            reason: Some(reason),
            ..Self::empty(system, scenario, mode, Status::Skipped)
        }
    }

    pub(crate) fn failed(
        system: System,
        scenario: &Scenario,
        mode: &Mode,
        err: &anyhow::Error,
    ) -> Self {
        Self {
            reason: Some(format!("{err:#}")),
            ..Self::empty(system, scenario, mode, Status::Failed)
        }
    }

    pub(crate) fn measured(
        system: System,
        scenario: &Scenario,
        mode: &Mode,
        measured: Measured,
    ) -> Self {
        let mut report = Self::empty(system, scenario, mode, Status::Ok);
        let broken: Vec<String> = measured
            .per_node
            .iter()
            .filter(|node| !node.sha256_ok)
            .map(|node| {
                let error = node
                    .error
                    .as_deref()
                    .unwrap_or("output differs from origin");
                format!("{}: {error}", node.node)
            })
            .collect();
        if !broken.is_empty() {
            report.status = Status::Failed;
            report.reason = Some(broken.join("; "));
        }
        let completions: Vec<f64> = measured
            .per_node
            .iter()
            .filter(|node| node.sha256_ok)
            .map(|node| node.completion_s)
            .collect();
        report.completion_s = Percentiles::of(&completions);
        report.completion_ratio = report.completion_s.map(|p| p.scaled(report.t_min_s));
        report.origin_bytes = Some(measured.origin_bytes);
        report.origin_bytes_ratio = Some(measured.origin_bytes as f64 / scenario.size as f64);
        report.origin_wire_bytes = measured.origin_wire_bytes;
        report.origin_peak_bytes_per_s = Some(super::origin::peak_rate(&measured.samples));
        report.per_node = measured.per_node;
        report.samples = measured.samples;
        report
    }

    /// One line for the console.
    pub(crate) fn summary(&self) -> String {
        match (self.status, self.completion_ratio) {
            (Status::Ok, Some(ratio)) => format!(
                "{}: max {:.2}s = {:.2} x T_min, p50 {:.2} x T_min, origin {:.2} x F",
                self.system,
                self.completion_s.map_or(f64::NAN, |c| c.max),
                ratio.max,
                ratio.p50,
                self.origin_bytes_ratio.unwrap_or(f64::NAN),
            ),
            (status, _) => format!(
                "{}: {}: {}",
                self.system,
                status.name(),
                self.reason.as_deref().unwrap_or("no nodes measured")
            ),
        }
    }

    /// What makes the whole run fail: a system that broke or produced a wrong copy.
    pub(crate) fn problem(&self) -> Option<String> {
        match self.status {
            Status::Failed => Some(format!(
                "{} failed: {}",
                self.system,
                self.reason.as_deref().unwrap_or("unknown cause")
            )),
            Status::Ok | Status::Skipped => None,
        }
    }
}

/// The whole `report.json`.
#[derive(Debug, Serialize)]
struct ReportJson<'a> {
    command: String,
    scenario: ScenarioJson,
    network: String,
    entries: &'a [SystemReport],
}

#[derive(Debug, Serialize)]
struct ScenarioJson {
    /// `file` or `image`.
    kind: &'static str,
    label: String,
    /// Layers of the image scenario's image.
    layers: Option<usize>,
    nodes: usize,
    seeds: usize,
    size_bytes: u64,
    arrival: String,
    origin_bits_per_s: u64,
    node_bits_per_s: u64,
    t_min_s: f64,
    t_min_terms_s: [f64; 3],
}

/// Writes `report.json` and `report.md` into `out`; returns the Markdown path.
pub(crate) fn write(
    out: &Path,
    command: &[String],
    scenario: &Scenario,
    mode: &Mode,
    results: &[SystemReport],
    chart_note: Option<&str>,
) -> anyhow::Result<PathBuf> {
    let command = shell_words(command);
    let json = ReportJson {
        command: command.clone(),
        scenario: ScenarioJson {
            kind: scenario.kind(),
            label: scenario.label(),
            layers: scenario.layers,
            nodes: scenario.nodes,
            seeds: scenario.seeds,
            size_bytes: scenario.size,
            arrival: scenario.arrival.to_string(),
            origin_bits_per_s: scenario.origin_bw.bits_per_second(),
            node_bits_per_s: scenario.node_bw.bits_per_second(),
            t_min_s: scenario.t_min(),
            t_min_terms_s: scenario.t_min_terms(),
        },
        network: mode.label(),
        entries: results,
    };
    let text = serde_json::to_string_pretty(&json).context("encode report.json")?;
    std::fs::write(out.join("report.json"), text + "\n").context("write report.json")?;
    let mut markdown = markdown(&command, scenario, mode, results);
    if let Some(note) = chart_note {
        let _ = writeln!(markdown, "Charts: {note}.");
    }
    let path = out.join("report.md");
    std::fs::write(&path, markdown).context("write report.md")?;
    Ok(path)
}

/// The results table alone, for the console.
pub(crate) fn results_table(results: &[SystemReport]) -> String {
    let mut table = Table::new(&[
        "system",
        "status",
        "p50 s",
        "p99 s",
        "max s",
        "p50/T_min",
        "p99/T_min",
        "max/T_min",
        "origin bytes",
        "origin/F",
        "peak origin Mbit/s",
    ]);
    for entry in results {
        let c = entry.completion_s;
        let r = entry.completion_ratio;
        table.row(vec![
            entry.system.to_owned(),
            entry.status.name().to_owned(),
            opt(c.map(|c| c.p50), 2),
            opt(c.map(|c| c.p99), 2),
            opt(c.map(|c| c.max), 2),
            opt(r.map(|r| r.p50), 2),
            opt(r.map(|r| r.p99), 2),
            opt(r.map(|r| r.max), 2),
            entry
                .origin_bytes
                .map_or_else(|| "-".to_owned(), |b| b.to_string()),
            opt(entry.origin_bytes_ratio, 3),
            opt(entry.origin_peak_bytes_per_s.map(|b| b * 8.0 / 1e6), 1),
        ]);
    }
    table.render()
}

fn markdown(command: &str, scenario: &Scenario, mode: &Mode, results: &[SystemReport]) -> String {
    let mut md = String::new();
    let [origin_term, download_term, swarm_term] = scenario.t_min_terms();
    let _ = writeln!(md, "# shoal bench report\n\n```\n{command}\n```\n");
    let _ = writeln!(md, "- scenario: {}", scenario.label());
    let _ = writeln!(md, "- network: {}", mode.label());
    let _ = writeln!(
        md,
        "- T_min = {:.2} s = max(F/u_s = {origin_term:.2}, F/d_min = {download_term:.2}, \
         N·F/(u_s + Σu_i) = {swarm_term:.2})",
        scenario.t_min()
    );
    let measured = match scenario.layers {
        Some(_) => {
            "- completion is per node, from its own arrival until `ctr images pull` returned \
             (fetched and unpacked); the node's image digest and unpacked tree must match the \
             built image; origin bytes are the registry's payload bytes (its access log), F is \
             the image's blob total\n"
        }
        None => {
            "- completion is per node, from its own arrival to a complete file whose sha256 \
             matches the origin's; origin bytes are payload bytes (HTTP bodies, the seeder's \
             upload)\n"
        }
    };
    let _ = writeln!(md, "{measured}");
    let _ = writeln!(md, "## Results\n\n{}", results_table(results));
    md.push_str(&targets(results));
    let _ = writeln!(md, "## Per node\n\n{}", per_node_table(results));
    let _ = writeln!(
        md,
        "## Charts\n\n![completion-time CDF](completion-cdf.png)\n\n\
         ![origin bandwidth over time](origin-bandwidth.png)\n"
    );
    let notes: Vec<&SystemReport> = results.iter().filter(|r| r.reason.is_some()).collect();
    if !notes.is_empty() {
        md.push_str("## Skipped and failed\n\n");
        for entry in notes {
            let _ = writeln!(
                md,
                "- **{}** ({}): {}",
                entry.system,
                entry.status.name(),
                entry.reason.as_deref().unwrap_or_default()
            );
        }
        md.push('\n');
    }
    md
}

/// The issue's targets for shoal, met or not.
fn targets(results: &[SystemReport]) -> String {
    let Some(shoal) = results
        .iter()
        .find(|r| r.system == "shoal" && r.status == Status::Ok)
    else {
        return String::new();
    };
    let mut md = String::from("Targets (shoal):\n\n");
    if let Some(ratio) = shoal.completion_ratio {
        let _ = writeln!(
            md,
            "- last node ≤ 1.15 × T_min: {:.2} × T_min, {}",
            ratio.max,
            verdict(ratio.max <= 1.15)
        );
    }
    if let Some(ratio) = shoal.origin_bytes_ratio {
        let _ = writeln!(
            md,
            "- origin bytes ≤ 1.01 × F: {ratio:.3} × F, {}",
            verdict(ratio <= 1.01)
        );
    }
    md.push('\n');
    md
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "not met"
    }
}

fn per_node_table(results: &[SystemReport]) -> String {
    let mut table = Table::new(&[
        "system",
        "node",
        "arrival s",
        "completion s",
        "/T_min",
        "from parents",
        "from origin",
        "sha256",
    ]);
    for entry in results {
        for node in &entry.per_node {
            let bytes = |b: Option<u64>| b.map_or_else(|| "-".to_owned(), |b| b.to_string());
            table.row(vec![
                entry.system.to_owned(),
                node.node.clone(),
                format!("{:.2}", node.arrival_s),
                format!("{:.2}", node.completion_s),
                format!("{:.2}", node.completion_s / entry.t_min_s),
                bytes(node.bytes_from_parents),
                bytes(node.bytes_from_origin),
                if node.sha256_ok { "ok" } else { "MISMATCH" }.to_owned(),
            ]);
        }
    }
    table.render()
}

fn opt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

/// The command line, quoted so it can be pasted back into a shell.
fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|arg| {
            let plain = !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+".contains(c));
            if plain {
                arg.clone()
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::{Arrival, Bandwidth};

    fn scenario() -> Scenario {
        Scenario {
            nodes: 2,
            seeds: 1,
            size: 1000,
            arrival: Arrival::All,
            origin_bw: "8kbit".parse::<Bandwidth>().unwrap(),
            node_bw: "8kbit".parse::<Bandwidth>().unwrap(),
            layers: None,
        }
    }

    fn node(name: &str, completion_s: f64, sha256_ok: bool) -> NodeResult {
        NodeResult {
            node: name.into(),
            arrival_s: 0.0,
            completion_s,
            bytes_from_parents: None,
            bytes_from_origin: None,
            sha256_ok,
            error: None,
        }
    }

    #[test]
    fn measured_entry_has_ratios_and_fails_on_a_bad_copy() {
        let measured = Measured {
            per_node: vec![node("node0", 2.0, true), node("node1", 4.0, true)],
            origin_bytes: 1500,
            origin_wire_bytes: None,
            samples: vec![],
        };
        let entry = SystemReport::measured(System::Shoal, &scenario(), &Mode::Netns, measured);
        assert_eq!(entry.status, Status::Ok);
        assert_eq!(entry.t_min_s, 1.0);
        assert_eq!(entry.completion_s.unwrap().max, 4.0);
        assert_eq!(entry.completion_ratio.unwrap().p50, 2.0);
        assert_eq!(entry.origin_bytes_ratio, Some(1.5));
        assert!(entry.problem().is_none());

        let measured = Measured {
            per_node: vec![node("node0", 2.0, false)],
            origin_bytes: 1000,
            origin_wire_bytes: None,
            samples: vec![],
        };
        let entry = SystemReport::measured(System::Direct, &scenario(), &Mode::Netns, measured);
        assert_eq!(entry.status, Status::Failed);
        assert!(entry.problem().unwrap().contains("node0"));
    }

    #[test]
    fn skipped_entries_keep_every_key() {
        let entry = SystemReport::skipped(
            System::Dragonfly,
            &scenario(),
            &Mode::Netns,
            "no binary".into(),
        );
        let json = serde_json::to_value(&entry).unwrap();
        for key in [
            "scenario",
            "system",
            "nodes",
            "size_bytes",
            "t_min_s",
            "completion_s",
            "origin_bytes",
        ] {
            assert!(json.get(key).is_some(), "{key} missing");
        }
        assert_eq!(json["status"], "skipped");
        assert!(entry.problem().is_none());
    }

    #[test]
    fn commands_are_quoted_for_the_shell() {
        let args = ["shoal", "bench", "--out", "my dir", "it's"].map(String::from);
        assert_eq!(shell_words(&args), r"shoal bench --out 'my dir' 'it'\''s'");
    }
}
