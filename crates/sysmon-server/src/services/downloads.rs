//! Slots for downloads (reports and exports): each holds a database
//! connection or a read transaction for as long as its client takes to read
//! it, so how many run at once is bounded, in all and per client. A
//! download past either bound is refused at once with a 503 (the client
//! retries when one of its own has finished), instead of queueing behind
//! the others.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::slots::{Full, Slot, Slots};
use crate::store::ClientId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadLimits {
    /// Downloads running at once, all clients together.
    pub max_downloads: usize,
    /// Downloads running at once of one client's samples.
    pub max_downloads_per_client: usize,
}

impl Default for DownloadLimits {
    fn default() -> Self {
        Self {
            max_downloads: 32,
            max_downloads_per_client: 4,
        }
    }
}

/// A running download's slot, given back when it is dropped (with the
/// download's stream).
pub type DownloadSlot = Slot<ClientId>;

pub struct DownloadSlots(Arc<Slots<ClientId>>);

impl DownloadSlots {
    pub fn new(limits: DownloadLimits) -> Arc<Self> {
        Arc::new(Self(Slots::new(
            limits.max_downloads,
            limits.max_downloads_per_client,
        )))
    }

    /// A slot for a download of `client`'s samples, or the 503 saying why
    /// there is none.
    pub fn take(&self, client: ClientId) -> Result<DownloadSlot> {
        self.0.take(client).map_err(|full| {
            Error::DownloadsBusy(match full {
                Full::InAll { taken } => {
                    format!("{taken} downloads are running, the most at once")
                }
                Full::ForKey { taken } => format!(
                    "{taken} downloads of this client are running, the most at once; \
                     retry when one has finished"
                ),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloads_are_bounded_per_client_and_in_all() {
        let slots = DownloadSlots::new(DownloadLimits {
            max_downloads: 3,
            max_downloads_per_client: 2,
        });
        let (a, b) = (ClientId(1), ClientId(2));
        let _first = slots.take(a).expect("a's first");
        let _second = slots.take(a).expect("a's second");
        assert!(matches!(slots.take(a), Err(Error::DownloadsBusy(_))));
        let _third = slots.take(b).expect("b's first");
        assert!(
            matches!(slots.take(b), Err(Error::DownloadsBusy(_))),
            "three in all"
        );
    }
}
