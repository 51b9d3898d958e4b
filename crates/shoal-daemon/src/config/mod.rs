//! Daemon configuration: the YAML file format (`DaemonToml`, named after our convention for file
//! types) and the validated runtime values (`DaemonConfig`).
//!
//! Precedence is defaults < file < flags; the binary applies flags on top of the parsed file and
//! then calls `DaemonConfig::try_from`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The daemon's config file. Every field is optional; absent means the default shown.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DaemonToml {
    /// Data directory holding the piece store. Default `/var/lib/shoal/daemon`.
    pub data_dir: Option<PathBuf>,
    /// Scheduler URLs, e.g. `http://127.0.0.1:8002`. Required unless `manager` is set.
    #[serde(default)]
    pub schedulers: Vec<String>,
    /// Discover schedulers through a manager instead of (or besides) static `schedulers`.
    /// Default none.
    pub manager: Option<ManagerToml>,
    /// Run as a seed peer that fetches from the origin when the scheduler asks. Default false.
    pub seed: Option<bool>,
    /// Advertised and bound IP. Default 127.0.0.1.
    pub ip: Option<IpAddr>,
    /// Hostname used in host and peer ids. Default: the machine's hostname.
    pub hostname: Option<String>,
    /// gRPC upload port (DfdaemonUpload). Default 4000.
    pub upload_port: Option<u16>,
    /// Vortex TCP piece port. Default 4005.
    pub vortex_port: Option<u16>,
    /// Prometheus metrics port. Default 4002.
    pub metrics_port: Option<u16>,
    /// Unix socket of the local download API. Default `/var/run/shoal/daemon.sock`.
    pub socket: Option<PathBuf>,
    /// IDC announced to the scheduler for affinity. Default none.
    pub idc: Option<String>,
    /// Location announced to the scheduler for affinity. Default none.
    pub location: Option<String>,
    /// Download tuning.
    #[serde(default)]
    pub download: DownloadToml,
    /// Upload tuning.
    #[serde(default)]
    pub upload: UploadToml,
    /// Piece store tuning.
    #[serde(default)]
    pub storage: StorageToml,
    /// HTTP proxy and registry mirror.
    #[serde(default)]
    pub proxy: ProxyToml,
    /// Extra PEM CA certificates trusted when talking to origins (private registries, object
    /// stores). Default none: the built-in web roots only.
    #[serde(default)]
    pub origin_ca_certs: Vec<PathBuf>,
}

/// `manager:` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ManagerToml {
    /// Manager gRPC URL, e.g. `http://127.0.0.1:65003`. Required in this section.
    pub addr: String,
    /// How often to ask the manager for schedulers. Default `60s`.
    #[serde(default, with = "humantime_serde")]
    pub refresh_interval: Option<Duration>,
    /// Seed peers only: period of keepalive messages to the manager. Default `5s`.
    #[serde(default, with = "humantime_serde")]
    pub keep_alive_interval: Option<Duration>,
    /// Seed peers only: scheduler cluster to join; 0 joins the default cluster. Default 0.
    pub scheduler_cluster_id: Option<u64>,
}

/// `proxy:` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProxyToml {
    /// Listen address. Default `IP:4001` when the daemon's IP is loopback, else `127.0.0.1:4001`.
    pub listen: Option<SocketAddr>,
    /// Turn the proxy off. Default false.
    pub disable: Option<bool>,
    /// Client networks allowed when listening beyond loopback, e.g. `10.0.0.0/8`. Default none.
    #[serde(default)]
    pub allow_cidrs: Vec<String>,
    /// URL regexes that go P2P (GET only). Default `["blobs/sha256.*"]`.
    pub rules: Option<Vec<String>>,
    /// Upstream registry for mirror requests without `X-Dragonfly-Registry` or `ns=`,
    /// e.g. `https://registry-1.docker.io`. Default none.
    pub default_registry: Option<String>,
    /// Terminate `CONNECT` tunnels to these hosts (TLS with leaves signed by the CA) so their
    /// blobs can go P2P. Default none: every tunnel passes through untouched.
    pub mitm: Option<MitmToml>,
}

