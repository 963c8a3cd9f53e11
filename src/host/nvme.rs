//! NVMe/TCP attach and detach through the `nvme` CLI: look first (sysfs),
//! connect with the StorageClass's resilience options, retry transient
//! failures with the project's jittered backoff, wait for the block device;
//! disconnect and verify the subsystem is gone; rescan a namespace; parse
//! `nvme list-subsys -o json`. Only NQNs under the managed prefix are ever
//! connected or disconnected.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use log::{info, warn};
use serde_json::Value;

use crate::host::device::{self, BlockDevice, Depth, Lookup, Subsystem, Sysfs};
use crate::host::exec;
use crate::host::Roots;
use crate::metrics;
use crate::retry::{self, GaveUp};
use crate::volume::{ConnectionConfig, Nqn, NqnPrefix};

/// One `nvme` invocation may take this long (a connect to an unreachable
/// address waits for the kernel's TCP timeout).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// After `nvme disconnect`, how long the subsystem may take to leave sysfs.
const GONE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a whole disconnect takes: the command, then the wait for
/// the subsystem to leave sysfs.
pub const DISCONNECT_LIMIT: Duration =
    Duration::from_secs(COMMAND_TIMEOUT.as_secs() + GONE_TIMEOUT.as_secs());

/// Where a volume is exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub nqn: Nqn,
    pub address: String,
    pub port: u16,
    /// The host NQN and host ID the controller assigned this node for the
    /// volume (`--nvme-host-acl`); `None`: the node's own host NQN.
    pub host: Option<crate::fence::HostIdentity>,
}

/// The arguments of `nvme connect` for `target` (everything after the
/// program name). Kernel defaults are left alone where the value says so:
/// `-l` only when ctrl_loss_tmo ≠ 0, `-c` only when reconnect_delay > 0,
/// `-k` only when keep_alive_tmo > 0, `-q` only with a host NQN; the
/// target's own host identity (`-q` and `-I`), when it has one, before the
/// node's host NQN.
pub fn connect_args(target: &Target, conn: &ConnectionConfig, host_nqn: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "connect".into(),
        "-t".into(),
        "tcp".into(),
        "-a".into(),
        target.address.clone(),
        "-s".into(),
        target.port.to_string(),
        "-n".into(),
        target.nqn.to_string(),
    ];
    if conn.ctrl_loss_tmo != 0 {
        args.extend(["-l".into(), conn.ctrl_loss_tmo.to_string()]);
    }
    if conn.reconnect_delay > 0 {
        args.extend(["-c".into(), conn.reconnect_delay.to_string()]);
    }
    if conn.keep_alive_tmo > 0 {
        args.extend(["-k".into(), conn.keep_alive_tmo.to_string()]);
    }
    if let Some(h) = &target.host {
        args.extend(["-q".into(), h.nqn.clone(), "-I".into(), h.id.clone()]);
    } else if let Some(h) = host_nqn {
        args.extend(["-q".into(), h.to_string()]);
    }
    args
}

/// What a failed `nvme connect` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The subsystem is connected already: as good as a success.
    AlreadyConnected,
    /// Worth another attempt: the network or the RDS may come back.
    Transient,
    /// Retrying cannot help (bad arguments, no such subsystem, no tool).
    Definite,
}

/// nvme-cli 1.x/2.x and kernel (errno) texts for "it is there already".
const ALREADY: &[&str] = &["already connected", "operation already in progress"];
/// Texts of failures that go away by themselves: the RDS rebooting, the
/// network not up yet, a slow target. `input/output error` is here because
/// the kernel answers it while a rebooting target accepts TCP but does not
/// serve the subsystem yet.
const TRANSIENT: &[&str] = &[
    "connection refused",
    "no route to host",
    "network is unreachable",
    "host is unreachable",
    "timed out",
    "connection reset",
    "connection aborted",
    "resource temporarily unavailable",
    "try again",
    "interrupted system call",
    "input/output error",
    "temporary failure in name resolution",
    "failed to resolve",
    "cannot assign requested address",
    "device or resource busy",
];

