//! Servers on one database telling each other what they committed, so a
//! live chart or the alert evaluator on one sees samples pushed through
//! another (docs/scaling.md): `NOTIFY sysmon_committed_<deployment>` with the keys,
//! `LISTEN` on a connection of its own. Only keys travel (a notification
//! holds at most 8,000 bytes); the hearer reads the samples by key.
//!
//! A payload is `SENDER:KEYS` (new samples) or `SENDER:c:KEYS` (stored
//! samples a later part completed): the sending store's random id in hex
//! (so a server skips its own) and [`journal::pack_keys`] in base64, at
//! most [`KEYS_PER_NOTIFICATION`] keys, so one commit may take several
//! notifications, sent in one statement. A server of a version before
//! completions were announced reads `c:...` as bad base64 and skips it.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::super::journal;
use super::super::Announcement;
use crate::error::Result;

/// 16 bytes a key, base64 (4/3), with the sender: well under 8,000 bytes.
const KEYS_PER_NOTIFICATION: usize = 350;

/// Announcements heard but not yet read by the server: past it, newer
/// ones are dropped (a live chart misses points; the database has them).
const HEARD_BACKLOG: usize = 1024;

/// The channel of one deployment: notifications are per database, and
/// another deployment (another schema) has hosts of the same ids.
pub(super) fn channel(deployment: i64) -> String {
    format!("sysmon_committed_{:016x}", deployment as u64)
}

/// Marks the keys of completed samples in a payload.
const COMPLETED: &str = "c:";

/// Sends `NOTIFY`s on `channel` naming the announced keys, from `sender`.
pub(super) async fn announce(
    pool: &PgPool,
    channel: &str,
    sender: i64,
    announcement: &Announcement,
) -> Result<()> {
    if announcement.is_empty() {
        return Ok(());
    }
    let payloads: Vec<String> = [
        ("", &announcement.new),
        (COMPLETED, &announcement.completed),
    ]
    .into_iter()
    .flat_map(|(kind, keys)| {
        keys.chunks(KEYS_PER_NOTIFICATION).map(move |chunk| {
            format!(
                "{sender:x}:{kind}{}",
                STANDARD_NO_PAD.encode(journal::pack_keys(chunk))
            )
        })
    })
    .collect();
    sqlx::query("SELECT pg_notify($1, payload) FROM UNNEST($2::TEXT[]) AS payload")
        .bind(channel)
        .bind(payloads)
        .execute(pool)
        .await?;
    Ok(())
}

/// The keys other senders announce, until `stop`. The listener reconnects
/// by itself after a lost connection (what was sent meanwhile is missed).
pub(super) fn hear(
    pool: PgPool,
    channel: String,
    sender: i64,
    stop: CancellationToken,
) -> mpsc::Receiver<Announcement> {
    let (heard, receiver) = mpsc::channel(HEARD_BACKLOG);
    tokio::spawn(async move {
        let mut listener = loop {
            match listen(&pool, &channel).await {
                Ok(listener) => break listener,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for other servers' commits; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        loop {
            let notification = tokio::select! {
                _ = stop.cancelled() => return,
                notification = listener.recv() => notification,
            };
            let keys = match notification {
                Ok(notification) => match parse(notification.payload(), sender) {
                    Some(keys) => keys,
                    None => continue,
                },
                Err(error) => {
                    tracing::warn!(%error, "lost the notifications of other servers' commits; reconnecting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            match heard.try_send(keys) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    });
    receiver
}

async fn listen(pool: &PgPool, channel: &str) -> Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

/// What a payload announces, `None` for this sender's own or a payload
/// this version did not write.
fn parse(payload: &str, own: i64) -> Option<Announcement> {
    let (sender, rest) = payload.split_once(':')?;
    if i64::from_str_radix(sender, 16).ok()? == own {
        return None;
    }
    let (completed, keys) = match rest.strip_prefix(COMPLETED) {
        Some(keys) => (true, keys),
        None => (false, rest),
    };
    let keys = journal::unpack_keys(&STANDARD_NO_PAD.decode(keys).ok()?)?;
    Some(match completed {
        true => Announcement {
            completed: keys,
            ..Announcement::default()
        },
        false => Announcement {
            new: keys,
            ..Announcement::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::super::super::SampleKey;
    use super::*;

    #[test]
    fn payloads_carry_keys_from_other_senders_only() {
        let keys: Vec<SampleKey> = (0..KEYS_PER_NOTIFICATION as i64)
            .map(|n| (n, 1_700_000_000_000_000 + n))
            .collect();
        let payload = format!(
            "{:x}:{}",
            0x5eed_i64,
            STANDARD_NO_PAD.encode(journal::pack_keys(&keys))
        );
        assert!(payload.len() < 8000, "{} bytes", payload.len());
        let new = Announcement {
            new: keys.clone(),
            ..Announcement::default()
        };
        assert_eq!(parse(&payload, 7), Some(new));
        let completed = payload.replacen(':', ":c:", 1);
        assert!(completed.len() < 8000);
        let announced = parse(&completed, 7).expect("completed keys");
        assert_eq!((announced.new.len(), announced.completed), (0, keys));
        assert_eq!(parse(&payload, 0x5eed), None, "its own");
        assert_eq!(parse("nonsense", 7), None);
        assert_eq!(parse("zz:AAAA", 7), None);
        assert_eq!(parse("1:!!", 7), None);
    }
}
