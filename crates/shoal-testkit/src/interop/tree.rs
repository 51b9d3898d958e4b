//! A canonical digest of a file tree, so an image built in memory can be compared with the
//! root filesystem a real runtime unpacked from it.
//!
//! The digest covers, for every entry below the root: its relative path, its kind (directory,
//! regular file, symlink), its permission bits, and its content (SHA-256 of a file, target of a
//! link). Owners, timestamps and extended attributes are left out: they legitimately differ
//! between unpackers.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;

use anyhow::Context as _;
use sha2::Digest as _;

/// One entry of a [`FileTree`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory with these permission bits.
    Dir { mode: u32 },
    /// A regular file with these permission bits and this lowercase hex SHA-256.
    File { mode: u32, sha256: String },
    /// A symbolic link to `target`.
    Symlink { target: String },
}

/// Entries by relative path (`/`-separated, no leading `/`, no `.`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileTree {
    entries: BTreeMap<String, Node>,
}

impl FileTree {
    /// Adds or replaces the entry at `path`, as a later image layer replaces an earlier one.
    pub fn insert(&mut self, path: &str, node: Node) {
        let path = path.trim_start_matches("./").trim_matches('/');
        if !path.is_empty() {
            self.entries.insert(path.to_owned(), node);
        }
    }

    /// The entries, sorted by path.
    pub fn entries(&self) -> &BTreeMap<String, Node> {
        &self.entries
    }

    /// `sha256:<hex>` over the canonical listing of all entries.
    pub fn digest(&self) -> String {
        let mut hasher = sha2::Sha256::new();
        for (path, node) in &self.entries {
            let line = match node {
                Node::Dir { mode } => format!("d {:o} {path}\n", mode & 0o7777),
                Node::File { mode, sha256 } => format!("f {:o} {path} {sha256}\n", mode & 0o7777),
                Node::Symlink { target } => format!("l 777 {path} {target}\n"),
            };
            hasher.update(line.as_bytes());
        }
        format!("sha256:{}", hex::encode(hasher.finalize()))
    }

    /// Reads the tree below `root` without following symlinks. Blocking: call it from
    /// `spawn_blocking`.
    pub fn from_dir(root: &Path) -> anyhow::Result<FileTree> {
        let mut tree = FileTree::default();
        walk(root, "", &mut tree)?;
        Ok(tree)
    }
}

fn walk(dir: &Path, prefix: &str, tree: &mut FileTree) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let entries = std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("list {}", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let relative = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta =
            std::fs::symlink_metadata(&path).with_context(|| format!("stat {}", path.display()))?;
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path)
                .with_context(|| format!("read link {}", path.display()))?;
            let target = target.to_string_lossy().into_owned();
            tree.insert(&relative, Node::Symlink { target });
        } else if meta.is_dir() {
            tree.insert(&relative, Node::Dir { mode });
            walk(&path, &relative, tree)?;
        } else if meta.is_file() {
            let sha256 = file_sha256(&path)?;
            tree.insert(&relative, Node::File { mode, sha256 });
        } else {
            anyhow::bail!(
                "unexpected special file {} in an unpacked image",
                path.display()
            );
        }
    }
    Ok(())
}

fn file_sha256(path: &Path) -> anyhow::Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = file
            .read(&mut buffer)
            .with_context(|| format!("read {}", path.display()))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_was_written() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::set_permissions(
            dir.path().join("etc"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/release"), b"one").unwrap();
        std::fs::set_permissions(
            dir.path().join("etc/release"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        std::os::unix::fs::symlink("etc", dir.path().join("link")).unwrap();

        let mut expected = FileTree::default();
        expected.insert("etc/", Node::Dir { mode: 0o755 });
        expected.insert(
            "./etc/release",
            Node::File {
                mode: 0o640,
                sha256: crate::sha256_hex(b"one"),
            },
        );
        expected.insert(
            "link",
            Node::Symlink {
                target: "etc".into(),
            },
        );

        let actual = FileTree::from_dir(dir.path()).unwrap();
        assert_eq!(actual, expected);
        assert_eq!(actual.digest(), expected.digest());
    }

    #[test]
    fn a_later_entry_replaces_an_earlier_one() {
        let mut tree = FileTree::default();
        tree.insert(
            "a",
            Node::File {
                mode: 0o644,
                sha256: "00".into(),
            },
        );
        let before = tree.digest();
        tree.insert(
            "a",
            Node::File {
                mode: 0o644,
                sha256: "11".into(),
            },
        );
        assert_ne!(tree.digest(), before);
        assert_eq!(tree.entries().len(), 1);
    }
}
