//! Runs the CNCF distribution registry (Debian `docker-registry`, distribution 2.8) on
//! loopback (or on a given address inside a network namespace) over plain HTTP, with filesystem storage in a temporary directory, and parses its
//! access log to count what it served.
//!
//! The registry writes its access log to stdout in Apache combined format, which we capture
//! to `access.log`:
//!
//! ```text
//! 127.0.0.1 - - [03/Dec/2026:18:40:53 +0000] "GET /v2/foo/blobs/sha256:ab.. HTTP/1.1" 200 7340032 "" "containerd/1.6.20~ds1"
//! ```
//!
//! Its application log (logrus text, stderr) goes to `registry.log`. A line is written once
//! the response has been sent, so a client may finish reading a body a moment before the
//! line appears: poll with [`crate::wait_until`] when an exact count matters.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use super::token::{TokenServer, TokenServerOptions};

/// Debian package that ships `docker-registry`.
pub const PACKAGE: &str = "docker-registry";

/// How many times to try a fresh port when the one we picked was taken in the meantime.
const PORT_ATTEMPTS: usize = 5;

/// How the registry is started.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Configure `auth: token:` with an in-process [`TokenServer`] as realm.
    pub token_auth: bool,
    /// With `token_auth`: whether anonymous clients may pull.
    pub anonymous_pull: bool,
    /// Run inside this network namespace (`ip netns exec NS docker-registry ...`). Readiness is
    /// then taken from the log line alone: this process may have no route into the namespace.
    pub netns: Option<String>,
    /// Listen here; default a free port on `127.0.0.1`.
    pub listen: Option<SocketAddr>,
}

impl Default for RegistryOptions {
    /// No auth (with `token_auth` switched on, anonymous pulls are allowed), this network
    /// namespace, a free loopback port.
    fn default() -> Self {
        RegistryOptions {
            token_auth: false,
            anonymous_pull: true,
            netns: None,
            listen: None,
        }
    }
}

/// One line of the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogEntry {
    /// Client address (without port).
    pub remote: String,
    /// HTTP method.
    pub method: String,
    /// Request path without the query string.
    pub path: String,
    /// Response status.
    pub status: u16,
    /// Response body bytes written (0 when the log says `-`).
    pub bytes: u64,
    /// `User-Agent` header.
    pub user_agent: String,
}

