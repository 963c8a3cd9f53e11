//! Readiness: the conditions the driver needs before it can do useful work.
//! A neutral module, so that the services implement it (the controller's RDS
//! check, the node's `nvme_tcp` check) and the identity service reports it
//! without any of them importing another.

use std::sync::Arc;

/// A condition the driver needs before it can do useful work (the RDS
/// answers, the `nvme_tcp` module is loaded, ...). `check` must be cheap: it
/// reads a state that the owner refreshes in the background.
pub trait Readiness: Send + Sync {
    /// `Err` carries what is missing and what to do about it.
    fn check(&self) -> Result<(), String>;
}

/// Every check at once: ready when all are, else every problem, in order,
/// joined by `; `.
pub fn check_all(checks: &[Arc<dyn Readiness>]) -> Result<(), String> {
    let problems: Vec<String> = checks.iter().filter_map(|c| c.check().err()).collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Flag(AtomicBool, &'static str);
    impl Readiness for Flag {
        fn check(&self) -> Result<(), String> {
            if self.0.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(self.1.to_string())
            }
        }
    }

    #[test]
    fn readiness_joins_every_problem() {
        let a = Arc::new(Flag(AtomicBool::new(false), "rds unreachable"));
        let b = Arc::new(Flag(AtomicBool::new(false), "nvme_tcp not loaded"));
        let checks: Vec<Arc<dyn Readiness>> = vec![a.clone(), b.clone()];
        assert_eq!(
            check_all(&checks).unwrap_err(),
            "rds unreachable; nvme_tcp not loaded"
        );
        a.0.store(true, Ordering::SeqCst);
        assert_eq!(check_all(&checks).unwrap_err(), "nvme_tcp not loaded");
        b.0.store(true, Ordering::SeqCst);
        assert!(check_all(&checks).is_ok());
    }
}