/// `proxy.mitm:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MitmToml {
    /// Host name regexes (no port), e.g. `^registry\\.example\\.com$`.
    pub hosts: Vec<String>,
    /// PEM CA certificate that signs the leaves; clients must trust it.
    pub ca_cert: PathBuf,
    /// PEM private key of that CA.
    pub ca_key: PathBuf,
}

/// `download:` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DownloadToml {
    /// Pieces fetched at once from parents or the origin. Default 8.
    pub concurrent_pieces: Option<usize>,
    /// A parent piece request taking longer than this fails. Default `30s`.
    #[serde(default, with = "humantime_serde")]
    pub piece_timeout: Option<Duration>,
    /// No piece arriving from any parent for this long counts as a stall. Default `20s`.
    #[serde(default, with = "humantime_serde")]
    pub stall_timeout: Option<Duration>,
    /// Attempts per origin piece request before giving up. Default 4.
    pub origin_retries: Option<u32>,
}

/// `upload:` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UploadToml {
    /// Pieces served at once to children. Default 64.
    pub concurrent_pieces: Option<usize>,
    /// Upload rate limit, e.g. `100MiB` per second. Default unlimited.
    pub rate_limit: Option<bytesize::ByteSize>,
    /// Interval between AnnounceHost calls. Default `30s`.
    #[serde(default, with = "humantime_serde")]
    pub announce_interval: Option<Duration>,
}

/// `storage:` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StorageToml {
    /// Disk budget for cached content. Default unlimited.
    pub capacity: Option<bytesize::ByteSize>,
    /// Tasks unused for this long are removed. Default `24h`.
    #[serde(default, with = "humantime_serde")]
    pub ttl: Option<Duration>,
    /// Interval between GC passes. Default `60s`.
    #[serde(default, with = "humantime_serde")]
    pub gc_interval: Option<Duration>,
}

/// Validated daemon configuration.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub data_dir: PathBuf,
    /// Static scheduler URLs; discovery through `manager` replaces them when it answers.
    pub schedulers: Vec<String>,
    pub manager: Option<ManagerClientConfig>,
    pub seed: bool,
    pub ip: IpAddr,
    pub hostname: String,
    pub upload_addr: SocketAddr,
    pub vortex_addr: SocketAddr,
    /// `None` disables the metrics server.
    pub metrics_addr: Option<SocketAddr>,
    pub socket: PathBuf,
    pub idc: Option<String>,
    pub location: Option<String>,
    pub download: DownloadConfig,
    pub upload: UploadConfig,
    pub storage: StorageConfig,
    pub proxy: crate::proxy::ProxyConfig,
    /// PEM contents of extra CA certificates trusted for origins.
    pub origin_ca_certs: Vec<Vec<u8>>,
}

/// Validated `manager:` section.
#[derive(Debug, Clone)]
pub struct ManagerClientConfig {
    pub url: String,
    pub refresh_interval: Duration,
    pub keep_alive_interval: Duration,
    pub scheduler_cluster_id: u64,
}

/// Validated download tuning.
#[derive(Debug, Clone)]
pub struct DownloadConfig {
    pub concurrent_pieces: usize,
    pub piece_timeout: Duration,
    pub stall_timeout: Duration,
    pub origin_retries: u32,
}

/// Validated upload tuning.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    pub concurrent_pieces: usize,
    /// Bytes per second; `None` is unlimited.
    pub rate_limit: Option<u64>,
    pub announce_interval: Duration,
}

/// Validated storage tuning.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub capacity: Option<u64>,
    pub ttl: Duration,
    pub gc_interval: Duration,
}

