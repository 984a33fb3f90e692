//! Dashboard users and their sessions: a [`UserStore`] trait (part of every
//! [`Store`](super::Store)) and its implementation, which is the same on
//! both stores. The SQL uses `$N` placeholders, which sqlx accepts for
//! SQLite as well as PostgreSQL; the macro only supplies each store's pool,
//! whose types differ.

use async_trait::async_trait;

use super::{DashboardUser, NewDashboardUser, SessionOwner, TokenOwner, UserId};
use crate::error::Result;

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates a dashboard user; `None` when the name is taken.
    async fn create_dashboard_user(&self, user: &NewDashboardUser) -> Result<Option<UserId>>;

    async fn find_dashboard_user(&self, name: &str) -> Result<Option<DashboardUser>>;

    async fn dashboard_users(&self) -> Result<Vec<DashboardUser>>;

    /// Deletes a dashboard user and its sessions; false when there was none.
    async fn delete_dashboard_user(&self, name: &str) -> Result<bool>;

    async fn add_session(
        &self,
        owner: SessionOwner,
        token_hash: &[u8],
        expires_at_us: i64,
    ) -> Result<()>;

    /// The user a session token belongs to, while it has not expired.
    async fn session_user(&self, token_hash: &[u8], now_us: i64) -> Result<Option<DashboardUser>>;

    /// The client a session token belongs to, while it has not expired.
    async fn session_client(&self, token_hash: &[u8], now_us: i64) -> Result<Option<TokenOwner>>;

    /// Deletes sessions that have expired; returns how many.
    async fn delete_expired_sessions(&self, now_us: i64) -> Result<u64>;

    async fn delete_session(&self, token_hash: &[u8]) -> Result<()>;
}

/// `impl UserStore for $store`, for a store with a sqlx `pool` field.
macro_rules! impl_user_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::UserStore for $store {
            async fn create_dashboard_user(
                &self,
                user: &$crate::store::NewDashboardUser,
            ) -> $crate::error::Result<Option<$crate::store::UserId>> {
                let mut transaction = self.pool.begin().await?;
                let id: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO dashboard_users (name, password_hash, is_admin, created_at_us)
                     VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING RETURNING id",
                )
                .bind(&user.name)
                .bind(&user.password_hash)
                .bind(user.is_admin)
                .bind($crate::store::now_micros())
                .fetch_optional(&mut *transaction)
                .await?;
                let Some(id) = id else {
                    return Ok(None);
                };
                for client in &user.clients {
                    sqlx::query(
                        "INSERT INTO dashboard_user_clients (user_id, client_name) VALUES ($1, $2)",
                    )
                    .bind(id)
                    .bind(client)
                    .execute(&mut *transaction)
                    .await?;
                }
                transaction.commit().await?;
                Ok(Some($crate::store::UserId(id)))
            }

            async fn find_dashboard_user(
                &self,
                name: &str,
            ) -> $crate::error::Result<Option<$crate::store::DashboardUser>> {
                let row = sqlx::query_as::<_, (i64, String, String, bool)>(
                    "SELECT id, name, password_hash, is_admin FROM dashboard_users WHERE name = $1",
                )
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
                match row {
                    Some(row) => Ok(Some(self.with_clients(row).await?)),
                    None => Ok(None),
                }
            }

            async fn dashboard_users(
                &self,
            ) -> $crate::error::Result<Vec<$crate::store::DashboardUser>> {
                let rows = sqlx::query_as::<_, (i64, String, String, bool)>(
                    "SELECT id, name, password_hash, is_admin FROM dashboard_users ORDER BY name",
                )
                .fetch_all(&self.pool)
                .await?;
                let mut users = Vec::with_capacity(rows.len());
                for row in rows {
                    users.push(self.with_clients(row).await?);
                }
                Ok(users)
            }

            async fn delete_dashboard_user(&self, name: &str) -> $crate::error::Result<bool> {
                let deleted = sqlx::query("DELETE FROM dashboard_users WHERE name = $1")
                    .bind(name)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok(deleted > 0)
            }

            async fn add_session(
                &self,
                owner: $crate::store::SessionOwner,
                token_hash: &[u8],
                expires_at_us: i64,
            ) -> $crate::error::Result<()> {
                let (user, client) = match owner {
                    $crate::store::SessionOwner::User(user) => (Some(user.0), None),
                    $crate::store::SessionOwner::Client(client) => (None, Some(client.0)),
                };
                sqlx::query(
                    "INSERT INTO dashboard_sessions
                         (token_hash, user_id, client_id, created_at_us, expires_at_us)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(token_hash)
                .bind(user)
                .bind(client)
                .bind($crate::store::now_micros())
                .bind(expires_at_us)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn session_user(
                &self,
                token_hash: &[u8],
                now_us: i64,
            ) -> $crate::error::Result<Option<$crate::store::DashboardUser>> {
                let row = sqlx::query_as::<_, (i64, String, String, bool)>(
                    "SELECT u.id, u.name, u.password_hash, u.is_admin
                     FROM dashboard_sessions s JOIN dashboard_users u ON u.id = s.user_id
                     WHERE s.token_hash = $1 AND s.expires_at_us > $2",
                )
                .bind(token_hash)
                .bind(now_us)
                .fetch_optional(&self.pool)
                .await?;
                match row {
                    Some(row) => Ok(Some(self.with_clients(row).await?)),
                    None => Ok(None),
                }
            }

            async fn session_client(
                &self,
                token_hash: &[u8],
                now_us: i64,
            ) -> $crate::error::Result<Option<$crate::store::TokenOwner>> {
                let row = sqlx::query_as::<_, (i64, String)>(
                    "SELECT c.id, c.name
                     FROM dashboard_sessions s JOIN clients c ON c.id = s.client_id
                     WHERE s.token_hash = $1 AND s.expires_at_us > $2 AND c.removed_at_us IS NULL",
                )
                .bind(token_hash)
                .bind(now_us)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(id, name)| $crate::store::TokenOwner {
                    id: $crate::store::ClientId(id),
                    name,
                }))
            }

            async fn delete_expired_sessions(&self, now_us: i64) -> $crate::error::Result<u64> {
                let deleted =
                    sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at_us <= $1")
                        .bind(now_us)
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
                Ok(deleted)
            }

            async fn delete_session(&self, token_hash: &[u8]) -> $crate::error::Result<()> {
                sqlx::query("DELETE FROM dashboard_sessions WHERE token_hash = $1")
                    .bind(token_hash)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }
        }

        impl $store {
            /// Completes a user row with the clients granted to it.
            async fn with_clients(
                &self,
                (id, name, password_hash, is_admin): (i64, String, String, bool),
            ) -> $crate::error::Result<$crate::store::DashboardUser> {
                let clients = sqlx::query_scalar(
                    "SELECT client_name FROM dashboard_user_clients
                     WHERE user_id = $1 ORDER BY client_name",
                )
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
                Ok($crate::store::DashboardUser {
                    id: $crate::store::UserId(id),
                    name,
                    password_hash,
                    is_admin,
                    clients,
                })
            }
        }
    };
}
