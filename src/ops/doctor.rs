//! `rds-csi doctor`: checks what the driver needs — the RDS (reachable, TLS
//! trusted, credentials, RouterOS version, pool, REST policy) and, on a
//! node, the host (nvme_tcp, the nvme tool, host NQN, mkfs, kubelet dir) —
//! and prints one line per check with what to do about a failure.

use std::fmt;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::cli::{flag, Values};
use crate::config::{self, ConfigError};
use crate::controller::ControllerSettings;
use crate::host::device::Sysfs;
use crate::host::exec;
use crate::host::nvme;
use crate::rds;
use crate::volume;

/// RouterOS that has everything the driver uses (`nvme-tcp-server-nqn`).
const MIN_VERSION: rds::Version = rds::Version::new(7, 21, 0);

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass(String),
    /// What is wrong, and what to do about it.
    Fail(String, String),
    /// Not checked because an earlier check failed.
    Skipped(String),
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Outcome,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Pass(what) => write!(f, "✔ {}: {what}", self.name),
            Outcome::Fail(what, fix) => write!(f, "✘ {}: {what}\n    → {fix}", self.name),
            Outcome::Skipped(why) => write!(f, "- {}: skipped ({why})", self.name),
        }
    }
}

fn pass(name: &'static str, what: impl Into<String>) -> Check {
    Check {
        name,
        outcome: Outcome::Pass(what.into()),
    }
}

fn fail(name: &'static str, what: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name,
        outcome: Outcome::Fail(what.into(), fix.into()),
    }
}

fn skipped(name: &'static str, why: &str) -> Check {
    Check {
        name,
        outcome: Outcome::Skipped(why.to_string()),
    }
}

/// The fencing mode the controller runs with (`--export-always`,
/// `--nvme-host-acl`). Host ACLs rest on `nvme-tcp-server-allow-host-name`,
/// whose semantics are unverified on a real RDS, and on the NQN export
/// fields of RouterOS 7.21.
fn fencing_check(settings: &ControllerSettings, version: Option<rds::Version>) -> Check {
    let name = "fencing";
    match (settings.export_on_publish, settings.host_acl) {
        (false, _) => pass(
            name,
            "export always (--export-always): every volume is on the network from creation to deletion",
        ),
        (true, false) => pass(name, "export on publish: a volume is exported only while published to a node"),
        (true, true) if version.is_some_and(|v| v >= MIN_VERSION) => pass(
            name,
            "export on publish with per-node host ACLs (--nvme-host-acl; the allow list is read back after every write: its semantics are unverified on a real RDS)",
        ),
        (true, true) => fail(
            name,
            format!("--nvme-host-acl needs RouterOS {MIN_VERSION} or later (the NQN export fields)"),
            "upgrade RouterOS, or run without --nvme-host-acl",
        ),
    }
}

/// Runs every check the flags ask for; returns them in order.
pub fn run(v: &Values) -> Result<Vec<Check>, ConfigError> {
    let controller = config::flag_bool(v, flag::CONTROLLER)?;
    let node = config::flag_bool(v, flag::NODE)?;
    let rds_given = v.get(flag::RDS_ADDRESS).is_some();
    if !controller && !node && !rds_given {
        return Err(ConfigError(
            "nothing to check: give --controller (with --rds-address ...), --node, or both".into(),
        ));
    }
    let mut checks = Vec::new();
    if controller || rds_given {
        checks.extend(rds_checks(v)?);
    }
    if node {
        checks.extend(node_checks(v)?);
    }
    Ok(checks)
}

