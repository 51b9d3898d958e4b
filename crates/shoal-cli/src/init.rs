//! `shoal init containerd|crio|podman|docker`: writes a container runtime's mirror
//! configuration so image pulls go through the local daemon's proxy. Idempotent: a file that
//! already has the wanted content is left alone, and every change is printed.

use std::path::{Path, PathBuf};

/// Which runtime to configure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Containerd,
    Crio,
    Podman,
    Docker,
}

/// Options of `shoal init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub runtime: Runtime,
    /// The daemon's proxy, e.g. `http://127.0.0.1:4001`.
    pub proxy: String,
    /// Registries to mirror (`docker.io`, `ghcr.io`, `127.0.0.1:5000`).
    pub registries: Vec<String>,
    /// Where the runtime reads its configuration; `None` uses the runtime's default.
    pub config_dir: Option<PathBuf>,
    /// Registries reached over plain HTTP instead of HTTPS.
    pub insecure: bool,
}

/// What `shoal init` did to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Created(PathBuf),
    Updated(PathBuf),
    Unchanged(PathBuf),
}

/// Why `shoal init` failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a JSON object")]
    Json { path: PathBuf },
    #[error("invalid registry {0:?}: expected a host such as docker.io or 10.0.0.5:5000")]
    Registry(String),
    #[error("invalid proxy url {0:?}: expected http://HOST:PORT")]
    Proxy(String),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Created(path) => write!(f, "created {}", path.display()),
            Self::Updated(path) => write!(f, "updated {}", path.display()),
            Self::Unchanged(path) => write!(f, "unchanged {}", path.display()),
        }
    }
}

/// Writes the runtime's configuration; returns one change per file.
pub fn init(options: &InitOptions) -> Result<Vec<Change>, InitError> {
    let proxy = options.proxy.trim_end_matches('/');
    if !(proxy.starts_with("http://") || proxy.starts_with("https://")) {
        return Err(InitError::Proxy(options.proxy.clone()));
    }
    for registry in &options.registries {
        if registry.is_empty() || registry.contains('/') || registry.contains(char::is_whitespace) {
            return Err(InitError::Registry(registry.clone()));
        }
    }
    match options.runtime {
        Runtime::Containerd => containerd(options, proxy),
        Runtime::Crio | Runtime::Podman => registries_conf(options, proxy),
        Runtime::Docker => docker(options, proxy),
    }
}

/// The registry's API endpoint (`docker.io` lives at `registry-1.docker.io`).
fn upstream(registry: &str, insecure: bool) -> String {
    if registry == "docker.io" {
        return "https://registry-1.docker.io".to_string();
    }
    let scheme = if insecure { "http" } else { "https" };
    format!("{scheme}://{registry}")
}

fn containerd(options: &InitOptions, proxy: &str) -> Result<Vec<Change>, InitError> {
    let dir = options
        .config_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/etc/containerd/certs.d"));
    let mut changes = Vec::new();
    for registry in &options.registries {
        let upstream = upstream(registry, options.insecure);
        let content = format!(
            "# Written by `shoal init containerd`: pulls go through the shoal daemon, then {registry}.\n\
             server = \"{upstream}\"\n\n\
             [host.\"{proxy}\"]\n  capabilities = [\"pull\", \"resolve\"]\n\n\
             [host.\"{proxy}\".header]\n  X-Dragonfly-Registry = [\"{upstream}\"]\n"
        );
        changes.push(write_if_changed(
            &dir.join(registry).join("hosts.toml"),
            &content,
        )?);
    }
    Ok(changes)
}

fn registries_conf(options: &InitOptions, proxy: &str) -> Result<Vec<Change>, InitError> {
    let dir = options
        .config_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/etc/containers/registries.conf.d"));
    let mirror = proxy
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    let insecure = proxy.starts_with("http://");
    let mut content = String::from(
        "# Written by `shoal init`: pulls go through the shoal daemon's registry mirror.\n",
    );
    for registry in &options.registries {
        content.push_str(&format!(
            "\n[[registry]]\nlocation = \"{registry}\"\n\n[[registry.mirror]]\nlocation = \"{mirror}\"\ninsecure = {insecure}\n"
        ));
    }
    Ok(vec![write_if_changed(&dir.join("shoal.conf"), &content)?])
}

