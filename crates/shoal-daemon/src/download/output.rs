//! Placing finished content at the requested path, and whole-content digest checks.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::Digest as _;
use shoal_types::ContentDigest;

use super::DownloadError;

/// Copies `content` to `output` through a temporary file beside it, renamed on success; on
/// failure `output` is untouched and the temporary file removed.
pub(crate) async fn copy_atomically(
    content: &Path,
    output: &Path,
    length: u64,
) -> Result<(), DownloadError> {
    let content = content.to_path_buf();
    let output = output.to_path_buf();
    tokio::task::spawn_blocking(move || copy_blocking(&content, &output, length))
        .await
        .map_err(|_| DownloadError::Cancelled)?
}

fn copy_blocking(content: &Path, output: &Path, length: u64) -> Result<(), DownloadError> {
    let error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DownloadError::Output { path, source }
    };
    let parent = output
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = output
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A unique name per download: two downloads to one path never share a temporary file.
    let short: String = name.chars().take(100).collect();
    let temp: PathBuf = parent.join(format!(".{short}.shoal-{:016x}.tmp", rand::random::<u64>()));
    match std::fs::metadata(output) {
        Ok(existing) if !existing.is_file() => {
            return Err(DownloadError::Output {
                path: output.to_path_buf(),
                source: std::io::Error::other(
                    "exists and is not a regular file; refusing to replace it",
                ),
            });
        }
        _ => {}
    }
    let result = (|| {
        let mut source = std::fs::File::open(content).map_err(error(content))?;
        let mut target = std::fs::File::create(&temp).map_err(error(&temp))?;
        let copied =
            std::io::copy(&mut (&mut source).take(length), &mut target).map_err(error(&temp))?;
        if copied != length {
            return Err(DownloadError::Output {
                path: temp.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "content shorter than its length",
                ),
            });
        }
        target.sync_all().map_err(error(&temp))?;
        std::fs::rename(&temp, output).map_err(error(output))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Checks the whole content against the digest the user asked for.
pub(crate) async fn verify_digest(
    content: &Path,
    expected: &ContentDigest,
) -> Result<(), DownloadError> {
    let path = content.to_path_buf();
    let algorithm = expected.algorithm();
    let actual = tokio::task::spawn_blocking(move || hash_file(&path, algorithm))
        .await
        .map_err(|_| DownloadError::Cancelled)?
        .map_err(|source| DownloadError::Output {
            path: content.to_path_buf(),
            source,
        })?;
    if actual != expected.hex() {
        return Err(DownloadError::DigestMismatch {
            expected: expected.to_string(),
            actual: format!("{algorithm}:{actual}"),
        });
    }
    Ok(())
}

fn hash_file(path: &Path, algorithm: &str) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut buffer = vec![0u8; 1024 * 1024];
    if algorithm == "sha512" {
        let mut hasher = sha2::Sha512::new();
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                return Ok(hex::encode(hasher.finalize()));
            }
            hasher.update(&buffer[..read]);
        }
    }
    let mut hasher = sha2::Sha256::new();
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buffer[..read]);
    }
}
