//! Builds a random multi-layer OCI image in an OCI layout directory and pushes it to a registry
//! with `skopeo`.
//!
//! Every byte comes from a seeded RNG and every timestamp is fixed, so the same [`ImageSpec`]
//! always yields the same digests. Layers are gzip'd tars of random files; each layer also
//! rewrites `etc/release`, so unpacking layers in the wrong order shows up in the tree digest.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use flate2::write::GzEncoder;
use rand::{RngCore as _, SeedableRng as _};
use serde_json::json;

use super::registry::Registry;
use super::skopeo::{CopyOptions, Skopeo};
use super::tree::{FileTree, Node};

/// OCI media types used by the built image.
pub mod media_type {
    /// `application/vnd.oci.image.index.v1+json`
    pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// `application/vnd.oci.image.manifest.v1+json`
    pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// `application/vnd.oci.image.config.v1+json`
    pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// `application/vnd.oci.image.layer.v1.tar+gzip`
    pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
}

/// Fixed modification time of every file, so layer digests depend only on the seed.
const MTIME: u64 = 1_700_000_000;

/// What to build.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Repository name in the registry, e.g. `shoal/interop`.
    pub name: String,
    /// Tag that names the image in the layout and in the registry.
    pub tag: String,
    /// Number of layers per platform.
    pub layers: usize,
    /// Bytes of random file content per layer (the gzip'd layer is slightly larger).
    pub layer_size: usize,
    /// Random files per layer; their sizes add up to `layer_size`.
    pub files_per_layer: usize,
    /// Seed of every random byte and size.
    pub seed: u64,
    /// Build an image index with `linux/amd64` and `linux/arm64` (distinct layers) instead of a
    /// single `linux/amd64` manifest.
    pub multi_platform: bool,
}

impl Default for ImageSpec {
    /// Three layers of 7 MiB each (about 21 MB), single platform.
    fn default() -> Self {
        ImageSpec {
            name: "shoal/interop".into(),
            tag: "v1".into(),
            layers: 3,
            layer_size: 7 << 20,
            files_per_layer: 4,
            seed: 1,
            multi_platform: false,
        }
    }
}

/// One layer blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// `sha256:<hex>` of the gzip'd blob, as the registry serves it.
    pub digest: String,
    /// Size of the gzip'd blob in bytes.
    pub size: u64,
    /// `sha256:<hex>` of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: String,
}

/// The image of one platform.
#[derive(Debug, Clone)]
pub struct PlatformImage {
    /// `linux`.
    pub os: String,
    /// `amd64` or `arm64`.
    pub architecture: String,
    /// `sha256:<hex>` of the image manifest.
    pub manifest_digest: String,
    /// Size of the image manifest in bytes.
    pub manifest_size: u64,
    /// `sha256:<hex>` of the config blob.
    pub config_digest: String,
    /// Layers, base first.
    pub layers: Vec<LayerInfo>,
    /// [`FileTree::digest`] of the root filesystem all layers unpack to.
    pub tree_digest: String,
}

/// An image written to an OCI layout directory.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The OCI layout directory.
    pub layout: PathBuf,
    /// Repository name.
    pub name: String,
    /// Tag.
    pub tag: String,
    /// Digest the tag points at: the image index if multi-platform, else the manifest.
    pub digest: String,
    /// Platforms, `linux/amd64` first.
    pub platforms: Vec<PlatformImage>,
}

