//! Runs a private `containerd` (root, state and socket in a temporary directory) and drives it
//! with `ctr`: pull through a registry mirror configured in a `certs.d` hosts directory, and
//! digest the unpacked root filesystem so two pulls can be compared.
//!
//! Mirrors use containerd's hosts directory format (`certs.d/<host>/hosts.toml`), the same
//! files the CRI plugin reads through `config_path`; `ctr` reads them through `--hosts-dir`.
//!
//! With [`ContainerdOptions::netns`], containerd and every `ctr images pull` (which fetches in
//! the `ctr` process itself) run inside that network namespace. Other `ctr` calls only talk to
//! the socket and run here: `ctr images mount` must mount in this process's mount namespace,
//! which `ip netns exec` would replace with a private one.

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;

use super::tree::FileTree;

/// Debian package that ships `containerd` and `ctr`.
pub const PACKAGE: &str = "containerd";

/// containerd namespace used for every `ctr` call.
const NAMESPACE: &str = "shoal";

/// How long a pull may take.
const PULL_TIMEOUT: Duration = Duration::from_secs(300);

/// How long other `ctr` calls may take.
const CTR_TIMEOUT: Duration = Duration::from_secs(60);

/// Options of one `ctr images pull`.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// `--user user:password`, sent to every host (registry and mirror).
    pub user: Option<(String, String)>,
    /// `--platform`, e.g. `linux/arm64`; without it the host's platform.
    pub platform: Option<String>,
    /// `--all-platforms`.
    pub all_platforms: bool,
    /// `--plain-http`: use HTTP for hosts without a `hosts.toml`.
    pub plain_http: bool,
    /// How long the pull may take; default 300 s (stretched by [`crate::patience`]).
    pub timeout: Option<Duration>,
}

impl Default for PullOptions {
    /// No credentials, host platform, plain HTTP, 300 s.
    fn default() -> Self {
        PullOptions {
            user: None,
            platform: None,
            all_platforms: false,
            plain_http: true,
            timeout: None,
        }
    }
}

/// How containerd is started.
#[derive(Debug, Clone, Default)]
pub struct ContainerdOptions {
    /// Run containerd and its pulls inside this network namespace (`ip netns exec NS`), so
    /// their traffic uses that namespace's links; default this process's namespace.
    pub netns: Option<String>,
}

/// A running containerd; on drop, unmounts what [`Containerd::unpacked_digest`] mounted, kills
/// the daemon and removes its directories.
#[derive(Debug)]
pub struct Containerd {
    child: Child,
    ctr: PathBuf,
    netns: Option<String>,
    socket: PathBuf,
    hosts_dir: PathBuf,
    /// Mount points still mounted (normally empty; filled if a digest run failed mid-way).
    mounts: Mutex<Vec<PathBuf>>,
    /// `None` once dropped; kept (not removed) if a mount could not be undone, so removal
    /// never descends into a mounted snapshot.
    dir: Option<tempfile::TempDir>,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let mounts = std::mem::take(&mut *self.mounts.lock().unwrap_or_else(|e| e.into_inner()));
        let mut all_unmounted = true;
        for mount in mounts {
            let status = std::process::Command::new("umount").arg(&mount).status();
            all_unmounted &= status.map(|status| status.success()).unwrap_or(false);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.dir.take() {
            if !all_unmounted {
                let kept = dir.keep();
                eprintln!(
                    "left {} in place: a snapshot is still mounted",
                    kept.display()
                );
            }
        }
    }
}

impl Containerd {
    /// Starts containerd with a generated config (version 2) and waits until `ctr version`
    /// reaches it.
    pub async fn start() -> anyhow::Result<Containerd> {
        Self::start_with(ContainerdOptions::default()).await
    }