fn docker(options: &InitOptions, proxy: &str) -> Result<Vec<Change>, InitError> {
    let dir = options
        .config_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/etc/docker"));
    let path = dir.join("daemon.json");
    let mut config = match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => serde_json::from_str::<serde_json::Value>(&text)
            .map_err(|_| InitError::Json { path: path.clone() })?,
        Ok(_) => serde_json::json!({}),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(source) => return Err(InitError::Read { path, source }),
    };
    let object = config
        .as_object_mut()
        .ok_or_else(|| InitError::Json { path: path.clone() })?;
    let mirrors = object
        .entry("registry-mirrors")
        .or_insert_with(|| serde_json::json!([]));
    if let Some(list) = mirrors.as_array_mut() {
        if !list.iter().any(|value| value.as_str() == Some(proxy)) {
            list.push(serde_json::Value::String(proxy.to_string()));
        }
    }
    let text = serde_json::to_string_pretty(&config)
        .map_err(|_| InitError::Json { path: path.clone() })?
        + "\n";
    Ok(vec![write_if_changed(&path, &text)?])
}

fn write_if_changed(path: &Path, content: &str) -> Result<Change, InitError> {
    let existing = match std::fs::read_to_string(path) {
        Ok(existing) => Some(existing),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(InitError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if existing.as_deref() == Some(content) {
        return Ok(Change::Unchanged(path.to_path_buf()));
    }
    let write_error = |source| InitError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(write_error)?;
    }
    // Write beside and rename, so the runtime never reads a half-written file.
    let temp = path.with_extension("shoal-tmp");
    std::fs::write(&temp, content).map_err(write_error)?;
    std::fs::rename(&temp, path).map_err(write_error)?;
    Ok(if existing.is_some() {
        Change::Updated(path.to_path_buf())
    } else {
        Change::Created(path.to_path_buf())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(runtime: Runtime, dir: &Path) -> InitOptions {
        InitOptions {
            runtime,
            proxy: "http://127.0.0.1:4001".into(),
            registries: vec!["docker.io".into(), "127.0.0.1:5000".into()],
            config_dir: Some(dir.to_path_buf()),
            insecure: true,
        }
    }

    #[test]
    fn containerd_hosts_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let changes = init(&options(Runtime::Containerd, dir.path())).unwrap();
        assert!(matches!(changes[0], Change::Created(_)));
        let hosts = std::fs::read_to_string(dir.path().join("127.0.0.1:5000/hosts.toml")).unwrap();
        assert!(hosts.contains("server = \"http://127.0.0.1:5000\""));
        assert!(hosts.contains("[host.\"http://127.0.0.1:4001\"]"));
        assert!(hosts.contains("X-Dragonfly-Registry = [\"http://127.0.0.1:5000\"]"));
        let docker = std::fs::read_to_string(dir.path().join("docker.io/hosts.toml")).unwrap();
        assert!(docker.contains("server = \"https://registry-1.docker.io\""));
        let again = init(&options(Runtime::Containerd, dir.path())).unwrap();
        assert!(again
            .iter()
            .all(|change| matches!(change, Change::Unchanged(_))));
    }

    #[test]
    fn docker_json_is_merged() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("daemon.json"),
            "{\"log-driver\": \"json-file\"}",
        )
        .unwrap();
        init(&options(Runtime::Docker, dir.path())).unwrap();
        let again = init(&options(Runtime::Docker, dir.path())).unwrap();
        assert!(matches!(again[0], Change::Unchanged(_)));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("daemon.json")).unwrap())
                .unwrap();
        assert_eq!(json["log-driver"], "json-file");
        assert_eq!(
            json["registry-mirrors"],
            serde_json::json!(["http://127.0.0.1:4001"])
        );
    }

    #[test]
    fn registries_conf_lists_mirrors() {
        let dir = tempfile::tempdir().unwrap();
        init(&options(Runtime::Podman, dir.path())).unwrap();
        let text = std::fs::read_to_string(dir.path().join("shoal.conf")).unwrap();
        assert!(text.contains("location = \"docker.io\""));
        assert!(text.contains("location = \"127.0.0.1:4001\"\ninsecure = true"));
    }

    #[test]
    fn bad_input_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut bad = options(Runtime::Containerd, dir.path());
        bad.registries = vec!["../etc".into()];
        assert!(matches!(init(&bad), Err(InitError::Registry(_))));
        let mut bad = options(Runtime::Containerd, dir.path());
        bad.proxy = "127.0.0.1:4001".into();
        assert!(matches!(init(&bad), Err(InitError::Proxy(_))));
        std::fs::write(dir.path().join("daemon.json"), "[1]").unwrap();
        assert!(matches!(
            init(&options(Runtime::Docker, dir.path())),
            Err(InitError::Json { .. })
        ));
    }
}
