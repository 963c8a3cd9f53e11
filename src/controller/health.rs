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
    /// Where each check records the pool's filesystem for the controller.
    pool_fs: Option<super::PoolFsCache>,
}

impl RdsHealth {
    /// Starts the background check: at once, then every `interval`; each
    /// check that reads the pool also records its filesystem in `pool_fs`.
    pub fn start(
        rds: rds::Client,
        pool: String,
        interval: std::time::Duration,
        pool_fs: Option<super::PoolFsCache>,
    ) -> std::sync::Arc<RdsHealth> {
        let health = std::sync::Arc::new(RdsHealth {
            state: Mutex::new(Err("the RDS has not been checked yet".into())),
            pool_fs,
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
        // The filesystem first: readiness must not be reported before the
        // capabilities it decides can be answered.
        if let (Ok((_, p)), Some(cache)) = (&now, &self.pool_fs) {
            cache.set(p.btrfs());
        }
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
