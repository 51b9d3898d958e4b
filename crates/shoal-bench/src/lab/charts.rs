//! PNG charts of a lab run: completion-time CDFs and origin bandwidth over time.
//!
//! `completion-cdf.png` plots, per system, the fraction of nodes complete against seconds since
//! their arrival, with `T_min` as a vertical line. `origin-bandwidth.png` plots the origin's rate
//! (Mbit/s, over 0.5 s steps of the sampled counter) against seconds since the first arrival.
//!
//! Text needs a TrueType font: the first of [`FONT_PATHS`] that exists is registered with
//! plotters. Without one the charts are still drawn, without labels, and [`draw`] says so.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Context as _};
use plotters::prelude::*;

use super::report::{Status, SystemReport};

/// Fonts tried in order (Debian `fonts-dejavu-core`, `fonts-liberation`, Fedora, Alpine).
const FONT_PATHS: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
];
const FONT: &str = "sans-serif";
const SIZE: (u32, u32) = (900, 540);

/// What [`draw`] wrote.
#[derive(Debug)]
pub(crate) struct Drawn {
    /// Set when no font was found and the charts carry no text.
    pub(crate) note: Option<String>,
}

/// Draws both charts into `out`.
pub(crate) fn draw(out: &Path, results: &[SystemReport]) -> anyhow::Result<Drawn> {
    let labelled = font_registered();
    let measured: Vec<&SystemReport> = results
        .iter()
        .filter(|r| r.status != Status::Skipped && !r.per_node.is_empty())
        .collect();
    let t_min = results.first().map_or(0.0, |r| r.t_min_s);
    completion_cdf(&out.join("completion-cdf.png"), &measured, t_min, labelled)
        .context("draw completion-cdf.png")?;
    origin_bandwidth(&out.join("origin-bandwidth.png"), &measured, labelled)
        .context("draw origin-bandwidth.png")?;
    Ok(Drawn {
        note: (!labelled).then(|| {
            "no TrueType font found (install fonts-dejavu-core); charts are drawn without text"
                .to_owned()
        }),
    })
}

/// Registers the first font found, once per process; whether one is registered.
fn font_registered() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        FONT_PATHS.iter().any(|path| {
            let Ok(bytes) = std::fs::read(path) else {
                return false;
            };
            // plotters keeps fonts for the process's lifetime; this runs at most once.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok()
        })
    })
}

fn color(index: usize) -> RGBColor {
    const COLORS: [RGBColor; 5] = [
        RGBColor(214, 39, 40),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
    ];
    COLORS[index % COLORS.len()]
}

/// The CDF's steps: (seconds, fraction of nodes complete), starting at (0, 0).
fn cdf_points(completions: &[f64]) -> Vec<(f64, f64)> {
    let mut sorted = completions.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    let mut points = vec![(0.0, 0.0)];
    for (index, t) in sorted.iter().enumerate() {
        points.push((*t, index as f64 / n));
        points.push((*t, (index + 1) as f64 / n));
    }
    points
}

/// Rates in Mbit/s from cumulative byte samples, over steps of at least `step` seconds.
fn rate_points(samples: &[(f64, u64)], step: f64) -> Vec<(f64, f64)> {
    let mut points = Vec::new();
    let Some(&(mut last_t, mut last_bytes)) = samples.first() else {
        return points;
    };
    points.push((last_t, 0.0));
    for &(t, bytes) in &samples[1..] {
        if t - last_t < step {
            continue;
        }
        let rate = bytes.saturating_sub(last_bytes) as f64 * 8.0 / 1e6 / (t - last_t);
        points.push((last_t, rate));
        points.push((t, rate));
        (last_t, last_bytes) = (t, bytes);
    }
    points
}

fn completion_cdf(
    path: &Path,
    systems: &[&SystemReport],
    t_min: f64,
    labelled: bool,
) -> anyhow::Result<()> {
    let lines: Vec<(&str, Vec<(f64, f64)>)> = systems
        .iter()
        .map(|r| {
            let completions: Vec<f64> = r
                .per_node
                .iter()
                .filter(|n| n.sha256_ok)
                .map(|n| n.completion_s)
                .collect();
            (r.system, cdf_points(&completions))
        })
        .collect();
    let x_max = lines
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.0))
        .fold(t_min, f64::max)
        * 1.08;
    plot(
        path,
        labelled,
        Axes {
            title: "completion time CDF (vertical line: T_min)",
            x_desc: "seconds since the node's arrival",
            y_desc: "fraction of nodes complete",
            x_max: x_max.max(0.1),
            y_max: 1.05,
        },
        &lines,
        Some(t_min),
    )
}