fn rds_checks(v: &Values) -> Result<Vec<Check>, ConfigError> {
    let cfg = config::ControllerConfig::from_values(v)?;
    let settings = cfg.settings.clone();
    let mut checks = Vec::new();
    let address =
        rds::Address::parse(&cfg.rds.address).map_err(|e| ConfigError(format!("--rds-address: {e}")))?;

    // 1. Something answers on the address at all.
    let hostport = format!(
        "{}:{}",
        address.host.trim_start_matches('[').trim_end_matches(']'),
        address.port
    );
    let reachable = hostport
        .to_socket_addrs()
        .map_err(|e| e.to_string())
        .and_then(|mut addrs| {
            addrs
                .next()
                .ok_or_else(|| "the name resolves to no address".to_string())
        })
        .and_then(|sa| {
            TcpStream::connect_timeout(&sa, cfg.rds.connect_timeout.min(Duration::from_secs(5)))
                .map_err(|e| e.to_string())
        });
    let base = address.base_url();
    match reachable {
        Ok(_) => checks.push(pass("RDS reachable", format!("{base} accepts connections"))),
        Err(e) => {
            checks.push(fail(
                "RDS reachable",
                format!("cannot connect to {hostport}: {e}"),
                "check --rds-address and the network; on the RDS enable the REST service: /ip service enable www-ssl",
            ));
            for name in [
                "TLS trusted",
                "credentials accepted",
                "RouterOS version",
                "pool",
                "snapshots",
                "REST write access",
            ] {
                checks.push(skipped(name, "the RDS is not reachable"));
            }
            return Ok(checks);
        }
    }

    // 2-4. One real request tells TLS, credentials and version apart.
    let mut rcfg = cfg.rds.clone();
    rcfg.retry.max_attempts = 1;
    let client = match rds::Client::new(rcfg) {
        Ok(c) => c,
        Err(e) => {
            checks.push(fail(
                "RDS client",
                crate::error_chain(&e),
                "fix the flag named above",
            ));
            return Ok(checks);
        }
    };
    let resource = client.system_resource();
    let tls_name = "TLS trusted";
    match (&resource, address.scheme) {
        (_, rds::Scheme::Http) => {
            checks.push(pass(tls_name, "plain http (no TLS): only on a trusted network"))
        }
        (Err(e), _) if e.kind() == rds::Kind::Tls => {
            let presented = match e {
                rds::Error::Tls {
                    presented: Some(p), ..
                } => p.clone(),
                _ => "unknown".into(),
            };
            checks.push(fail(
                tls_name,
                format!("the RDS certificate is not trusted ({}); it presented {presented}", crate::error_chain(e)),
                format!("if that is your RDS's certificate (compare on the RDS: /certificate print detail), pin it: --rds-tls-fingerprint {presented}; or give its CA with --rds-ca-file"),
            ));
        }
        (Err(e), _) if e.kind() == rds::Kind::Unavailable => {
            checks.push(fail(
                tls_name,
                format!("no answer over https: {}", crate::error_chain(e)),
                "check that www-ssl is enabled and has a certificate: /ip service set www-ssl certificate=<name>",
            ));
        }
        (_, _) => checks.push(pass(
            tls_name,
            match &cfg.rds.trust {
                rds::Trust::Fingerprint(fp) => {
                    format!("the certificate matches {}", rds::format_fingerprint(fp))
                }
                rds::Trust::CaFile(p) => format!("signed by a CA in {}", p.display()),
                rds::Trust::System => "signed by a trusted CA".into(),
                rds::Trust::InsecureSkipVerify => "NOT verified (--rds-insecure-skip-verify)".into(),
            },
        )),
    }
    let creds = "credentials accepted";
    let res = match resource {
        Ok(res) => {
            checks.push(pass(
                creds,
                format!("logged in as the user in {}", cfg.rds.username_file.display()),
            ));
            res
        }
        Err(e) => {
            match e.kind() {
                rds::Kind::Tls | rds::Kind::Unavailable => checks.push(skipped(creds, "no TLS session")),
                rds::Kind::Unauthorized => checks.push(fail(
                    creds,
                    crate::error_chain(&e),
                    format!(
                        "check the user name in {} and the password in {}; the RouterOS user needs the policies read,write,test,api,rest-api",
                        cfg.rds.username_file.display(),
                        cfg.rds.password_file.display()
                    ),
                )),
                rds::Kind::Config => checks.push(fail(
                    creds,
                    crate::error_chain(&e),
                    "mount the RDS credentials Secret where --rds-username-file/--rds-password-file point",
                )),
                _ => checks.push(fail(creds, crate::error_chain(&e), "see the message; run with --log-level debug")),
            }
            for name in ["RouterOS version", "pool", "snapshots", "REST write access"] {
                checks.push(skipped(name, "no authenticated session"));
            }
            return Ok(checks);
        }
    };
    match res.version {
        Some(ver) if ver >= MIN_VERSION => checks.push(pass(
            "RouterOS version",
            format!("{} on {}", res.version_text, res.board_name.unwrap_or_default()),
        )),
        Some(_) => checks.push(fail(
            "RouterOS version",
            format!(
                "{} is older than {MIN_VERSION}, which NVMe/TCP exports with a chosen NQN need",
                res.version_text
            ),
            "upgrade RouterOS (and the rose-storage package) on the RDS",
        )),
        None => checks.push(fail(
            "RouterOS version",
            format!("cannot read a version from {:?}", res.version_text),
            "check that the address points at a RouterOS device",
        )),
    }

    // The fencing mode, and what it rests on.
    checks.push(fencing_check(&settings, res.version));

    // 5. The pool, and whether snapshots and clones are offered on it.
    match client.pool(&settings.pool) {
        Ok(pool) => {
            let snapshots = snapshot_check(&client, &pool, &settings.pool, &settings.base_path);
            let free = pool.free.unwrap_or(0);
            if !pool.mounted || pool.free.is_none() {
                checks.push(fail(
                    "pool",
                    format!(
                        "pool {} is not mounted (state {:?})",
                        settings.pool,
                        pool.state.unwrap_or_default()
                    ),
                    "check the pool on the RDS: /disk print detail",
                ));
            } else if free <= settings.capacity_reserve + volume::GIB {
                checks.push(fail(
                    "pool",
                    format!(
                        "pool {} has {free} bytes free, not enough for a 1 GiB volume above the reserve of {} bytes",
                        settings.pool, settings.capacity_reserve
                    ),
                    "free space on the pool or lower --capacity-reserve",
                ));
            } else {
                checks.push(pass(
                    "pool",
                    format!(
                        "{} ({}), {:.1} GiB free of {:.1} GiB",
                        settings.pool,
                        pool.fs.unwrap_or_else(|| "unknown fs".into()),
                        free as f64 / volume::GIB as f64,
                        pool.size as f64 / volume::GIB as f64
                    ),
                ));
            }
            checks.push(snapshots);
        }
        Err(e) => {
            checks.push(fail(
                "pool",
                crate::error_chain(&e),
                "set --rds-pool to the slot or mount point of the storage pool (/disk print on the RDS)",
            ));
            checks.push(skipped("snapshots", "the pool could not be read"));
        }
    }

    // 6. A harmless write: the folder the volumes go into.
    match client.make_directory(&settings.base_path) {
        Ok(()) => checks.push(pass("REST write access", format!("folder {} exists or was created", settings.base_path))),
        Err(e) if e.kind() == rds::Kind::Unauthorized => checks.push(fail(
            "REST write access",
            crate::error_chain(&e),
            "give the RouterOS user the policies read,write,test,api,rest-api (/user group set <group> policy=...)",
        )),
        Err(e) => checks.push(fail(
            "REST write access",
            crate::error_chain(&e),
            format!("check that --volume-base-path {} lies on the pool", settings.base_path),
        )),
    }
    Ok(checks)
}

