//! Reads from a streaming replica (`read_replica_url`): reports, exports,
//! charts and pages of samples go to it, writes and everything else to the
//! primary.
//!
//! A replica replays the primary's WAL some milliseconds behind, so a read
//! sent there blindly could miss samples the server has just acknowledged
//! to the client reading them. Each read first asks the primary where its
//! WAL ends (every commit acknowledged before the read is at or before that
//! position) and waits, at most [`CATCH_UP`], until the replica has
//! replayed that far; a replica further behind, or not answering, is passed
//! over and the primary serves the read (one that does not answer is
//! skipped for a few seconds). So a replica never hides an
//! acknowledged sample, from any server of a deployment, at the cost of one
//! small query on the primary per read.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::error::{Error, Result};
use crate::store::{redact_password, ReplicaReads};

/// How long a read waits for the replica to replay what the primary had
/// committed when the read began.
const CATCH_UP: Duration = Duration::from_secs(1);
/// How often the replica's replay position is asked while waiting.
const POLL: Duration = Duration::from_millis(5);
/// After the replica failed to answer or fell more than [`CATCH_UP`]
/// behind, reads skip it this long (each try costs up to [`CATCH_UP`]
/// before the primary serves).
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// How long a read waits for one of the replica's connections once it has
/// caught up (as on the primary).
const ACQUIRE: Duration = Duration::from_secs(10);
/// Connections to the replica: queries (charts, pages) and streams
/// (reports, exports), as on the primary.
const QUERY_CONNECTIONS: u32 = 16;
const STREAM_CONNECTIONS: u32 = 8;

pub struct Replica {
    pool: PgPool,
    streams: PgPool,
    reads: ReplicaReads,
    /// Whether the last check reached the replica: a change is logged
    /// once, not every read.
    reachable: AtomicBool,
    /// Until when reads skip a replica that failed to answer.
    skipped_until: parking_lot::Mutex<Option<Instant>>,
}

/// The pools a read uses: the replica's when it has caught up, else the
/// primary's.
pub struct ReadPools<'a> {
    pub queries: &'a PgPool,
    pub streams: &'a PgPool,
}

impl Replica {
    /// Connects lazily: a replica that is down when the server starts
    /// only sends reads to the primary until it answers.
    pub fn connect(url: &str, reads: ReplicaReads) -> Result<Replica> {
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            Error::Config(format!(
                "invalid read replica URL `{}`: {e}",
                redact_password(url)
            ))
        })?;
        let options = options.options([("jit", "off")]);
        let pool = |connections| {
            PgPoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(ACQUIRE)
                .connect_lazy_with(options.clone())
        };
        Ok(Replica {
            pool: pool(QUERY_CONNECTIONS),
            streams: pool(STREAM_CONNECTIONS),
            reads: reads.clone(),
            reachable: AtomicBool::new(true),
            skipped_until: parking_lot::Mutex::new(None),
        })
    }

    /// The pools for one read: the replica's once it has replayed every
    /// commit the primary had made when the read began.
    pub async fn pools_for_read<'a>(
        &'a self,
        primary: &'a PgPool,
        primary_streams: &'a PgPool,
    ) -> ReadPools<'a> {
        let skipped = self
            .skipped_until
            .lock()
            .is_some_and(|until| Instant::now() < until);
        let outcome = if skipped {
            Ok(false)
        } else {
            // Bounded whole: a replica that does not answer (a connection
            // that hangs, a full pool) counts as one that is behind.
            tokio::time::timeout(CATCH_UP + POLL, self.caught_up(primary))
                .await
                .unwrap_or(Ok(false))
        };
        match outcome {
            Ok(true) => {
                self.reads.replica.inc();
                self.note_reachable(true, None);
                ReadPools {
                    queries: &self.pool,
                    streams: &self.streams,
                }
            }
            outcome => {
                self.reads.primary.inc();
                if !skipped {
                    *self.skipped_until.lock() = Some(Instant::now() + RETRY_AFTER);
                }
                if let Err(error) = outcome {
                    self.note_reachable(false, Some(error));
                }
                ReadPools {
                    queries: primary,
                    streams: primary_streams,
                }
            }
        }
    }

    /// Whether the replica replays, within [`CATCH_UP`], as far as the
    /// primary's WAL reached now.
    async fn caught_up(&self, primary: &PgPool) -> Result<bool> {
        let started = Instant::now();
        let target: String = sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text")
            .fetch_one(primary)
            .await?;
        loop {
            let replayed: Option<bool> =
                sqlx::query_scalar("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn")
                    .bind(&target)
                    .fetch_one(&self.pool)
                    .await?;
            match replayed {
                Some(true) => return Ok(true),
                // Not a standby: it cannot say, so it is not trusted.
                None => {
                    return Err(Error::Config(
                        "the read replica is not a standby (pg_last_wal_replay_lsn() is null)"
                            .into(),
                    ))
                }
                Some(false) if started.elapsed() + POLL > CATCH_UP => return Ok(false),
                Some(false) => tokio::time::sleep(POLL).await,
            }
        }
    }

    fn note_reachable(&self, reachable: bool, error: Option<Error>) {
        if self.reachable.swap(reachable, Ordering::Relaxed) == reachable {
            return;
        }
        match error {
            Some(error) => tracing::warn!(
                %error,
                "the read replica cannot serve reads; the primary serves them until it can"
            ),
            None => tracing::info!("the read replica serves reads again"),
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.streams.close().await;
    }
}