/// The config file or flags hold a value we cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no scheduler configured: pass --scheduler http://HOST:8002 or --manager http://HOST:65003"
    )]
    NoScheduler,
    #[error("manager url {url:?} is invalid")]
    ManagerUrl {
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error("scheduler url {url:?} is invalid")]
    SchedulerUrl {
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error("{field} must be greater than zero")]
    Zero { field: &'static str },
    #[error("invalid proxy rule {rule:?}")]
    ProxyRule {
        rule: String,
        #[source]
        source: regex::Error,
    },
    #[error("invalid proxy.allowCidrs entry")]
    ProxyCidr(#[source] crate::proxy::CidrParseError),
    #[error("invalid proxy.defaultRegistry {url:?}")]
    ProxyRegistry {
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error("load proxy.mitm CA")]
    Mitm(#[source] crate::proxy::mitm::MitmError),
    #[error("invalid proxy.mitm host pattern {rule:?}")]
    MitmHost {
        rule: String,
        #[source]
        source: regex::Error,
    },
    #[error("read origin CA certificate {path}")]
    OriginCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse config file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
}

/// Default unix socket of the local download API.
pub const DEFAULT_SOCKET: &str = "/var/run/shoal/daemon.sock";

impl DaemonToml {
    /// Reads and parses a YAML config file; unknown keys are errors.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Parses YAML text; unknown keys are errors.
    pub fn parse(text: &str) -> Result<Self, serde_yaml::Error> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml::from_str(text)
    }
}

impl TryFrom<DaemonToml> for DaemonConfig {
    type Error = ConfigError;

    fn try_from(toml: DaemonToml) -> Result<Self, Self::Error> {
        if toml.schedulers.is_empty() && toml.manager.is_none() {
            return Err(ConfigError::NoScheduler);
        }
        let manager = toml.manager.map(manager_config).transpose()?;
        let mut schedulers = Vec::new();
        for url in toml.schedulers {
            let url = with_scheme(url);
            url::Url::parse(&url).map_err(|source| ConfigError::SchedulerUrl {
                url: url.clone(),
                source,
            })?;
            schedulers.push(url);
        }
        let ip = toml.ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let hostname = toml.hostname.unwrap_or_else(local_hostname);
        let download = DownloadConfig {
            concurrent_pieces: positive(
                toml.download.concurrent_pieces.unwrap_or(8),
                "download.concurrentPieces",
            )?,
            piece_timeout: positive_duration(
                toml.download
                    .piece_timeout
                    .unwrap_or(Duration::from_secs(30)),
                "download.pieceTimeout",
            )?,
            stall_timeout: positive_duration(
                toml.download
                    .stall_timeout
                    .unwrap_or(Duration::from_secs(20)),
                "download.stallTimeout",
            )?,
            origin_retries: toml.download.origin_retries.unwrap_or(4).max(1),
        };
        let upload = UploadConfig {
            concurrent_pieces: positive(
                toml.upload.concurrent_pieces.unwrap_or(8),
                "upload.concurrentPieces",
            )?,
            rate_limit: toml
                .upload
                .rate_limit
                .map(|size| size.as_u64())
                .filter(|rate| *rate > 0),
            announce_interval: positive_duration(
                toml.upload
                    .announce_interval
                    .unwrap_or(Duration::from_secs(30)),
                "upload.announceInterval",
            )?,
        };
        let storage = StorageConfig {
            capacity: toml.storage.capacity.map(|size| size.as_u64()),
            ttl: toml.storage.ttl.unwrap_or(Duration::from_secs(24 * 3600)),
            gc_interval: positive_duration(
                toml.storage.gc_interval.unwrap_or(Duration::from_secs(60)),
                "storage.gcInterval",
            )?,
        };
        let proxy = proxy_config(toml.proxy, ip)?;
        let origin_ca_certs = toml
            .origin_ca_certs
            .iter()
            .map(|path| {
                std::fs::read(path).map_err(|source| ConfigError::OriginCa {
                    path: path.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            data_dir: toml
                .data_dir
                .unwrap_or_else(|| PathBuf::from("/var/lib/shoal/daemon")),
            schedulers,
            manager,
            seed: toml.seed.unwrap_or(false),
            ip,
            hostname,
            upload_addr: SocketAddr::new(ip, toml.upload_port.unwrap_or(4000)),
            vortex_addr: SocketAddr::new(ip, toml.vortex_port.unwrap_or(4005)),
            metrics_addr: Some(SocketAddr::new(ip, toml.metrics_port.unwrap_or(4002))),
            socket: toml.socket.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
            idc: toml.idc,
            location: toml.location,
            download,
            upload,
            storage,
            proxy,
            origin_ca_certs,
        })
    }
}

fn proxy_config(toml: ProxyToml, ip: IpAddr) -> Result<crate::proxy::ProxyConfig, ConfigError> {
    let default_ip = if ip.is_loopback() {
        ip
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    };
    let listen = if toml.disable.unwrap_or(false) {
        None
    } else {
        Some(toml.listen.unwrap_or(SocketAddr::new(default_ip, 4001)))
    };
    let rules = toml
        .rules
        .unwrap_or_else(|| vec![crate::proxy::DEFAULT_RULE.to_string()])
        .into_iter()
        .map(|rule| {
            regex::Regex::new(&rule).map_err(|source| ConfigError::ProxyRule { rule, source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let allow_cidrs = toml
        .allow_cidrs
        .iter()
        .map(|cidr| cidr.parse().map_err(ConfigError::ProxyCidr))
        .collect::<Result<Vec<_>, _>>()?;
    let default_registry = toml
        .default_registry
        .map(|url| {
            url::Url::parse(&url).map_err(|source| ConfigError::ProxyRegistry { url, source })
        })
        .transpose()?;
    let mitm = match toml.mitm {
        Some(mitm) => {
            let hosts = mitm
                .hosts
                .into_iter()
                .map(|rule| {
                    regex::Regex::new(&rule)
                        .map_err(|source| ConfigError::MitmHost { rule, source })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let ca = crate::proxy::mitm::CertificateAuthority::load(&mitm.ca_cert, &mitm.ca_key)
                .map_err(ConfigError::Mitm)?;
            Some(crate::proxy::mitm::MitmConfig {
                hosts,
                ca: std::sync::Arc::new(ca),
            })
        }
        None => None,
    };
    Ok(crate::proxy::ProxyConfig {
        listen,
        allow_cidrs,
        rules,
        default_registry,
        mitm,
    })
}

fn positive_duration(value: Duration, field: &'static str) -> Result<Duration, ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::Zero { field });
    }
    Ok(value)
}

fn positive(value: usize, field: &'static str) -> Result<usize, ConfigError> {
    if value == 0 {
        return Err(ConfigError::Zero { field });
    }
    Ok(value)
}

/// The machine's hostname, or `localhost` when it cannot be read.
pub fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests;

fn manager_config(toml: ManagerToml) -> Result<ManagerClientConfig, ConfigError> {
    let url = with_scheme(toml.addr);
    url::Url::parse(&url).map_err(|source| ConfigError::ManagerUrl {
        url: url.clone(),
        source,
    })?;
    Ok(ManagerClientConfig {
        url,
        refresh_interval: positive_duration(
            toml.refresh_interval.unwrap_or(Duration::from_secs(60)),
            "manager.refreshInterval",
        )?,
        keep_alive_interval: positive_duration(
            toml.keep_alive_interval.unwrap_or(Duration::from_secs(5)),
            "manager.keepAliveInterval",
        )?,
        scheduler_cluster_id: toml.scheduler_cluster_id.unwrap_or(0),
    })
}

fn with_scheme(url: String) -> String {
    if url.contains("://") {
        url
    } else {
        format!("http://{url}")
    }
}
