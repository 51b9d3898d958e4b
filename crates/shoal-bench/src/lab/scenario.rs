//! The scenario of one lab run: link rates, arrival, sizes, and the fluid-model bound it is
//! measured against. The file scenario moves one file of `size` bytes; the image scenario
//! moves an image whose blobs add up to `size` bytes, in `layers` layers.

use std::fmt;
use std::str::FromStr;

use bytesize::ByteSize;
use tokio::time::Duration;

use super::{bound, LabArgs};

/// A link rate, parsed from `100mbit`, `1gbit`, `500kbit` or bits per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bandwidth(u64);

impl Bandwidth {
    pub(crate) fn bits_per_second(self) -> u64 {
        self.0
    }

    pub(crate) fn bytes_per_second(self) -> u64 {
        self.0 / 8
    }
}

impl FromStr for Bandwidth {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let split = lower
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(lower.len());
        let (number, unit) = lower.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("bandwidth `{s}` does not start with a number"))?;
        let scale = match unit {
            "" | "bit" => 1.0,
            "kbit" => 1e3,
            "mbit" => 1e6,
            "gbit" => 1e9,
            _ => return Err(format!("bandwidth `{s}`: use bit, kbit, mbit or gbit")),
        };
        let bits = (number * scale) as u64;
        if bits < 8_000 {
            return Err(format!("bandwidth `{s}` is below 8kbit"));
        }
        Ok(Self(bits))
    }
}

impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1_000_000_000) {
            write!(f, "{}gbit", self.0 / 1_000_000_000)
        } else if self.0.is_multiple_of(1_000_000) {
            write!(f, "{}mbit", self.0 / 1_000_000)
        } else if self.0.is_multiple_of(1_000) {
            write!(f, "{}kbit", self.0 / 1_000)
        } else {
            write!(f, "{}bit", self.0)
        }
    }
}

/// When nodes start their download.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arrival {
    All,
    Staggered(Duration),
}

impl Arrival {
    pub(crate) fn offset(self, index: usize) -> Duration {
        match self {
            Self::All => Duration::ZERO,
            Self::Staggered(delay) => delay * index as u32,
        }
    }
}

impl FromStr for Arrival {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            None if s == "all" => Ok(Self::All),
            None if s == "staggered" => Ok(Self::Staggered(Duration::from_secs(1))),
            Some(("staggered", delay)) => humantime::parse_duration(delay)
                .map(Self::Staggered)
                .map_err(|err| format!("arrival delay `{delay}`: {err}")),
            _ => Err(format!("arrival `{s}`: use all or staggered[:DELAY]")),
        }
    }
}

impl fmt::Display for Arrival {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("all"),
            Self::Staggered(d) => write!(f, "staggered:{}", humantime::format_duration(*d)),
        }
    }
}

/// The scenario after defaults.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    pub(crate) nodes: usize,
    pub(crate) seeds: usize,
    pub(crate) size: u64,
    pub(crate) arrival: Arrival,
    pub(crate) origin_bw: Bandwidth,
    pub(crate) node_bw: Bandwidth,
    /// The image scenario's layer count; `None` in the file scenario.
    pub(crate) layers: Option<usize>,
}

