//! The origin: nginx serving one generated random file, and the counters of what it sent.
//!
//! Payload bytes served are summed from nginx's access log (`$body_bytes_sent`). In netns
//! mode the origin's wire bytes are the transmit counter of its `eth0`, read from
//! `/proc/<nginx pid>/net/dev` ([`eth0_tx_bytes`], which shows the namespace of that process),
//! so BitTorrent's seeder, which runs in the same namespace, is counted too. [`Sampler`] reads a
//! counter every 100 ms for the bandwidth-over-time chart (the image scenario's registry uses it
//! too).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context as _};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use tokio::process::Child;
use tokio::time::{Duration, Instant};

use super::netns::{which, Host};

/// The file's name under the origin's root.
pub(crate) const FILE_NAME: &str = "blob.bin";
const PORT: u16 = 8080;

/// A running nginx serving the file; stopped on drop.
///
/// nginx runs as one process (`master_process off`), so killing the child we spawned stops it:
/// no orphaned worker survives a loopback run.
#[derive(Debug)]
pub(crate) struct Origin {
    pub(crate) url: String,
    pub(crate) root: PathBuf,
    pub(crate) file: PathBuf,
    pub(crate) size: u64,
    pub(crate) sha256: String,
    access_log: PathBuf,
    netns: bool,
    nginx: Child,
}

impl Origin {
    /// Generates the file and starts nginx on the origin host.
    pub(crate) async fn start(
        host: &Host,
        work: &Path,
        size: u64,
        logs: &Path,
    ) -> anyhow::Result<Self> {
        let nginx_bin = which("nginx")
            .context("find nginx (Debian package nginx-light; scripts/setup.sh installs it)")?;
        let root = work.join("www");
        std::fs::create_dir_all(&root).context("create origin root")?;
        std::fs::create_dir_all(work.join("nginx-tmp")).context("create nginx temp dir")?;
        let file = root.join(FILE_NAME);
        let sha256 = {
            let file = file.clone();
            tokio::task::spawn_blocking(move || generate(&file, size))
                .await
                .context("join file generator")??
        };
        let access_log = logs.join("origin-access.log");
        let conf = work.join("nginx.conf");
        let w = work.display();
        std::fs::write(
            &conf,
            format!(
                "worker_processes 1;
daemon off;
master_process off;
pid {w}/nginx.pid;
error_log {logs}/origin-error.log;
events {{ worker_connections 1024; }}
http {{
    log_format sent '$msec $bytes_sent $body_bytes_sent';
    access_log {access} sent;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {w}/nginx-tmp;
    proxy_temp_path {w}/nginx-tmp;
    fastcgi_temp_path {w}/nginx-tmp;
    uwsgi_temp_path {w}/nginx-tmp;
    scgi_temp_path {w}/nginx-tmp;
    types {{ }}
    default_type application/octet-stream;
    server {{
        listen {ip}:{PORT};
        root {root};
    }}
}}
",
                logs = logs.display(),
                access = access_log.display(),
                ip = host.ip,
                root = root.display(),
            ),
        )
        .context("write nginx config")?;
        std::fs::write(&access_log, b"").context("create access log")?;
        let nginx = host
            .command(&nginx_bin.to_string_lossy())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(logs.join("origin-error.log"))
            .spawn()
            .context("start nginx")?;
        let url = format!("http://{}:{PORT}/{FILE_NAME}", host.ip);
        let origin = Self {
            url,
            root,
            file,
            size,
            sha256,
            access_log,
            netns: host.ns.is_some(),
            nginx,
        };
        wait_tcp(host, &host.ip, PORT, "nginx").await?;
        Ok(origin)
    }

    /// Body bytes nginx logged as sent (payload, without HTTP headers).
    pub(crate) fn served_bytes(&self) -> u64 {
        served_bytes(&self.access_log)
    }

    /// Bytes sent on the origin's link (netns mode), else `None`.
    pub(crate) fn wire_bytes(&self) -> Option<u64> {
        if !self.netns {
            return None;
        }
        eth0_tx_bytes(self.nginx.id()?)
    }