/// Classifies what nvme-cli printed (stderr and stdout together).
pub fn classify_text(text: &str) -> Failure {
    let t = text.to_ascii_lowercase();
    if ALREADY.iter().any(|s| t.contains(s)) {
        Failure::AlreadyConnected
    } else if TRANSIENT.iter().any(|s| t.contains(s)) {
        Failure::Transient
    } else {
        Failure::Definite
    }
}

/// Classifies a failed `nvme connect`: timeouts are transient, a missing
/// tool is definite, otherwise the tool's own words decide.
pub fn classify(err: &exec::Error) -> Failure {
    match err {
        exec::Error::TimedOut { .. } | exec::Error::Wait { .. } => Failure::Transient,
        exec::Error::Resolve { .. } | exec::Error::Spawn { .. } => Failure::Definite,
        exec::Error::Failed { stderr, stdout, .. } => classify_text(&format!("{stderr}\n{stdout}")),
    }
}

/// One path (controller) in `nvme list-subsys` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPath {
    pub name: String,
    pub transport: String,
    pub address: String,
    pub state: String,
}

/// One subsystem in `nvme list-subsys` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSubsystem {
    pub name: String,
    pub nqn: String,
    pub paths: Vec<ListedPath>,
}

/// Parses `nvme list-subsys -o json`: nvme-cli 2.x prints a list of hosts,
/// each with `Subsystems`; 1.x printed one object with `Subsystems`. Empty
/// output means nothing is connected.
pub fn parse_list_subsys(text: &str) -> Result<Vec<ListedSubsystem>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let hosts: Vec<&Value> = match &v {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![&v],
        _ => return Err("expected a list of hosts or an object".into()),
    };
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let mut out = Vec::new();
    for host in hosts {
        let Some(subs) = host.get("Subsystems") else {
            continue;
        };
        let subs = subs.as_array().ok_or("\"Subsystems\" is not a list")?;
        for sub in subs {
            let nqn = s(sub, "NQN");
            if nqn.is_empty() {
                return Err(format!("a subsystem without \"NQN\": {sub}"));
            }
            let paths = sub
                .get("Paths")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| ListedPath {
                            name: s(p, "Name"),
                            transport: s(p, "Transport"),
                            address: s(p, "Address"),
                            state: s(p, "State"),
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(ListedSubsystem {
                name: s(sub, "Name"),
                nqn,
                paths,
            });
        }
    }
    Ok(out)
}

/// Why a connect attempt failed.
#[derive(Debug)]
pub enum AttemptError {
    Command(exec::Error),
    Device(device::Error),
}

impl AttemptError {
    pub fn is_transient(&self) -> bool {
        match self {
            AttemptError::Command(e) => classify(e) == Failure::Transient,
            // The connect went through but no device showed up: try afresh.
            AttemptError::Device(device::Error::WaitDevice { .. }) => true,
            AttemptError::Device(_) => false,
        }
    }
}

impl fmt::Display for AttemptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptError::Command(e) => e.fmt(f),
            AttemptError::Device(e) => e.fmt(f),
        }
    }
}

