//! Harness for interop tests against the real third-party programs our users run, all from
//! Debian packages: the CNCF distribution registry (`docker-registry`), `containerd` with `ctr`,
//! and `skopeo`.
//!
//! Every process listens on loopback only, keeps its files in a temporary directory, and is
//! killed when its handle is dropped (also when a test panics). A helper that needs a program
//! checks for it first and fails with the Debian package to install; nothing passes silently.
//!
//! The benchmark lab (`shoal bench --image`) reuses these drivers inside network namespaces it
//! created: the registry, containerd's pulls and skopeo's pushes then run under
//! `ip netns exec NS` (see [`RegistryOptions::netns`](registry::RegistryOptions::netns),
//! [`ContainerdOptions::netns`](containerd::ContainerdOptions::netns) and
//! [`CopyOptions::netns`](skopeo::CopyOptions::netns)), and the registry listens on the
//! namespace's address instead of loopback.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use shoal_testkit::interop::{containerd::Containerd, image::ImageSpec, registry::Registry};
//! let registry = Registry::start(Default::default()).await?;
//! let dir = tempfile::tempdir()?;
//! let image = ImageSpec::default().build_async(dir.path().to_path_buf()).await?;
//! let reference = image.push(&registry).await?;
//! let containerd = Containerd::start().await?;
//! containerd.pull(&reference).await?;
//! assert_eq!(containerd.unpacked_digest(&reference).await?, image.platforms[0].tree_digest);
//! # Ok(()) }
//! ```

pub mod containerd;
pub mod image;
pub mod registry;
pub mod skopeo;
pub mod token;
pub mod tree;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::Context as _;

/// Environment variables removed from every program we spawn, so that no request leaves
/// loopback through a proxy configured on the machine.
const PROXY_ENV: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
];

/// Returns the path of `program` found in `PATH`, or an error naming the Debian `package`
/// that provides it.
pub fn require_program(program: &str, package: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate));
    found.with_context(|| {
        format!(
            "program `{program}` is not installed: install the Debian package `{package}` \
             (apt-get install -y {package})"
        )
    })
}

/// Fails unless this process runs as root (containerd needs it to unpack and mount layers).
pub fn require_root(why: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    // `/proc/self` is owned by the effective uid of the reading process.
    let uid = std::fs::metadata("/proc/self")
        .context("read /proc/self to find the effective uid")?
        .uid();
    anyhow::ensure!(uid == 0, "{why} needs root, but the test runs as uid {uid}");
    Ok(())
}

/// A loopback port that was free a moment ago. Another process may take it before the caller
/// binds it, so callers of programs that cannot bind port 0 themselves retry on failure.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind a free port")?;
    Ok(listener.local_addr().context("read the bound port")?.port())
}

/// A command for `program` with proxy variables removed and `kill_on_drop` set, so a timed-out
/// or abandoned run does not outlive the test.
pub(crate) fn command(program: &Path) -> tokio::process::Command {
    command_in(None, program)
}

/// [`command`] run inside the network namespace `netns` (`ip netns exec NS program`) when one
/// is given. `ip netns exec` execs the program, so the child's pid is the program's own.
pub(crate) fn command_in(netns: Option<&str>, program: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::from(std_command_in(netns, program));
    command
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    command
}

/// The blocking counterpart of [`command_in`], without `kill_on_drop` (callers own the child).
pub(crate) fn std_command_in(netns: Option<&str>, program: &Path) -> std::process::Command {
    let mut command = match netns {
        Some(netns) => {
            let mut command = std::process::Command::new("ip");
            command.args(["netns", "exec", netns]).arg(program);
            command
        }
        None => std::process::Command::new(program),
    };
    for name in PROXY_ENV {
        command.env_remove(name);
    }
    command
}

/// Runs `command` to completion within `timeout` (stretched by [`crate::patience`]) and fails,
/// with its output, unless it exits successfully.
pub(crate) async fn run(
    command: &mut tokio::process::Command,
    timeout: Duration,
) -> anyhow::Result<Output> {
    let description = describe(command.as_std());
    let output = tokio::time::timeout(timeout * crate::patience(), command.output())
        .await
        .with_context(|| format!("`{description}` did not finish within {timeout:?}"))?
        .with_context(|| format!("spawn `{description}`"))?;
    anyhow::ensure!(
        output.status.success(),
        "`{description}` failed with {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    Ok(output)
}

/// `program arg arg ...`, for error messages.
fn describe(command: &std::process::Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_program_names_the_package() {
        let err = require_program("shoal-no-such-program", "shoal-no-such-package").unwrap_err();
        assert!(err
            .to_string()
            .contains("apt-get install -y shoal-no-such-package"));
    }

    #[test]
    fn netns_commands_go_through_ip_netns_exec() {
        let command = std_command_in(Some("lab-ns"), Path::new("/usr/bin/ctr"));
        assert_eq!(describe(&command), "ip netns exec lab-ns /usr/bin/ctr");
        let command = std_command_in(None, Path::new("/usr/bin/ctr"));
        assert_eq!(describe(&command), "/usr/bin/ctr");
    }

    #[test]
    fn finds_a_program_in_path() {
        assert!(require_program("sh", "dash").is_ok());
    }
}
