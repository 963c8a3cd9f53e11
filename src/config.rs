//! Validated configuration: turns the raw flag values from `cli` into typed
//! settings, each error naming the flag (or environment variable) and the
//! rule it broke.

use std::fmt;
use std::time::Duration;

use crate::cli::{flag, Values};
use crate::controller::ControllerSettings;
use crate::csi::server::Endpoint;
use crate::rds;
use crate::volume::{self, NqnPrefix, SizePolicy};

/// Everything `rds-csi serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub controller: bool,
    pub node: bool,
    pub endpoint: Endpoint,
    pub node_id: Option<String>,
    pub driver_name: String,
    pub log_level: log::LevelFilter,
    pub max_in_flight: usize,
    pub shutdown_grace: Duration,
    /// Present when `--controller` is given.
    pub controller_config: Option<ControllerConfig>,
    /// `--check-config`: validate, print, exit.
    pub check_only: bool,
    /// `--metrics-address`: where to serve /metrics, if at all.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// With --node: the node plugin's settings (see `node_settings`).
    pub node_settings: Option<crate::node::Settings>,
}

/// A flag whose value breaks a rule; the message names both.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ServeConfig {
    pub fn from_values(v: &Values) -> Result<Self, ConfigError> {
        let controller = flag_bool(v, flag::CONTROLLER)?;
        let node = flag_bool(v, flag::NODE)?;
        if !controller && !node {
            return Err(ConfigError(
                "nothing to serve: give --controller, --node or both (or RDS_CSI_CONTROLLER/RDS_CSI_NODE=true)".into(),
            ));
        }
        let endpoint_raw = required(v, flag::ENDPOINT)?;
        let endpoint = Endpoint::parse(endpoint_raw)
            .map_err(|e| ConfigError(format!("{}: {e}", v.describe(flag::ENDPOINT))))?;
        let node_id = v.get(flag::NODE_ID).map(|s| s.value.clone());
        if node && node_id.is_none() {
            return Err(ConfigError(
                "--node needs the node's id: give --node-id, or set RDS_CSI_NODE_ID, NODE_ID or NODE_NAME"
                    .into(),
            ));
        }
        if let Some(id) = &node_id {
            volume::check_node_id(id)
                .map_err(|rule| ConfigError(format!("{} {id:?}: {rule}", v.describe(flag::NODE_ID))))?;
        }
        let node_settings = match (&node_id, node) {
            (Some(id), true) => Some(node_settings(v, id)?),
            _ => None,
        };
        let driver_name = required(v, flag::DRIVER_NAME)?.to_string();
        check_driver_name(&driver_name).map_err(|rule| {
            ConfigError(format!(
                "{} {driver_name:?}: {rule}",
                v.describe(flag::DRIVER_NAME)
            ))
        })?;
        Ok(ServeConfig {
            controller,
            node,
            endpoint,
            node_id,
            driver_name,
            log_level: log_level(v)?,
            max_in_flight: number(v, flag::MAX_IN_FLIGHT, 1, 100_000)? as usize,
            shutdown_grace: Duration::from_secs(number(v, flag::SHUTDOWN_GRACE, 0, 3600)?),
            controller_config: if controller {
                Some(ControllerConfig::from_values(v)?)
            } else {
                None
            },
            check_only: flag_bool(v, flag::CHECK_CONFIG)?,
            metrics_address: match v.get(flag::METRICS_ADDRESS) {
                None => None,
                Some(s) => Some(s.value.parse().map_err(|_| {
                    ConfigError(format!(
                        "{} {:?}: expected ADDR:PORT, e.g. 0.0.0.0:9808 or [::]:9808",
                        v.describe(flag::METRICS_ADDRESS),
                        s.value
                    ))
                })?),
            },
            node_settings,
        })
    }
}

/// The controller's configuration: how to reach the RDS, the controller's
/// own settings (validated here, as the node's are), and how often the
/// background readiness check asks the RDS.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub rds: rds::ClientConfig,
    pub settings: ControllerSettings,
    /// How often the background readiness check asks the RDS.
    pub check_interval: Duration,
}