#[derive(Debug)]
pub enum Error {
    /// The NQN is not under the managed prefix: never touched.
    NotManaged {
        nqn: String,
        prefix: String,
    },
    /// The kernel is reconnecting the controller: not interfering.
    Reconnecting {
        nqn: String,
        states: String,
    },
    Connect {
        nqn: String,
        target: String,
        attempts: u32,
        gave_up: GaveUp,
        elapsed: Duration,
        source: Box<AttemptError>,
    },
    Disconnect {
        nqn: String,
        source: Box<exec::Error>,
    },
    StillConnected {
        nqn: String,
        states: String,
    },
    Rescan {
        controller: String,
        source: Box<exec::Error>,
    },
    Sysfs(device::Error),
    /// A namespace of the subsystem is in use (mounted, held, open in a
    /// process): not disconnected, never pulled from under anyone.
    Busy {
        nqn: String,
        users: Vec<String>,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotManaged { nqn, prefix } => write!(
                f,
                "refusing to touch {nqn}: it is not under the managed NQN prefix {prefix} (--nqn-prefix)"
            ),
            Error::Reconnecting { nqn, states } => write!(
                f,
                "{nqn} is reconnecting ({states}): the kernel is retrying, not interfering; try again later"
            ),
            Error::Connect {
                nqn,
                target,
                attempts,
                gave_up,
                elapsed,
                ..
            } => {
                let why = match gave_up {
                    GaveUp::Definite => "a failure retrying cannot fix",
                    GaveUp::Attempts => "out of attempts",
                    GaveUp::Deadline => "out of time",
                };
                write!(
                    f,
                    "cannot connect {nqn} at {target} ({attempts} attempt(s) in {:.1}s, {why})",
                    elapsed.as_secs_f64()
                )
            }
            Error::Disconnect { nqn, .. } => write!(f, "cannot disconnect {nqn}"),
            Error::StillConnected { nqn, states } => {
                write!(f, "{nqn} is still connected after nvme disconnect ({states})")
            }
            Error::Rescan { controller, .. } => write!(f, "cannot rescan the namespaces of {controller}"),
            Error::Sysfs(_) => write!(f, "cannot read the NVMe state from sysfs"),
            Error::Busy { nqn, users } => write!(
                f,
                "not disconnecting {nqn}: its device is in use ({})",
                users.join("; ")
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect { source, .. } => match source.as_ref() {
                AttemptError::Command(e) => Some(e),
                AttemptError::Device(e) => Some(e),
            },
            Error::Disconnect { source, .. } | Error::Rescan { source, .. } => Some(source.as_ref()),
            Error::Sysfs(e) => Some(e),
            _ => None,
        }
    }
}

impl From<device::Error> for Error {
    fn from(e: device::Error) -> Self {
        Error::Sysfs(e)
    }
}

/// Where the host NQN comes from, as read (not validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostNqn {
    /// `--host-nqn`.
    Flag(String),
    /// `<etc>/nvme/hostnqn`, trimmed and not empty.
    File(String),
    /// Neither.
    Missing,
}

/// The one reader of the host NQN, for connects and for `doctor`: the
/// flag when given, else the trimmed `<etc>/nvme/hostnqn` when not empty.
pub fn read_host_nqn(flag: Option<&str>, roots: &Roots) -> HostNqn {
    if let Some(h) = flag {
        return HostNqn::Flag(h.to_string());
    }
    match std::fs::read_to_string(host_nqn_file(roots)) {
        Ok(text) if !text.trim().is_empty() => HostNqn::File(text.trim().to_string()),
        _ => HostNqn::Missing,
    }
}

/// `<etc>/nvme/hostnqn`.
pub fn host_nqn_file(roots: &Roots) -> PathBuf {
    roots.etc("nvme/hostnqn")
}

/// A volume's attachment.
#[derive(Debug, Clone)]
pub struct Attached {
    pub subsystem: Subsystem,
    pub device: BlockDevice,
    /// True when this call connected it (false: it was connected and live).
    pub connected_now: bool,
}

/// How the node runs `nvme`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The program: a name found through exec's fixed PATH, or a path.
    pub bin: String,
    /// `--host-nqn`; else `<etc>/nvme/hostnqn` when present.
    pub host_nqn: Option<String>,
    pub prefix: NqnPrefix,
    /// Per attempt: how long the block device may take to appear.
    pub device_wait: Duration,
    /// The connect backoff (attempts, delays, overall deadline).
    pub policy: retry::Policy,
}

impl Settings {
    /// The connect backoff for `attempts` attempts: 1 s, ×2, ±10 %, all
    /// within two minutes (kubelet retries NodeStage anyway).
    pub fn connect_policy(attempts: u32) -> retry::Policy {
        retry::Policy {
            initial: Duration::from_secs(1),
            factor: 2.0,
            cap: Duration::from_secs(30),
            jitter: 0.1,
            max_attempts: attempts.max(1),
            deadline: Duration::from_secs(120),
        }
    }
}

/// The `nvme` CLI plus sysfs.
#[derive(Debug, Clone)]
pub struct Nvme {
    settings: Settings,
    sysfs: Sysfs,
}

impl Nvme {
    pub fn new(settings: Settings, sysfs: Sysfs) -> Nvme {
        Nvme { settings, sysfs }
    }

