//! Enrolment tokens (migration 0008): an [`EnrollmentStore`] trait (part of
//! every [`Store`](super::Store)), the same SQL on both stores; the macro
//! only supplies each store's pool.

use async_trait::async_trait;
use sysmon_core::UnixTime;

use crate::error::Result;

/// An enrolment token as admins see it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    pub id: i64,
    pub note: String,
    pub created_at: UnixTime,
    /// `None`: never expires.
    pub expires_at: Option<UnixTime>,
    /// Registrations it still allows; `None`: any number.
    pub uses_left: Option<i64>,
    /// Registrations made with it.
    pub used: i64,
}

/// What an admin asks for when creating a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEnrollmentToken {
    pub note: String,
    pub expires_at_us: Option<i64>,
    pub uses: Option<i64>,
}

#[async_trait]
pub trait EnrollmentStore: Send + Sync {
    /// Stores a token by its hash; its id.
    async fn create_enrollment_token(
        &self,
        token_hash: &[u8],
        token: &NewEnrollmentToken,
    ) -> Result<i64>;

    /// Takes one use of the token, atomically, if it exists, has not
    /// expired by `now_us` and has a use left; whether it did.
    async fn redeem_enrollment_token(&self, token_hash: &[u8], now_us: i64) -> Result<bool>;

    async fn enrollment_tokens(&self) -> Result<Vec<EnrollmentToken>>;

    /// Deletes a token; false when there was none.
    async fn revoke_enrollment_token(&self, id: i64) -> Result<bool>;
}

/// `impl EnrollmentStore for $store`, for a store with a sqlx `pool` field.
macro_rules! impl_enrollment_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::EnrollmentStore for $store {
            async fn create_enrollment_token(
                &self,
                token_hash: &[u8],
                token: &$crate::store::NewEnrollmentToken,
            ) -> $crate::error::Result<i64> {
                Ok(sqlx::query_scalar(
                    "INSERT INTO enrollment_tokens
                        (token_hash, note, created_at_us, expires_at_us, uses_left)
                     VALUES ($1, $2, $3, $4, $5) RETURNING id",
                )
                .bind(token_hash)
                .bind(&token.note)
                .bind($crate::store::now_micros())
                .bind(token.expires_at_us)
                .bind(token.uses)
                .fetch_one(&self.pool)
                .await?)
            }

            async fn redeem_enrollment_token(
                &self,
                token_hash: &[u8],
                now_us: i64,
            ) -> $crate::error::Result<bool> {
                let redeemed = sqlx::query(
                    "UPDATE enrollment_tokens
                     SET uses_left = uses_left - 1, used = used + 1
                     WHERE token_hash = $1
                       AND (uses_left IS NULL OR uses_left > 0)
                       AND (expires_at_us IS NULL OR expires_at_us > $2)",
                )
                .bind(token_hash)
                .bind(now_us)
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(redeemed == 1)
            }

            async fn enrollment_tokens(
                &self,
            ) -> $crate::error::Result<Vec<$crate::store::EnrollmentToken>> {
                let rows = sqlx::query_as::<_, (i64, String, i64, Option<i64>, Option<i64>, i64)>(
                    "SELECT id, note, created_at_us, expires_at_us, uses_left, used
                     FROM enrollment_tokens ORDER BY id",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, note, created, expires, uses_left, used)| {
                        $crate::store::EnrollmentToken {
                            id,
                            note,
                            created_at: sysmon_core::UnixTime::from_micros(created),
                            expires_at: expires.map(sysmon_core::UnixTime::from_micros),
                            uses_left,
                            used,
                        }
                    })
                    .collect())
            }

            async fn revoke_enrollment_token(&self, id: i64) -> $crate::error::Result<bool> {
                let deleted = sqlx::query("DELETE FROM enrollment_tokens WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok(deleted == 1)
            }
        }
    };
}