impl ControllerConfig {
    pub fn from_values(v: &Values) -> Result<Self, ConfigError> {
        let mut rds = rds_client_config(v)?;
        rds.retry.deadline = Duration::from_secs(number(v, flag::RDS_RETRY_FOR, 0, 3600)?);
        rds.max_in_flight = number(v, flag::RDS_MAX_IN_FLIGHT, 1, 64)? as usize;
        let pool = required(v, flag::RDS_POOL)?.to_string();
        let base_raw = v
            .get(flag::VOLUME_BASE_PATH)
            .map(|s| s.value.clone())
            .unwrap_or_else(|| format!("{pool}/csi"));
        let base_path = volume::resolve_volume_path(&base_raw, None).map_err(|rule| {
            ConfigError(format!(
                "{} {base_raw:?}: {rule}",
                v.describe(flag::VOLUME_BASE_PATH)
            ))
        })?;
        let nvme_address = match v.get(flag::NVME_ADDRESS) {
            Some(s) => volume::check_address(&s.value).map_err(|rule| {
                ConfigError(format!(
                    "{} {:?}: {rule}",
                    v.describe(flag::NVME_ADDRESS),
                    s.value
                ))
            })?,
            // The RDS usually serves REST and NVMe/TCP on one address.
            None => {
                let host = rds::Address::parse(&rds.address)
                    .map(|a| a.host)
                    .map_err(|e| ConfigError(format!("{}: {e}", v.describe(flag::RDS_ADDRESS))))?;
                volume::check_address(&host).map_err(|rule| {
                    ConfigError(format!(
                        "--nvme-address: the host of --rds-address {host:?} {rule}; give --nvme-address"
                    ))
                })?
            }
        };
        let export_on_publish = !flag_bool(v, flag::EXPORT_ALWAYS)?;
        let host_acl = flag_bool(v, flag::NVME_HOST_ACL)?;
        if host_acl && !export_on_publish {
            // An always-exported disk would be on the network with an empty
            // allow list (which may mean "anyone") whenever no node has it.
            return Err(ConfigError(
                "--nvme-host-acl needs export on publish: it cannot be combined with --export-always".into(),
            ));
        }
        let reserve_raw = required(v, flag::CAPACITY_RESERVE)?;
        let capacity_reserve = volume::parse_bytes(reserve_raw)
            .map_err(|rule| ConfigError(format!("{}: {rule}", v.describe(flag::CAPACITY_RESERVE))))?;
        Ok(ControllerConfig {
            rds,
            settings: ControllerSettings {
                pool,
                base_path,
                nqn_prefix: nqn_prefix(v)?,
                nvme_address,
                capacity_reserve,
                sizes: SizePolicy::default(),
                allow_multi_node_block: flag_bool(v, flag::ALLOW_MULTI_NODE_BLOCK)?,
                export_on_publish,
                host_acl,
            },
            check_interval: Duration::from_secs(number(v, flag::RDS_CHECK_INTERVAL, 1, 3600)?),
        })
    }
}

/// How to reach the RDS: address, trust, credentials files, timeouts.
/// Shared by `serve --controller` and `doctor`.
pub fn rds_client_config(v: &Values) -> Result<rds::ClientConfig, ConfigError> {
    let address = v.get(flag::RDS_ADDRESS).map(|s| s.value.clone()).ok_or_else(|| {
        ConfigError(
            "--controller needs the RDS: give --rds-address https://<rds>[:port] (or RDS_CSI_RDS_ADDRESS)"
                .into(),
        )
    })?;
    rds::Address::parse(&address)
        .map_err(|e| ConfigError(format!("{}: {e}", v.describe(flag::RDS_ADDRESS))))?;
    let mut cfg = rds::ClientConfig::new(
        address,
        required(v, flag::RDS_USERNAME_FILE)?,
        required(v, flag::RDS_PASSWORD_FILE)?,
    );
    let ca = v.get(flag::RDS_CA_FILE).map(|s| s.value.clone());
    let fingerprint = v.get(flag::RDS_TLS_FINGERPRINT).map(|s| s.value.clone());
    let insecure = flag_bool(v, flag::RDS_INSECURE_SKIP_VERIFY)?;
    cfg.trust = match (ca, fingerprint, insecure) {
        (None, None, false) => rds::Trust::System,
        (Some(path), None, false) => rds::Trust::CaFile(path.into()),
        (None, Some(fp), false) => rds::Trust::Fingerprint(
            rds::parse_fingerprint(&fp)
                .map_err(|e| ConfigError(format!("{}: {e}", v.describe(flag::RDS_TLS_FINGERPRINT))))?,
        ),
        (None, None, true) => rds::Trust::InsecureSkipVerify,
        _ => {
            return Err(ConfigError(
                "give at most one of --rds-ca-file, --rds-tls-fingerprint and --rds-insecure-skip-verify"
                    .into(),
            ))
        }
    };
    let timeout = Duration::from_secs(number(v, flag::RDS_TIMEOUT, 1, 600)?);
    cfg.request_timeout = timeout;
    cfg.connect_timeout = cfg.connect_timeout.min(timeout);
    Ok(cfg)
}

