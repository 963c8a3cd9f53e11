//! Whether the RDS answers and the pool is there: the controller's part of
//! readiness, checked in the background so a probe never waits on the
//! network.

use std::sync::Mutex;

use log::info;

use crate::rds;

/// Whether the RDS answers and the pool is there, refreshed in the
/// background so that Probe (called every few seconds by the liveness probe)
/// never waits on the network.
pub struct RdsHealth {
    state: Mutex<Result<(), String>>,
}

impl RdsHealth {
    /// Starts the background check: at once, then every `interval`.
    pub fn start(rds: rds::Client, pool: String, interval: std::time::Duration) -> std::sync::Arc<RdsHealth> {
        let health = std::sync::Arc::new(RdsHealth {
            state: Mutex::new(Err("the RDS has not been checked yet".into())),
        });
        let h = std::sync::Arc::clone(&health);
        let spawned = std::thread::Builder::new()
            .name("rds-health".into())
            .spawn(move || loop {
                h.refresh(&rds, &pool);
                std::thread::sleep(interval);
            });
        if let Err(e) = spawned {
            *health.state.lock().unwrap_or_else(|p| p.into_inner()) =
                Err(format!("cannot start the RDS health check: {e}"));
        }
        health
    }

    fn refresh(&self, rds: &rds::Client, pool: &str) {
        let now = rds
            .system_resource()
            .and_then(|res| rds.pool(pool).map(|p| (res, p)))
            .map_err(|e| {
                format!(
                    "the RDS at {} is not usable: {}",
                    rds.address().base_url(),
                    crate::error_chain(&e)
                )
            });
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match (&*state, &now) {
            (Err(_), Ok((res, p))) => info!(
                "RDS {} reachable: RouterOS {}, pool {} has {} bytes free",
                rds.address().base_url(),
                res.version_text,
                p.slot,
                p.free.map_or("unknown".to_string(), |f| f.to_string())
            ),
            (Ok(()), Err(why)) => log::warn!("{why}"),
            (Err(old), Err(why)) if old != why => log::warn!("{why}"),
            _ => {}
        }
        *state = now.map(|_| ());
    }
}

impl crate::health::Readiness for RdsHealth {
    fn check(&self) -> Result<(), String> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