/// Whether the controller offers snapshots and clones on this pool, and
/// why: only on a Btrfs pool (each volume in its own subvolume) whose
/// RouterOS answers `/disk/btrfs/subvolume`. Another filesystem is not a
/// fault (volumes work without snapshots), so it passes and says so.
fn snapshot_check(client: &rds::Client, pool: &rds::Pool, name: &str, base_path: &str) -> Check {
    let fs = pool.fs.clone().unwrap_or_else(|| "unknown fs".into());
    if !pool.mounted {
        return skipped("snapshots", "the pool is not mounted");
    }
    let Some(btrfs) = pool.btrfs() else {
        if fs == "btrfs" {
            return fail(
                "snapshots",
                format!("not offered: pool {name} is btrfs, but the RDS reports no fs-label or mount point for it"),
                "check the pool on the RDS: /disk print detail (fs-label, mount-point)",
            );
        }
        return pass(
            "snapshots",
            format!("not offered: pool {name} is {fs}; snapshots and clones need a Btrfs pool (each volume in its own subvolume)"),
        );
    };
    match client.list_subvolumes(&btrfs, &format!("{base_path}/")) {
        Ok(subs) => pass(
            "snapshots",
            format!(
                "offered: pool {name} is btrfs (fs-label {}); each new volume gets its own subvolume, snapshots and clones are Btrfs snapshots of it ({} subvolumes under {base_path})",
                btrfs.label,
                subs.len()
            ),
        ),
        Err(e) if e.kind() == rds::Kind::TooOld => fail(
            "snapshots",
            format!("not offered: pool {name} is btrfs, but {}", crate::error_chain(&e)),
            "upgrade RouterOS (and the rose-storage package) on the RDS for /disk/btrfs/subvolume",
        ),
        Err(e) => fail(
            "snapshots",
            format!("pool {name} is btrfs, but its subvolumes cannot be listed: {}", crate::error_chain(&e)),
            "check /disk/btrfs/subvolume print on the RDS and the user's read policy",
        ),
    }
}