impl Scenario {
    /// `file` or `image`, the `scenario` field of every report entry.
    pub(crate) fn kind(&self) -> &'static str {
        match self.layers {
            Some(_) => "image",
            None => "file",
        }
    }

    pub(crate) fn label(&self) -> String {
        let content = match self.layers {
            Some(layers) => format!(
                "image of {layers} layers, {}",
                ByteSize(self.size).display().iec()
            ),
            None => format!("file of {}", ByteSize(self.size).display().iec()),
        };
        format!(
            "{} nodes + {} seed(s), {content}, origin {}, nodes {}, arrival {}",
            self.nodes, self.seeds, self.origin_bw, self.node_bw, self.arrival
        )
    }

    /// The bound: the N nodes receive; the N nodes and the K seeds upload.
    pub(crate) fn t_min(&self) -> f64 {
        self.model().t_min()
    }

    /// The bound's terms: `F/u_s`, `F/d_min`, `N·F/(u_s + Σu_i)`.
    pub(crate) fn t_min_terms(&self) -> [f64; 3] {
        self.model().terms()
    }

    /// How long one node may take before it counts as failed: generous, so only a hang trips
    /// it (30 × `T_min`, at least a minute).
    pub(crate) fn node_timeout(&self) -> Duration {
        Duration::from_secs_f64((30.0 * self.t_min()).max(60.0))
    }

    fn model(&self) -> bound::FluidModel {
        let node = self.node_bw.bytes_per_second() as f64;
        bound::FluidModel {
            file_bytes: self.size as f64,
            origin_up: self.origin_bw.bytes_per_second() as f64,
            receiver_down: vec![node; self.nodes],
            peer_up: vec![node; self.nodes + self.seeds],
        }
    }
}
impl Scenario {
    /// The scenario the flags ask for, with the defaults of `--smoke` and `--image` filled in.
    /// In the image scenario `size` is the requested size until the image is built.
    pub(crate) fn from_args(args: &LabArgs) -> Self {
        let smoke = args.smoke;
        let default_size = ByteSize::mib(match (args.image, smoke) {
            (false, true) => 2,
            (false, false) => 32,
            (true, true) => 8,
            (true, false) => 512,
        });
        let layers = args
            .image
            .then(|| args.layers.unwrap_or(if smoke { 4 } else { 8 }).max(1));
        Self {
            layers,
            nodes: args.nodes.unwrap_or(if smoke { 3 } else { 4 }).max(1),
            seeds: args.seeds,
            size: args.size.unwrap_or(default_size).as_u64().max(1),
            arrival: args.arrival,
            origin_bw: args.origin_bw.unwrap_or(Bandwidth(if smoke {
                1_000_000_000
            } else {
                100_000_000
            })),
            node_bw: args.node_bw.unwrap_or(Bandwidth(if smoke {
                500_000_000
            } else {
                50_000_000
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        lab: LabArgs,
    }

    fn scenario(args: &[&str]) -> Scenario {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()));
        Scenario::from_args(&cli.expect("flags parse").lab)
    }

    #[test]
    fn image_flags_pick_image_defaults() {
        let file = scenario(&[]);
        assert_eq!(
            (file.kind(), file.size, file.layers),
            ("file", 32 << 20, None)
        );
        let image = scenario(&["--image"]);
        assert_eq!(image.kind(), "image");
        assert_eq!((image.size, image.layers), (512 << 20, Some(8)));
        let smoke = scenario(&["--image", "--smoke"]);
        assert_eq!(
            (smoke.size, smoke.layers, smoke.nodes),
            (8 << 20, Some(4), 3)
        );
        let custom = scenario(&[
            "--image", "--size", "256MiB", "--layers", "5", "--nodes", "6",
        ]);
        assert_eq!(
            (custom.size, custom.layers, custom.nodes),
            (256 << 20, Some(5), 6)
        );
        assert!(
            custom.label().contains("image of 5 layers, 256.0 MiB"),
            "{}",
            custom.label()
        );
    }

    #[test]
    fn parses_bandwidths() {
        assert_eq!("100mbit".parse::<Bandwidth>(), Ok(Bandwidth(100_000_000)));
        assert_eq!("1gbit".parse::<Bandwidth>(), Ok(Bandwidth(1_000_000_000)));
        assert_eq!("2.5Mbit".parse::<Bandwidth>(), Ok(Bandwidth(2_500_000)));
        assert!("fast".parse::<Bandwidth>().is_err());
        assert!("10mbps".parse::<Bandwidth>().is_err());
        assert_eq!(Bandwidth(50_000_000).to_string(), "50mbit");
        assert_eq!(Bandwidth(50_000_000).bytes_per_second(), 6_250_000);
    }

    #[test]
    fn parses_arrivals() {
        assert_eq!("all".parse::<Arrival>(), Ok(Arrival::All));
        assert_eq!(
            "staggered:500ms".parse::<Arrival>(),
            Ok(Arrival::Staggered(Duration::from_millis(500)))
        );
        assert_eq!(
            "staggered".parse::<Arrival>(),
            Ok(Arrival::Staggered(Duration::from_secs(1)))
        );
        assert!("later".parse::<Arrival>().is_err());
        assert_eq!(
            Arrival::Staggered(Duration::from_secs(2)).offset(3),
            Duration::from_secs(6)
        );
    }
}
