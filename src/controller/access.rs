//! Volume capabilities as the controller's rules see them (block or mount,
//! filesystem, mount flags, access mode), and the one rule that decides
//! which combinations this driver makes: a filesystem is never shared
//! between nodes, and shared block volumes only when the operator allows.

use std::fmt;

use crate::volume::{self, FsType};

use super::error::Invalid;

/// How a volume is attached on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessType {
    Block,
    /// `fs_type` as requested (empty: not said); `mount_flags` unchecked.
    Mount {
        fs_type: String,
        mount_flags: Vec<String>,
    },
}

/// The CSI access modes, by their CSI names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessMode {
    SingleNodeWriter,
    SingleNodeReaderOnly,
    SingleNodeSingleWriter,
    SingleNodeMultiWriter,
    MultiNodeReaderOnly,
    MultiNodeSingleWriter,
    MultiNodeMultiWriter,
}

impl AccessMode {
    /// True for the modes that let more than one node attach the volume.
    pub fn multi_node(self) -> bool {
        matches!(
            self,
            AccessMode::MultiNodeReaderOnly
                | AccessMode::MultiNodeSingleWriter
                | AccessMode::MultiNodeMultiWriter
        )
    }

    /// The CSI specification's name, as operators read it in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::SingleNodeWriter => "SINGLE_NODE_WRITER",
            AccessMode::SingleNodeReaderOnly => "SINGLE_NODE_READER_ONLY",
            AccessMode::SingleNodeSingleWriter => "SINGLE_NODE_SINGLE_WRITER",
            AccessMode::SingleNodeMultiWriter => "SINGLE_NODE_MULTI_WRITER",
            AccessMode::MultiNodeReaderOnly => "MULTI_NODE_READER_ONLY",
            AccessMode::MultiNodeSingleWriter => "MULTI_NODE_SINGLE_WRITER",
            AccessMode::MultiNodeMultiWriter => "MULTI_NODE_MULTI_WRITER",
        }
    }
}

impl fmt::Display for AccessMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One requested capability, unvalidated: `None` where the request left
/// the field out (the rules below say which are required).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    pub access_type: Option<AccessType>,
    pub mode: Option<AccessMode>,
}

impl Capability {
    pub fn is_block(&self) -> bool {
        matches!(self.access_type, Some(AccessType::Block))
    }
}

/// What a set of volume capabilities asks for, once validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub block: bool,
    pub fs_type: Option<FsType>,
    pub multi_node: bool,
}

/// Validates volume capabilities; `Err` says which one is unsupported and
/// why. `allow_multi_node_block` is `--allow-multi-node-block`.
pub fn check_access(caps: &[Capability], allow_multi_node_block: bool) -> Result<Access, Invalid> {
    if caps.is_empty() {
        return Err(Invalid::NoCapabilities);
    }
    let mut access = Access {
        block: false,
        fs_type: None,
        multi_node: false,
    };
    for (index, cap) in caps.iter().enumerate() {
        let block = match &cap.access_type {
            None => return Err(Invalid::NoAccessType { index }),
            Some(AccessType::Block) => true,
            Some(AccessType::Mount { .. }) => false,
        };
        if index > 0 && block != access.block {
            return Err(Invalid::MixedAccessTypes);
        }
        access.block = block;
        if let Some(AccessType::Mount { fs_type, mount_flags }) = &cap.access_type {
            // The node's own rule, so a volume is never made with flags
            // its stage would refuse.
            volume::check_mount_flags(mount_flags).map_err(|source| Invalid::MountFlag { index, source })?;
            if !fs_type.is_empty() {
                let fs = FsType::parse(fs_type).map_err(|rule| Invalid::FsType { index, rule })?;
                if access.fs_type.is_some_and(|other| other != fs) {
                    return Err(Invalid::DifferentFilesystems);
                }
                access.fs_type = Some(fs);
            }
        }
        let mode = cap.mode.ok_or(Invalid::NoAccessMode { index })?;
        let multi = mode.multi_node();
        if multi {
            if !block {
                return Err(Invalid::MultiNodeNeedsBlock { index, mode });
            }
            if !allow_multi_node_block {
                return Err(Invalid::MultiNodeDisabled { index, mode });
            }
        }
        access.multi_node |= multi;
    }
    Ok(access)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(fs: &str, mode: AccessMode) -> Capability {
        Capability {
            access_type: Some(AccessType::Mount {
                fs_type: fs.into(),
                mount_flags: vec![],
            }),
            mode: Some(mode),
        }
    }

    fn block(mode: AccessMode) -> Capability {
        Capability {
            access_type: Some(AccessType::Block),
            mode: Some(mode),
        }
    }

    #[test]
    fn a_filesystem_is_never_shared_between_nodes() {
        let e = check_access(&[mount("ext4", AccessMode::MultiNodeMultiWriter)], true).unwrap_err();
        assert_eq!(
            e,
            Invalid::MultiNodeNeedsBlock {
                index: 0,
                mode: AccessMode::MultiNodeMultiWriter
            }
        );
        assert!(e.to_string().contains("MULTI_NODE_MULTI_WRITER"), "{e}");
    }

    #[test]
    fn shared_block_volumes_only_when_allowed() {
        let caps = [block(AccessMode::MultiNodeMultiWriter)];
        assert!(matches!(
            check_access(&caps, false),
            Err(Invalid::MultiNodeDisabled { index: 0, .. })
        ));
        let access = check_access(&caps, true).unwrap();
        assert!(access.block && access.multi_node);
    }

    #[test]
    fn capabilities_must_agree_and_be_complete() {
        assert_eq!(check_access(&[], false), Err(Invalid::NoCapabilities));
        let mixed = [
            block(AccessMode::SingleNodeWriter),
            mount("", AccessMode::SingleNodeWriter),
        ];
        assert_eq!(check_access(&mixed, false), Err(Invalid::MixedAccessTypes));
        let two_fs = [
            mount("ext4", AccessMode::SingleNodeWriter),
            mount("xfs", AccessMode::SingleNodeWriter),
        ];
        assert_eq!(check_access(&two_fs, false), Err(Invalid::DifferentFilesystems));
        let no_mode = Capability {
            mode: None,
            ..block(AccessMode::SingleNodeWriter)
        };
        assert_eq!(
            check_access(&[no_mode], false),
            Err(Invalid::NoAccessMode { index: 0 })
        );
        let no_type = Capability {
            access_type: None,
            mode: Some(AccessMode::SingleNodeWriter),
        };
        assert_eq!(
            check_access(&[no_type], false),
            Err(Invalid::NoAccessType { index: 0 })
        );
        let ok = check_access(&[mount("xfs", AccessMode::SingleNodeWriter)], false).unwrap();
        assert_eq!(
            ok,
            Access {
                block: false,
                fs_type: Some(FsType::Xfs),
                multi_node: false
            }
        );
    }
}