/// A running `docker-registry`; killed and its storage removed when dropped.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    addr: SocketAddr,
    in_netns: bool,
    token_server: Option<TokenServer>,
    dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// Starts the registry (on a free loopback port unless `options.listen` says otherwise) and
    /// waits until `/v2/` answers, or in a namespace until it logs that it listens.
    pub async fn start(options: RegistryOptions) -> anyhow::Result<Registry> {
        let program = super::require_program("docker-registry", PACKAGE)?;
        let dir = tempfile::Builder::new()
            .prefix("shoal-registry-")
            .tempdir()
            .context("create the registry directory")?;
        let token_server = if options.token_auth {
            let token_options = TokenServerOptions {
                anonymous_pull: options.anonymous_pull,
                ..TokenServerOptions::default()
            };
            let server = TokenServer::start(token_options).await?;
            server.write_root_cert_bundle(&dir.path().join("token-root.pem"))?;
            Some(server)
        } else {
            None
        };

        let mut last_error = None;
        // A fixed address is not retried: another port would not be the one asked for.
        let attempts = if options.listen.is_some() {
            1
        } else {
            PORT_ATTEMPTS
        };
        for _ in 0..attempts {
            let addr = match options.listen {
                Some(addr) => addr,
                None => SocketAddr::from((Ipv4Addr::LOCALHOST, super::free_port()?)),
            };
            let netns = options.netns.as_deref();
            match spawn(&program, dir.path(), addr, netns, token_server.as_ref()).await {
                Ok(child) => {
                    let registry = Registry {
                        child,
                        addr,
                        in_netns: netns.is_some(),
                        token_server,
                        dir,
                    };
                    registry.wait_ready().await?;
                    return Ok(registry);
                }
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no port attempt was made")))
    }

    /// `http://<ip>:<port>`, by default `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// `<ip>:<port>`, the registry host in image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The registry's process id (inside its namespace when it runs in one), e.g. to read the
    /// namespace's interface counters from `/proc/<pid>/net/dev`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `(user, password)` allowed to push and pull, when token auth is on.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        let server = self.token_server.as_ref()?;
        let (user, password) = server.options().users.first()?;
        Some((user, password))
    }

    /// The token server, when token auth is on.
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token_server.as_ref()
    }

    /// The captured access log (stdout).
    pub fn access_log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    /// The captured application log (stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// Every parsed access log line so far; lines that do not parse are skipped.
    pub fn access_log(&self) -> anyhow::Result<Vec<AccessLogEntry>> {
        let path = self.access_log_path();
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        Ok(text.lines().filter_map(parse_access_line).collect())
    }

    /// Number of `GET /v2/<name>/blobs/<digest>` answered 200 or 206, over all repositories.
    pub fn blob_gets(&self, digest: &str) -> usize {
        self.blob_get_entries(digest).count()
    }

    /// Body bytes sent for those GETs.
    pub fn blob_bytes_served(&self, digest: &str) -> u64 {
        self.blob_get_entries(digest).map(|entry| entry.bytes).sum()
    }

    fn blob_get_entries(&self, digest: &str) -> impl Iterator<Item = AccessLogEntry> {
        let suffix = format!("/blobs/{digest}");
        let entries = self
            .access_log()
            .expect("the registry access log we created is readable");
        entries.into_iter().filter(move |entry| {
            entry.method == "GET"
                && matches!(entry.status, 200 | 206)
                && entry.path.starts_with("/v2/")
                && entry.path.ends_with(&suffix)
        })
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        if self.in_netns {
            // `spawn` saw the listening line; the namespace may be unreachable from here.
            return Ok(());
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .context("build an HTTP client")?;
        let url = format!("{}/v2/", self.url());
        let ready = crate::wait_until(Duration::from_secs(20), || {
            let request = client.get(&url).send();
            async move {
                let Ok(response) = request.await else {
                    return false;
                };
                matches!(response.status().as_u16(), 200 | 401)
            }
        })
        .await;
        ready.with_context(|| {
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            format!("registry on {url} did not become ready; its log:\n{log}")
        })
    }
}

/// Writes the config and starts the registry; fails if it exits before logging that it
/// listens (typically: the port was taken).
async fn spawn(
    program: &Path,
    dir: &Path,
    addr: SocketAddr,
    netns: Option<&str>,
    token_server: Option<&TokenServer>,
) -> anyhow::Result<Child> {
    let config_path = dir.join("config.yml");
    let config = config_yaml(dir, addr, token_server)?;
    std::fs::write(&config_path, config)
        .with_context(|| format!("write {}", config_path.display()))?;
    let log_path = dir.join("registry.log");
    let stdout = std::fs::File::create(dir.join("access.log")).context("create access.log")?;
    let stderr = std::fs::File::create(&log_path).context("create registry.log")?;
    let mut child = super::std_command_in(netns, program)
        .arg("serve")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("spawn {}", program.display()))?;

    let mut exited = None;
    let listening = crate::wait_until(Duration::from_secs(20), || {
        if exited.is_none() {
            exited = child.try_wait().ok().flatten();
        }
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        std::future::ready(exited.is_some() || log.contains("listening on"))
    })
    .await;
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    if let Some(status) = exited {
        anyhow::bail!("docker-registry exited with {status} on {addr}; its log:\n{log}");
    }
    if let Err(err) = listening {
        let _ = child.kill();
        let _ = child.wait();
        return Err(err.context(format!("docker-registry never listened; its log:\n{log}")));
    }
    Ok(child)
}

