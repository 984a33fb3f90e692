//! Bounded slots, in all and per key (a peer address, a client): what the
//! connection limits and the download limits both count. A slot is given
//! back when its guard is dropped.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

pub struct Slots<K: Eq + Hash + Clone> {
    max_total: usize,
    max_per_key: usize,
    taken: Mutex<Taken<K>>,
}

struct Taken<K> {
    total: usize,
    per_key: HashMap<K, usize>,
}

/// Why no slot was free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// Every slot is taken.
    InAll { taken: usize },
    /// The key holds its share.
    ForKey { taken: usize },
}

/// A taken slot; dropping it gives it back.
pub struct Slot<K: Eq + Hash + Clone> {
    slots: Arc<Slots<K>>,
    /// `None`: taken by a key exempt from the per-key limit.
    key: Option<K>,
}

impl<K: Eq + Hash + Clone> Slots<K> {
    /// At most `max_total` slots, `max_per_key` of them for one key (each
    /// at least 1).
    pub fn new(max_total: usize, max_per_key: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total: max_total.max(1),
            max_per_key: max_per_key.max(1),
            taken: Mutex::new(Taken {
                total: 0,
                per_key: HashMap::new(),
            }),
        })
    }

    pub fn max_total(&self) -> usize {
        self.max_total
    }

    pub fn max_per_key(&self) -> usize {
        self.max_per_key
    }

    pub fn take(self: &Arc<Self>, key: K) -> Result<Slot<K>, Full> {
        let mut taken = self.lock();
        if taken.total >= self.max_total {
            return Err(Full::InAll { taken: taken.total });
        }
        let of_key = taken.per_key.entry(key.clone()).or_default();
        if *of_key >= self.max_per_key {
            return Err(Full::ForKey { taken: *of_key });
        }
        *of_key += 1;
        taken.total += 1;
        Ok(Slot {
            slots: self.clone(),
            key: Some(key),
        })
    }

    /// A slot counted only in all: for a key that stands for many (a
    /// trusted proxy's address).
    pub fn take_exempt(self: &Arc<Self>) -> Result<Slot<K>, Full> {
        let mut taken = self.lock();
        if taken.total >= self.max_total {
            return Err(Full::InAll { taken: taken.total });
        }
        taken.total += 1;
        Ok(Slot {
            slots: self.clone(),
            key: None,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Taken<K>> {
        self.taken
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<K: Eq + Hash + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut taken = self.slots.lock();
        taken.total -= 1;
        let Some(key) = &self.key else {
            return;
        };
        if let Some(count) = taken.per_key.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                taken.per_key.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_cannot_take_every_slot_and_slots_come_back() {
        let slots = Slots::new(3, 2);
        let first = slots.take("a").expect("a's first");
        let _second = slots.take("a").expect("a's second");
        assert_eq!(slots.take("a").err(), Some(Full::ForKey { taken: 2 }));
        let _third = slots.take("b").expect("b has its own share");
        assert_eq!(slots.take("b").err(), Some(Full::InAll { taken: 3 }));
        drop(first);
        assert!(slots.take("a").is_ok(), "a slot given back is free again");
    }

    #[test]
    fn exempt_slots_count_only_in_all() {
        let slots = Slots::new(3, 1);
        let _keyed = slots.take("proxy").expect("keyed");
        let exempt = slots.take_exempt().expect("exempt past the key's share");
        let _again = slots.take_exempt().expect("and again");
        assert_eq!(slots.take_exempt().err(), Some(Full::InAll { taken: 3 }));
        drop(exempt);
        assert_eq!(slots.lock().per_key.get("proxy"), Some(&1));
    }

    #[test]
    fn slots_given_back_leave_no_trace() {
        let slots = Slots::new(10, 10);
        drop(slots.take(7).expect("taken"));
        let taken = slots.lock();
        assert_eq!(taken.total, 0);
        assert!(taken.per_key.is_empty());
    }
}