    /// [`Containerd::start`] with `options`.
    pub async fn start_with(options: ContainerdOptions) -> anyhow::Result<Containerd> {
        let program = super::require_program("containerd", PACKAGE)?;
        let ctr = super::require_program("ctr", PACKAGE)?;
        super::require_root("running containerd")?;
        let dir = tempfile::Builder::new()
            .prefix("shoal-containerd-")
            .tempdir()
            .context("create the containerd directory")?;
        let socket = dir.path().join("containerd.sock");
        let hosts_dir = dir.path().join("certs.d");
        std::fs::create_dir_all(&hosts_dir).context("create certs.d")?;
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config_toml(dir.path(), &socket, &hosts_dir)?)
            .with_context(|| format!("write {}", config_path.display()))?;
        let log = std::fs::File::create(dir.path().join("containerd.log"))
            .context("create containerd.log")?;
        let child = super::std_command_in(options.netns.as_deref(), &program)
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicate the log file")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", program.display()))?;
        let containerd = Containerd {
            child,
            ctr,
            netns: options.netns,
            socket,
            hosts_dir,
            mounts: Mutex::new(Vec::new()),
            dir: Some(dir),
        };
        containerd.wait_ready().await?;
        Ok(containerd)
    }

    /// The containerd gRPC socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The hosts directory (`certs.d`) given to `ctr --hosts-dir` and to the CRI plugin's
    /// `config_path`.
    pub fn hosts_dir(&self) -> &Path {
        &self.hosts_dir
    }

    /// containerd's stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("containerd.log")
    }

    /// Writes `certs.d/<host>/hosts.toml` so pulls of `host` (e.g. `127.0.0.1:5000`) try the
    /// mirror `mirror_url` (e.g. `http://127.0.0.1:4001`) first for pull and resolve, then fall
    /// back to `http://<host>`. Returns the file's path.
    pub fn write_mirror(&self, host: &str, mirror_url: &str) -> anyhow::Result<PathBuf> {
        let dir = self.hosts_dir.join(host);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let path = dir.join("hosts.toml");
        std::fs::write(&path, hosts_toml(host, mirror_url))
            .with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }

    /// `ctr images pull --plain-http --hosts-dir CERTS_D REF`, unpacked into the default
    /// snapshotter.
    pub async fn pull(&self, reference: &str) -> anyhow::Result<()> {
        self.pull_with(reference, &PullOptions::default()).await
    }

    /// `ctr images pull` with `options`.
    pub async fn pull_with(&self, reference: &str, options: &PullOptions) -> anyhow::Result<()> {
        let mut args = vec![
            "images".to_owned(),
            "pull".to_owned(),
            "--hosts-dir".to_owned(),
        ];
        args.push(self.hosts_dir.to_string_lossy().into_owned());
        if options.plain_http {
            args.push("--plain-http".into());
        }
        if let Some((user, password)) = &options.user {
            args.extend(["--user".into(), format!("{user}:{password}")]);
        }
        if let Some(platform) = &options.platform {
            args.extend(["--platform".into(), platform.clone()]);
        }
        if options.all_platforms {
            args.push("--all-platforms".into());
        }
        args.push(reference.to_owned());
        let mut command = super::command_in(self.netns.as_deref(), &self.ctr);
        command
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", NAMESPACE])
            .args(&args);
        super::run(&mut command, options.timeout.unwrap_or(PULL_TIMEOUT))
            .await
            .with_context(|| format!("pull {reference} with containerd"))?;
        Ok(())
    }

    /// Digest of the image manifest (or index) that `reference` resolved to at pull time.
    pub async fn image_digest(&self, reference: &str) -> anyhow::Result<String> {
        let output = self.ctr(&["images", "ls"], CTR_TIMEOUT).await?;
        let listing = String::from_utf8_lossy(&output.stdout);
        // Columns: REF TYPE DIGEST SIZE PLATFORMS LABELS
        let line = listing
            .lines()
            .find(|line| line.split_whitespace().next() == Some(reference))
            .with_context(|| format!("{reference} is not in `ctr images ls`:\n{listing}"))?;
        let digest = line
            .split_whitespace()
            .nth(2)
            .context("`ctr images ls` has no digest")?;
        Ok(digest.to_owned())
    }

    /// Mounts the unpacked image read-only (`ctr images mount`), computes its
    /// [`FileTree::digest`], and unmounts it again (`ctr images unmount --rm`).
    pub async fn unpacked_digest(&self, reference: &str) -> anyhow::Result<String> {
        self.unpacked_digest_for(reference, None).await
    }

    /// [`Containerd::unpacked_digest`] of one platform of a multi-platform image
    /// (`linux/arm64`); None: the host's platform.
    pub async fn unpacked_digest_for(
        &self,
        reference: &str,
        platform: Option<&str>,
    ) -> anyhow::Result<String> {
        let target = tempfile::Builder::new()
            .prefix("mount-")
            .tempdir_in(self.dir())
            .context("create a mount point")?;
        let mount_point = target.path().to_path_buf();
        let mount_arg = mount_point.to_string_lossy().into_owned();
        let mut args = vec!["images", "mount"];
        if let Some(platform) = platform {
            args.extend(["--platform", platform]);
        }
        args.extend([reference, mount_arg.as_str()]);
        self.ctr(&args, CTR_TIMEOUT)
            .await
            .with_context(|| format!("mount {reference}"))?;
        self.lock_mounts().push(mount_point.clone());

        let root = mount_point.clone();
        let digest = tokio::task::spawn_blocking(move || FileTree::from_dir(&root))
            .await
            .context("join the tree digest task")
            .and_then(|tree| tree.map(|tree| tree.digest()));

        self.ctr(&["images", "unmount", "--rm", &mount_arg], CTR_TIMEOUT)
            .await
            .with_context(|| format!("unmount {reference}"))?;
        self.lock_mounts().retain(|mount| *mount != mount_point);
        digest
    }

    /// Runs `ctr --address SOCK --namespace shoal ARGS...` and returns its output.
    pub async fn ctr<S: AsRef<std::ffi::OsStr>>(
        &self,
        args: &[S],
        timeout: Duration,
    ) -> anyhow::Result<Output> {
        let mut command = super::command(&self.ctr);
        command
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", NAMESPACE])
            .args(args);
        super::run(&mut command, timeout).await
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let ready = crate::wait_until(Duration::from_secs(30), move || async move {
            self.socket.exists() && self.ctr(&["version"], Duration::from_secs(5)).await.is_ok()
        })
        .await;
        ready.with_context(|| {
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            format!("containerd did not become ready; its log:\n{log}")
        })
    }

    fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("the directory lives until drop")
            .path()
    }

    fn lock_mounts(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        self.mounts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// containerd config version 2: everything below `dir`, no TCP listeners (debug and metrics
/// off), and the CRI plugin's registry `config_path` pointing at our hosts directory.
fn config_toml(dir: &Path, socket: &Path, hosts_dir: &Path) -> anyhow::Result<String> {
    let quote = |path: &Path| -> anyhow::Result<String> {
        let path = path.to_str().context("containerd path is not UTF-8")?;
        Ok(serde_json::to_string(path).expect("a string serializes"))
    };
    let ttrpc = PathBuf::from(format!("{}.ttrpc", socket.display()));
    Ok(format!(
        r#"version = 2
root = {root}
state = {state}
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = {socket}

[ttrpc]
  address = {ttrpc}

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = {hosts_dir}
"#,
        root = quote(&dir.join("root"))?,
        state = quote(&dir.join("state"))?,
        socket = quote(socket)?,
        ttrpc = quote(&ttrpc)?,
        hosts_dir = quote(hosts_dir)?,
    ))
}

fn hosts_toml(host: &str, mirror_url: &str) -> String {
    format!(
        "server = \"http://{host}\"\n\
         \n\
         [host.\"{mirror_url}\"]\n\
         \x20 capabilities = [\"pull\", \"resolve\"]\n\
         \x20 skip_verify = true\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_toml_puts_the_mirror_first() {
        let toml = hosts_toml("127.0.0.1:5000", "http://127.0.0.1:4001");
        assert!(toml.starts_with("server = \"http://127.0.0.1:5000\"\n"));
        assert!(toml.contains(
            "[host.\"http://127.0.0.1:4001\"]\n  capabilities = [\"pull\", \"resolve\"]"
        ));
    }

    #[test]
    fn config_is_version_2_with_config_path() {
        let dir = Path::new("/tmp/x");
        let config = config_toml(dir, &dir.join("c.sock"), &dir.join("certs.d")).unwrap();
        assert!(config.starts_with("version = 2\n"));
        assert!(config.contains("config_path = \"/tmp/x/certs.d\""));
        assert!(config.contains("address = \"/tmp/x/c.sock.ttrpc\""));
    }
}
