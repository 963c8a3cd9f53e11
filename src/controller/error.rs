//! What the controller refuses, as typed errors: each variant is named after
//! the rule that was broken and carries the values involved. The messages
//! are the ones the CO sees; `csi::status` alone chooses the gRPC code.

use std::fmt;

use crate::echo::echo;
use crate::rds;
use crate::volume::{CapacityError, FsType, MountFlagError, ParamError, VolumeId};

use super::access::AccessMode;

/// A request that asks for something this driver does not make: a name,
/// capability or parameter that breaks a rule. Also the answer
/// ValidateVolumeCapabilities gives in its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// CreateVolume without a name.
    NameMissing,
    /// A CSI name longer than 128 characters.
    NameTooLong { name: String },
    /// A CSI name with characters outside letters, digits, `-`, `_`, `.`.
    NameCharacters { name: String },
    /// No volume capability at all.
    NoCapabilities,
    /// A capability that is neither block nor mount.
    NoAccessType { index: usize },
    /// Block and mount capabilities in one request.
    MixedAccessTypes,
    /// A mount flag no volume may use (the node's own rule).
    MountFlag { index: usize, source: MountFlagError },
    /// A filesystem this driver does not make.
    FsType { index: usize, rule: String },
    /// Two capabilities asking for different filesystems.
    DifferentFilesystems,
    /// A capability without an access mode.
    NoAccessMode { index: usize },
    /// A multi-node access mode on a filesystem volume.
    MultiNodeNeedsBlock { index: usize, mode: AccessMode },
    /// A multi-node access mode while `--allow-multi-node-block` is off.
    MultiNodeDisabled { index: usize, mode: AccessMode },
    /// A StorageClass parameter that breaks its rule.
    Parameter(ParamError),
    /// `fsType` in the parameters and in the capabilities disagree.
    FsTypeContradicts { parameter: FsType, capability: FsType },
    /// `volumePath` outside the base path; `value` is shown when known.
    VolumePath { value: Option<String>, rule: String },
    /// A CreateSnapshot parameter this driver does not take.
    SnapshotParameter { key: String },
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::NameMissing => write!(f, "name is required"),
            Invalid::NameTooLong { name } => {
                write!(f, "name {} is longer than 128 characters", echo(name))
            }
            Invalid::NameCharacters { name } => write!(
                f,
                "name {} may only contain letters, digits, '-', '_' and '.'",
                echo(name)
            ),
            Invalid::NoCapabilities => write!(f, "volume_capabilities is required"),
            Invalid::NoAccessType { index } => write!(
                f,
                "volume_capabilities[{index}]: access_type (block or mount) is required"
            ),
            Invalid::MixedAccessTypes => write!(f, "volume_capabilities mix block and mount access"),
            Invalid::MountFlag { index, source } => {
                write!(f, "volume_capabilities[{index}].mount.mount_flags: {source}")
            }
            Invalid::FsType { index, rule } => {
                write!(f, "volume_capabilities[{index}].mount.fs_type: {rule}")
            }
            Invalid::DifferentFilesystems => {
                write!(f, "volume_capabilities ask for different filesystems")
            }
            Invalid::NoAccessMode { index } => {
                write!(f, "volume_capabilities[{index}].access_mode is required")
            }
            Invalid::MultiNodeNeedsBlock { index, mode } => write!(
                f,
                "volume_capabilities[{index}]: access mode {mode} needs a block volume: an ext4 or xfs filesystem must never be mounted on two nodes at once"
            ),
            Invalid::MultiNodeDisabled { index, mode } => write!(
                f,
                "volume_capabilities[{index}]: access mode {mode} is disabled (start the controller with --allow-multi-node-block to allow shared block volumes)"
            ),
            Invalid::Parameter(e) => write!(f, "{e}"),
            Invalid::FsTypeContradicts {
                parameter,
                capability,
            } => write!(
                f,
                "parameter \"fsType\" = {parameter} contradicts volume_capabilities fs_type {capability}"
            ),
            Invalid::VolumePath { value: Some(v), rule } => {
                write!(f, "parameter \"volumePath\" = {}: {rule}", echo(v))
            }
            Invalid::VolumePath { value: None, rule } => write!(f, "parameter \"volumePath\": {rule}"),
            Invalid::SnapshotParameter { key } => write!(
                f,
                "parameters[{}]: snapshots take no parameters (only the snapshotter's own csi.storage.k8s.io/ metadata)",
                echo(key)
            ),
        }
    }
}

impl std::error::Error for Invalid {}

