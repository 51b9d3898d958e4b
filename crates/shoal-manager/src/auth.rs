//! Personal access tokens: creation, the first admin token, and request checks.
//!
//! A token is 32 random bytes in hex, shown once; the database keeps only its SHA-256 (hex).
//! On a database with no token at all, [`bootstrap`] creates the first admin token: the
//! configured one (`SHOAL_BOOTSTRAP_TOKEN`, for automation) or a random one that the caller
//! prints once.

use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use crate::db::{now_ms, Db, DbError, Token};

/// The name of the token [`bootstrap`] creates.
pub(crate) const ROOT_TOKEN_NAME: &str = "root";

/// The stored form of `token`.
pub(crate) fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random token.
pub(crate) fn generate() -> String {
    let mut bytes = [0_u8; 32];
    // SystemRandom only fails when the OS has no randomness at all; then no token is safe.
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the OS random source works");
    hex::encode(bytes)
}

/// Creates the first admin token when none exists; returns it when it was generated here
/// (None when tokens existed or the token came from `configured`).
pub(crate) async fn bootstrap(
    db: &Db,
    configured: Option<&str>,
) -> Result<Option<String>, DbError> {
    if db.count_tokens().await? > 0 {
        return Ok(None);
    }
    let (token, created) = match configured {
        Some(token) => (token.to_string(), None),
        None => {
            let token = generate();
            (token.clone(), Some(token))
        }
    };
    let scopes = vec!["admin".to_string()];
    match db
        .create_token(ROOT_TOKEN_NAME, &hash(&token), &scopes, None, now_ms())
        .await
    {
        Ok(_) => Ok(created),
        // Another replica bootstrapped the same token at the same moment.
        Err(DbError::Query { .. }) if db.find_token(&hash(&token)).await?.is_some() => Ok(None),
        Err(err) => Err(err),
    }
}

/// The valid token behind an `Authorization: Bearer ...` header value.
pub(crate) async fn check(db: &Db, authorization: Option<&str>) -> Result<Option<Token>, DbError> {
    let Some(token) = authorization.and_then(bearer) else {
        return Ok(None);
    };
    let found = db.find_token(&hash(token)).await?;
    Ok(found.filter(|token| token.is_valid(now_ms())))
}

fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_values_parse() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }

    #[test]
    fn tokens_are_hashed_and_random() {
        let token = generate();
        assert_eq!(token.len(), 64);
        assert_ne!(token, generate());
        assert_eq!(hash(&token).len(), 64);
        assert_ne!(hash(&token), token);
    }
}
