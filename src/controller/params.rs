//! StorageClass parameters of a CreateVolume call and the CSI name rule:
//! what the controller accepts before it makes a volume. The keys shared
//! with the node (VolumeContext) stay in `volume`.

use std::collections::HashMap;

use crate::volume::{
    check_address, int_param, param_error, resolve_volume_path, ConnectionConfig, FsType, ParamError,
    DEFAULT_NVME_PORT, KEY_CTRL_LOSS_TMO, KEY_FS_TYPE, KEY_KEEP_ALIVE_TMO, KEY_NVME_ADDRESS, KEY_NVME_PORT,
    KEY_RECONNECT_DELAY,
};

use super::access::{check_access, Access, Capability};
use super::error::Invalid;

pub const KEY_VOLUME_PATH: &str = "volumePath";
/// Added by the external-provisioner with `--extra-create-metadata`.
pub const KEY_PV_NAME: &str = "csi.storage.k8s.io/pv/name";
pub const KEY_PVC_NAME: &str = "csi.storage.k8s.io/pvc/name";
pub const KEY_PVC_NAMESPACE: &str = "csi.storage.k8s.io/pvc/namespace";
/// Keys under this prefix belong to Kubernetes: read what we use, accept the rest.
const K8S_PREFIX: &str = "csi.storage.k8s.io/";

