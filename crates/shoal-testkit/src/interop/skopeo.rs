//! Runs `skopeo copy` hermetically: its own signature policy, an empty auth file, and a
//! generated `registries.conf` (which is how a mirror is configured for skopeo and every other
//! containers/image user such as podman and CRI-O).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;

use super::image::media_type;

/// Debian package that ships `skopeo`.
pub const PACKAGE: &str = "skopeo";

/// How long one copy may take.
const COPY_TIMEOUT: Duration = Duration::from_secs(180);

/// Options of one `skopeo copy`.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// `--src-creds user:password`; without it `--src-no-creds`.
    pub src_credentials: Option<(String, String)>,
    /// `--dest-creds user:password`; without it `--dest-no-creds`.
    pub dest_credentials: Option<(String, String)>,
    /// `--all`: copy every platform of an image index, not just the host's.
    pub all_platforms: bool,
    /// `--registries-conf FILE`; without it an empty file, so the host's config is ignored.
    pub registries_conf: Option<PathBuf>,
    /// Run inside this network namespace (`ip netns exec NS skopeo ...`).
    pub netns: Option<String>,
}

/// A `skopeo` program with a private directory for its policy, auth and registries files.
#[derive(Debug)]
pub struct Skopeo {
    program: PathBuf,
    dir: tempfile::TempDir,
}

/// An image copied into an OCI layout directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedImage {
    /// The OCI layout directory.
    pub layout: PathBuf,
    /// Digest of the top-level manifest or index in the layout's `index.json`.
    pub manifest_digest: String,
    /// Media type of that top-level object.
    pub media_type: String,
    /// `(digest, size)` of every layer in the layout, over all platforms copied, in order.
    pub layers: Vec<(String, u64)>,
}