    pub fn sysfs(&self) -> &Sysfs {
        &self.sysfs
    }

    pub fn prefix(&self) -> &NqnPrefix {
        &self.settings.prefix
    }

    pub fn bin(&self) -> &str {
        &self.settings.bin
    }

    fn check_managed(&self, nqn: &str) -> Result<(), Error> {
        if self.settings.prefix.manages(nqn) {
            Ok(())
        } else {
            Err(Error::NotManaged {
                nqn: nqn.to_string(),
                prefix: self.settings.prefix.as_str().to_string(),
            })
        }
    }

    /// The host NQN to pass with `-q`: the flag, else `<etc>/nvme/hostnqn`
    /// when it holds an NQN (read on every connect; absent, empty or not
    /// an NQN means nvme-cli's own default).
    pub fn host_nqn(&self) -> Option<String> {
        match read_host_nqn(self.settings.host_nqn.as_deref(), self.sysfs.roots()) {
            HostNqn::Flag(h) => Some(h),
            HostNqn::File(h) => h.starts_with("nqn.").then_some(h),
            HostNqn::Missing => None,
        }
    }

    /// Attaches `target`: reuses a live connection with its device; leaves a
    /// reconnecting one to the kernel (`Reconnecting`); disconnects an
    /// orphan (connected, no usable device) first; then connects with
    /// backoff and waits for the device. Called twice, the second call finds
    /// the first's connection and reuses it.
    pub fn attach(&self, target: &Target, conn: &ConnectionConfig) -> Result<Attached, Error> {
        let nqn = target.nqn.as_str();
        self.check_managed(nqn)?;
        match self.sysfs.lookup(nqn)? {
            Lookup::Ready(sub, dev) if sub.is_live() => {
                metrics::inc("rds_csi_nvme_connects_total", &[("outcome", "reused")]);
                return Ok(Attached {
                    subsystem: sub,
                    device: dev,
                    connected_now: false,
                });
            }
            Lookup::Ready(sub, _) | Lookup::NoDevice(sub, _) if sub.is_reconnecting() => {
                return Err(Error::Reconnecting {
                    nqn: nqn.to_string(),
                    states: sub.states(),
                })
            }
            Lookup::Ready(sub, _) => {
                warn!(
                    "{nqn} is connected but not live ({}): reconnecting it",
                    sub.states()
                );
                self.disconnect(nqn)?;
            }
            Lookup::NoDevice(sub, why) => {
                warn!(
                    "{nqn} is connected without a usable block device ({why}; {}): an orphan, reconnecting it",
                    sub.states()
                );
                self.disconnect(nqn)?;
            }
            Lookup::NotConnected => {}
        }
        self.connect(target, conn)
    }

    fn connect(&self, target: &Target, conn: &ConnectionConfig) -> Result<Attached, Error> {
        let nqn = target.nqn.as_str();
        let args = connect_args(target, conn, self.host_nqn().as_deref());
        let started = Instant::now();
        let result = retry::run_blocking(&self.settings.policy, AttemptError::is_transient, |attempt| {
            let timeout = COMMAND_TIMEOUT.min(attempt.remaining.max(Duration::from_secs(1)));
            if let Err(e) = exec::run_ok(&self.settings.bin, &args, timeout) {
                match classify(&e) {
                    Failure::AlreadyConnected => info!("{nqn}: already connected ({})", e.stderr().trim()),
                    _ => {
                        warn!("connect {nqn} attempt {}: {e}", attempt.number);
                        return Err(AttemptError::Command(e));
                    }
                }
            }
            let wait = self
                .settings
                .device_wait
                .min(attempt.remaining.max(Duration::from_secs(1)));
            match self.sysfs.wait_for_device(nqn, wait) {
                Ok((subsystem, device)) => Ok((subsystem, device)),
                Err(e) => {
                    warn!("connect {nqn} attempt {}: {e}", attempt.number);
                    if matches!(e, device::Error::WaitDevice { .. }) {
                        // Start the next attempt from scratch.
                        if let Err(d) = self.disconnect(nqn) {
                            warn!("clean-up after a connect without a device: {d}");
                        }
                    }
                    Err(AttemptError::Device(e))
                }
            }
        });
        metrics::inc(
            "rds_csi_nvme_connects_total",
            &[("outcome", if result.is_ok() { "connected" } else { "failed" })],
        );
        match result {
            Ok((subsystem, device)) => {
                metrics::observe(
                    "rds_csi_nvme_connect_duration_seconds",
                    &[],
                    started.elapsed().as_secs_f64(),
                );
                info!(
                    "connected {nqn} at {}:{} as {} in {:.1}ms",
                    target.address,
                    target.port,
                    device.name,
                    started.elapsed().as_secs_f64() * 1000.0
                );
                Ok(Attached {
                    subsystem,
                    device,
                    connected_now: true,
                })
            }
            Err(f) => Err(Error::Connect {
                nqn: nqn.to_string(),
                target: format!("{}:{}", target.address, target.port),
                attempts: f.attempts,
                gave_up: f.gave_up,
                elapsed: f.elapsed,
                source: Box::new(f.error),
            }),
        }
    }