impl ImageSpec {
    /// Writes the image into `layout` (created if missing). CPU-heavy and blocking: async
    /// callers use [`ImageSpec::build_async`].
    pub fn build(&self, layout: &Path) -> anyhow::Result<BuiltImage> {
        anyhow::ensure!(
            self.layers > 0 && self.files_per_layer > 0,
            "an image needs files"
        );
        let blobs = layout.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).with_context(|| format!("create {}", blobs.display()))?;
        write_file(
            &layout.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;

        let architectures: &[&str] = if self.multi_platform {
            &["amd64", "arm64"]
        } else {
            &["amd64"]
        };
        let mut platforms = Vec::new();
        for (index, architecture) in architectures.iter().enumerate() {
            platforms.push(self.build_platform(layout, architecture, index as u64)?);
        }

        let (media_type, digest, size) = if self.multi_platform {
            let manifests: Vec<_> = platforms
                .iter()
                .map(|platform| {
                    json!({
                        "mediaType": media_type::MANIFEST,
                        "digest": platform.manifest_digest,
                        "size": platform.manifest_size,
                        "platform": { "architecture": platform.architecture, "os": platform.os },
                    })
                })
                .collect();
            let index = json!({
                "schemaVersion": 2,
                "mediaType": media_type::INDEX,
                "manifests": manifests,
            });
            let (digest, size) = write_blob(layout, &serde_json::to_vec(&index)?)?;
            (media_type::INDEX, digest, size)
        } else {
            let platform = &platforms[0];
            (
                media_type::MANIFEST,
                platform.manifest_digest.clone(),
                platform.manifest_size,
            )
        };
        let layout_index = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": media_type,
                "digest": digest,
                "size": size,
                "annotations": { "org.opencontainers.image.ref.name": self.tag },
            }],
        });
        write_file(
            &layout.join("index.json"),
            &serde_json::to_vec(&layout_index)?,
        )?;

        Ok(BuiltImage {
            layout: layout.to_path_buf(),
            name: self.name.clone(),
            tag: self.tag.clone(),
            digest,
            platforms,
        })
    }

    /// [`ImageSpec::build`] on the blocking pool.
    pub async fn build_async(self, layout: PathBuf) -> anyhow::Result<BuiltImage> {
        tokio::task::spawn_blocking(move || self.build(&layout))
            .await
            .context("join the image build task")?
    }

    fn build_platform(
        &self,
        layout: &Path,
        architecture: &str,
        platform_index: u64,
    ) -> anyhow::Result<PlatformImage> {
        let mut tree = FileTree::default();
        let mut layers = Vec::new();
        for layer in 0..self.layers {
            let seed =
                self.seed ^ (platform_index << 32) ^ (layer as u64 + 1).wrapping_mul(0x9e37_79b9);
            let tar = self.layer_tar(architecture, layer, seed, &mut tree)?;
            let diff_id = format!("sha256:{}", crate::sha256_hex(&tar));
            let (digest, size) = write_blob(layout, &gzip(&tar)?)?;
            layers.push(LayerInfo {
                digest,
                size,
                diff_id,
            });
        }

        let config = json!({
            "created": "2023-11-14T22:13:20Z",
            "architecture": architecture,
            "os": "linux",
            "config": { "Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"] },
            "rootfs": {
                "type": "layers",
                "diff_ids": layers.iter().map(|layer| layer.diff_id.clone()).collect::<Vec<_>>(),
            },
            "history": layers.iter().enumerate().map(|(index, _)| json!({
                "created": "2023-11-14T22:13:20Z",
                "created_by": format!("shoal-testkit layer {index}"),
            })).collect::<Vec<_>>(),
        });
        let (config_digest, config_size) = write_blob(layout, &serde_json::to_vec(&config)?)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media_type::MANIFEST,
            "config": { "mediaType": media_type::CONFIG, "digest": config_digest, "size": config_size },
            "layers": layers.iter().map(|layer| json!({
                "mediaType": media_type::LAYER_GZIP,
                "digest": layer.digest,
                "size": layer.size,
            })).collect::<Vec<_>>(),
        });
        let (manifest_digest, manifest_size) = write_blob(layout, &serde_json::to_vec(&manifest)?)?;
        Ok(PlatformImage {
            os: "linux".into(),
            architecture: architecture.into(),
            manifest_digest,
            manifest_size,
            config_digest,
            layers,
            tree_digest: tree.digest(),
        })
    }

    /// The uncompressed tar of one layer; records its entries in `tree`.
    fn layer_tar(
        &self,
        architecture: &str,
        layer: usize,
        seed: u64,
        tree: &mut FileTree,
    ) -> anyhow::Result<Vec<u8>> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut builder = tar::Builder::new(Vec::with_capacity(self.layer_size + (64 << 10)));
        let dir = format!("layer{layer}");
        for path in ["etc", dir.as_str()] {
            append(&mut builder, tree, path, Entry::Dir)?;
        }
        let release = format!(
            "architecture {architecture} layer {layer} seed {}\n",
            self.seed
        );
        append(
            &mut builder,
            tree,
            "etc/release",
            Entry::File {
                mode: 0o644,
                content: release.as_bytes(),
            },
        )?;
        if layer == 0 {
            append(
                &mut builder,
                tree,
                "current",
                Entry::Symlink { target: "layer0" },
            )?;
        }
        for (index, size) in split_sizes(&mut rng, self.layer_size, self.files_per_layer)
            .into_iter()
            .enumerate()
        {
            let mut content = vec![0u8; size];
            rng.fill_bytes(&mut content);
            let mode = if index == 0 { 0o755 } else { 0o644 };
            let path = format!("{dir}/file{index:02}.bin");
            append(
                &mut builder,
                tree,
                &path,
                Entry::File {
                    mode,
                    content: &content,
                },
            )?;
        }
        builder.into_inner().context("finish the layer tar")
    }
}

