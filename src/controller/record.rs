//! The ownership record the controller keeps in an RDS disk's comment (the
//! RDS is the only state) and the digest of the parameters a volume was
//! created with.

use super::ControllerSettings;
use crate::rds;
use crate::volume::{self, VolumeContext, VolumeId};

/// Marks a disk comment as ours and versions its format. v2 escapes every
/// value; v1 (written by earlier releases, still on disks in the field) is
/// still read, and rewritten as v2 the next time the record changes.
const RECORD_TAG: &str = "rds-csi/v2";
const RECORD_TAG_V1: &str = "rds-csi/v1";

/// What the controller keeps about a volume on the RDS itself, in the disk's
/// `comment` (the RDS is the source of truth; the controller keeps no
/// state): the CSI name (to find a volume by name and detect slot
/// collisions), a digest of the parameters it was created with (to tell a
/// compatible repeat from a conflicting one), PV/PVC names for operators,
/// and the nodes it is published to.
///
/// Format v2: `rds-csi/v2 name=<n> params=<hex> pv=<..> pvc=<ns>/<name> nodes=<a>,<b> note=<..>`
/// — `key=value` words separated by single spaces; every value is
/// percent-escaped (`%XX` for each UTF-8 byte outside `A-Z a-z 0-9 - . _ /`),
/// so no value can contain a space, `=`, `,`, a newline or another key: the
/// comment is plain printable ASCII that RouterOS keeps intact, and one
/// record reads back as exactly the record written. A disk's earlier
/// comment, if it had one, is kept as the `note`.
///
/// Format v1 (read only): the same keys unescaped, the note after ` -- `.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ownership {
    pub name: String,
    pub params_digest: String,
    pub pv: Option<String>,
    pub pvc: Option<String>,
    pub nodes: Vec<String>,
    /// The comment the disk had before this driver recorded itself on it.
    pub note: String,
}

const NOTE_SEPARATOR_V1: &str = " -- ";

