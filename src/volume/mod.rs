//! Volume names and parameters: the validated newtypes (volume id/slot, NQN,
//! sizes, filesystem), the connection parameters and the VolumeContext
//! handed to the node. The vocabulary controller and node share; the
//! controller's own rules (StorageClass parameters, ownership record) live
//! in `controller`.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

mod size;
pub use size::{parse_bytes, CapacityError, SizePolicy, GIB, MIB};

use crate::echo::echo;

/// RouterOS 7.24 refuses longer slots; new volumes always fit.
pub const SLOT_MAX: usize = 32;
/// Slots of volumes made by the earlier Go driver (`pvc-<uuid>`, 40
/// characters, from RouterOS releases that allowed 40) stay valid ids.
pub const LEGACY_SLOT_MAX: usize = 40;
/// Every slot this driver creates starts with this; ListVolumes lists disks
/// with it (which includes the Go driver's `pvc-<uuid>` slots).
pub const SLOT_PREFIX: &str = "pvc-";
/// The NQN prefix unless `--nqn-prefix` says otherwise (RouterOS's own).
pub const DEFAULT_NQN_PREFIX: &str = "nqn.2000-02.com.mikrotik";
/// NVMe Qualified Names are at most 223 bytes (NVMe base spec).
const NQN_MAX: usize = 223;

// ---------------------------------------------------------------------------
// Volume id = RDS slot
// ---------------------------------------------------------------------------

/// A volume id. It is the RDS disk's slot, for volumes this driver made and
/// for those the Go driver made, so every RPC can go straight to the disk.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeId(String);

impl VolumeId {
    /// Accepts any id that could be a slot of ours: lower-case letters,
    /// digits and `-`, starting with a letter or digit, at most 40
    /// characters. `None` means the id cannot name a volume of this driver
    /// (callers answer NOT_FOUND, or success for deletes).
    pub fn parse(id: &str) -> Option<VolumeId> {
        let ok = !id.is_empty()
            && id.len() <= LEGACY_SLOT_MAX
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && id.as_bytes()[0] != b'-';
        ok.then(|| VolumeId(id.to_string()))
    }

