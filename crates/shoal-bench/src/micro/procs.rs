//! Spawned processes and what `/proc` says about them.
//!
//! [`Proc`] owns one child process (killed when dropped, also when a benchmark fails half-way)
//! with its stderr in a log file. [`Memory`] and [`cpu_seconds`] read `/proc/<pid>/status` and
//! `/proc/<pid>/stat`; [`RssSampler`] polls the resident set of a few processes while a transfer
//! runs and keeps the maximum.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;

/// How often [`RssSampler`] reads `/proc`.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(20);

/// One spawned process, killed on drop.
#[derive(Debug)]
pub(crate) struct Proc {
    name: String,
    child: Child,
    pid: u32,
    log: PathBuf,
}

/// Resident memory of a process in KiB: now (`VmRSS`) and its peak so far (`VmHWM`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Memory {
    pub(crate) rss_kib: u64,
    pub(crate) hwm_kib: u64,
}

impl Proc {
    /// Starts `bin args...` with `SHOAL_LOG=warn`, stdout discarded and stderr in `log`.
    pub(crate) fn spawn(
        name: &str,
        bin: &Path,
        args: &[String],
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let stderr = std::fs::File::create(&log)
            .with_context(|| format!("create log file {}", log.display()))?;
        let child = Command::new(bin)
            .args(args)
            .env("SHOAL_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {name}: {} {}", bin.display(), args.join(" ")))?;
        let pid = child.id().context("spawned process has no pid")?;
        Ok(Self {
            name: name.to_string(),
            child,
            pid,
            log,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Fails, naming the log, when the process has already exited.
    pub(crate) fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait().context("poll child")? {
            bail!(
                "{} exited with {status}; log: {}\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log)
            );
        }
        Ok(())
    }

    /// Current and peak resident memory.
    pub(crate) fn memory(&self) -> anyhow::Result<Memory> {
        read_memory(self.pid)
    }

    /// User plus system CPU time consumed so far, in seconds.
    pub(crate) fn cpu_seconds(&self) -> anyhow::Result<f64> {
        cpu_seconds(self.pid)
    }

    /// Kills the process and reaps it.
    pub(crate) async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// The last lines of a log file, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Reads `VmRSS` and `VmHWM` of `pid`.
pub(crate) fn read_memory(pid: u32) -> anyhow::Result<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    Ok(parse_status(&text))
}

/// `VmRSS` and `VmHWM` from the text of `/proc/<pid>/status` (0 when a line is missing).
pub(crate) fn parse_status(text: &str) -> Memory {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    }
}

/// CPU seconds (utime + stime) of `pid`.
pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    let ticks = parse_stat_ticks(&text).context("parse /proc/<pid>/stat")?;
    Ok(ticks as f64 / clock_ticks_per_second())
}

/// utime + stime (fields 14 and 15) from the text of `/proc/<pid>/stat`. The command name in
/// field 2 may hold spaces and parentheses, so fields are counted after its last `)`.
pub(crate) fn parse_stat_ticks(text: &str) -> Option<u64> {
    let after_name = &text[text.rfind(')')? + 1..];
    // after_name starts at field 3 (state); utime is field 14, i.e. index 11 here.
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `sysconf(_SC_CLK_TCK)` via `getconf` (no libc in this crate); 100 on every Linux we know.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Polls the resident memory of some processes until stopped, keeping the maximum of each.
#[derive(Debug)]
pub(crate) struct RssSampler {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Vec<u64>>,
}

impl RssSampler {
    pub(crate) fn start(pids: Vec<u32>) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut max = vec![0u64; pids.len()];
            loop {
                for (index, pid) in pids.iter().enumerate() {
                    if let Ok(memory) = read_memory(*pid) {
                        max[index] = max[index].max(memory.rss_kib);
                    }
                }
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = tokio::time::sleep(SAMPLE_INTERVAL) => {}
                }
            }
            max
        });
        Self { stop, task }
    }

    /// Stops sampling; the maximum `VmRSS` in KiB of each pid, in the order given.
    pub(crate) async fn finish(self) -> anyhow::Result<Vec<u64>> {
        let _ = self.stop.send(true);
        self.task.await.context("join rss sampler")
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub(crate) async fn wait_tcp(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("nothing listens on {addr} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether something already listens on `addr` (a port we are about to use is taken).
pub(crate) async fn is_listening(addr: SocketAddr) -> bool {
    tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
        .await
        .is_ok_and(|result| result.is_ok())
}

/// Waits until a unix socket accepts connections at `path`.
pub(crate) async fn wait_unix(path: &Path, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("nothing listens on {} after {timeout:?}", path.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The outcome of one `shoal get` process.
#[derive(Debug, Clone)]
pub(crate) struct GetRun {
    pub(crate) elapsed: Duration,
    /// The summary line `shoal get` printed.
    pub(crate) summary: String,
}

/// Runs `shoal get URL -O output --socket socket --no-progress` and times it end to end.
pub(crate) async fn shoal_get(
    bin: &Path,
    socket: &Path,
    url: &str,
    output: &Path,
) -> anyhow::Result<GetRun> {
    let started = Instant::now();
    let out = Command::new(bin)
        .arg("get")
        .arg(url)
        .arg("-O")
        .arg(output)
        .arg("--socket")
        .arg(socket)
        .arg("--no-progress")
        .env("SHOAL_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("run shoal get")?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        bail!(
            "shoal get {url} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(GetRun {
        elapsed,
        summary: String::from_utf8_lossy(&out.stdout).trim().to_string(),
    })
}

/// Where the bytes of one `shoal get` came from, read from its summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Sources {
    pub(crate) parents: u64,
    pub(crate) origin: u64,
    pub(crate) cache: u64,
}

/// Parses `...: N bytes from K parent(s), M bytes from origin, L bytes from local cache`.
pub(crate) fn parse_sources(summary: &str) -> Sources {
    let mut sources = Sources::default();
    let tail = summary.rsplit_once("): ").map_or(summary, |(_, tail)| tail);
    for part in tail.split(", ") {
        let Some((number, rest)) = part.trim().split_once(" bytes from ") else {
            continue;
        };
        let Ok(bytes) = number.parse::<u64>() else {
            continue;
        };
        if rest.contains("parent") {
            sources.parents = bytes;
        } else if rest.contains("origin") {
            sources.origin = bytes;
        } else if rest.contains("cache") {
            sources.cache = bytes;
        }
    }
    sources
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_give_rss_and_peak() {
        let text = "Name:\tshoal\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t4\n";
        assert_eq!(
            parse_status(text),
            Memory {
                rss_kib: 10240,
                hwm_kib: 20480
            }
        );
        assert_eq!(parse_status(""), Memory::default());
    }

    #[test]
    fn stat_ticks_skip_a_command_name_with_spaces() {
        let text = "42 (my (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0";
        assert_eq!(parse_stat_ticks(text), Some(300));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn summary_line_gives_sources() {
        let line = "saved /tmp/x (104857600 bytes in 1.20s): 104857600 bytes from 1 parent(s), \
                    0 bytes from origin, 7 bytes from local cache";
        assert_eq!(
            parse_sources(line),
            Sources {
                parents: 104857600,
                origin: 0,
                cache: 7
            }
        );
        assert_eq!(parse_sources("garbage"), Sources::default());
    }
}
