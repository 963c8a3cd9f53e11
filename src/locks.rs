//! Per-volume in-flight guard: a second concurrent call on the same volume id
//! or name is refused at once (the caller answers ABORTED and the sidecar
//! retries) instead of racing the first or queueing behind it.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};

/// The keys (volume ids, CSI names) that have a call in flight.
#[derive(Clone, Default)]
pub struct VolumeLocks {
    held: Arc<Mutex<HashSet<String>>>,
}

/// A key that already has a call in flight: the second call is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    pub key: String,
}

impl fmt::Display for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an operation on {} is already in progress", self.key)
    }
}

impl std::error::Error for InFlight {}

/// Holds its keys until dropped.
pub struct VolumeGuard {
    held: Arc<Mutex<HashSet<String>>>,
    keys: Vec<String>,
}

impl VolumeLocks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes every key in `keys`, or none of them. `Err` names the first key
    /// that is busy. Calling it again while the guard lives fails with that
    /// key: the guard is not re-entrant, by design.
    pub fn try_lock(&self, keys: &[&str]) -> Result<VolumeGuard, InFlight> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(busy) = keys.iter().find(|k| held.contains(**k)) {
            return Err(InFlight {
                key: busy.to_string(),
            });
        }
        let mut owned = Vec::with_capacity(keys.len());
        for k in keys {
            // The same key twice in one request (a name equal to its id) is one lock.
            if held.insert(k.to_string()) {
                owned.push(k.to_string());
            }
        }
        Ok(VolumeGuard {
            held: Arc::clone(&self.held),
            keys: owned,
        })
    }
}

impl Drop for VolumeGuard {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        for k in &self.keys {
            held.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_a_key_fails_until_the_first_is_dropped() {
        let locks = VolumeLocks::new();
        let g = locks.try_lock(&["pvc-1"]).unwrap();
        assert_eq!(
            locks.try_lock(&["pvc-1"]).err().map(|e| e.key).as_deref(),
            Some("pvc-1")
        );
        assert!(locks.try_lock(&["pvc-2"]).is_ok());
        drop(g);
        assert!(locks.try_lock(&["pvc-1"]).is_ok());
    }

    #[test]
    fn the_refusal_names_the_busy_key() {
        let locks = VolumeLocks::new();
        let _g = locks.try_lock(&["pvc-1"]).unwrap();
        let e = locks.try_lock(&["pvc-2", "pvc-1"]).err().unwrap();
        assert_eq!(e, InFlight { key: "pvc-1".into() });
        assert_eq!(e.to_string(), "an operation on pvc-1 is already in progress");
    }

    #[test]
    fn all_or_nothing() {
        let locks = VolumeLocks::new();
        let _a = locks.try_lock(&["name-a"]).unwrap();
        assert_eq!(
            locks
                .try_lock(&["id-a", "name-a"])
                .err()
                .map(|e| e.key)
                .as_deref(),
            Some("name-a")
        );
        // id-a was not left locked by the failed attempt.
        assert!(locks.try_lock(&["id-a"]).is_ok());
    }

    #[test]
    fn duplicate_keys_in_one_request_are_one_lock() {
        let locks = VolumeLocks::new();
        let g = locks.try_lock(&["x", "x"]).unwrap();
        drop(g);
        assert!(locks.try_lock(&["x"]).is_ok());
    }

    #[test]
    fn concurrent_lockers_get_exactly_one_winner() {
        let locks = VolumeLocks::new();
        let barrier = Arc::new(std::sync::Barrier::new(16));
        let wins: Vec<_> = (0..16)
            .map(|_| {
                let (locks, barrier) = (locks.clone(), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    locks.try_lock(&["same"]).map(std::mem::forget).is_ok()
                })
            })
            .collect();
        let n = wins
            .into_iter()
            .filter_map(|h| h.join().ok())
            .filter(|won| *won)
            .count();
        assert_eq!(n, 1);
    }
}
