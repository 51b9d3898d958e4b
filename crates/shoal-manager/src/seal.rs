//! Sealing of job credentials at rest (ChaCha20-Poly1305).
//!
//! A job may carry registry credentials (an `Authorization` header, or a username and password).
//! They are stored sealed: `nonce (12 bytes) || ciphertext || tag`, under a 32-byte key that
//! never enters the database. The key comes from the config (`SHOAL_MANAGER_SECRET_KEY`, the
//! same on every replica sharing a database) or from `DATA_DIR/secret.key`, created with mode
//! 0600 on first start.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// Sealing or opening failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("read key file {path}")]
    ReadKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("write key file {path}")]
    WriteKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path} does not hold 32 bytes")]
    BadKey { path: PathBuf },
    #[error("draw random bytes")]
    Random,
    #[error("sealed credentials are damaged or were sealed with another key")]
    Open,
}

/// Seals and opens byte strings with one key; cheap to clone.
#[derive(Clone)]
pub(crate) struct Sealer {
    key: [u8; 32],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer { key: <redacted> }")
    }
}

impl Sealer {
    pub(crate) fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// Reads the key at `path`, creating it (0600, random) when absent.
    pub(crate) fn from_key_file(path: &Path) -> Result<Self, SealError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let key =
                    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| SealError::BadKey {
                        path: path.to_path_buf(),
                    })?;
                Ok(Self::new(key))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0_u8; 32];
                SystemRandom::new()
                    .fill(&mut key)
                    .map_err(|_| SealError::Random)?;
                write_private(path, &key).map_err(|source| SealError::WriteKey {
                    path: path.to_path_buf(),
                    source,
                })?;
                Ok(Self::new(key))
            }
            Err(source) => Err(SealError::ReadKey {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn key(&self) -> LessSafeKey {
        LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &self.key).expect("a 32-byte chacha20 key"),
        )
    }

    /// `plain` sealed under a fresh random nonce.
    pub(crate) fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0_u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Random)?;
        let mut buffer = plain.to_vec();
        self.key()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut buffer,
            )
            .map_err(|_| SealError::Random)?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&buffer);
        Ok(sealed)
    }

    /// The plaintext of `sealed`.
    pub(crate) fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut buffer = body.to_vec();
        let plain = self
            .key()
            .open_in_place(nonce, Aad::empty(), &mut buffer)
            .map_err(|_| SealError::Open)?;
        Ok(plain.to_vec())
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_open_and_hide_the_plaintext() {
        let sealer = Sealer::new([7; 32]);
        let sealed = sealer.seal(b"Basic dXNlcjpzZWNyZXQ=").unwrap();
        assert!(!sealed.windows(6).any(|window| window == b"dXNlcj"));
        assert_eq!(sealer.open(&sealed).unwrap(), b"Basic dXNlcjpzZWNyZXQ=");
        assert!(Sealer::new([8; 32]).open(&sealed).is_err());
        assert!(sealer.open(&sealed[..5]).is_err());
    }

    #[test]
    fn the_key_file_is_created_once_and_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let first = Sealer::from_key_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = Sealer::from_key_file(&path).unwrap();
        let sealed = first.seal(b"x").unwrap();
        assert_eq!(second.open(&sealed).unwrap(), b"x");
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(
            Sealer::from_key_file(&path),
            Err(SealError::BadKey { .. })
        ));
    }
}
