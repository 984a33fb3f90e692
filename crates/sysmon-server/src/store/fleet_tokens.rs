//! Fleet tokens (migration 0011): a [`FleetTokenStore`] trait (part of
//! every [`Store`](super::Store)), the same SQL on both stores; the macro
//! only supplies each store's pool.

use std::collections::HashMap;

use async_trait::async_trait;
use sysmon_core::UnixTime;

use crate::error::Result;

/// A fleet token as the server checks it and admins see it: never its
/// secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetToken {
    pub id: i64,
    pub note: String,
    /// Which hosts it may push for: `*`, or a pattern with `*` and `?`.
    pub hosts: String,
    /// Whether a push for a host not seen before creates it.
    pub create_hosts: bool,
    /// An export token: reads `/metrics/fleet`, never pushes.
    pub export: bool,
    pub created_at: UnixTime,
}

/// What an admin asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFleetToken {
    pub note: String,
    pub hosts: String,
    pub create_hosts: bool,
    pub export: bool,
}

/// A host as a push token sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetHost {
    pub id: super::ClientId,
    /// Created by a push token (so fleet tokens may write it).
    pub created_by_fleet: bool,
}

#[async_trait]
pub trait FleetTokenStore: Send + Sync {
    /// Stores a token by its hash; its id.
    async fn create_fleet_token(&self, token_hash: &[u8], token: &NewFleetToken) -> Result<i64>;

    /// The token of that hash, if it exists.
    async fn fleet_token(&self, token_hash: &[u8]) -> Result<Option<FleetToken>>;

    async fn fleet_tokens(&self) -> Result<Vec<FleetToken>>;

    /// Deletes a token and bumps the auth epoch, in one transaction; false
    /// when there was none.
    async fn revoke_fleet_token(&self, id: i64) -> Result<bool>;

    /// The hosts of these names that exist (not removed), in one query.
    async fn fleet_hosts(&self, names: &[String]) -> Result<HashMap<String, FleetHost>>;

    /// Creates hosts for a push token (no password: they cannot log in),
    /// in one statement; returns those created, by name (a name taken is
    /// left out).
    async fn create_fleet_hosts(
        &self,
        names: &[String],
        password_hash: &str,
    ) -> Result<HashMap<String, super::ClientId>>;
}

/// `$first, $first+1, ..., $first+count-1`: an `IN` list both stores read.
pub fn parameter_list(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|index| format!("${index}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The columns [`fleet_token_from`] reads, in its order.
pub const FLEET_TOKEN_COLUMNS: &str = "id, note, hosts, create_hosts, export, created_at_us";

pub fn fleet_token_from(
    (id, note, hosts, create_hosts, export, created_at_us): (i64, String, String, bool, bool, i64),
) -> FleetToken {
    FleetToken {
        id,
        note,
        hosts,
        create_hosts,
        export,
        created_at: UnixTime::from_micros(created_at_us),
    }
}

/// `impl FleetTokenStore for $store`, for a store with a sqlx `pool` field.
macro_rules! impl_fleet_token_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::FleetTokenStore for $store {
            async fn create_fleet_token(
                &self,
                token_hash: &[u8],
                token: &$crate::store::NewFleetToken,
            ) -> $crate::error::Result<i64> {
                Ok(sqlx::query_scalar(
                    "INSERT INTO fleet_tokens
                        (token_hash, note, hosts, create_hosts, export, created_at_us)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                )
                .bind(token_hash)
                .bind(&token.note)
                .bind(&token.hosts)
                .bind(token.create_hosts)
                .bind(token.export)
                .bind($crate::store::now_micros())
                .fetch_one(&self.pool)
                .await?)
            }

            async fn fleet_token(
                &self,
                token_hash: &[u8],
            ) -> $crate::error::Result<Option<$crate::store::FleetToken>> {
                let row = sqlx::query_as(&format!(
                    "SELECT {} FROM fleet_tokens WHERE token_hash = $1",
                    $crate::store::fleet_tokens::FLEET_TOKEN_COLUMNS
                ))
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map($crate::store::fleet_tokens::fleet_token_from))
            }

            async fn fleet_tokens(&self) -> $crate::error::Result<Vec<$crate::store::FleetToken>> {
                let rows = sqlx::query_as(&format!(
                    "SELECT {} FROM fleet_tokens ORDER BY id",
                    $crate::store::fleet_tokens::FLEET_TOKEN_COLUMNS
                ))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map($crate::store::fleet_tokens::fleet_token_from)
                    .collect())
            }

            async fn revoke_fleet_token(&self, id: i64) -> $crate::error::Result<bool> {
                let mut transaction = self.pool.begin().await?;
                let deleted = sqlx::query("DELETE FROM fleet_tokens WHERE id = $1")
                    .bind(id)
                    .execute(&mut *transaction)
                    .await?
                    .rows_affected();
                sqlx::query("UPDATE auth_epoch SET epoch = epoch + 1 WHERE id = 1")
                    .execute(&mut *transaction)
                    .await?;
                transaction.commit().await?;
                Ok(deleted == 1)
            }

            async fn fleet_hosts(
                &self,
                names: &[String],
            ) -> $crate::error::Result<std::collections::HashMap<String, $crate::store::FleetHost>>
            {
                if names.is_empty() {
                    return Ok(Default::default());
                }
                let sql = format!(
                    "SELECT name, id, created_by_fleet FROM clients
                     WHERE removed_at_us IS NULL AND name IN ({})",
                    $crate::store::fleet_tokens::parameter_list(1, names.len())
                );
                let query = sqlx::query_as::<_, (String, i64, bool)>(&sql);
                let query = names.iter().fold(query, |query, name| query.bind(name));
                Ok(query
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(|(name, id, created_by_fleet)| {
                        let host = $crate::store::FleetHost {
                            id: $crate::store::ClientId(id),
                            created_by_fleet,
                        };
                        (name, host)
                    })
                    .collect())
            }

            async fn create_fleet_hosts(
                &self,
                names: &[String],
                password_hash: &str,
            ) -> $crate::error::Result<std::collections::HashMap<String, $crate::store::ClientId>>
            {
                if names.is_empty() {
                    return Ok(Default::default());
                }
                // $1 and $2 are the shared password hash and time.
                let rows: Vec<String> = (0..names.len())
                    .map(|index| format!("(${}, $1, $2, TRUE)", index + 3))
                    .collect();
                let sql = format!(
                    "INSERT INTO clients (name, password_hash, created_at_us, created_by_fleet)
                     VALUES {} ON CONFLICT (name) DO NOTHING RETURNING name, id",
                    rows.join(", ")
                );
                let query = sqlx::query_as::<_, (String, i64)>(&sql)
                    .bind(password_hash)
                    .bind($crate::store::now_micros());
                let created = names
                    .iter()
                    .fold(query, |query, name| query.bind(name))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(created
                    .into_iter()
                    .map(|(name, id)| (name, $crate::store::ClientId(id)))
                    .collect())
            }
        }
    };
}