    /// Disconnects every controller of `nqn` and checks the subsystem left
    /// sysfs. Returns false when it was not connected (a second call).
    pub fn disconnect(&self, nqn: &str) -> Result<bool, Error> {
        self.disconnect_within(nqn, DISCONNECT_LIMIT, Depth::Full)
    }

    /// [`Nvme::disconnect`] taking at most about `limit` in all.
    /// Whatever the caller checked before, a namespace that is mounted,
    /// held, or open in any process is never disconnected (`Busy`); with
    /// [`Depth::NoProcessScan`] the caller has just looked at the
    /// processes itself (see [`Depth`]).
    pub fn disconnect_within(&self, nqn: &str, limit: Duration, depth: Depth) -> Result<bool, Error> {
        self.check_managed(nqn)?;
        let Some(sub) = self.sysfs.subsystem(nqn)? else {
            return Ok(false);
        };
        let started = Instant::now();
        let grace = device::BUSY_GRACE.min(limit / 2);
        loop {
            let mut users = Vec::new();
            for ns in &sub.namespaces {
                users.extend(self.sysfs.busy(ns, depth)?);
            }
            if users.is_empty() {
                break;
            }
            if started.elapsed() >= grace {
                return Err(Error::Busy {
                    nqn: nqn.to_string(),
                    users,
                });
            }
            std::thread::sleep(device::BUSY_POLL);
        }
        let limit = limit.saturating_sub(started.elapsed());
        let result = self.disconnect_connected(nqn, limit);
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        metrics::inc("rds_csi_nvme_disconnects_total", &[("outcome", outcome)]);
        result
    }

    fn disconnect_connected(&self, nqn: &str, limit: Duration) -> Result<bool, Error> {
        let started = Instant::now();
        let timeout = COMMAND_TIMEOUT.min(limit).max(Duration::from_secs(1));
        exec::run_ok(&self.settings.bin, &["disconnect", "-n", nqn], timeout).map_err(|source| {
            Error::Disconnect {
                nqn: nqn.to_string(),
                source: Box::new(source),
            }
        })?;
        let gone_limit = GONE_TIMEOUT.min(limit.saturating_sub(started.elapsed()));
        let waiting = Instant::now();
        loop {
            match self.sysfs.subsystem(nqn)? {
                None => {
                    info!("disconnected {nqn}");
                    return Ok(true);
                }
                Some(sub) if waiting.elapsed() >= gone_limit => {
                    return Err(Error::StillConnected {
                        nqn: nqn.to_string(),
                        states: sub.states(),
                    })
                }
                Some(_) => std::thread::sleep(device::POLL_INTERVAL),
            }
        }
    }