fn origin_bandwidth(path: &Path, systems: &[&SystemReport], labelled: bool) -> anyhow::Result<()> {
    let lines: Vec<(&str, Vec<(f64, f64)>)> = systems
        .iter()
        .map(|r| (r.system, rate_points(&r.samples, 0.5)))
        .collect();
    let x_max = lines
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.0))
        .fold(0.1, f64::max);
    let y_max = lines
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.1;
    plot(
        path,
        labelled,
        Axes {
            title: "origin bandwidth over time",
            x_desc: "seconds since the first arrival",
            y_desc: "origin Mbit/s",
            x_max,
            y_max,
        },
        &lines,
        None,
    )
}

struct Axes {
    title: &'static str,
    x_desc: &'static str,
    y_desc: &'static str,
    x_max: f64,
    y_max: f64,
}

fn plot(
    path: &Path,
    labelled: bool,
    axes: Axes,
    lines: &[(&str, Vec<(f64, f64)>)],
    vertical: Option<f64>,
) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("fill: {e}"))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(16);
    if labelled {
        builder
            .caption(axes.title, (FONT, 22))
            .x_label_area_size(44)
            .y_label_area_size(60);
    }
    let mut chart = builder
        .build_cartesian_2d(0.0..axes.x_max, 0.0..axes.y_max)
        .map_err(|e| anyhow!("build chart: {e}"))?;
    let mut mesh = chart.configure_mesh();
    if labelled {
        mesh.x_desc(axes.x_desc)
            .y_desc(axes.y_desc)
            .label_style((FONT, 14));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| anyhow!("draw mesh: {e}"))?;
    if let Some(x) = vertical {
        chart
            .draw_series(LineSeries::new(
                [(x, 0.0), (x, axes.y_max)],
                BLACK.stroke_width(1),
            ))
            .map_err(|e| anyhow!("draw bound: {e}"))?;
    }
    for (index, (name, points)) in lines.iter().enumerate() {
        let style = color(index).stroke_width(2);
        let series = chart
            .draw_series(LineSeries::new(points.iter().copied(), style))
            .map_err(|e| anyhow!("draw {name}: {e}"))?;
        if labelled {
            series
                .label(*name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        }
    }
    if labelled && !lines.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font((FONT, 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow!("draw legend: {e}"))?;
    }
    root.present().map_err(|e| anyhow!("write png: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_steps_reach_one() {
        let points = cdf_points(&[2.0, 1.0]);
        assert_eq!(
            points,
            vec![(0.0, 0.0), (1.0, 0.0), (1.0, 0.5), (2.0, 0.5), (2.0, 1.0)]
        );
    }

    #[test]
    fn rates_from_cumulative_bytes() {
        let samples: Vec<(f64, u64)> = (0..=10).map(|i| (i as f64 * 0.25, i * 250_000)).collect();
        let points = rate_points(&samples, 0.5);
        // 1 MB/s = 8 Mbit/s on every step.
        assert!(points[1..]
            .iter()
            .all(|(_, rate)| (rate - 8.0).abs() < 1e-9));
        assert!(rate_points(&[], 0.5).is_empty());
    }

    #[test]
    fn draws_pngs_with_or_without_a_font() {
        let dir = tempfile::tempdir().unwrap();
        let lines = vec![("a", vec![(0.0, 0.0), (1.0, 1.0)])];
        let axes = || Axes {
            title: "t",
            x_desc: "x",
            y_desc: "y",
            x_max: 2.0,
            y_max: 2.0,
        };
        plot(
            &dir.path().join("bare.png"),
            false,
            axes(),
            &lines,
            Some(1.0),
        )
        .unwrap();
        assert!(dir.path().join("bare.png").metadata().unwrap().len() > 0);
        if font_registered() {
            plot(&dir.path().join("text.png"), true, axes(), &lines, None).unwrap();
            assert!(dir.path().join("text.png").metadata().unwrap().len() > 0);
        }
    }
}
