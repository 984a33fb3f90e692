//! Which server runs the jobs one server at a time must run when several
//! share a database (docs/scaling.md): alert evaluation and the pruning of
//! its history, and retention. The leader is the server holding the
//! store's leader lock (PostgreSQL: an advisory lock held by a connection
//! of its own, so it frees when that server dies; SQLite, which one server
//! owns: always this one). Every server checks every [`CHECK`]; one that
//! finds the lock free takes it, so a dead leader is replaced within about
//! that long.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// How often the lock is checked (held) or tried (not held).
const CHECK: Duration = Duration::from_secs(1);

pub struct Leadership {
    leading: AtomicBool,
    /// The store's lock session this server last led on.
    session: AtomicU64,
    /// Counts the times this server became leader: a job that kept state
    /// while another server led reloads it when this changes.
    term: AtomicU64,
}

impl Leadership {
    /// Tries the lock once, then checks it every second until `stop`.
    pub async fn start(
        store: Arc<dyn Store>,
        stop: CancellationToken,
    ) -> (Arc<Leadership>, JoinHandle<()>) {
        let leadership = Arc::new(Leadership {
            leading: AtomicBool::new(false),
            session: AtomicU64::new(0),
            term: AtomicU64::new(0),
        });
        leadership.check(store.as_ref()).await;
        let task = tokio::spawn({
            let leadership = leadership.clone();
            async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(CHECK) => {}
                    }
                    leadership.check(store.as_ref()).await;
                }
            }
        });
        (leadership, task)
    }

    async fn check(&self, store: &dyn Store) {
        // Bounded: a half-open connection must not leave this server
        // believing it leads while another has taken the lock.
        let leading = match tokio::time::timeout(CHECK, store.hold_leadership()).await {
            Ok(Ok(leading)) => leading,
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot check the leader lock; not leading until it can");
                false
            }
            Err(_) => {
                tracing::warn!(
                    "the leader lock did not answer within a second; not leading until it does"
                );
                false
            }
        };
        let was = self.leading.swap(leading, Ordering::SeqCst);
        let session = store.leader_session();
        let new_session = self.session.swap(session, Ordering::SeqCst) != session;
        match (was, leading) {
            (false, true) => {
                self.term.fetch_add(1, Ordering::SeqCst);
                tracing::info!("this server leads: it runs alert evaluation and retention");
            }
            (true, true) if new_session => {
                self.term.fetch_add(1, Ordering::SeqCst);
                tracing::warn!(
                    "this server leads again on a new lock session: it starts a new term from what is stored"
                );
            }
            (true, false) => tracing::warn!(
                "this server no longer leads: another runs alert evaluation and retention"
            ),
            _ => {}
        }
    }

    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// Changes each time this server becomes leader.
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::SeqCst)
    }
}