fn node_checks(v: &Values) -> Result<Vec<Check>, ConfigError> {
    let settings = config::node_settings(v, "doctor")?;
    let roots = &settings.roots;
    let mut checks = Vec::new();

    let module = roots.sys("module/nvme_tcp");
    if Sysfs::new(roots.clone()).module_loaded("nvme_tcp") {
        checks.push(pass(
            "nvme_tcp module",
            format!("loaded ({} exists)", module.display()),
        ));
    } else {
        checks.push(fail(
            "nvme_tcp module",
            format!("not loaded ({} is missing)", module.display()),
            "modprobe nvme_tcp, and load it at boot: echo nvme_tcp > /etc/modules-load.d/nvme_tcp.conf",
        ));
    }

    let bin = &settings.nvme.bin;
    match exec::resolve(bin) {
        None => checks.push(fail(
            "nvme tool",
            format!("{bin:?} (--nvme-bin) not found in {}", exec::PATH),
            "install nvme-cli (apt install nvme-cli) or point --nvme-bin at it",
        )),
        Some(path) => match exec::run_ok(bin, &["version"], Duration::from_secs(10)) {
            Ok(out) => checks.push(pass(
                "nvme tool",
                format!(
                    "{} ({})",
                    out.stdout.lines().next().unwrap_or("").trim(),
                    path.display()
                ),
            )),
            Err(e) => checks.push(fail(
                "nvme tool",
                format!("{} does not run: {}", path.display(), crate::error_chain(&e)),
                "reinstall nvme-cli",
            )),
        },
    }

    let hostnqn_file = nvme::host_nqn_file(roots);
    let host_nqn = match nvme::read_host_nqn(settings.nvme.host_nqn.as_deref(), roots) {
        nvme::HostNqn::Flag(nqn) | nvme::HostNqn::File(nqn) => Some(nqn),
        nvme::HostNqn::Missing => None,
    };
    match host_nqn {
        Some(nqn) if nqn.starts_with("nqn.") => checks.push(pass("host NQN", nqn)),
        Some(nqn) => checks.push(fail(
            "host NQN",
            format!(
                "{nqn:?} (from --host-nqn or {}) is not an NQN",
                hostnqn_file.display()
            ),
            format!("regenerate it: nvme gen-hostnqn > {}", hostnqn_file.display()),
        )),
        None => checks.push(fail(
            "host NQN",
            format!(
                "{} is missing or empty and --host-nqn is not set",
                hostnqn_file.display()
            ),
            format!(
                "create it once per node: nvme gen-hostnqn > {}",
                hostnqn_file.display()
            ),
        )),
    }

    let tools = ["mkfs.ext4", "mkfs.xfs", "blkid", "resize2fs", "xfs_growfs"];
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| exec::resolve(t).is_none())
        .collect();
    if missing.is_empty() {
        checks.push(pass("filesystem tools", tools.join(", ")));
    } else {
        checks.push(fail(
            "filesystem tools",
            format!("missing: {}", missing.join(", ")),
            "install e2fsprogs, xfsprogs and util-linux (blkid)",
        ));
    }

    let kubelet = std::path::PathBuf::from(config::required(v, flag::KUBELET_DIR)?);
    let probe = kubelet.join(format!(".rds-csi-doctor-{}", std::process::id()));
    match std::fs::write(&probe, b"rds-csi doctor\n").and_then(|_| std::fs::remove_file(&probe)) {
        Ok(()) => checks.push(pass("kubelet dir", format!("{} is writable", kubelet.display()))),
        Err(e) => checks.push(fail(
            "kubelet dir",
            format!("cannot write in {}: {e}", kubelet.display()),
            "run the node plugin privileged with the kubelet dir mounted (k3s uses /var/lib/kubelet); or pass --kubelet-dir",
        )),
    }
    Ok(checks)
}

/// Prints the checks and returns whether every one passed.
pub fn report(checks: &[Check]) -> bool {
    for c in checks {
        println!("{c}");
    }
    let failed = checks
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Fail(..)))
        .count();
    if failed == 0 {
        println!("all {} checks passed", checks.len());
        true
    } else {
        println!("{failed} of {} checks failed", checks.len());
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_the_mark_and_the_fix() {
        assert_eq!(pass("pool", "ok").to_string(), "✔ pool: ok");
        assert_eq!(
            fail("pool", "gone", "make one").to_string(),
            "✘ pool: gone\n    → make one"
        );
        assert_eq!(
            skipped("pool", "no session").to_string(),
            "- pool: skipped (no session)"
        );
    }
}