fn config_yaml(
    dir: &Path,
    addr: SocketAddr,
    token_server: Option<&TokenServer>,
) -> anyhow::Result<String> {
    // JSON strings are valid YAML scalars, and quote any path safely.
    let quote = |value: &str| serde_json::to_string(value).expect("a string serializes");
    let storage = dir.join("storage");
    let storage = storage.to_str().context("storage path is not UTF-8")?;
    let mut yaml = format!(
        "version: 0.1\n\
         log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
         storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
         \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: {addr}\n  secret: shoal-testkit-secret\n\
         health:\n  storagedriver:\n    enabled: false\n",
        storage = quote(storage),
    );
    if let Some(server) = token_server {
        let bundle = dir.join("token-root.pem");
        let bundle = bundle.to_str().context("bundle path is not UTF-8")?;
        let options = server.options();
        yaml.push_str(&format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            quote(&server.realm()),
            quote(&options.service),
            quote(&options.issuer),
            quote(bundle),
        ));
    }
    Ok(yaml)
}

/// Parses `REMOTE IDENT USER [TIME] "METHOD URI PROTO" STATUS BYTES "REFERER" "AGENT"`.
pub fn parse_access_line(line: &str) -> Option<AccessLogEntry> {
    let (remote, rest) = line.split_once(' ')?;
    let (_, rest) = rest.split_once("] \"")?;
    let (request, rest) = rest.split_once("\" ")?;
    let mut request_parts = request.split(' ');
    let method = request_parts.next()?;
    let uri = request_parts.next()?;
    let mut fields = rest.splitn(3, ' ');
    let status = fields.next()?.parse().ok()?;
    let bytes = match fields.next()? {
        "-" => 0,
        bytes => bytes.parse().ok()?,
    };
    let user_agent = fields
        .next()
        .and_then(|tail| tail.rsplit_once(" \""))
        .map(|(_, agent)| agent.trim_end_matches('"').to_owned())
        .unwrap_or_default();
    let path = uri.split_once('?').map_or(uri, |(path, _)| path);
    Some(AccessLogEntry {
        remote: remote.to_owned(),
        method: method.to_owned(),
        path: path.to_owned(),
        status,
        bytes,
        user_agent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_combined_log_line() {
        let line = "127.0.0.1 - - [03/Dec/2026:18:40:53 +0000] \"GET /v2/shoal/interop/blobs/sha256:ab?x=1 HTTP/1.1\" 206 1024 \"\" \"containerd/1.6.20~ds1\"";
        let entry = parse_access_line(line).unwrap();
        assert_eq!(entry.remote, "127.0.0.1");
        assert_eq!(entry.method, "GET");
        assert_eq!(entry.path, "/v2/shoal/interop/blobs/sha256:ab");
        assert_eq!(entry.status, 206);
        assert_eq!(entry.bytes, 1024);
        assert_eq!(entry.user_agent, "containerd/1.6.20~ds1");
    }

    #[test]
    fn config_listens_on_the_given_address() {
        let addr: SocketAddr = "10.213.0.2:5000".parse().unwrap();
        let yaml = config_yaml(Path::new("/tmp/r"), addr, None).unwrap();
        assert!(yaml.contains("  addr: 10.213.0.2:5000\n"), "{yaml}");
        assert!(yaml.contains("rootdirectory: \"/tmp/r/storage\""), "{yaml}");
    }

    #[test]
    fn dash_size_is_zero_and_garbage_is_skipped() {
        let line = "127.0.0.1 - - [03/Dec/2026:18:40:53 +0000] \"HEAD /v2/ HTTP/1.1\" 200 - \"\" \"curl/7.88.1\"";
        assert_eq!(parse_access_line(line).unwrap().bytes, 0);
        assert!(parse_access_line("time=\"2026\" level=info msg=\"x\"").is_none());
    }
}