    /// `nvme ns-rescan <dev>/<controller>`: the kernel re-reads namespace
    /// sizes (after the RDS grew the disk).
    pub fn rescan(&self, controller: &str) -> Result<(), Error> {
        let dev = self.sysfs.roots().dev(controller);
        exec::run_ok(
            &self.settings.bin,
            &["ns-rescan".to_string(), dev.display().to_string()],
            COMMAND_TIMEOUT,
        )
        .map_err(|source| Error::Rescan {
            controller: controller.to_string(),
            source: Box::new(source),
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            nqn: Nqn::parse("nqn.2000-02.com.mikrotik:pvc-1").unwrap(),
            address: "10.0.0.5".into(),
            port: 4420,
            host: None,
        }
    }

    #[test]
    fn connect_args_carry_the_resilience_options() {
        let conn = ConnectionConfig {
            ctrl_loss_tmo: -1,
            reconnect_delay: 7,
            keep_alive_tmo: 30,
        };
        assert_eq!(
            connect_args(&target(), &conn, Some("nqn.2014-08.org.nvmexpress:uuid:h")).join(" "),
            "connect -t tcp -a 10.0.0.5 -s 4420 -n nqn.2000-02.com.mikrotik:pvc-1 -l -1 -c 7 -k 30 \
             -q nqn.2014-08.org.nvmexpress:uuid:h"
        );
    }

    #[test]
    fn kernel_defaults_are_left_alone() {
        let conn = ConnectionConfig {
            ctrl_loss_tmo: 0,
            reconnect_delay: 0,
            keep_alive_tmo: 0,
        };
        assert_eq!(
            connect_args(&target(), &conn, None).join(" "),
            "connect -t tcp -a 10.0.0.5 -s 4420 -n nqn.2000-02.com.mikrotik:pvc-1"
        );
        let d = connect_args(&target(), &ConnectionConfig::default(), None).join(" ");
        assert!(d.ends_with("-l -1 -c 5"), "{d}");
        let conn = ConnectionConfig {
            ctrl_loss_tmo: 600,
            ..ConnectionConfig::default()
        };
        assert!(connect_args(&target(), &conn, None).join(" ").contains("-l 600"));
    }

    #[test]
    fn an_assigned_host_identity_comes_before_the_nodes_own_host_nqn() {
        let a = crate::fence::HostIdentity::for_node("node-a").unwrap();
        let t = Target {
            host: Some(a.clone()),
            ..target()
        };
        let args = connect_args(&t, &ConnectionConfig::default(), Some("nqn.own"));
        let text = args.join(" ");
        assert!(text.ends_with(&format!("-q {} -I {}", a.nqn, a.id)), "{text}");
        assert!(!text.contains("nqn.own"), "{text}");
    }

    #[test]
    fn failures_are_classified_by_what_nvme_cli_says() {
        use Failure::*;
        for (text, want) in [
            ("could not add new controller: connection refused", Transient),
            (
                "Failed to write to /dev/nvme-fabrics: Connection refused",
                Transient,
            ),
            (
                "Failed to write to /dev/nvme-fabrics: No route to host",
                Transient,
            ),
            (
                "Failed to write to /dev/nvme-fabrics: Network is unreachable",
                Transient,
            ),
            (
                "Failed to write to /dev/nvme-fabrics: Connection timed out",
                Transient,
            ),
            (
                "Failed to write to /dev/nvme-fabrics: Input/output error",
                Transient,
            ),
            ("failed to resolve host rds.lan", Transient),
            ("already connected", AlreadyConnected),
            (
                "Failed to write to /dev/nvme-fabrics: Operation already in progress",
                AlreadyConnected,
            ),
            (
                "could not add new controller: invalid arguments/configuration",
                Definite,
            ),
            ("Failed to write to /dev/nvme-fabrics: Invalid argument", Definite),
            (
                "Failed to open /dev/nvme-fabrics: No such file or directory",
                Definite,
            ),
            ("failed to open nvme-fabrics device", Definite),
            ("Permission denied", Definite),
            ("", Definite),
        ] {
            assert_eq!(classify_text(text), want, "{text}");
        }
        let timed_out = exec::Error::TimedOut {
            command: "nvme connect".into(),
            after: Duration::from_secs(30),
            stderr: String::new(),
        };
        assert_eq!(classify(&timed_out), Transient);
        let missing = exec::Error::Resolve {
            program: "nvme".into(),
        };
        assert_eq!(classify(&missing), Definite);
        let failed = exec::Error::Failed {
            command: "nvme connect".into(),
            code: Some(1),
            signal: None,
            stdout: String::new(),
            stderr: "could not add new controller: connection refused\n".into(),
        };
        assert_eq!(classify(&failed), Transient);
        assert!(AttemptError::Command(failed).is_transient());
        assert!(AttemptError::Device(device::Error::WaitDevice {
            nqn: "n".into(),
            waited: Duration::ZERO,
            last: device::Unusable::NotConnected
        })
        .is_transient());
        assert!(!AttemptError::Command(missing).is_transient());
    }

    #[test]
    fn list_subsys_json_of_nvme_cli_2() {
        let text = r#"[
          {
            "HostNQN":"nqn.2014-08.org.nvmexpress:uuid:h",
            "HostID":"0b6d",
            "Subsystems":[
              {
                "Name":"nvme-subsys2",
                "NQN":"nqn.2000-02.com.mikrotik:pvc-1",
                "IOPolicy":"numa",
                "Paths":[
                  {"Name":"nvme2","Transport":"tcp","Address":"traddr=10.0.0.1,trsvcid=4420","State":"live"}
                ]
              },
              {"Name":"nvme-subsys3","NQN":"nqn.2000-02.com.mikrotik:pvc-10","Paths":[]}
            ]
          }
        ]"#;
        let subs = parse_list_subsys(text).unwrap();
        assert_eq!(subs.len(), 2);
        assert_eq!(subs[0].nqn, "nqn.2000-02.com.mikrotik:pvc-1");
        assert_eq!(subs[0].paths[0].state, "live");
        assert_eq!(subs[0].paths[0].address, "traddr=10.0.0.1,trsvcid=4420");
        // Exact NQNs, so pvc-1 is not confused with pvc-10.
        assert_eq!(
            subs.iter()
                .filter(|s| s.nqn == "nqn.2000-02.com.mikrotik:pvc-1")
                .count(),
            1
        );
    }