/// Every way a controller operation fails.
#[derive(Debug)]
pub enum Error {
    /// The request breaks a validation rule; `context` names the call and
    /// volume (empty when the rule speaks for itself).
    Invalid { context: String, reason: Invalid },
    /// CreateVolume from a source larger than the requested size.
    SmallerThanSource {
        name: String,
        source: String,
        source_size: u64,
        required: i64,
    },
    /// A capacity range that is malformed or that no size of ours fits.
    Capacity { context: String, source: CapacityError },
    /// Another call on the same volume (or name) is running.
    Busy { op: &'static str, key: String },
    /// No volume of ours has this id (a foreign disk counts as none).
    NoSuchVolume { op: &'static str, volume_id: String },
    /// A node id that cannot name a node.
    UnknownNode { node: String, rule: &'static str },
    /// The slot of a new name holds a disk this driver did not make.
    SlotTaken {
        name: String,
        id: VolumeId,
        comment: String,
    },
    /// The slot of a new name holds another name's volume.
    SlotCollision {
        name: String,
        id: VolumeId,
        owner: String,
    },
    /// A repeated CreateVolume whose parameters differ from the first.
    ParametersDiffer { name: String, id: VolumeId },
    /// A repeated CreateVolume whose capacity range the volume does not fit.
    SizeOutsideRange {
        name: String,
        id: VolumeId,
        have: u64,
        required: i64,
        limit: i64,
    },
    /// The pool has too little room for a new volume.
    NoSpaceToCreate {
        name: String,
        pool: String,
        needed: u64,
        available: u64,
        reserve: u64,
    },
    /// The pool has too little room to grow a volume.
    NoSpaceToGrow {
        id: VolumeId,
        pool: String,
        by: u64,
        available: u64,
    },
    /// A size larger than the whole pool: no amount of freeing helps.
    BeyondPool {
        id: VolumeId,
        wanted: u64,
        pool: String,
        pool_size: u64,
    },
    /// The pool reports no free space at all (not mounted?).
    PoolNotMounted { pool: String, state: Option<String> },
    /// The pool's filesystem (which decides the snapshot capabilities) has
    /// not been read yet: the RDS was not reached since the start.
    PoolNotReadYet { pool: String },
    /// DeleteVolume of a volume still published to nodes.
    StillPublished { id: VolumeId, nodes: Vec<String> },
    /// The single-node fence: already published to another node.
    PublishedElsewhere {
        id: VolumeId,
        other: String,
        node: String,
    },
    /// The RDS answered a comment update with a different comment.
    RecordNotKept {
        op: &'static str,
        id: VolumeId,
        comment: String,
    },
    /// `--nvme-host-acl`: a node id no host NQN can be formed from.
    HostNqnRule { node: String, rule: &'static str },
    /// `--nvme-host-acl`: the RDS answered an allow-list update with
    /// another list than the one written (the field's semantics are
    /// unverified on a real RDS: never guess, say what it stored).
    AllowListNotKept {
        op: &'static str,
        id: VolumeId,
        wrote: String,
        stored: String,
    },
    /// A ListVolumes token this driver did not give out.
    BadToken { token: String },
    /// Snapshots or clones asked of a pool that is not Btrfs.
    SnapshotsUnsupported {
        op: &'static str,
        pool: String,
        fs: Option<String>,
    },
    /// A snapshot or clone of a volume in the flat layout (no subvolume of
    /// its own: made before snapshots, or by the Go driver).
    FlatVolume { op: &'static str, id: VolumeId },
    /// The snapshot name is taken by a snapshot of another volume.
    SnapshotNameTaken {
        name: String,
        id: crate::controller::SnapshotId,
        source: String,
        asked: String,
    },
    /// No snapshot of ours has this id.
    NoSuchSnapshot { op: &'static str, snapshot_id: String },
    /// The RDS refused or did not answer; `context` says which call on
    /// which volume, the source which REST operation and why.
    Rds {
        context: String,
        source: Box<rds::Error>,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid { context, reason } if context.is_empty() => write!(f, "{reason}"),
            Error::Invalid { context, reason } => write!(f, "{context}: {reason}"),
            Error::SmallerThanSource {
                name,
                source,
                source_size,
                required,
            } => write!(
                f,
                "CreateVolume {}: capacity_range.required_bytes {required} is smaller than the source {} ({source_size} bytes); volumes never shrink",
                echo(name),
                echo(source)
            ),
            Error::Capacity { context, source } => {
                let (CapacityError::Invalid(m) | CapacityError::OutOfRange(m)) = source;
                write!(f, "{context}: {m}")
            }
            Error::Busy { op, key } => write!(
                f,
                "{op}: an operation on {} is already in progress; retry later",
                echo(key)
            ),
            Error::NoSuchVolume { op, volume_id } => {
                write!(f, "{op}: volume {} does not exist", echo(volume_id))
            }
            Error::UnknownNode { node, rule } => {
                write!(f, "ControllerPublishVolume: node {} {rule}", echo(node))
            }
            Error::SlotTaken { name, id, comment } => write!(
                f,
                "CreateVolume {}: slot {id} is taken by a disk this driver did not create (comment {})",
                echo(name),
                echo(comment)
            ),
            Error::SlotCollision { name, id, owner } => write!(
                f,
                "CreateVolume {}: slot {id} already belongs to volume {} (slot collision)",
                echo(name),
                echo(owner)
            ),
            Error::ParametersDiffer { name, id } => write!(
                f,
                "CreateVolume {}: volume {id} exists with different parameters (file, export, filesystem or connection settings)",
                echo(name)
            ),
            Error::SizeOutsideRange {
                name,
                id,
                have,
                required,
                limit,
            } => write!(
                f,
                "CreateVolume {}: volume {id} exists with {have} bytes, which does not fit the requested capacity range ({required}..{limit})",
                echo(name)
            ),
            Error::NoSpaceToCreate {
                name,
                pool,
                needed,
                available,
                reserve,
            } => write!(
                f,
                "CreateVolume {}: not enough space on pool {pool}: the volume needs {needed} bytes, {available} bytes are available (free space minus the reserve of {reserve} bytes)",
                echo(name)
            ),
            Error::NoSpaceToGrow {
                id,
                pool,
                by,
                available,
            } => write!(
                f,
                "ControllerExpandVolume {id}: not enough space on pool {pool}: growing by {by} bytes, {available} bytes available"
            ),
            Error::BeyondPool {
                id,
                wanted,
                pool,
                pool_size,
            } => write!(
                f,
                "ControllerExpandVolume {id}: {wanted} bytes is more than pool {pool} holds in total ({pool_size} bytes)"
            ),
            Error::PoolNotMounted { pool, state } => write!(
                f,
                "pool {pool} reports no free space (is it mounted? state {:?})",
                state.as_deref().unwrap_or("unknown")
            ),
            Error::PoolNotReadYet { pool } => write!(
                f,
                "the filesystem of pool {pool} is not known yet (the RDS has not been reached since \
                 the controller started); ask again"
            ),
            Error::StillPublished { id, nodes } => {
                let nodes: Vec<String> = nodes.iter().map(|n| echo(n).to_string()).collect();
                write!(
                    f,
                    "DeleteVolume {id}: the volume is still published to node(s) {}; unpublish it first",
                    nodes.join(", ")
                )
            }
            Error::PublishedElsewhere { id, other, node } => write!(
                f,
                "ControllerPublishVolume {id}: the volume is already published to node {}; a single-node volume cannot also be published to {}",
                echo(other),
                echo(node)
            ),
            Error::RecordNotKept { op, id, comment } => write!(
                f,
                "{op} {id}: the RDS did not keep the attachment record (comment reads {})",
                echo(comment)
            ),
            Error::HostNqnRule { node, rule } => write!(
                f,
                "ControllerPublishVolume: node_id {} cannot form a host NQN for --nvme-host-acl: a node id {rule}",
                echo(node)
            ),
            Error::AllowListNotKept { op, id, wrote, stored } => write!(
                f,
                "{op} {id}: the RDS did not keep the host allow list: wrote nvme-tcp-server-allow-host-name={}, it reads {}",
                echo(wrote),
                echo(stored)
            ),
            Error::BadToken { token } => write!(
                f,
                "starting_token {} is not one this driver gave out",
                echo(token)
            ),
            Error::SnapshotsUnsupported { op, pool, fs } => write!(
                f,
                "{op}: pool {pool} is {}, not btrfs: snapshots and clones need a btrfs pool (RouterOS 7.18+), where each volume has its own subvolume",
                fs.as_deref().map(|f| echo(f).to_string()).unwrap_or_else(|| "of unknown filesystem".into())
            ),
            Error::FlatVolume { op, id } => write!(
                f,
                "{op}: volume {id} has the flat layout (its image is not in a subvolume of its own: made before snapshots were supported, or by the Go driver), and btrfs can only snapshot a subvolume; copy its data into a new volume (new volumes on this btrfs pool get their own subvolume) and snapshot or clone that one"
            ),
            Error::SnapshotNameTaken { name, id, source, asked } => write!(
                f,
                "CreateSnapshot {}: snapshot {id} of that name already exists for volume {}, not for volume {}",
                echo(name),
                echo(source),
                echo(asked)
            ),
            Error::NoSuchSnapshot { op, snapshot_id } => {
                write!(f, "{op}: snapshot {} does not exist", echo(snapshot_id))
            }
            Error::Rds { context, .. } => f.write_str(context),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Invalid { reason, .. } => Some(reason),
            Error::Rds { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

impl Error {
    /// One example of every variant (and of each kind a variant
    /// distinguishes), for the tests that check every variant is mapped.
    #[cfg(test)]
    pub fn examples() -> Vec<Error> {
        let id = VolumeId::for_name("vol-a");
        let rds_error = |kind| rds::Error::Answer {
            op: rds::Op::ReadDisk,
            target: "pvc-1".into(),
            status: 400,
            message: "refused".into(),
            detail: None,
            kind,
        };
        vec![
            Error::Invalid {
                context: "CreateVolume \"vol-a\"".into(),
                reason: Invalid::NoCapabilities,
            },
            Error::SmallerThanSource {
                name: "vol-a".into(),
                source: "snap-x".into(),
                source_size: 2,
                required: 1,
            },
            Error::Capacity {
                context: "CreateVolume \"vol-a\"".into(),
                source: CapacityError::Invalid("capacity_range must not be negative".into()),
            },
            Error::Capacity {
                context: "CreateVolume \"vol-a\"".into(),
                source: CapacityError::OutOfRange("capacity_range.limit_bytes 1 is below".into()),
            },
            Error::Busy {
                op: "CreateVolume",
                key: "vol-a".into(),
            },
            Error::NoSuchVolume {
                op: "ControllerGetVolume",
                volume_id: "vol-a".into(),
            },
            Error::UnknownNode {
                node: "a b".into(),
                rule: "is not a node name",
            },
            Error::SlotTaken {
                name: "vol-a".into(),
                id: id.clone(),
                comment: "by hand".into(),
            },
            Error::SlotCollision {
                name: "vol-a".into(),
                id: id.clone(),
                owner: "vol-b".into(),
            },
            Error::ParametersDiffer {
                name: "vol-a".into(),
                id: id.clone(),
            },
            Error::SizeOutsideRange {
                name: "vol-a".into(),
                id: id.clone(),
                have: 1,
                required: 2,
                limit: 3,
            },
            Error::NoSpaceToCreate {
                name: "vol-a".into(),
                pool: "storage-pool".into(),
                needed: 2,
                available: 1,
                reserve: 0,
            },
            Error::NoSpaceToGrow {
                id: id.clone(),
                pool: "storage-pool".into(),
                by: 2,
                available: 1,
            },
            Error::BeyondPool {
                id: id.clone(),
                wanted: 2,
                pool: "storage-pool".into(),
                pool_size: 1,
            },
            Error::PoolNotMounted {
                pool: "storage-pool".into(),
                state: None,
            },
            Error::PoolNotReadYet {
                pool: "storage-pool".into(),
            },
            Error::StillPublished {
                id: id.clone(),
                nodes: vec!["node-a".into()],
            },
            Error::PublishedElsewhere {
                id: id.clone(),
                other: "node-a".into(),
                node: "node-b".into(),
            },
            Error::RecordNotKept {
                op: "ControllerPublishVolume",
                id: id.clone(),
                comment: "other".into(),
            },
            Error::HostNqnRule {
                node: "a b".into(),
                rule: "must be 1 to 253 characters",
            },
            Error::AllowListNotKept {
                op: "ControllerPublishVolume",
                id,
                wrote: "nqn.a".into(),
                stored: "".into(),
            },
            Error::BadToken { token: "x".into() },
            Error::SnapshotsUnsupported {
                op: "CreateSnapshot",
                pool: "storage-pool".into(),
                fs: Some("xfs".into()),
            },
            Error::FlatVolume {
                op: "CreateSnapshot",
                id: VolumeId::for_name("vol-a"),
            },
            Error::SnapshotNameTaken {
                name: "snap-a".into(),
                id: crate::controller::SnapshotId::for_name("snap-a"),
                source: "pvc-1".into(),
                asked: "pvc-2".into(),
            },
            Error::NoSuchSnapshot {
                op: "CreateVolume",
                snapshot_id: "snap-x".into(),
            },
            Error::Rds {
                context: "DeleteVolume pvc-1".into(),
                source: Box::new(rds_error(rds::Kind::NotEnoughSpace)),
            },
            Error::Rds {
                context: "DeleteVolume pvc-1".into(),
                source: Box::new(rds_error(rds::Kind::Unavailable)),
            },
        ]
    }
}