/// The managed NQN prefix (`--nqn-prefix`).
pub fn nqn_prefix(v: &Values) -> Result<NqnPrefix, ConfigError> {
    let raw = required(v, flag::NQN_PREFIX)?;
    NqnPrefix::parse(raw)
        .map_err(|rule| ConfigError(format!("{} {raw:?}: {rule}", v.describe(flag::NQN_PREFIX))))
}

// ---------------------------------------------------------------------------
// NodeConfig: the node plugin's flags
// ---------------------------------------------------------------------------

/// An absolute directory flag (a host root).
fn root_dir(v: &Values, flag: &str) -> Result<std::path::PathBuf, ConfigError> {
    let raw = required(v, flag)?;
    if !raw.starts_with('/') {
        return Err(ConfigError(format!(
            "{} {raw:?}: must be an absolute path",
            v.describe(flag)
        )));
    }
    Ok(std::path::PathBuf::from(raw))
}

/// The node plugin's settings from its flags, each error naming the flag.
pub fn node_settings(v: &Values, node_id: &str) -> Result<crate::node::Settings, ConfigError> {
    use crate::volume::Nqn;
    let bin = required(v, flag::NVME_BIN)?.to_string();
    if bin.contains('/') && !bin.starts_with('/') {
        return Err(ConfigError(format!(
            "{} {bin:?}: give a program name or an absolute path",
            v.describe(flag::NVME_BIN)
        )));
    }
    let prefix = nqn_prefix(v)?;
    let host_nqn = match v.get(flag::HOST_NQN) {
        None => None,
        Some(s) => Some(
            Nqn::parse(&s.value)
                .map_err(|rule| ConfigError(format!("{}: {rule}", v.describe(flag::HOST_NQN))))?
                .to_string(),
        ),
    };
    let roots = crate::host::Roots {
        sys: root_dir(v, flag::SYS_ROOT)?,
        dev: root_dir(v, flag::DEV_ROOT)?,
        proc: root_dir(v, flag::PROC_ROOT)?,
        etc: root_dir(v, flag::ETC_ROOT)?,
    };
    let attempts = number(v, flag::CONNECT_ATTEMPTS, 1, 20)? as u32;
    // Every staging and publish path must lie strictly under it; `/` would
    // confine nothing.
    let kubelet_dir = root_dir(v, flag::KUBELET_DIR)?;
    if kubelet_dir.parent().is_none() {
        return Err(ConfigError(format!(
            "{} {:?}: must not be / (paths are confined under it)",
            v.describe(flag::KUBELET_DIR),
            kubelet_dir.display()
        )));
    }
    Ok(crate::node::Settings {
        node_id: node_id.to_string(),
        max_volumes_per_node: number(v, flag::MAX_VOLUMES_PER_NODE, 0, 100_000)? as i64,
        kubelet_dir,
        roots,
        nvme: crate::host::nvme::Settings {
            bin,
            host_nqn,
            prefix,
            device_wait: Duration::from_secs(number(v, flag::DEVICE_WAIT, 1, 600)?),
            policy: crate::host::nvme::Settings::connect_policy(attempts),
        },
    })
}

/// The log level flag, shared by every subcommand.
pub fn log_level(v: &Values) -> Result<log::LevelFilter, ConfigError> {
    let raw = v.value_or_default(flag::LOG_LEVEL).unwrap_or("info");
    match raw.to_ascii_lowercase().as_str() {
        "off" => Ok(log::LevelFilter::Off),
        "error" => Ok(log::LevelFilter::Error),
        "warn" | "warning" => Ok(log::LevelFilter::Warn),
        "info" => Ok(log::LevelFilter::Info),
        "debug" => Ok(log::LevelFilter::Debug),
        "trace" => Ok(log::LevelFilter::Trace),
        _ => Err(ConfigError(format!(
            "{} {raw:?}: expected one of error, warn, info, debug, trace, off",
            v.describe(flag::LOG_LEVEL)
        ))),
    }
}

