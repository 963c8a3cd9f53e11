//! Start-up clean-up of our own stale NVMe connections: connected subsystems
//! under the managed NQN prefix whose namespace has no block device, or
//! whose device is not mounted anywhere (as a filesystem or a bound device
//! node), has no holders, is open in no process (`<proc>/*/fd`) and can be
//! opened exclusively (an mkfs of a plugin that died, say, holds it
//! exclusively). A busy namespace is kept and logged, never disconnected.
//! Best effort within a time bound, each action logged; nothing outside the
//! prefix is ever touched (a node may boot from NVMe-oF).

use std::time::{Duration, Instant};

use log::{debug, error, info, warn};

use crate::host::device::{self, device_users, Depth, Subsystem, Sysfs};
use crate::host::mount::MountTable;
use crate::host::nvme::Nvme;
use crate::volume::NqnPrefix;

/// What to do with one connected subsystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not ours: never touched.
    Foreign,
    /// Ours and in use (why).
    Keep(String),
    /// Ours and stale (why).
    Orphan(String),
}

/// Decides about every subsystem; pure but for the sysfs reads of holders
/// and partitions.
pub fn select(
    sysfs: &Sysfs,
    table: &MountTable,
    prefix: &NqnPrefix,
    subsystems: &[Subsystem],
) -> Result<Vec<(String, Verdict)>, device::Error> {
    let mut out = Vec::new();
    for sub in subsystems {
        if !prefix.manages(&sub.nqn) {
            out.push((sub.nqn.clone(), Verdict::Foreign));
            continue;
        }
        if sub.namespaces.is_empty() {
            out.push((
                sub.nqn.clone(),
                Verdict::Orphan(format!(
                    "{} ({}) has no namespace block device",
                    sub.name,
                    sub.states()
                )),
            ));
            continue;
        }
        let mut users = Vec::new();
        for ns in &sub.namespaces {
            // Mounted itself: in use, no need to look at partitions and
            // holders (two directory reads per namespace on a large host).
            let mounted = table.users_of(ns.dev);
            if mounted.is_empty() {
                users.extend(device_users(sysfs, table, ns, &[], Depth::Full)?);
            } else {
                users.extend(mounted.iter().map(|p| format!("mounted at {}", p.display())));
            }
        }
        let names: Vec<&str> = sub.namespaces.iter().map(|n| n.name.as_str()).collect();
        let verdict = if users.is_empty() {
            Verdict::Orphan(format!(
                "{} is not mounted anywhere and has no holders",
                names.join(", ")
            ))
        } else {
            Verdict::Keep(format!("{}: {}", names.join(", "), users.join("; ")))
        };
        out.push((sub.nqn.clone(), verdict));
    }
    Ok(out)
}

/// What the clean-up did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub disconnected: Vec<String>,
    pub kept: Vec<String>,
    pub failed: Vec<String>,
}