impl Skopeo {
    /// Finds `skopeo` (failing with the package to install) and writes its private files.
    pub fn new() -> anyhow::Result<Skopeo> {
        let program = super::require_program("skopeo", PACKAGE)?;
        let dir = tempfile::Builder::new()
            .prefix("shoal-skopeo-")
            .tempdir()
            .context("create a skopeo directory")?;
        let policy = r#"{"default":[{"type":"insecureAcceptAnything"}]}"#;
        write(&dir.path().join("policy.json"), policy)?;
        write(&dir.path().join("auth.json"), r#"{"auths":{}}"#)?;
        write(
            &dir.path().join("registries.conf"),
            "unqualified-search-registries = []\n",
        )?;
        Ok(Skopeo { program, dir })
    }

    /// `skopeo copy SRC DEST` with TLS verification off on both sides (every registry in our
    /// tests is plain HTTP on loopback).
    pub async fn copy(&self, src: &str, dest: &str, options: &CopyOptions) -> anyhow::Result<()> {
        let private = self.dir.path();
        let registries_conf = options
            .registries_conf
            .clone()
            .unwrap_or_else(|| private.join("registries.conf"));
        let mut command = super::command_in(options.netns.as_deref(), &self.program);
        command
            .env("REGISTRY_AUTH_FILE", private.join("auth.json"))
            .arg("--policy")
            .arg(private.join("policy.json"))
            .arg("--registries-conf")
            .arg(registries_conf)
            .arg("--tmpdir")
            .arg(private)
            .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
            .arg("--authfile")
            .arg(private.join("auth.json"));
        match &options.src_credentials {
            Some((user, password)) => command.arg("--src-creds").arg(format!("{user}:{password}")),
            None => command.arg("--src-no-creds"),
        };
        match &options.dest_credentials {
            Some((user, password)) => command
                .arg("--dest-creds")
                .arg(format!("{user}:{password}")),
            None => command.arg("--dest-no-creds"),
        };
        if options.all_platforms {
            command.args(["--all", "--preserve-digests"]);
        }
        command.args([src, dest]);
        super::run(&mut command, COPY_TIMEOUT).await?;
        Ok(())
    }
}

/// Writes `dir/registries.conf` that sends pulls of `registry_host` (e.g. `127.0.0.1:5000`)
/// through the plain-HTTP mirror at `mirror_host` (e.g. `127.0.0.1:4001`); returns its path.
/// containers/image falls back to the registry itself when the mirror fails.
pub fn write_registries_conf(
    dir: &Path,
    registry_host: &str,
    mirror_host: &str,
) -> anyhow::Result<PathBuf> {
    let path = dir.join("registries.conf");
    let conf = format!(
        "unqualified-search-registries = []\n\
         \n\
         [[registry]]\n\
         location = \"{registry_host}\"\n\
         insecure = true\n\
         \n\
         [[registry.mirror]]\n\
         location = \"{mirror_host}\"\n\
         insecure = true\n"
    );
    write(&path, &conf)?;
    Ok(path)
}

/// `skopeo --registries-conf FILE copy --src-tls-verify=false docker://SRC oci:DEST_DIR`:
/// pulls `src` (`host/name:tag` or `host/name@digest`) through the mirrors that
/// `registries_conf` (see [`write_registries_conf`]) sets up.
pub async fn copy_via_mirror(
    registries_conf: &Path,
    src: &str,
    dest_dir: &Path,
) -> anyhow::Result<CopiedImage> {
    let options = CopyOptions {
        registries_conf: Some(registries_conf.to_path_buf()),
        ..CopyOptions::default()
    };
    copy_to_layout(src, dest_dir, &options).await
}

/// Pulls `src` straight from its registry (no mirror) into the OCI layout `dest_dir`.
pub async fn copy_direct(
    src: &str,
    dest_dir: &Path,
    credentials: Option<(&str, &str)>,
) -> anyhow::Result<CopiedImage> {
    let options = CopyOptions {
        src_credentials: credentials.map(|(user, password)| (user.into(), password.into())),
        ..CopyOptions::default()
    };
    copy_to_layout(src, dest_dir, &options).await
}

/// Pulls `src` with `options` into the OCI layout `dest_dir` and reads back what arrived.
pub async fn copy_to_layout(
    src: &str,
    dest_dir: &Path,
    options: &CopyOptions,
) -> anyhow::Result<CopiedImage> {
    let dest = format!("oci:{}", dest_dir.display());
    Skopeo::new()?
        .copy(&format!("docker://{src}"), &dest, options)
        .await?;
    read_oci_layout(dest_dir)
}

/// Reads the single top-level image of an OCI layout and the layers of every manifest present.
pub fn read_oci_layout(layout: &Path) -> anyhow::Result<CopiedImage> {
    let index = read_json(&layout.join("index.json"))?;
    let top = index["manifests"]
        .as_array()
        .and_then(|manifests| manifests.first())
        .context("index.json lists no manifest")?;
    let manifest_digest = string_field(top, "digest")?;
    let media_type = string_field(top, "mediaType")?;
    let mut layers = Vec::new();
    collect_layers(layout, &manifest_digest, &mut layers)?;
    Ok(CopiedImage {
        layout: layout.to_path_buf(),
        manifest_digest,
        media_type,
        layers,
    })
}

fn collect_layers(
    layout: &Path,
    digest: &str,
    layers: &mut Vec<(String, u64)>,
) -> anyhow::Result<()> {
    let path = blob_path(layout, digest);
    if !path.exists() {
        // A platform that was not copied (no `--all`).
        return Ok(());
    }
    let object = read_json(&path)?;
    if object["mediaType"] == media_type::INDEX || object["manifests"].is_array() {
        for manifest in object["manifests"].as_array().into_iter().flatten() {
            collect_layers(layout, &string_field(manifest, "digest")?, layers)?;
        }
        return Ok(());
    }
    for layer in object["layers"].as_array().into_iter().flatten() {
        let size = layer["size"]
            .as_u64()
            .context("layer descriptor has no size")?;
        layers.push((string_field(layer, "digest")?, size));
    }
    Ok(())
}

/// `layout/blobs/<algorithm>/<hex>` of `digest`.
pub fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let (algorithm, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    layout.join("blobs").join(algorithm).join(hex)
}

fn string_field(value: &Value, field: &str) -> anyhow::Result<String> {
    value[field]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("descriptor has no {field}"))
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parse {}", path.display()))
}

fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interop::image::ImageSpec;

    #[test]
    fn reads_layers_of_a_built_layout() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ImageSpec {
            layer_size: 1000,
            multi_platform: true,
            ..ImageSpec::default()
        };
        let image = spec.build(dir.path()).unwrap();
        let copied = read_oci_layout(dir.path()).unwrap();
        assert_eq!(copied.manifest_digest, image.digest);
        assert_eq!(copied.media_type, media_type::INDEX);
        let digests: Vec<_> = copied
            .layers
            .into_iter()
            .map(|(digest, _)| digest)
            .collect();
        assert_eq!(digests, image.layer_digests());
    }

    #[test]
    fn registries_conf_names_registry_and_mirror() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_registries_conf(dir.path(), "127.0.0.1:5000", "127.0.0.1:4001").unwrap();
        let conf = std::fs::read_to_string(path).unwrap();
        assert!(conf.contains("location = \"127.0.0.1:5000\""));
        assert!(
            conf.contains("[[registry.mirror]]\nlocation = \"127.0.0.1:4001\"\ninsecure = true")
        );
    }
}