/// CSI names are free text from the CO; keep them to what fits safely in a
/// disk comment and a log line.
pub fn check_name(name: &str) -> Result<(), Invalid> {
    if name.is_empty() {
        return Err(Invalid::NameMissing);
    }
    if name.len() > 128 {
        return Err(Invalid::NameTooLong {
            name: name.to_string(),
        });
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(Invalid::NameCharacters {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// StorageClass parameters of a CreateVolume call, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeParams {
    pub fs_type: Option<FsType>,
    pub nvme_address: Option<String>,
    pub nvme_port: u16,
    pub volume_path: Option<String>,
    pub connection: ConnectionConfig,
    pub pv_name: Option<String>,
    pub pvc_name: Option<String>,
    pub pvc_namespace: Option<String>,
}

const KNOWN_KEYS: &[&str] = &[
    KEY_FS_TYPE,
    KEY_NVME_ADDRESS,
    KEY_NVME_PORT,
    KEY_VOLUME_PATH,
    KEY_CTRL_LOSS_TMO,
    KEY_RECONNECT_DELAY,
    KEY_KEEP_ALIVE_TMO,
];

impl VolumeParams {
    /// Validates every key; an unknown key is an error so a typo (say
    /// `ctrlLossTimeout`) does not silently fall back to a default.
    pub fn parse(map: &HashMap<String, String>) -> Result<VolumeParams, ParamError> {
        let mut keys: Vec<&String> = map.keys().collect();
        keys.sort();
        for key in keys {
            if !KNOWN_KEYS.contains(&key.as_str()) && !key.starts_with(K8S_PREFIX) {
                return Err(param_error(
                    key,
                    "",
                    format!("unknown parameter (known: {})", KNOWN_KEYS.join(", ")),
                ));
            }
        }
        let fs_type = match map.get(KEY_FS_TYPE) {
            None => None,
            Some(v) => Some(FsType::parse(v).map_err(|rule| param_error(KEY_FS_TYPE, v, rule))?),
        };
        let nvme_address = match map.get(KEY_NVME_ADDRESS) {
            None => None,
            Some(v) => Some(check_address(v).map_err(|rule| param_error(KEY_NVME_ADDRESS, v, rule))?),
        };
        let nvme_port = int_param(map, KEY_NVME_PORT, 1, 65535, "a port number from 1 to 65535")?
            .map_or(DEFAULT_NVME_PORT, |p| p as u16);
        let volume_path = map.get(KEY_VOLUME_PATH).cloned();
        // These three end up in the ownership record: only what Kubernetes
        // itself would accept as a name gets there.
        for (key, max, label_only) in [
            (KEY_PV_NAME, 253, false),
            (KEY_PVC_NAME, 253, false),
            (KEY_PVC_NAMESPACE, 63, true),
        ] {
            if let Some(v) = map.get(key) {
                check_dns1123(v, max, label_only).map_err(|rule| param_error(key, v, rule))?;
            }
        }
        Ok(VolumeParams {
            fs_type,
            nvme_address,
            nvme_port,
            volume_path,
            connection: ConnectionConfig::from_map(map)?,
            pv_name: map.get(KEY_PV_NAME).cloned(),
            pvc_name: map.get(KEY_PVC_NAME).cloned(),
            pvc_namespace: map.get(KEY_PVC_NAMESPACE).cloned(),
        })
    }
}

/// Kubernetes' DNS-1123 names: a label (`label_only`, e.g. a namespace) is
/// lower-case letters, digits and `-`, starting and ending with a letter or
/// digit; a subdomain (PV and PVC names) is such labels joined by `.`.
pub fn check_dns1123(value: &str, max: usize, label_only: bool) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > max {
        return Err(format!("must be at most {max} characters (has {})", value.len()));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let ok = if label_only {
        label_ok(value)
    } else {
        value.split('.').all(label_ok)
    };
    if ok {
        Ok(())
    } else if label_only {
        Err("must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit".into())
    } else {
        Err("must be a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', each dot-separated part starting and ending with a letter or digit".into())
    }
}

/// A CreateVolume request's capabilities and parameters, once validated:
/// what CreateVolume acts on and what ValidateVolumeCapabilities confirms.
#[derive(Debug, Clone)]
pub struct Plan {
    pub access: Access,
    pub params: VolumeParams,
    /// The filesystem the capabilities or the parameters ask for.
    pub fs_type: Option<FsType>,
    /// The resolved volume folder under the base path.
    pub folder: String,
}

/// The one validation CreateVolume and ValidateVolumeCapabilities both
/// apply to capabilities and parameters.
pub fn plan(
    caps: &[Capability],
    parameters: &HashMap<String, String>,
    base_path: &str,
    allow_multi_node_block: bool,
) -> Result<Plan, Invalid> {
    let access = check_access(caps, allow_multi_node_block)?;
    let params = VolumeParams::parse(parameters).map_err(Invalid::Parameter)?;
    let fs_type = match (access.fs_type, params.fs_type) {
        (Some(capability), Some(parameter)) if capability != parameter => {
            return Err(Invalid::FsTypeContradicts {
                parameter,
                capability,
            })
        }
        (a, b) => a.or(b),
    };
    let folder = resolve_volume_path(base_path, params.volume_path.as_deref()).map_err(|rule| {
        Invalid::VolumePath {
            value: Some(params.volume_path.clone().unwrap_or_default()),
            rule,
        }
    })?;
    Ok(Plan {
        access,
        params,
        fs_type,
        folder,
    })
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
    fn storage_class_parameters() {
        let p = VolumeParams::parse(&map(&[
            ("fsType", "xfs"),
            ("nvmeAddress", "10.0.0.5"),
            ("nvmePort", "4421"),
            ("volumePath", "storage-pool/csi/fast"),
            ("csi.storage.k8s.io/pv/name", "pvc-1"),
            ("csi.storage.k8s.io/pvc/name", "data"),
            ("csi.storage.k8s.io/pvc/namespace", "apps"),
            ("csi.storage.k8s.io/something-else", "ignored"),
        ]))
        .unwrap();
        assert_eq!(p.fs_type, Some(FsType::Xfs));
        assert_eq!(p.nvme_address.as_deref(), Some("10.0.0.5"));
        assert_eq!(p.nvme_port, 4421);
        assert_eq!(p.pvc_name.as_deref(), Some("data"));
        assert_eq!(VolumeParams::parse(&map(&[])).unwrap().nvme_port, 4420);
    }

    #[test]
    fn each_bad_parameter_is_named() {
        for (k, v) in [
            ("fsType", "btrfs"),
            ("nvmeAddress", "not an address"),
            ("nvmeAddress", "300.1.1.1"),
            ("nvmePort", "0"),
            ("nvmePort", "65536"),
            ("ctrlLossTmo", "-5"),
            ("reconnectDelay", "0"),
            ("keepAliveTmo", "x"),
            ("ctrlLossTimeout", "5"),
        ] {
            let e = VolumeParams::parse(&map(&[(k, v)])).unwrap_err();
            assert_eq!(e.key, k, "{e}");
        }
    }

    #[test]
    fn kubernetes_names_follow_dns_1123() {
        for ok in ["a", "data", "pvc-1", "my.pv-1", &"a".repeat(253)] {
            assert!(check_dns1123(ok, 253, false).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "x nodes=evil-node",
            "Upper",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a_b",
            "a\nb",
            &"a".repeat(254),
        ] {
            assert!(check_dns1123(bad, 253, false).is_err(), "{bad:?}");
        }
        assert!(check_dns1123("apps", 63, true).is_ok());
        assert!(check_dns1123("a.b", 63, true).is_err());
        assert!(check_dns1123(&"a".repeat(64), 63, true).is_err());
        for (k, v) in [
            (KEY_PVC_NAME, "x nodes=evil-node"),
            (KEY_PV_NAME, "x name=other"),
            (KEY_PVC_NAMESPACE, "a.b"),
        ] {
            let e = VolumeParams::parse(&map(&[(k, v)])).unwrap_err();
            assert_eq!(e.key, k);
            assert!(e.to_string().contains("DNS-1123"), "{e}");
        }
    }
}