    #[test]
    fn list_subsys_other_shapes() {
        assert!(parse_list_subsys("").unwrap().is_empty());
        assert!(parse_list_subsys("[]").unwrap().is_empty());
        let v1 = r#"{"Subsystems":[{"Name":"nvme-subsys0","NQN":"nqn.x:y","Paths":[{"Name":"nvme0","Transport":"tcp","Address":"traddr=1.2.3.4 trsvcid=4420","State":"connecting"}]}]}"#;
        let subs = parse_list_subsys(v1).unwrap();
        assert_eq!(subs[0].paths[0].state, "connecting");
        assert!(parse_list_subsys("nvme: not json").is_err());
        assert!(parse_list_subsys(r#"[{"Subsystems":[{"Name":"x"}]}]"#).is_err());
    }

    #[test]
    fn the_connect_policy_is_valid_and_grows() {
        let p = Settings::connect_policy(5);
        p.validate().unwrap();
        assert_eq!(p.max_attempts, 5);
        assert_eq!(p.nominal_delay(1), Duration::from_secs(1));
        assert_eq!(p.nominal_delay(2), Duration::from_secs(2));
        assert_eq!(Settings::connect_policy(0).max_attempts, 1);
    }

    #[test]
    fn the_host_nqn_comes_from_the_flag_else_the_file() {
        let root = std::env::temp_dir().join(format!(
            "rds-csi-hostnqn-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let roots = Roots {
            etc: root.join("etc"),
            ..Roots::default()
        };
        assert_eq!(read_host_nqn(None, &roots), HostNqn::Missing);
        std::fs::create_dir_all(root.join("etc/nvme")).unwrap();
        std::fs::write(host_nqn_file(&roots), "  \n").unwrap();
        assert_eq!(read_host_nqn(None, &roots), HostNqn::Missing);
        std::fs::write(host_nqn_file(&roots), "nqn.2014-08.org.nvmexpress:uuid:x\n").unwrap();
        assert_eq!(
            read_host_nqn(None, &roots),
            HostNqn::File("nqn.2014-08.org.nvmexpress:uuid:x".into())
        );
        assert_eq!(
            read_host_nqn(Some("nqn.flag"), &roots),
            HostNqn::Flag("nqn.flag".into())
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
