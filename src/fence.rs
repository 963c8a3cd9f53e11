//! Per-node host access control (`--nvme-host-acl`): the host NQN and host
//! ID a node connects with, computed from its node id alone, so the
//! controller knows them without asking the node; and the disk's allow list
//! (`nvme-tcp-server-allow-host-name`), written as comma-separated host NQNs.
//!
//! The identity of node `N`: a UUID made from the first 16 bytes of
//! SHA-256 of `rds-csi/host/v1\n` followed by `N`, with the version nibble
//! set to 5 and the RFC 4122 variant bits (a "v5-like" name-based UUID);
//! the host NQN is `nqn.2014-08.org.nvmexpress:uuid:<uuid>` (the form
//! nvme-cli generates) and the host ID is the same UUID. Deterministic: the
//! same node id always gives the same pair, two node ids a different one.

use std::fmt;

/// The publish-context key of the host NQN the node must connect with.
pub const KEY_HOST_NQN: &str = "hostNqn";
/// The publish-context key of the host ID the node must connect with.
pub const KEY_HOST_ID: &str = "hostId";

/// What the UUID of a node's identity is hashed from, before the node id.
const DOMAIN: &str = "rds-csi/host/v1\n";
/// The prefix of a UUID-based host NQN (NVMe base specification).
pub const UUID_NQN_PREFIX: &str = "nqn.2014-08.org.nvmexpress:uuid:";

/// A node's host NQN and host ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIdentity {
    pub nqn: String,
    pub id: String,
}

impl HostIdentity {
    /// The identity of `node_id`; `Err` names the rule a node id must meet
    /// to form a host NQN (the node id rule of the CSI node plugin).
    pub fn for_node(node_id: &str) -> Result<HostIdentity, &'static str> {
        crate::volume::check_node_id(node_id)?;
        let mut input = DOMAIN.as_bytes().to_vec();
        input.extend_from_slice(node_id.as_bytes());
        let d = ring::digest::digest(&ring::digest::SHA256, &input);
        let mut b = [0u8; 16];
        b.copy_from_slice(&d.as_ref()[..16]);
        b[6] = (b[6] & 0x0f) | 0x50;
        b[8] = (b[8] & 0x3f) | 0x80;
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        let uuid = format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        );
        Ok(HostIdentity {
            nqn: format!("{UUID_NQN_PREFIX}{uuid}"),
            id: uuid,
        })
    }
}

impl fmt::Display for HostIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (host id {})", self.nqn, self.id)
    }
}

/// The host NQNs of an allow list as RouterOS prints it (`""`: none).
pub fn parse_allow_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The allow list's text for `hosts`, sorted and without repeats, so equal
/// sets are equal texts and the read-back compares exactly.
pub fn format_allow_list(hosts: &[String]) -> String {
    let mut v: Vec<&str> = hosts.iter().map(String::as_str).collect();
    v.sort_unstable();
    v.dedup();
    v.join(",")
}

/// The host identity a publish context names (`hostNqn` and `hostId`,
/// both or neither); `Err` says which key breaks which rule.
pub fn from_publish_context(
    ctx: &std::collections::HashMap<String, String>,
) -> Result<Option<HostIdentity>, String> {
    use crate::echo::echo;
    match (ctx.get(KEY_HOST_NQN), ctx.get(KEY_HOST_ID)) {
        (None, None) => Ok(None),
        (Some(nqn), Some(id)) => {
            let uuid = nqn.strip_prefix(UUID_NQN_PREFIX).unwrap_or("");
            if !is_uuid(uuid) {
                return Err(format!(
                    "publish_context.{KEY_HOST_NQN} {} must be {UUID_NQN_PREFIX}<lowercase uuid>",
                    echo(nqn)
                ));
            }
            if !is_uuid(id) {
                return Err(format!(
                    "publish_context.{KEY_HOST_ID} {} must be a lowercase uuid",
                    echo(id)
                ));
            }
            Ok(Some(HostIdentity {
                nqn: nqn.clone(),
                id: id.clone(),
            }))
        }
        _ => Err(format!(
            "publish_context must carry both {KEY_HOST_NQN} and {KEY_HOST_ID}, or neither"
        )),
    }
}

/// Whether `uuid` is a lowercase 8-4-4-4-12 hex UUID (a host ID as the
/// controller hands it out; the node checks what the context carries).
pub fn is_uuid(uuid: &str) -> bool {
    let groups: Vec<&str> = uuid.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| {
            g.len() == n
                && g.bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED_NODE_A: &str = "bba1ddea-681e-5eff-95f0-c390f1da53d0";

    #[test]
    fn identities_are_deterministic_distinct_and_well_formed() {
        let a = HostIdentity::for_node("node-a").unwrap();
        assert_eq!(a, HostIdentity::for_node("node-a").unwrap());
        let b = HostIdentity::for_node("node-b").unwrap();
        assert_ne!(a.nqn, b.nqn);
        assert_ne!(a.id, b.id);
        for h in [&a, &b] {
            assert!(is_uuid(&h.id), "{}", h.id);
            assert_eq!(h.nqn, format!("{UUID_NQN_PREFIX}{}", h.id));
            // Version 5, RFC 4122 variant.
            assert_eq!(&h.id[14..15], "5");
            assert!("89ab".contains(&h.id[19..20]), "{}", h.id);
        }
        // Pinned: the README documents the derivation; changing it would
        // lock every published node out of its volumes.
        assert_eq!(a.id, PINNED_NODE_A);
    }

    #[test]
    fn node_ids_that_cannot_form_a_host_nqn_name_the_rule() {
        for bad in ["", "a b", "node/1", "n\u{e9}", &"x".repeat(254)] {
            let rule = HostIdentity::for_node(bad).unwrap_err();
            assert!(
                rule.contains("characters") || rule.contains("may only contain"),
                "{bad:?}: {rule}"
            );
        }
    }

    #[test]
    fn the_publish_context_names_both_or_neither_and_well_formed() {
        let a = HostIdentity::for_node("node-a").unwrap();
        let ctx = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<std::collections::HashMap<_, _>>()
        };
        assert_eq!(from_publish_context(&ctx(&[])), Ok(None));
        assert_eq!(
            from_publish_context(&ctx(&[(KEY_HOST_NQN, &a.nqn), (KEY_HOST_ID, &a.id)])),
            Ok(Some(a.clone()))
        );
        let e = from_publish_context(&ctx(&[(KEY_HOST_NQN, &a.nqn)])).unwrap_err();
        assert!(e.contains("both"), "{e}");
        let e =
            from_publish_context(&ctx(&[(KEY_HOST_NQN, "nqn.x -n y"), (KEY_HOST_ID, &a.id)])).unwrap_err();
        assert!(e.contains("publish_context.hostNqn"), "{e}");
        let e = from_publish_context(&ctx(&[(KEY_HOST_NQN, &a.nqn), (KEY_HOST_ID, "zz")])).unwrap_err();
        assert!(e.contains("publish_context.hostId"), "{e}");
    }

    #[test]
    fn allow_lists_round_trip_sorted_without_repeats() {
        assert!(parse_allow_list("").is_empty());
        assert!(parse_allow_list(" , ").is_empty());
        let hosts = vec!["nqn.b".to_string(), "nqn.a".to_string(), "nqn.b".to_string()];
        let text = format_allow_list(&hosts);
        assert_eq!(text, "nqn.a,nqn.b");
        assert_eq!(parse_allow_list(&text), vec!["nqn.a", "nqn.b"]);
        assert!(!is_uuid("ABCDEF00-0000-5000-8000-000000000000"));
        assert!(!is_uuid("x"));
    }
}
