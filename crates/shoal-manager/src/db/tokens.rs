//! Personal access tokens. Only the SHA-256 hash of a token is stored; the token itself is
//! shown once, when it is created.

use serde::Serialize;
use sqlx::any::AnyRow;

use super::{col, query_err, Db, DbError};

/// A stored token (without its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Token {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) created_ms: i64,
    /// None: never expires.
    pub(crate) expires_ms: Option<i64>,
    pub(crate) revoked: bool,
}

impl Token {
    /// Whether the token may authenticate a request at `now_ms`.
    pub(crate) fn is_valid(&self, now_ms: i64) -> bool {
        !self.revoked && self.expires_ms.is_none_or(|expires| expires > now_ms)
    }
}

const COLUMNS: &str = "id, name, scopes, created_ms, expires_ms, revoked";

fn from_row(row: &AnyRow) -> Result<Token, DbError> {
    let scopes: String = col(row, "scopes")?;
    Ok(Token {
        id: col(row, "id")?,
        name: col(row, "name")?,
        scopes: serde_json::from_str(&scopes).map_err(|source| DbError::Corrupt {
            table: "personal_access_tokens",
            column: "scopes",
            source,
        })?,
        created_ms: col(row, "created_ms")?,
        expires_ms: col(row, "expires_ms")?,
        revoked: col::<i64>(row, "revoked")? != 0,
    })
}

impl Db {
    /// How many tokens exist, revoked ones included.
    pub(crate) async fn count_tokens(&self) -> Result<i64, DbError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM personal_access_tokens")
            .fetch_one(self.pool())
            .await
            .map_err(query_err("count tokens"))?;
        col(&row, "n")
    }

    /// Stores a token by its hash.
    pub(crate) async fn create_token(
        &self,
        name: &str,
        token_hash: &str,
        scopes: &[String],
        expires_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<Token, DbError> {
        let scopes = serde_json::to_string(scopes).unwrap_or_else(|_| "[]".to_string());
        let row = sqlx::query(&format!(
            "INSERT INTO personal_access_tokens (name, token_hash, scopes, created_ms, \
             expires_ms, revoked) VALUES ($1, $2, $3, $4, $5, 0) RETURNING {COLUMNS}"
        ))
        .bind(name.to_string())
        .bind(token_hash.to_string())
        .bind(scopes)
        .bind(now_ms)
        .bind(expires_ms)
        .fetch_one(self.pool())
        .await
        .map_err(query_err("create a token"))?;
        from_row(&row)
    }

    /// The token whose hash is `token_hash`.
    pub(crate) async fn find_token(&self, token_hash: &str) -> Result<Option<Token>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM personal_access_tokens WHERE token_hash = $1"
        ))
        .bind(token_hash.to_string())
        .fetch_optional(self.pool())
        .await
        .map_err(query_err("look up a token"))?;
        row.as_ref().map(from_row).transpose()
    }

    /// Every token, by id.
    pub(crate) async fn list_tokens(&self) -> Result<Vec<Token>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM personal_access_tokens ORDER BY id"
        ))
        .fetch_all(self.pool())
        .await
        .map_err(query_err("list tokens"))?;
        rows.iter().map(from_row).collect()
    }

    /// Revokes token `id`; it stays listed but no longer authenticates.
    pub(crate) async fn revoke_token(&self, id: i64) -> Result<(), DbError> {
        let done = sqlx::query("UPDATE personal_access_tokens SET revoked = 1 WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(query_err("revoke a token"))?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound { what: "token", id });
        }
        Ok(())
    }

    /// Applications (name, url, bio, priority JSON), by id.
    pub(crate) async fn list_applications(
        &self,
    ) -> Result<Vec<(i64, String, String, String, String)>, DbError> {
        let rows = sqlx::query("SELECT id, name, url, bio, priority FROM applications ORDER BY id")
            .fetch_all(self.pool())
            .await
            .map_err(query_err("list applications"))?;
        rows.iter()
            .map(|row| {
                Ok((
                    col(row, "id")?,
                    col(row, "name")?,
                    col(row, "url")?,
                    col(row, "bio")?,
                    col(row, "priority")?,
                ))
            })
            .collect()
    }
}