impl BuiltImage {
    /// `host/name:tag`, e.g. `127.0.0.1:5000/shoal/interop:v1`.
    pub fn reference(&self, host: &str) -> String {
        format!("{host}/{}:{}", self.name, self.tag)
    }

    /// The image of `architecture`, if built.
    pub fn platform(&self, architecture: &str) -> Option<&PlatformImage> {
        self.platforms
            .iter()
            .find(|platform| platform.architecture == architecture)
    }

    /// Bytes a pull of one platform moves: its manifest, config and layer blobs (plus the
    /// index of a multi-platform image). `None` if the platform was not built.
    pub fn pull_bytes(&self, architecture: &str) -> Option<u64> {
        let platform = self.platform(architecture)?;
        let layout = |digest: &str| {
            let path = self
                .layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:"));
            std::fs::metadata(path).map_or(0, |meta| meta.len())
        };
        let index = if self.digest == platform.manifest_digest {
            0
        } else {
            layout(&self.digest)
        };
        let layers: u64 = platform.layers.iter().map(|layer| layer.size).sum();
        Some(index + platform.manifest_size + layout(&platform.config_digest) + layers)
    }

    /// Digests of every layer blob of every platform.
    pub fn layer_digests(&self) -> Vec<String> {
        let layers = self.platforms.iter().flat_map(|platform| &platform.layers);
        layers.map(|layer| layer.digest.clone()).collect()
    }

    /// Pushes all platforms to `registry` (with its credentials when it has token auth) and
    /// returns the pushed reference.
    pub async fn push(&self, registry: &Registry) -> anyhow::Result<String> {
        self.push_to(&registry.host(), registry.credentials()).await
    }

    /// Pushes with `skopeo copy --all --preserve-digests` to the plain-HTTP registry at
    /// `host` and returns `host/name:tag`.
    pub async fn push_to(
        &self,
        host: &str,
        credentials: Option<(&str, &str)>,
    ) -> anyhow::Result<String> {
        let options = CopyOptions {
            dest_credentials: credentials.map(|(user, password)| (user.into(), password.into())),
            ..CopyOptions::default()
        };
        self.push_with(host, options).await
    }

    /// [`BuiltImage::push_to`] with further `skopeo copy` options, e.g. a network namespace to
    /// push from; every platform is pushed with its digests preserved whatever `options` say.
    pub async fn push_with(&self, host: &str, options: CopyOptions) -> anyhow::Result<String> {
        let reference = self.reference(host);
        let source = format!("oci:{}:{}", self.layout.display(), self.tag);
        let options = CopyOptions {
            all_platforms: true,
            ..options
        };
        Skopeo::new()?
            .copy(&source, &format!("docker://{reference}"), &options)
            .await
            .with_context(|| format!("push {reference}"))?;
        Ok(reference)
    }
}

enum Entry<'a> {
    Dir,
    File { mode: u32, content: &'a [u8] },
    Symlink { target: &'a str },
}

fn append(
    builder: &mut tar::Builder<Vec<u8>>,
    tree: &mut FileTree,
    path: &str,
    entry: Entry<'_>,
) -> anyhow::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(MTIME);
    let appended = match entry {
        Entry::Dir => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            tree.insert(path, Node::Dir { mode: 0o755 });
            builder.append_data(&mut header, format!("{path}/"), std::io::empty())
        }
        Entry::File { mode, content } => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(mode);
            header.set_size(content.len() as u64);
            let sha256 = crate::sha256_hex(content);
            tree.insert(path, Node::File { mode, sha256 });
            builder.append_data(&mut header, path, content)
        }
        Entry::Symlink { target } => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            tree.insert(
                path,
                Node::Symlink {
                    target: target.into(),
                },
            );
            builder.append_link(&mut header, path, target)
        }
    };
    appended.with_context(|| format!("append {path} to a layer tar"))
}