/// A required value (its table default counts).
pub fn required<'a>(v: &'a Values, flag: &str) -> Result<&'a str, ConfigError> {
    v.value_or_default(flag)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ConfigError(format!("{} is required", v.describe(flag))))
}

/// A switch: absent is false; `true/false/1/0/yes/no` when given a value.
pub fn flag_bool(v: &Values, flag: &str) -> Result<bool, ConfigError> {
    match v.value_or_default(flag) {
        None => Ok(false),
        Some(raw) => parse_bool(raw)
            .ok_or_else(|| ConfigError(format!("{} {raw:?}: expected true or false", v.describe(flag)))),
    }
}

pub fn parse_bool(raw: &str) -> Option<bool> {
    match raw.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// A whole number within `min..=max`.
pub fn number(v: &Values, flag: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    let raw = required(v, flag)?;
    let n: u64 = raw.parse().map_err(|_| {
        ConfigError(format!(
            "{} {raw:?}: expected a whole number from {min} to {max}",
            v.describe(flag)
        ))
    })?;
    if n < min || n > max {
        return Err(ConfigError(format!(
            "{} {n}: must be from {min} to {max}",
            v.describe(flag)
        )));
    }
    Ok(n)
}

/// CSI driver names: at most 63 characters, lower-case alphanumerics, `-`
/// and `.`, starting and ending with an alphanumeric (the CSI spec's rule,
/// which Kubernetes also applies to CSIDriver objects).
pub fn check_driver_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 63 {
        return Err("must be 1 to 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err("may only contain lower-case letters, digits, '-' and '.'");
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(name.as_bytes()[0]) || !alnum(name.as_bytes()[name.len() - 1]) {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{parse, Command};
    use std::ffi::OsString;

    fn serve(args: &[&str], env: &[(&str, &str)]) -> Result<ServeConfig, ConfigError> {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut all = vec!["serve"];
        all.extend_from_slice(args);
        match parse(all.iter().map(OsString::from), &move |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
        .unwrap()
        {
            Command::Run(_, v) => ServeConfig::from_values(&v),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = serve(&["--controller", "--rds-address", "https://rds.lan"], &[]).unwrap();
        assert!(c.controller && !c.node);
        assert_eq!(c.endpoint.to_string(), "unix:///csi/csi.sock");
        assert_eq!(c.driver_name, "rds.csi.srvlab.io");
        assert_eq!(c.log_level, log::LevelFilter::Info);
        assert_eq!(c.max_in_flight, 128);
        assert_eq!(c.shutdown_grace, Duration::from_secs(25));
    }

    #[test]
    fn fencing_modes() {
        let base = ["--controller", "--rds-address", "https://rds.lan"];
        let cc = |extra: &[&str]| {
            let mut a = base.to_vec();
            a.extend_from_slice(extra);
            serve(&a, &[]).map(|c| c.controller_config.expect("controller config"))
        };
        let c = cc(&[]).unwrap();
        assert!(c.settings.export_on_publish && !c.settings.host_acl);
        let c = cc(&["--export-always"]).unwrap();
        assert!(!c.settings.export_on_publish);
        let c = cc(&["--nvme-host-acl"]).unwrap();
        assert!(c.settings.export_on_publish && c.settings.host_acl);
        let e = cc(&["--nvme-host-acl", "--export-always"]).unwrap_err();
        assert!(
            e.0.contains("--nvme-host-acl") && e.0.contains("--export-always"),
            "{}",
            e.0
        );
    }

    #[test]
    fn both_services_in_one_process() {
        let c = serve(
            &[
                "--controller",
                "--rds-address",
                "https://rds.lan",
                "--node",
                "--node-id",
                "n1",
            ],
            &[],
        )
        .unwrap();
        assert!(c.controller && c.node);
        assert_eq!(c.node_id.as_deref(), Some("n1"));
    }

    #[test]
    fn bad_values_name_the_flag_and_the_rule() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "--controller, --node"),
            (&["--node"], "--node-id"),
            (
                &[
                    "--controller",
                    "--rds-address",
                    "https://rds.lan",
                    "--endpoint",
                    "tcp://x",
                ],
                "--endpoint",
            ),
            (
                &[
                    "--controller",
                    "--rds-address",
                    "https://rds.lan",
                    "--driver-name",
                    "Bad_Name",
                ],
                "--driver-name",
            ),
            (
                &[
                    "--controller",
                    "--rds-address",
                    "https://rds.lan",
                    "--log-level",
                    "loud",
                ],
                "--log-level",
            ),
            (
                &[
                    "--controller",
                    "--rds-address",
                    "https://rds.lan",
                    "--max-in-flight",
                    "0",
                ],
                "--max-in-flight",
            ),
            (
                &[
                    "--controller",
                    "--rds-address",
                    "https://rds.lan",
                    "--max-in-flight",
                    "many",
                ],
                "--max-in-flight",
            ),
            (
                &[
                    "--controller",
                    "--rds-address",
                    "https://rds.lan",
                    "--shutdown-grace",
                    "-1",
                ],
                "--shutdown-grace",
            ),
            (
                &["--controller=maybe", "--rds-address", "https://rds.lan"],
                "--controller",
            ),
            (&["--node", "--node-id", "a b"], "--node-id"),
        ];
        for (args, needle) in cases {
            let e = serve(args, &[]).unwrap_err();
            assert!(e.0.contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn env_errors_name_the_variable() {
        let e = serve(
            &["--controller", "--rds-address", "https://rds.lan"],
            &[("RDS_CSI_MAX_IN_FLIGHT", "x")],
        )
        .unwrap_err();
        assert!(e.0.contains("RDS_CSI_MAX_IN_FLIGHT"), "{e}");
        let c = serve(&[], &[("RDS_CSI_NODE", "yes"), ("NODE_NAME", "worker-1")]).unwrap();
        assert!(c.node);
        assert_eq!(c.node_id.as_deref(), Some("worker-1"));
    }

    #[test]
    fn controller_settings_and_their_defaults() {
        let c = serve(&["--controller", "--rds-address", "https://10.0.0.5"], &[]).unwrap();
        let cc = c.controller_config.unwrap();
        assert_eq!(cc.settings.pool, "storage-pool");
        assert_eq!(cc.settings.base_path, "storage-pool/csi");
        assert_eq!(cc.settings.nvme_address, "10.0.0.5");
        assert_eq!(cc.settings.nqn_prefix.as_str(), "nqn.2000-02.com.mikrotik");
        assert_eq!(cc.settings.capacity_reserve, 0);
        assert_eq!(cc.rds.trust, rds::Trust::System);
        assert_eq!(cc.rds.max_in_flight, 4);
        let c = serve(
            &[
                "--controller",
                "--rds-address",
                "https://[fd00::5]:8443",
                "--rds-pool",
                "raid1",
                "--capacity-reserve",
                "50Gi",
                "--rds-tls-fingerprint",
                &"ab".repeat(32),
            ],
            &[],
        )
        .unwrap();
        let cc = c.controller_config.unwrap();
        assert_eq!(cc.settings.base_path, "raid1/csi");
        assert_eq!(cc.settings.nvme_address, "fd00::5");
        assert_eq!(cc.settings.capacity_reserve, 50 << 30);
        assert_eq!(cc.rds.trust, rds::Trust::Fingerprint([0xab; 32]));
    }

    #[test]
    fn controller_flags_are_checked() {
        let rds = ["--controller", "--rds-address", "https://rds.lan"];
        let cases: &[(&[&str], &str)] = &[
            (&["--controller"], "--rds-address"),
            (&["--controller", "--rds-address", "ftp://x"], "--rds-address"),
            (&["--rds-tls-fingerprint", "abc"], "--rds-tls-fingerprint"),
            (
                &["--rds-ca-file", "/ca.pem", "--rds-insecure-skip-verify"],
                "--rds-ca-file",
            ),
            (&["--capacity-reserve", "lots"], "--capacity-reserve"),
            (&["--nqn-prefix", "iqn.x"], "--nqn-prefix"),
            (&["--nvme-address", "bad host"], "--nvme-address"),
            (&["--volume-base-path", "a/../b"], "--volume-base-path"),
            (&["--rds-timeout", "0"], "--rds-timeout"),
            (&["--rds-max-in-flight", "0"], "--rds-max-in-flight"),
        ];
        for (extra, needle) in cases {
            let mut args: Vec<&str> = if extra.first() == Some(&"--controller") {
                vec![]
            } else {
                rds.to_vec()
            };
            args.extend_from_slice(extra);
            let e = serve(&args, &[]).unwrap_err();
            assert!(e.0.contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn node_settings_defaults_and_flags() {
        let c = serve(&["--node", "--node-id", "n1"], &[]).unwrap();
        let n = c.node_settings.expect("node settings with --node");
        assert_eq!(n.node_id, "n1");
        assert_eq!(n.max_volumes_per_node, 0);
        assert_eq!(n.roots, crate::host::Roots::default());
        assert_eq!(n.kubelet_dir, std::path::PathBuf::from("/var/lib/kubelet"));
        assert_eq!(n.nvme.bin, "nvme");
        assert_eq!(n.nvme.host_nqn, None);
        assert_eq!(n.nvme.prefix.as_str(), "nqn.2000-02.com.mikrotik");
        assert_eq!(n.nvme.device_wait, Duration::from_secs(30));
        assert_eq!(n.nvme.policy.max_attempts, 5);
        assert_eq!(n.nvme.policy.initial, Duration::from_secs(1));
        let c = serve(
            &[
                "--node",
                "--node-id",
                "n1",
                "--nvme-bin",
                "/opt/fabric/nvme",
                "--sys-root",
                "/host/sys",
                "--host-nqn",
                "nqn.2014-08.org.nvmexpress:uuid:abc",
                "--nqn-prefix",
                "nqn.2024-01.io.example",
                "--max-volumes-per-node",
                "16",
                "--device-wait",
                "5",
                "--connect-attempts",
                "2",
                "--kubelet-dir",
                "/var/snap/microk8s/common/var/lib/kubelet",
            ],
            &[],
        )
        .unwrap();
        let n = c.node_settings.unwrap();
        assert_eq!(
            n.kubelet_dir,
            std::path::PathBuf::from("/var/snap/microk8s/common/var/lib/kubelet")
        );
        assert_eq!(n.nvme.bin, "/opt/fabric/nvme");
        assert_eq!(n.roots.sys, std::path::PathBuf::from("/host/sys"));
        assert_eq!(
            n.nvme.host_nqn.as_deref(),
            Some("nqn.2014-08.org.nvmexpress:uuid:abc")
        );
        assert_eq!(n.nvme.prefix.as_str(), "nqn.2024-01.io.example");
        assert_eq!(n.max_volumes_per_node, 16);
        assert_eq!(n.nvme.device_wait, Duration::from_secs(5));
        assert_eq!(n.nvme.policy.max_attempts, 2);
        let from_env = serve(
            &["--node", "--node-id", "n1"],
            &[("RDS_CSI_KUBELET_DIR", "/data/kubelet")],
        )
        .unwrap();
        assert_eq!(
            from_env.node_settings.unwrap().kubelet_dir,
            std::path::PathBuf::from("/data/kubelet")
        );
        assert!(serve(&["--controller", "--rds-address", "https://10.0.0.5"], &[])
            .unwrap()
            .node_settings
            .is_none());
    }

    #[test]
    fn bad_node_flags_are_named() {
        let base = ["--node", "--node-id", "n1"];
        let cases: &[(&[&str], &str)] = &[
            (&["--nvme-bin", "bin/nvme"], "--nvme-bin"),
            (&["--sys-root", "sys"], "--sys-root"),
            (&["--dev-root", ""], "--dev-root"),
            (&["--host-nqn", "not-an-nqn"], "--host-nqn"),
            (&["--nqn-prefix", "nqn.x:"], "--nqn-prefix"),
            (&["--max-volumes-per-node", "-1"], "--max-volumes-per-node"),
            (&["--device-wait", "0"], "--device-wait"),
            (&["--connect-attempts", "0"], "--connect-attempts"),
            (&["--connect-attempts", "many"], "--connect-attempts"),
            (&["--kubelet-dir", "var/lib/kubelet"], "--kubelet-dir"),
            (&["--kubelet-dir", "/"], "--kubelet-dir"),
        ];
        for (args, needle) in cases {
            let mut all: Vec<&str> = base.to_vec();
            all.extend_from_slice(args);
            let e = serve(&all, &[]).unwrap_err();
            assert!(e.0.contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn driver_name_rule() {
        assert!(check_driver_name("rds.csi.srvlab.io").is_ok());
        for bad in ["", "-a", "a-", "A.b", &"a".repeat(64)] {
            assert!(check_driver_name(bad).is_err(), "{bad}");
        }
    }
}