    /// The slot for a new volume named `name` (the CSI CreateVolume name):
    /// deterministic, at most 32 characters, always `pvc-` + 28 hex digits.
    /// For the provisioner's `pvc-<uuid>` names those are the UUID's first
    /// 28 hex digits, so an operator can match disk and PV at a glance;
    /// other names use the first 28 hex digits of their SHA-256. The full
    /// name is kept in the disk's comment, so a collision is detected.
    pub fn for_name(name: &str) -> VolumeId {
        let hex = match pvc_uuid_hex(name) {
            Some(hex) => hex,
            None => {
                let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
                digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
            }
        };
        VolumeId(format!("{SLOT_PREFIX}{}", &hex[..SLOT_MAX - SLOT_PREFIX.len()]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the exact shape of the slots `for_name` makes: `pvc-` and
    /// 28 lower-case hex digits.
    pub fn is_new_shape(&self) -> bool {
        self.0
            .strip_prefix(SLOT_PREFIX)
            .is_some_and(|hex| hex.len() == SLOT_MAX - SLOT_PREFIX.len() && is_lower_hex(hex))
    }

    /// True for the exact shape of the earlier Go driver's slots:
    /// `pvc-<uuid>`, the UUID lower-case with its four dashes.
    pub fn is_legacy_shape(&self) -> bool {
        pvc_uuid_hex(&self.0).is_some()
    }

    /// True when this driver (or the Go driver before it) could have made
    /// this id: the only ids a ListVolumes token may name.
    pub fn is_driver_shape(&self) -> bool {
        self.is_new_shape() || self.is_legacy_shape()
    }

    /// The RDS disk slot (the same string).
    pub fn slot(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `pvc-<uuid>` (lower-case, as the external-provisioner makes them) → the
/// UUID's 32 hex digits.
fn pvc_uuid_hex(name: &str) -> Option<String> {
    let uuid = name.strip_prefix("pvc-")?;
    let groups: Vec<&str> = uuid.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    if groups.len() != lens.len() {
        return None;
    }
    for (g, len) in groups.iter().zip(lens) {
        if g.len() != len || !is_lower_hex(g) {
            return None;
        }
    }
    Some(groups.concat())
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

// ---------------------------------------------------------------------------
// NQN
// ---------------------------------------------------------------------------

/// The NVMe subsystem name of a volume: `<prefix>:<slot>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Nqn(String);

impl Nqn {
    pub fn for_volume(prefix: &NqnPrefix, id: &VolumeId) -> Nqn {
        Nqn(format!("{}:{}", prefix.0, id.slot()))
    }

    /// Any NQN as the node sees it (from a VolumeContext or sysfs).
    pub fn parse(value: &str) -> Result<Nqn, String> {
        if !value.starts_with("nqn.") {
            return Err(format!(
                "{} is not an NQN (must start with \"nqn.\")",
                echo(value)
            ));
        }
        if value.len() > NQN_MAX {
            return Err(format!("{} is longer than {NQN_MAX} bytes", echo(value)));
        }
        if value
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b',')
        {
            return Err(format!(
                "{} contains whitespace, a control character or a comma",
                echo(value)
            ));
        }
        Ok(Nqn(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Nqn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The managed NQN prefix. The node only ever disconnects NQNs under it:
/// nodes may boot from NVMe-oF, and disconnecting their root is fatal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NqnPrefix(String);

impl NqnPrefix {
    pub fn parse(value: &str) -> Result<NqnPrefix, String> {
        if !value.starts_with("nqn.") || value.len() < 5 {
            return Err("must start with \"nqn.\" (e.g. nqn.2000-02.com.mikrotik)".into());
        }
        if value.ends_with(':') {
            return Err("must not end with ':' (the driver adds \":<slot>\")".into());
        }
        if value.len() + 1 + LEGACY_SLOT_MAX > NQN_MAX {
            return Err(format!(
                "too long: with \":<slot>\" it must fit in {NQN_MAX} bytes"
            ));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:_".contains(&b))
        {
            return Err("may only contain letters, digits, '-', '.', ':' and '_'".into());
        }
        Ok(NqnPrefix(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `nqn` is `<prefix>:<something that could be our slot>`.
    /// A string prefix match is not enough: `...mikrotik.other:x` or
    /// `...mikrotik:a:b` must not count.
    pub fn manages(&self, nqn: &str) -> bool {
        nqn.strip_prefix(self.0.as_str())
            .and_then(|rest| rest.strip_prefix(':'))
            .is_some_and(|slot| VolumeId::parse(slot).is_some())
    }

    /// The volume id of a managed NQN.
    pub fn volume_of(&self, nqn: &str) -> Option<VolumeId> {
        if !self.manages(nqn) {
            return None;
        }
        VolumeId::parse(&nqn[self.0.len() + 1..])
    }
}

impl Default for NqnPrefix {
    fn default() -> Self {
        NqnPrefix(DEFAULT_NQN_PREFIX.to_string())
    }
}

// ---------------------------------------------------------------------------
// Filesystems and connection parameters
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Ext4,
    Xfs,
}

impl FsType {
    pub fn parse(value: &str) -> Result<FsType, String> {
        match value {
            "ext4" => Ok(FsType::Ext4),
            "xfs" => Ok(FsType::Xfs),
            _ => Err(format!("{} is not supported (ext4 or xfs)", echo(value))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the kernel keeps an NVMe/TCP controller alive through outages; the
/// values reach `nvme connect -l/-c/-k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// Seconds the kernel keeps reconnecting before giving the controller
    /// up; −1 = forever (the default: an RDS reboot must not turn ext4
    /// read-only), 0 = the kernel's own default.
    pub ctrl_loss_tmo: i32,
    /// Seconds between reconnect attempts.
    pub reconnect_delay: u32,
    /// Keep-alive timeout in seconds; 0 = the kernel's default.
    pub keep_alive_tmo: u32,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            ctrl_loss_tmo: -1,
            reconnect_delay: 5,
            keep_alive_tmo: 0,
        }
    }
}

pub const KEY_CTRL_LOSS_TMO: &str = "ctrlLossTmo";
pub const KEY_RECONNECT_DELAY: &str = "reconnectDelay";
pub const KEY_KEEP_ALIVE_TMO: &str = "keepAliveTmo";

impl ConnectionConfig {
    /// Reads the three keys from StorageClass parameters or a VolumeContext;
    /// an absent key takes its default, a malformed one is an error naming
    /// it (never silently the default).
    pub fn from_map(map: &HashMap<String, String>) -> Result<ConnectionConfig, ParamError> {
        let d = ConnectionConfig::default();
        Ok(ConnectionConfig {
            ctrl_loss_tmo: int_param(
                map,
                KEY_CTRL_LOSS_TMO,
                -1,
                i32::MAX as i64,
                "a whole number of seconds, -1 (reconnect forever) or more",
            )?
            .map_or(d.ctrl_loss_tmo, |v| v as i32),
            reconnect_delay: int_param(
                map,
                KEY_RECONNECT_DELAY,
                1,
                3600,
                "a whole number of seconds from 1 to 3600",
            )?
            .map_or(d.reconnect_delay, |v| v as u32),
            keep_alive_tmo: int_param(
                map,
                KEY_KEEP_ALIVE_TMO,
                0,
                3600,
                "a whole number of seconds from 0 (kernel default) to 3600",
            )?
            .map_or(d.keep_alive_tmo, |v| v as u32),
        })
    }

    fn write_to(&self, map: &mut HashMap<String, String>) {
        map.insert(KEY_CTRL_LOSS_TMO.into(), self.ctrl_loss_tmo.to_string());
        map.insert(KEY_RECONNECT_DELAY.into(), self.reconnect_delay.to_string());
        map.insert(KEY_KEEP_ALIVE_TMO.into(), self.keep_alive_tmo.to_string());
    }
}

// ---------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------

/// A parameter (StorageClass or VolumeContext key) whose value breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    pub key: String,
    pub value: String,
    pub rule: String,
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "parameter {}: {}", echo(&self.key), self.rule)
        } else {
            write!(
                f,
                "parameter {} = {}: {}",
                echo(&self.key),
                echo(&self.value),
                self.rule
            )
        }
    }
}

impl std::error::Error for ParamError {}

pub(crate) fn param_error(key: &str, value: &str, rule: impl Into<String>) -> ParamError {
    ParamError {
        key: key.to_string(),
        value: value.to_string(),
        rule: rule.into(),
    }
}

pub(crate) fn int_param(
    map: &HashMap<String, String>,
    key: &str,
    min: i64,
    max: i64,
    rule: &str,
) -> Result<Option<i64>, ParamError> {
    let Some(raw) = map.get(key) else { return Ok(None) };
    match raw.trim().parse::<i64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(Some(v)),
        _ => Err(param_error(key, raw, format!("must be {rule}"))),
    }
}

pub const KEY_FS_TYPE: &str = "fsType";
pub const KEY_NVME_ADDRESS: &str = "nvmeAddress";
pub const KEY_NVME_PORT: &str = "nvmePort";
pub const KEY_NQN: &str = "nqn";

pub const DEFAULT_NVME_PORT: u16 = 4420;

// ---------------------------------------------------------------------------
// Mount flags
// ---------------------------------------------------------------------------

/// Mount flags that would change what kind of mount a volume's mount is.
const MOUNT_KIND_FLAGS: &[&str] = &[
    "bind",
    "rbind",
    "remount",
    "move",
    "make-shared",
    "make-private",
    "make-slave",
    "make-rshared",
    "make-rprivate",
    "make-rslave",
];

/// mount(2) takes the filesystem options as one page of data.
const MOUNT_FLAGS_MAX: usize = 4095;

/// A `mount_flags` entry that no volume may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountFlagError {
    /// The offending flag (one comma-separated part), or the whole list
    /// when it is too long.
    pub flag: String,
    pub why: &'static str,
}

impl fmt::Display for MountFlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mount flag {}: {}", echo(&self.flag), self.why)
    }
}

impl std::error::Error for MountFlagError {}

/// The one rule for `volume_capability.mount.mount_flags`, applied by the
/// controller at CreateVolume (and ValidateVolumeCapabilities) and by the
/// node at NodeStageVolume, so a volume is never provisioned with flags the
/// node will refuse. Each entry may itself be comma-separated.
pub fn check_mount_flags(flags: &[String]) -> Result<(), MountFlagError> {
    let total: usize = flags.iter().map(|f| f.len() + 1).sum();
    if total > MOUNT_FLAGS_MAX {
        return Err(MountFlagError {
            flag: flags.join(","),
            why: "the list is longer than mount(2) takes (one page)",
        });
    }
    for flag in flags.iter().flat_map(|f| f.split(',')).map(str::trim) {
        if MOUNT_KIND_FLAGS.contains(&flag) {
            return Err(MountFlagError {
                flag: flag.to_string(),
                why: "changes the kind of mount; not allowed in a volume's mount flags",
            });
        }
        if !flag.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(MountFlagError {
                flag: flag.to_string(),
                why: "contains spaces or control characters",
            });
        }
    }
    Ok(())
}

/// Node ids end up in the RDS disk comment as the attachment record, so
/// keep them to the characters a Kubernetes node name can have. Shared by
/// `config` (the node's own `--node-id`) and the controller (the node a
/// publish names).
pub fn check_node_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() || id.len() > 253 {
        return Err("must be 1 to 253 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        return Err("may only contain letters, digits, '-', '.' and '_'");
    }
    Ok(())
}

/// An IP address (v4, or v6 with or without brackets) or a DNS host name.
/// Returns the address as `nvme connect -a` wants it (no brackets).
pub fn check_address(value: &str) -> Result<String, String> {
    let bare = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    if bare.parse::<IpAddr>().is_ok() {
        return Ok(bare.to_string());
    }
    let is_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let host = value.strip_suffix('.').unwrap_or(value);
    // A dotted all-numeric name is a mistyped IPv4 address, not a host.
    let numeric = host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if !host.is_empty() && host.len() <= 253 && !numeric && host.split('.').all(is_label) {
        return Ok(host.to_string());
    }
    Err("must be an IP address or a host name".into())
}

/// Resolves a `volumePath` against the configured base path: the result is
/// the base itself or a folder below it, normalised (no leading or trailing
/// `/`); `..`, `.`, empty components and paths outside the base are refused.
pub fn resolve_volume_path(base: &str, requested: Option<&str>) -> Result<String, String> {
    let base_parts = path_parts(base).map_err(|e| format!("base path {base:?}: {e}"))?;
    let Some(requested) = requested else {
        return Ok(base_parts.join("/"));
    };
    let parts = path_parts(requested)?;
    if parts.len() < base_parts.len() || parts[..base_parts.len()] != base_parts[..] {
        return Err(format!("must be {:?} or a folder below it", base_parts.join("/")));
    }
    Ok(parts.join("/"))
}

fn path_parts(path: &str) -> Result<Vec<&str>, String> {
    let trimmed = path.trim_start_matches('/').trim_end_matches('/');
    if trimmed.is_empty() {
        return Err("must name a folder on the RDS".into());
    }
    let parts: Vec<&str> = trimmed.split('/').collect();
    for p in &parts {
        if p.is_empty() || *p == "." || *p == ".." {
            return Err("must not contain empty, '.' or '..' components".into());
        }
        if !p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(format!(
                "component {} may only contain letters, digits, '-', '_' and '.'",
                echo(p)
            ));
        }
    }
    Ok(parts)
}

/// The backing file of a volume: `<volume path>/<slot>.img`.
pub fn backing_file(volume_path: &str, id: &VolumeId) -> String {
    format!("{volume_path}/{}.img", id.slot())
}

/// True when `file` (a leading `/` is ignored) lies strictly below the
/// folder `base`, with no empty, `.` or `..` component that could lead out
/// of it. The test every destructive step applies before touching a
/// backing file: whatever a caller or a disk record names, only files
/// under the configured base path are ever ours.
pub fn file_under_base(base: &str, file: &str) -> bool {
    let Ok(base_parts) = path_parts(base) else {
        return false;
    };
    let trimmed = file.strip_prefix('/').unwrap_or(file);
    let parts: Vec<&str> = trimmed.split('/').collect();
    parts.len() > base_parts.len()
        && parts[..base_parts.len()] == base_parts[..]
        && parts.iter().all(|p| !p.is_empty() && *p != "." && *p != "..")
}

// ---------------------------------------------------------------------------
// VolumeContext
// ---------------------------------------------------------------------------

/// What CreateVolume hands the node through the VolumeContext (the keys of
/// the earlier Go driver, so existing PVs keep working).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeContext {
    pub nqn: Nqn,
    pub nvme_address: String,
    pub nvme_port: u16,
    pub fs_type: Option<FsType>,
    pub connection: ConnectionConfig,
    /// The host NQN and host ID to connect with (`--nvme-host-acl`): from
    /// the publish context, never the volume context; `None`: the node's own.
    pub host: Option<crate::fence::HostIdentity>,
}

impl VolumeContext {
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert(KEY_NQN.into(), self.nqn.to_string());
        m.insert(KEY_NVME_ADDRESS.into(), self.nvme_address.clone());
        m.insert(KEY_NVME_PORT.into(), self.nvme_port.to_string());
        if let Some(fs) = self.fs_type {
            m.insert(KEY_FS_TYPE.into(), fs.to_string());
        }
        self.connection.write_to(&mut m);
        m
    }

    /// Reads a VolumeContext on the node. `nqn` and `nvmeAddress` are
    /// required; the rest have defaults; malformed values name their key.
    /// Unknown keys are ignored: the CO adds its own (pod info on mount).
    pub fn from_map(map: &HashMap<String, String>) -> Result<VolumeContext, ParamError> {
        let nqn_raw = map
            .get(KEY_NQN)
            .ok_or_else(|| param_error(KEY_NQN, "", "missing from the volume context"))?;
        let nqn = Nqn::parse(nqn_raw).map_err(|rule| param_error(KEY_NQN, nqn_raw, rule))?;
        let addr_raw = map
            .get(KEY_NVME_ADDRESS)
            .ok_or_else(|| param_error(KEY_NVME_ADDRESS, "", "missing from the volume context"))?;
        let nvme_address =
            check_address(addr_raw).map_err(|rule| param_error(KEY_NVME_ADDRESS, addr_raw, rule))?;
        let nvme_port = int_param(map, KEY_NVME_PORT, 1, 65535, "a port number from 1 to 65535")?
            .map_or(DEFAULT_NVME_PORT, |p| p as u16);
        let fs_type = match map.get(KEY_FS_TYPE) {
            None => None,
            Some(v) => Some(FsType::parse(v).map_err(|rule| param_error(KEY_FS_TYPE, v, rule))?),
        };
        Ok(VolumeContext {
            nqn,
            nvme_address,
            nvme_port,
            fs_type,
            connection: ConnectionConfig::from_map(map)?,
            host: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn node_ids_are_kubernetes_node_names() {
        for good in ["worker-1", "n1.lan", "node_a", &"a".repeat(253)] {
            assert_eq!(check_node_id(good), Ok(()), "{good}");
        }
        for bad in ["", "a b", "n/1", "n1\n", &"a".repeat(254)] {
            assert!(check_node_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn slots_for_provisioner_names_keep_the_uuid() {
        let id = VolumeId::for_name("pvc-3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b");
        assert_eq!(id.slot(), "pvc-3f2a1b4c5d6e4f708a9b0c1d2e3f");
        assert_eq!(id.slot().len(), SLOT_MAX);
        // Deterministic.
        assert_eq!(id, VolumeId::for_name("pvc-3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"));
    }

    #[test]
    fn slots_for_other_names_are_hashed_and_fit() {
        for name in ["my-volume", "PVC-UPPER-not-a-uuid", &"x".repeat(128), "pvc-1"] {
            let id = VolumeId::for_name(name);
            assert_eq!(id.slot().len(), SLOT_MAX, "{name}");
            assert!(id.slot().starts_with(SLOT_PREFIX));
            assert!(VolumeId::parse(id.slot()).is_some());
        }
        assert_ne!(VolumeId::for_name("a"), VolumeId::for_name("b"));
    }

    #[test]
    fn legacy_ids_are_valid_and_junk_is_not() {
        let legacy = "pvc-3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b";
        assert_eq!(VolumeId::parse(legacy).unwrap().slot(), legacy);
        for bad in ["", "-x", "Pvc-1", "pvc_1", "pvc-1/../x", &"a".repeat(41), "a b"] {
            assert!(VolumeId::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn nqn_prefix_manages_only_its_own_subsystems() {
        let p = NqnPrefix::default();
        let id = VolumeId::parse("pvc-1").unwrap();
        let nqn = Nqn::for_volume(&p, &id);
        assert_eq!(nqn.as_str(), "nqn.2000-02.com.mikrotik:pvc-1");
        assert!(p.manages(nqn.as_str()));
        assert_eq!(p.volume_of(nqn.as_str()), Some(id));
        for other in [
            "nqn.2000-02.com.mikrotik.other:pvc-1",
            "nqn.2000-02.com.mikrotik",
            "nqn.2000-02.com.mikrotik:",
            "nqn.2000-02.com.mikrotik:a:b",
            "nqn.2014-08.org.nvmexpress:uuid:1234",
            "nqn.2000-02.com.mikrotik:pvc-1 ",
        ] {
            assert!(!p.manages(other), "{other}");
        }
    }

    #[test]
    fn nqn_prefix_rules() {
        assert!(NqnPrefix::parse("nqn.2024-01.io.example").is_ok());
        for bad in [
            "",
            "nqn.",
            "iqn.2000-01.x",
            "nqn.x:",
            "nqn.a b",
            &format!("nqn.{}", "a".repeat(200)),
        ] {
            assert!(NqnPrefix::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_round_up_with_a_minimum_and_respect_the_limit() {
        let p = SizePolicy::default();
        assert_eq!(p.size_for(0, 0), Ok(GIB));
        assert_eq!(p.size_for(1, 0), Ok(GIB));
        assert_eq!(p.size_for(GIB as i64 + 1, 0), Ok(GIB + MIB));
        assert_eq!(p.size_for(5 * GIB as i64, 5 * GIB as i64), Ok(5 * GIB));
        assert!(matches!(
            p.size_for(GIB as i64 + 1, GIB as i64 + 2),
            Err(CapacityError::OutOfRange(_))
        ));
        assert!(matches!(p.size_for(0, 1000), Err(CapacityError::OutOfRange(_))));
        assert!(matches!(
            p.size_for(2 * GIB as i64, GIB as i64),
            Err(CapacityError::Invalid(_))
        ));
        assert!(matches!(p.size_for(-1, 0), Err(CapacityError::Invalid(_))));
    }

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("1073741824"), Ok(GIB));
        assert_eq!(parse_bytes("1Gi"), Ok(GIB));
        assert_eq!(parse_bytes("1G"), Ok(GIB));
        assert_eq!(parse_bytes("50Gi"), Ok(50 * GIB));
        assert_eq!(parse_bytes("512Mi"), Ok(512 * MIB));
        assert_eq!(parse_bytes("0"), Ok(0));
        for bad in ["", "Gi", "1.5Gi", "1GB", "-1", "99999999999999T"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn connection_config_defaults_and_rules() {
        assert_eq!(
            ConnectionConfig::from_map(&map(&[])).unwrap(),
            ConnectionConfig::default()
        );
        let c = ConnectionConfig::from_map(&map(&[
            ("ctrlLossTmo", "-1"),
            ("reconnectDelay", "7"),
            ("keepAliveTmo", "30"),
        ]))
        .unwrap();
        assert_eq!(
            (c.ctrl_loss_tmo, c.reconnect_delay, c.keep_alive_tmo),
            (-1, 7, 30)
        );
        for (k, v) in [
            ("ctrlLossTmo", "-2"),
            ("ctrlLossTmo", "forever"),
            ("ctrlLossTmo", ""),
            ("reconnectDelay", "0"),
            ("reconnectDelay", "1.5"),
            ("keepAliveTmo", "-1"),
        ] {
            let e = ConnectionConfig::from_map(&map(&[(k, v)])).unwrap_err();
            assert_eq!(e.key, k);
            assert!(
                e.to_string().contains(k) && e.to_string().contains("must be"),
                "{e}"
            );
        }
    }

    #[test]
    fn addresses() {
        assert_eq!(check_address("10.0.0.1").unwrap(), "10.0.0.1");
        assert_eq!(check_address("[fd00::1]").unwrap(), "fd00::1");
        assert_eq!(check_address("fd00::1").unwrap(), "fd00::1");
        assert_eq!(check_address("rds.lan").unwrap(), "rds.lan");
        for bad in [
            "",
            "a b",
            "-x.lan",
            "x..lan",
            "1.2.3.4.5",
            "999.1.1.1",
            "host:4420",
        ] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn volume_paths_stay_inside_the_base() {
        let base = "storage-pool/csi";
        assert_eq!(resolve_volume_path(base, None).unwrap(), "storage-pool/csi");
        assert_eq!(
            resolve_volume_path("/storage-pool/csi/", None).unwrap(),
            "storage-pool/csi"
        );
        assert_eq!(
            resolve_volume_path(base, Some("/storage-pool/csi/db")).unwrap(),
            "storage-pool/csi/db"
        );
        assert_eq!(
            resolve_volume_path(base, Some("storage-pool/csi")).unwrap(),
            "storage-pool/csi"
        );
        for bad in [
            "storage-pool",
            "storage-pool/csi/../other",
            "storage-pool/csi2",
            "other/csi",
            "storage-pool//csi",
            "storage-pool/csi/./x",
            "/",
            "storage-pool/csi/a b",
        ] {
            assert!(resolve_volume_path(base, Some(bad)).is_err(), "{bad}");
        }
        let id = VolumeId::parse("pvc-1").unwrap();
        assert_eq!(
            backing_file("storage-pool/csi", &id),
            "storage-pool/csi/pvc-1.img"
        );
    }

    #[test]
    fn volume_context_round_trips_and_names_bad_keys() {
        let ctx = VolumeContext {
            nqn: Nqn::parse("nqn.2000-02.com.mikrotik:pvc-1").unwrap(),
            nvme_address: "10.0.0.1".into(),
            nvme_port: 4420,
            fs_type: Some(FsType::Ext4),
            connection: ConnectionConfig {
                ctrl_loss_tmo: -1,
                reconnect_delay: 7,
                keep_alive_tmo: 30,
            },
            host: None,
        };
        let m = ctx.to_map();
        assert_eq!(m["ctrlLossTmo"], "-1");
        assert_eq!(m["reconnectDelay"], "7");
        assert_eq!(m["keepAliveTmo"], "30");
        assert_eq!(VolumeContext::from_map(&m).unwrap(), ctx);
        // The Go driver's contexts lack the resilience keys: defaults apply.
        let legacy = map(&[
            ("nqn", "nqn.2000-02.com.mikrotik:pvc-1"),
            ("nvmeAddress", "10.0.0.1"),
            ("nvmePort", "4420"),
        ]);
        assert_eq!(
            VolumeContext::from_map(&legacy).unwrap().connection,
            ConnectionConfig::default()
        );
        let mut bad = m.clone();
        bad.insert("reconnectDelay".into(), "soon".into());
        assert_eq!(VolumeContext::from_map(&bad).unwrap_err().key, "reconnectDelay");
        let mut bad = m;
        bad.remove("nqn");
        assert_eq!(VolumeContext::from_map(&bad).unwrap_err().key, "nqn");
    }

    #[test]
    fn mount_flags_one_rule() {
        let flags = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_mount_flags(&flags(&["noatime", "discard,nodev", "", "errors=remount-ro"])).is_ok());
        for bad in [
            &["bind"][..],
            &["noatime,remount"],
            &["rbind"],
            &["make-shared"],
            &["a b"],
            &["x\ny"],
        ] {
            assert!(check_mount_flags(&flags(bad)).is_err(), "{bad:?}");
        }
        assert!(check_mount_flags(&["a".repeat(1 << 20)]).is_err());
    }

    #[test]
    fn volume_id_shapes() {
        let new = VolumeId::for_name("anything");
        assert!(new.is_new_shape() && new.is_driver_shape());
        let legacy = VolumeId::parse("pvc-0e7c2a9d-41b3-4c55-9f0e-6a1d2b3c4d5e").unwrap();
        assert!(legacy.is_legacy_shape() && legacy.is_driver_shape());
        for other in [
            "vm-backup",
            "pvc-1",
            "pvc-0e7c2a9d41b34c559f0e6a1d2b3c4d5e",
            "pvc-abcdefabcdefabcdefabcdefabcdeg",
        ] {
            let id = VolumeId::parse(other).unwrap();
            assert!(!id.is_driver_shape(), "{other}");
        }
    }

    #[test]
    fn files_under_the_base_only() {
        let base = "storage-pool/csi";
        assert!(file_under_base(base, "storage-pool/csi/pvc-1.img"));
        assert!(file_under_base(base, "/storage-pool/csi/db/pvc-1.img"));
        for bad in [
            "storage-pool/csi",
            "storage-pool/csi/",
            "storage-pool/vms/backup.img",
            "storage-pool/csi2/x.img",
            "storage-pool/csi/../vms/backup.img",
            "storage-pool/csi//x.img",
            "storage-pool/csi/./x.img",
            "",
        ] {
            assert!(!file_under_base(base, bad), "{bad}");
        }
    }
}