/// `count` sizes adding up to `total`, each at least 1 byte when `total >= count`.
fn split_sizes(rng: &mut impl rand::Rng, total: usize, count: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = (1..count).map(|_| rng.gen_range(0..=total)).collect();
    cuts.push(0);
    cuts.push(total);
    cuts.sort_unstable();
    cuts.windows(2).map(|pair| pair[1] - pair[0]).collect()
}

fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write as _;
    // `GzBuilder` leaves the header's mtime at 0, so the blob digest depends only on `bytes`.
    let mut encoder: GzEncoder<Vec<u8>> = flate2::GzBuilder::new().write(
        Vec::with_capacity(bytes.len() + 1024),
        flate2::Compression::fast(),
    );
    encoder.write_all(bytes).context("gzip a layer")?;
    encoder.finish().context("gzip a layer")
}

/// Writes `bytes` as a content-addressed blob; returns its digest and size.
fn write_blob(layout: &Path, bytes: &[u8]) -> anyhow::Result<(String, u64)> {
    let hex = crate::sha256_hex(bytes);
    write_file(&layout.join("blobs/sha256").join(&hex), bytes)?;
    Ok((format!("sha256:{hex}"), bytes.len() as u64))
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(multi_platform: bool) -> ImageSpec {
        ImageSpec {
            layers: 2,
            layer_size: 10_000,
            files_per_layer: 3,
            multi_platform,
            ..ImageSpec::default()
        }
    }

    #[test]
    fn same_spec_same_digests() {
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = small(false).build(one.path()).unwrap();
        let second = small(false).build(two.path()).unwrap();
        assert_eq!(first.digest, second.digest);
        assert_eq!(
            first.platforms[0].tree_digest,
            second.platforms[0].tree_digest
        );
        assert_eq!(first.platforms[0].layers.len(), 2);
    }

    #[test]
    fn layer_unpacks_to_the_recorded_tree() {
        let dir = tempfile::tempdir().unwrap();
        let image = small(false).build(dir.path()).unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir(&root).unwrap();
        for layer in &image.platforms[0].layers {
            let blob = dir
                .path()
                .join("blobs/sha256")
                .join(layer.digest.trim_start_matches("sha256:"));
            let file = std::fs::File::open(blob).unwrap();
            let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
            archive.set_preserve_permissions(true);
            archive.set_overwrite(true);
            archive.unpack(&root).unwrap();
        }
        let tree = FileTree::from_dir(&root).unwrap();
        assert_eq!(tree.digest(), image.platforms[0].tree_digest);
    }

    #[test]
    fn pull_bytes_add_up_the_blobs_of_one_platform() {
        let dir = tempfile::tempdir().unwrap();
        let image = small(false).build(dir.path()).unwrap();
        let blobs: u64 = std::fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .map(|entry| entry.unwrap().metadata().unwrap().len())
            .sum();
        assert_eq!(image.pull_bytes("amd64"), Some(blobs));
        assert!(blobs > 2 * 10_000);
        assert_eq!(image.pull_bytes("s390x"), None);
    }

    #[test]
    fn multi_platform_has_an_index_and_distinct_layers() {
        let dir = tempfile::tempdir().unwrap();
        let image = small(true).build(dir.path()).unwrap();
        assert_eq!(image.platforms.len(), 2);
        assert!(image.platform("arm64").is_some());
        assert_ne!(image.digest, image.platforms[0].manifest_digest);
        let digests = image.layer_digests();
        let unique: std::collections::HashSet<_> = digests.iter().collect();
        assert_eq!(unique.len(), digests.len());
    }

    #[test]
    fn sizes_add_up() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let sizes = split_sizes(&mut rng, 1000, 4);
        assert_eq!(sizes.len(), 4);
        assert_eq!(sizes.iter().sum::<usize>(), 1000);
    }
}
