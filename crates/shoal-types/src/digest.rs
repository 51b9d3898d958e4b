//! Piece digests (`crc32:<decimal IEEE>`) and whole-content digests (`sha256:<hex>`).

use std::fmt;
use std::str::FromStr;

/// The digest of one piece: CRC-32/ISO-HDLC (the IEEE/zlib CRC) over exactly the piece bytes,
/// printed as `crc32:<unsigned decimal>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PieceDigest(u32);

/// Why a digest string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestParseError {
    #[error("digest {0:?} has no algorithm prefix")]
    MissingAlgorithm(String),
    #[error("digest algorithm {0:?} is not supported")]
    UnsupportedAlgorithm(String),
    #[error("digest value {0:?} is malformed")]
    MalformedValue(String),
}

impl PieceDigest {
    /// Computes the digest of `bytes`.
    pub fn compute(bytes: &[u8]) -> Self {
        Self(crc32fast::hash(bytes))
    }

    /// Builds the digest from a CRC value.
    pub fn from_crc(crc: u32) -> Self {
        Self(crc)
    }

    /// The CRC value.
    pub fn crc(self) -> u32 {
        self.0
    }
}

impl fmt::Display for PieceDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "crc32:{}", self.0)
    }
}

impl FromStr for PieceDigest {
    type Err = DigestParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (algorithm, value) = s
            .split_once(':')
            .ok_or_else(|| DigestParseError::MissingAlgorithm(s.to_string()))?;
        if algorithm != "crc32" {
            return Err(DigestParseError::UnsupportedAlgorithm(
                algorithm.to_string(),
            ));
        }
        // Decimal only: no sign, no padding tricks beyond what u32 parsing accepts.
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DigestParseError::MalformedValue(value.to_string()));
        }
        value
            .parse::<u32>()
            .map(Self)
            .map_err(|_| DigestParseError::MalformedValue(value.to_string()))
    }
}

/// A whole-content digest a user can ask for (`--digest`): sha256 or sha512 as lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ContentDigest {
    Sha256(String),
    Sha512(String),
}

impl ContentDigest {
    /// The algorithm name as used in the digest string.
    pub fn algorithm(&self) -> &'static str {
        match self {
            Self::Sha256(_) => "sha256",
            Self::Sha512(_) => "sha512",
        }
    }

    /// The lowercase hex value.
    pub fn hex(&self) -> &str {
        match self {
            Self::Sha256(hex) | Self::Sha512(hex) => hex,
        }
    }
}

impl fmt::Display for ContentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm(), self.hex())
    }
}

impl FromStr for ContentDigest {
    type Err = DigestParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (algorithm, value) = s
            .split_once(':')
            .ok_or_else(|| DigestParseError::MissingAlgorithm(s.to_string()))?;
        let expected_len = match algorithm {
            "sha256" => 64,
            "sha512" => 128,
            other => return Err(DigestParseError::UnsupportedAlgorithm(other.to_string())),
        };
        if value.len() != expected_len || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DigestParseError::MalformedValue(value.to_string()));
        }
        let hex = value.to_ascii_lowercase();
        Ok(match algorithm {
            "sha256" => Self::Sha256(hex),
            _ => Self::Sha512(hex),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_vectors_from_wire_reference() {
        assert_eq!(
            PieceDigest::compute(b"hello world").to_string(),
            "crc32:222957957"
        );
        assert_eq!(
            PieceDigest::compute(b"test content").to_string(),
            "crc32:1475635037"
        );
        assert_ne!(PieceDigest::compute(b"hello world").crc(), 3_381_945_770);
    }

    #[test]
    fn piece_digest_round_trips_and_rejects_other_algorithms() {
        let digest: PieceDigest = "crc32:222957957".parse().unwrap();
        assert_eq!(digest.to_string(), "crc32:222957957");
        assert!("crc32c:1".parse::<PieceDigest>().is_err());
        assert!("crc32:".parse::<PieceDigest>().is_err());
        assert!("crc32:-1".parse::<PieceDigest>().is_err());
        assert!("".parse::<PieceDigest>().is_err());
    }

    #[test]
    fn content_digest_parses_sha256() {
        let hex = "a".repeat(64);
        let digest: ContentDigest = format!("sha256:{hex}").parse().unwrap();
        assert_eq!(digest, ContentDigest::Sha256(hex));
        assert!("sha256:abc".parse::<ContentDigest>().is_err());
        assert!("md5:abc".parse::<ContentDigest>().is_err());
    }
}