/// Disconnects the orphans under the managed prefix, taking at most about
/// `budget`. Never fails: problems are logged and start-up continues (a
/// leftover connection is untidy, a node plugin that does not start is an
/// outage). Without a readable mount table it touches nothing, since it
/// could not tell what is in use.
pub fn clean_up(
    nvme: &Nvme,
    table: Result<MountTable, crate::host::mount::Error>,
    budget: Duration,
) -> Report {
    let started = Instant::now();
    let mut report = Report::default();
    let sysfs = nvme.sysfs();
    let table = match table {
        Ok(t) => t,
        Err(e) => {
            error!("orphan clean-up skipped: {}", crate::error_chain(&e));
            return report;
        }
    };
    let verdicts = match sysfs
        .subsystems()
        .and_then(|subs| select(sysfs, &table, nvme.prefix(), &subs))
    {
        Ok(v) => v,
        Err(e) => {
            error!("orphan clean-up skipped: {}", crate::error_chain(&e));
            return report;
        }
    };
    for (nqn, verdict) in verdicts {
        match verdict {
            Verdict::Foreign => debug!("orphan clean-up: {nqn} is not under the managed prefix; untouched"),
            Verdict::Keep(why) => {
                // Mounted is the normal case; anything else that holds an
                // unmounted namespace is worth a line at info.
                if why.contains("mounted at") {
                    debug!("orphan clean-up: keeping {nqn} ({why})");
                } else {
                    info!("orphan clean-up: keeping {nqn}, busy ({why})");
                }
                report.kept.push(nqn);
            }
            Verdict::Orphan(why) => {
                let left = budget.saturating_sub(started.elapsed());
                if left.is_zero() {
                    warn!("orphan clean-up: out of time, leaving {nqn} ({why})");
                    report.failed.push(nqn);
                    continue;
                }
                info!("orphan clean-up: disconnecting {nqn} ({why})");
                match nvme.disconnect_within(&nqn, left, Depth::Full) {
                    Ok(_) => {
                        crate::metrics::inc("rds_csi_orphans_cleaned_total", &[]);
                        report.disconnected.push(nqn)
                    }
                    Err(e) => {
                        warn!("orphan clean-up: {}", crate::error_chain(&e));
                        report.failed.push(nqn);
                    }
                }
            }
        }
    }
    info!(
        "orphan clean-up done in {:.1}ms: {} disconnected, {} kept, {} failed",
        started.elapsed().as_secs_f64() * 1000.0,
        report.disconnected.len(),
        report.kept.len(),
        report.failed.len()
    );
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::device::fake::Tree;
    use crate::host::mount::parse_mountinfo;

    const P: &str = "nqn.2000-02.com.mikrotik";

    #[test]
    fn only_unused_subsystems_under_the_prefix_are_orphans() {
        let t = Tree::new("orphans");
        // 0: ours, connected, no namespace.
        t.controller(0, 0, &format!("{P}:pvc-nodev"), "live");
        // 1: ours, device not mounted.
        t.controller(1, 1, &format!("{P}:pvc-idle"), "connecting");
        t.namespace(1, 1, true, "7:101");
        // 2: ours, mounted.
        t.controller(2, 2, &format!("{P}:pvc-mounted"), "live");
        t.namespace(2, 2, true, "7:102");
        // 3: ours, held by device-mapper.
        t.controller(3, 3, &format!("{P}:pvc-held"), "live");
        t.namespace(3, 3, false, "7:103");
        std::fs::create_dir_all(t.root.join("sys/class/block/nvme3n1/holders/dm-0")).unwrap();
        // 4: not ours (a boot volume), no device: still never touched.
        t.controller(4, 4, "nqn.2014-08.org.example:boot", "live");
        // 5: a prefix look-alike.
        t.controller(5, 5, &format!("{P}.other:pvc-x"), "live");
        // 6: ours, a partition of it is mounted.
        t.controller(6, 6, &format!("{P}:pvc-part"), "live");
        t.namespace(6, 6, true, "7:106");
        std::fs::create_dir_all(t.root.join("sys/class/block/nvme6n1/nvme6n1p1")).unwrap();
        std::fs::write(t.root.join("sys/class/block/nvme6n1/nvme6n1p1/dev"), "7:116\n").unwrap();

        let table = MountTable {
            entries: parse_mountinfo(
                "100 1 7:102 / /var/lib/kubelet/plugins/x/globalmount rw - ext4 /dev/nvme2n1 rw\n\
                 101 1 7:116 / /mnt/p rw - ext4 /dev/nvme6n1p1 rw\n",
            ),
        };
        let sysfs = t.sysfs();
        let subs = sysfs.subsystems().unwrap();
        let verdicts = select(&sysfs, &table, &NqnPrefix::parse(P).unwrap(), &subs).unwrap();
        let get = |slot: &str| {
            verdicts
                .iter()
                .find(|(n, _)| n.ends_with(slot))
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert!(matches!(get(":pvc-nodev"), Verdict::Orphan(w) if w.contains("no namespace")));
        assert!(matches!(get(":pvc-idle"), Verdict::Orphan(w) if w.contains("not mounted")));
        assert!(matches!(get(":pvc-mounted"), Verdict::Keep(w) if w.contains("globalmount")));
        assert!(matches!(get(":pvc-held"), Verdict::Keep(w) if w.contains("dm-0")));
        assert!(matches!(get(":pvc-part"), Verdict::Keep(w) if w.contains("/mnt/p")));
        assert_eq!(get(":boot"), Verdict::Foreign);
        assert_eq!(get(".other:pvc-x"), Verdict::Foreign);
        assert_eq!(verdicts.len(), 7);
    }
}