    /// The best counter for the chart: wire bytes in netns mode, else logged bytes.
    fn counter(&self) -> impl Fn() -> u64 + Send + 'static {
        let access_log = self.access_log.clone();
        let pid = self.nginx.id().filter(|_| self.netns);
        move || {
            pid.and_then(eth0_tx_bytes)
                .unwrap_or_else(|| served_bytes(&access_log))
        }
    }
}

/// The transmit counter of `eth0` in the network namespace of process `pid`.
pub(crate) fn eth0_tx_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    tx_bytes(&text, "eth0")
}

/// Writes `size` random bytes to `path` and returns their sha256 in hex.
fn generate(path: &Path, size: u64) -> anyhow::Result<String> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).context("create file")?);
    let mut hasher = Sha256::new();
    let mut rng = rand::thread_rng();
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        rng.fill_bytes(&mut chunk[..n]);
        hasher.update(&chunk[..n]);
        out.write_all(&chunk[..n]).context("write file")?;
        left -= n as u64;
    }
    out.flush().context("flush file")?;
    Ok(hex::encode(hasher.finalize()))
}

/// The sha256 of a file in hex.
pub(crate) fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).context("hash file")?;
    Ok(hex::encode(hasher.finalize()))
}

fn served_bytes(access_log: &Path) -> u64 {
    std::fs::read_to_string(access_log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum()
}

/// The transmit byte counter of `iface` in `/proc/net/dev` text.
fn tx_bytes(text: &str, iface: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, fields) = line.split_once(':')?;
        if name.trim() != iface {
            return None;
        }
        fields.split_whitespace().nth(8)?.parse().ok()
    })
}

/// Waits until `ip:port` accepts connections from inside `host`'s namespace.
pub(crate) async fn wait_tcp(host: &Host, ip: &str, port: u16, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = host
            .command("bash")
            .arg("-c")
            .arg(format!("exec 3<>/dev/tcp/{ip}/{port}"))
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .context("run bash")?;
        if status.success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} did not accept connections on {ip}:{port} within 20s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Samples an origin counter every 100 ms: (seconds since start, bytes since start).
#[derive(Debug)]
pub(crate) struct Sampler {
    samples: Arc<Mutex<Vec<(f64, u64)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub(crate) fn start(origin: &Origin, start: Instant) -> Self {
        Self::start_with(origin.counter(), start)
    }

    /// Samples `counter` (a cumulative byte count, cheap to read) from now on.
    pub(crate) fn start_with(counter: impl Fn() -> u64 + Send + 'static, start: Instant) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let base = counter();
        let shared = samples.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(100));
            loop {
                ticker.tick().await;
                let value = counter();
                let t = start.elapsed().as_secs_f64();
                shared
                    .lock()
                    .expect("sampler lock is never poisoned")
                    .push((t, value.saturating_sub(base)));
            }
        });
        Self { samples, task }
    }

    pub(crate) fn stop(self) -> Vec<(f64, u64)> {
        self.task.abort();
        let samples = self.samples.lock().expect("sampler lock is never poisoned");
        samples.clone()
    }
}

/// The highest rate over any 1 s window of the samples, in bytes per second.
pub(crate) fn peak_rate(samples: &[(f64, u64)]) -> f64 {
    let mut peak = 0.0f64;
    let mut start = 0;
    for end in 0..samples.len() {
        while samples[end].0 - samples[start].0 > 1.0 {
            start += 1;
        }
        let span = samples[end].0 - samples[start].0;
        if span >= 0.5 {
            let rate = (samples[end].1 - samples[start].1) as f64 / span;
            peak = peak.max(rate);
        }
    }
    peak
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tx_bytes() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
  eth0: 1000      10    0    0    0     0          0         0     5000      20    0    0    0     0       0          0
";
        assert_eq!(tx_bytes(text, "eth0"), Some(5000));
        assert_eq!(tx_bytes(text, "eth1"), None);
    }

    #[test]
    fn peak_over_one_second_windows() {
        let samples: Vec<(f64, u64)> = (0..=30).map(|i| (i as f64 * 0.1, i * 100)).collect();
        let peak = peak_rate(&samples);
        assert!((peak - 1000.0).abs() < 1.0, "{peak}");
    }
}