/// Percent-escapes everything but `A-Z a-z 0-9 - . _ /`.
fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of `escape_value`; `None` for anything `escape_value` cannot
/// have written (a bare unsafe byte, a broken `%XX`, invalid UTF-8).
fn unescape_value(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else if b.is_ascii_alphanumeric() || b"-._/".contains(&b) {
            out.push(b);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

impl Ownership {
    pub fn to_comment(&self) -> String {
        let mut s = format!(
            "{RECORD_TAG} name={} params={}",
            escape_value(&self.name),
            escape_value(&self.params_digest)
        );
        if let Some(pv) = &self.pv {
            s.push_str(&format!(" pv={}", escape_value(pv)));
        }
        if let Some(pvc) = &self.pvc {
            s.push_str(&format!(" pvc={}", escape_value(pvc)));
        }
        if !self.nodes.is_empty() {
            let nodes: Vec<String> = self.nodes.iter().map(|n| escape_value(n)).collect();
            s.push_str(&format!(" nodes={}", nodes.join(",")));
        }
        if !self.note.is_empty() {
            s.push_str(&format!(" note={}", escape_value(&self.note)));
        }
        s
    }

    /// `None` for a comment that is not ours (a disk made by hand or by the
    /// Go driver, which left no record) or not a well-formed record: a
    /// malformed record proves nothing, so the disk is not treated as ours.
    pub fn from_comment(comment: &str) -> Option<Ownership> {
        if comment.starts_with(&format!("{RECORD_TAG} ")) {
            Self::from_v2(comment)
        } else {
            Self::from_v1(comment)
        }
    }

    fn from_v2(comment: &str) -> Option<Ownership> {
        let mut words = comment.split(' ');
        if words.next()? != RECORD_TAG {
            return None;
        }
        let mut own = Ownership::default();
        let mut seen: Vec<&str> = Vec::new();
        for word in words {
            let (k, v) = word.split_once('=')?;
            // A key given twice is ambiguous: not a record this driver wrote.
            if seen.contains(&k) {
                return None;
            }
            seen.push(k);
            match k {
                "name" => own.name = unescape_value(v)?,
                "params" => own.params_digest = unescape_value(v)?,
                "pv" => own.pv = Some(unescape_value(v)?),
                "pvc" => own.pvc = Some(unescape_value(v)?),
                "nodes" => {
                    own.nodes = v
                        .split(',')
                        .filter(|n| !n.is_empty())
                        .map(unescape_value)
                        .collect::<Option<Vec<_>>>()?
                }
                "note" => own.note = unescape_value(v)?,
                // Keys of a later format version are kept out, not fatal,
                // as long as they are well-formed.
                _ => {
                    unescape_value(v)?;
                }
            }
        }
        if own.name.is_empty() {
            return None;
        }
        Some(own)
    }

    fn from_v1(comment: &str) -> Option<Ownership> {
        let (record, note) = comment.split_once(NOTE_SEPARATOR_V1).unwrap_or((comment, ""));
        let mut words = record.split_whitespace();
        if words.next()? != RECORD_TAG_V1 {
            return None;
        }
        let mut own = Ownership {
            note: note.to_string(),
            ..Default::default()
        };
        for word in words {
            let (k, v) = word.split_once('=')?;
            match k {
                "name" => own.name = v.to_string(),
                "params" => own.params_digest = v.to_string(),
                "pv" => own.pv = Some(v.to_string()),
                "pvc" => own.pvc = Some(v.to_string()),
                "nodes" => {
                    own.nodes = v
                        .split(',')
                        .filter(|n| !n.is_empty())
                        .map(str::to_string)
                        .collect()
                }
                _ => {}
            }
        }
        Some(own)
    }
}

/// A short digest of the settings that make two CreateVolume requests for
/// one name the same volume: the resolved file location, the export and
/// the connection parameters, and the filesystem.
pub fn params_digest(parts: &[(&str, String)]) -> String {
    let mut canon = String::new();
    for (k, v) in parts {
        canon.push_str(k);
        canon.push('=');
        canon.push_str(v);
        canon.push('\n');
    }
    let d = ring::digest::digest(&ring::digest::SHA256, canon.as_bytes());
    d.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// The record that makes `disk` one of our volumes, or `None` when it
/// is not ours. Ours means: a file disk whose comment carries our
/// ownership record for this very slot, or a legacy volume of the
/// earlier Go driver — slot `pvc-<uuid>` exactly, backing file under
/// the base path, NQN `<managed prefix>:<slot>` — which gets a fresh
/// record keeping its old comment as a note, so the attachment fence
/// works for it too. Anything else (a disk made by hand, a VM's disk,
/// a foreign driver's) is never acted on.
pub(crate) fn owned(settings: &ControllerSettings, id: &VolumeId, disk: &rds::Disk) -> Option<Ownership> {
    if disk.kind.as_deref().is_some_and(|k| k != "file") || disk.slot != id.slot() {
        return None;
    }
    if let Some(own) = Ownership::from_comment(&disk.comment) {
        // A record copied onto another disk does not make it ours: the
        // slot must be the one the recorded name gives (or, for a legacy
        // volume recorded on publish, the name is the slot itself).
        let matches =
            VolumeId::for_name(&own.name) == *id || (id.is_legacy_shape() && own.name == id.as_str());
        return matches.then_some(own);
    }
    let legacy = id.is_legacy_shape()
        && disk
            .file_path
            .as_deref()
            .is_some_and(|f| volume::file_under_base(&settings.base_path, f))
        && settings.nqn_prefix.volume_of(disk.effective_nqn()).as_ref() == Some(id);
    legacy.then(|| Ownership {
        name: id.to_string(),
        params_digest: "legacy".into(),
        note: disk.comment.clone(),
        ..Default::default()
    })
}

/// What makes two CreateVolume requests for one name the same volume.
pub(crate) fn creation_digest(file_path: &str, ctx: &VolumeContext, block: bool) -> String {
    let c = ctx.connection;
    params_digest(&[
        ("file", file_path.to_string()),
        ("address", ctx.nvme_address.clone()),
        ("port", ctx.nvme_port.to_string()),
        ("fs", ctx.fs_type.map(|f| f.to_string()).unwrap_or_default()),
        ("block", block.to_string()),
        ("ctrl_loss_tmo", c.ctrl_loss_tmo.to_string()),
        ("reconnect_delay", c.reconnect_delay.to_string()),
        ("keep_alive_tmo", c.keep_alive_tmo.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_record_round_trips() {
        let own = Ownership {
            name: "pvc-3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b".into(),
            params_digest: "a1b2c3d4e5f6".into(),
            pv: Some("pvc-3f2a".into()),
            pvc: Some("apps/data".into()),
            nodes: vec!["worker-1".into()],
            note: String::new(),
        };
        let c = own.to_comment();
        assert!(c.starts_with("rds-csi/v2 name=pvc-3f2a1b4c"), "{c}");
        assert_eq!(Ownership::from_comment(&c), Some(own.clone()));
        let mut none = own;
        none.nodes.clear();
        none.pv = None;
        assert_eq!(Ownership::from_comment(&none.to_comment()), Some(none.clone()));
        let mut noted = none.clone();
        noted.note = "old comment -- with its own separator".into();
        assert_eq!(Ownership::from_comment(&noted.to_comment()), Some(noted));
        assert_eq!(Ownership::from_comment("made by hand"), None);
        assert_eq!(Ownership::from_comment(""), None);
    }

    #[test]
    fn ownership_record_round_trips_hostile_strings() {
        let hostile = [
            "",
            "plain",
            "two words",
            "x nodes=evil-node",
            "x name=other",
            "a=b=c",
            "nodes=",
            " -- ",
            "x -- note=y",
            "line\nbreak\r\n",
            "tab\there",
            "quote\"s and 'single'",
            "percent %41 and %zz and %",
            "comma,separated,",
            "unicode: grüße 🚀 名前",
            "rds-csi/v2 name=forged params=0",
            "rds-csi/v1 name=forged",
            "\u{0}nul",
            "back\\slash",
        ];
        for h in hostile {
            let own = Ownership {
                name: if h.is_empty() { "n".into() } else { h.into() },
                params_digest: h.into(),
                pv: Some(h.into()),
                pvc: Some(format!("{h}/{h}")),
                nodes: if h.is_empty() {
                    vec![]
                } else {
                    vec![h.into(), "node-b".into()]
                },
                note: h.into(),
            };
            let c = own.to_comment();
            assert!(
                c.bytes().all(|b| b.is_ascii_graphic() || b == b' '),
                "not plain printable ascii: {c:?}"
            );
            assert!(!c.contains("  "), "{c:?}");
            assert_eq!(Ownership::from_comment(&c), Some(own), "{h:?} -> {c:?}");
        }
    }

    #[test]
    fn v1_records_still_parse_and_malformed_v2_is_not_ours() {
        let v1 =
            "rds-csi/v1 name=pvc-1 params=a1b2c3d4e5f6 pv=pvc-1 pvc=apps/data nodes=w1,w2 -- made by hand";
        let own = Ownership::from_comment(v1).unwrap();
        assert_eq!(own.name, "pvc-1");
        assert_eq!(own.params_digest, "a1b2c3d4e5f6");
        assert_eq!(own.pvc.as_deref(), Some("apps/data"));
        assert_eq!(own.nodes, vec!["w1", "w2"]);
        assert_eq!(own.note, "made by hand");
        // Rewritten, it becomes v2 and reads back the same.
        assert!(own.to_comment().starts_with("rds-csi/v2 "));
        assert_eq!(Ownership::from_comment(&own.to_comment()), Some(own));
        for bad in [
            "rds-csi/v2 name=a name=b params=x",
            "rds-csi/v2 name=a params=x nodes=a b",
            "rds-csi/v2 name=a  params=x",
            "rds-csi/v2 name=a params=%G1",
            "rds-csi/v2 name=a params=%4",
            "rds-csi/v2 name=a params=x note=a\nb",
            "rds-csi/v2 params=x",
            "rds-csi/v2 name=%FF params=x",
            "rds-csi/v2 word",
        ] {
            assert_eq!(Ownership::from_comment(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn params_digest_is_stable_and_sensitive() {
        let a = params_digest(&[("size", "1".into()), ("fs", "ext4".into())]);
        assert_eq!(a, params_digest(&[("size", "1".into()), ("fs", "ext4".into())]));
        assert_ne!(a, params_digest(&[("size", "1".into()), ("fs", "xfs".into())]));
        assert_eq!(a.len(), 12);
    }
}

#[cfg(test)]
mod ownership {
    //! The ownership rule on disks and the creation digest, with the controller's fakes.

    use crate::controller::fake::*;
    use crate::controller::record::{creation_digest, owned};
    use crate::controller::*;
    use crate::volume::{FsType, Nqn, VolumeContext};

    #[test]
    fn legacy_disks_get_a_record_that_keeps_their_comment() {
        let id = VolumeId::parse(LEGACY).unwrap();
        let d = legacy_disk(
            &format!("storage-pool/csi/{LEGACY}.img"),
            &format!("nqn.2000-02.com.mikrotik:{LEGACY}"),
            "made by the go driver",
        );
        let own = owned(&settings(), &id, &d).expect("a legacy volume is ours");
        assert_eq!(own.name, LEGACY);
        assert!(own.nodes.is_empty());
        assert_eq!(own.note, "made by the go driver");
        let round = Ownership::from_comment(&own.to_comment()).unwrap();
        assert_eq!(round, own);
        // Once recorded (on publish), the record keeps it ours.
        let recorded = rds::Disk {
            comment: own.to_comment(),
            ..d
        };
        assert_eq!(owned(&settings(), &id, &recorded), Some(own));
    }

    #[test]
    fn only_our_disks_are_ours() {
        let s = settings();
        let id = VolumeId::parse(LEGACY).unwrap();
        let nqn = format!("nqn.2000-02.com.mikrotik:{LEGACY}");
        let file = format!("storage-pool/csi/{LEGACY}.img");
        for (what, d) in [
            (
                "file outside the base",
                legacy_disk("storage-pool/vms/backup.img", &nqn, ""),
            ),
            (
                "file escaping the base",
                legacy_disk("storage-pool/csi/../vms/x.img", &nqn, ""),
            ),
            (
                "foreign nqn",
                legacy_disk(&file, "nqn.2014-08.org.example:disk", ""),
            ),
            (
                "another slot's nqn",
                legacy_disk(&file, "nqn.2000-02.com.mikrotik:pvc-1", ""),
            ),
            (
                "default nqn (the slot)",
                rds::Disk {
                    nvme_tcp_nqn: None,
                    ..legacy_disk(&file, &nqn, "")
                },
            ),
            (
                "not a file disk",
                rds::Disk {
                    kind: Some("raid".into()),
                    ..legacy_disk(&file, &nqn, "")
                },
            ),
        ] {
            assert_eq!(owned(&s, &id, &d), None, "{what}");
        }
        // Not the UUID shape: never legacy.
        let hand = VolumeId::parse("vm-backup").unwrap();
        let d = rds::Disk {
            slot: "vm-backup".into(),
            file_path: Some("storage-pool/csi/vm-backup.img".into()),
            nvme_tcp_nqn: Some("nqn.2000-02.com.mikrotik:vm-backup".into()),
            ..disk("", true)
        };
        assert_eq!(owned(&s, &hand, &d), None);
        // A record copied onto another slot does not make that disk ours.
        let mine = VolumeId::for_name("vol-a");
        let rec = Ownership {
            name: "vol-a".into(),
            params_digest: "x".into(),
            ..Default::default()
        };
        let d = rds::Disk {
            slot: mine.to_string(),
            comment: rec.to_comment(),
            ..disk("", true)
        };
        assert_eq!(owned(&s, &mine, &d), Some(rec.clone()));
        let copied = rds::Disk {
            slot: "vm-backup".into(),
            ..d
        };
        assert_eq!(owned(&s, &hand, &copied), None);
    }

    #[test]
    fn digest_depends_on_every_connection_setting() {
        use crate::volume::ConnectionConfig;
        let ctx = VolumeContext {
            nqn: Nqn::parse("nqn.2000-02.com.mikrotik:pvc-1").unwrap(),
            nvme_address: "10.0.0.1".into(),
            nvme_port: 4420,
            fs_type: Some(FsType::Ext4),
            connection: ConnectionConfig::default(),
            host: None,
        };
        let base = creation_digest("p/x.img", &ctx, false);
        assert_eq!(base, creation_digest("p/x.img", &ctx, false));
        let mut other = ctx.clone();
        other.connection.reconnect_delay = 7;
        assert_ne!(base, creation_digest("p/x.img", &other, false));
        assert_ne!(base, creation_digest("p/y.img", &ctx, false));
        assert_ne!(base, creation_digest("p/x.img", &ctx, true));
    }
}
