//! Btrfs subvolumes on the RDS (`/disk/btrfs/subvolume`, RouterOS 7.18+): list, create, snapshot (read-only or writable) and remove, each idempotent.
//!
//! Callers name subvolumes by their `/file` path (`storage-pool/csi/pvc-1`);
//! the client turns it into RouterOS's name, relative to the filesystem root
//! (`csi/pvc-1`), with the `BtrfsFs` read from the pool entry (its
//! `fs-label` and mount point), never assumed.

use serde_json::json;

use super::error::{Error, Kind, Op};
use super::transport::{escape_segment, Method};
use super::types::{as_record, as_records, BtrfsFs, Subvolume, Version};
use super::Client;

/// `/disk/btrfs/subvolume` exists from RouterOS 7.18.
pub(super) const BTRFS_SUBVOLUMES: (&str, Version) =
    ("btrfs subvolumes (/disk/btrfs/subvolume)", Version::new(7, 18, 0));

const MENU: &str = "/rest/disk/btrfs/subvolume";

impl Client {
    fn name_in(&self, op: Op, fs: &BtrfsFs, path: &str) -> Result<String, Error> {
        fs.name_of(path).ok_or_else(|| Error::OutsideFilesystem {
            op,
            path: path.to_string(),
            mount_point: fs.mount_point.clone(),
        })
    }

    fn all_subvolumes(&self, op: Op, fs: &BtrfsFs, target: &str) -> Result<Vec<Subvolume>, Error> {
        self.require(op, target, BTRFS_SUBVOLUMES)?;
        let answer = self.call(op, target, Method::Get, MENU, &[("fs", &fs.label)], None)?;
        let mut out = Vec::new();
        for rec in as_records(&answer).map_err(Self::decode_err(op, target))? {
            let sub = Subvolume::from_record(rec).map_err(Self::decode_err(op, target))?;
            // RouterOS filters by `fs`; checking again costs nothing.
            if sub.fs.is_empty() || sub.fs == fs.label {
                out.push(sub);
            }
        }
        Ok(out)
    }

    fn find_subvolume(&self, op: Op, fs: &BtrfsFs, name: &str) -> Result<Option<Subvolume>, Error> {
        Ok(self
            .all_subvolumes(op, fs, name)?
            .into_iter()
            .find(|s| s.name == name))
    }

    /// Subvolumes of `fs` whose `/file` path starts with `path_prefix`
    /// (give `storage-pool/csi/` for everything under a folder). Read-only.
    pub fn list_subvolumes(&self, fs: &BtrfsFs, path_prefix: &str) -> Result<Vec<Subvolume>, Error> {
        let op = Op::ListSubvolumes;
        let prefix = super::types::strip_leading_slash(path_prefix);
        let mut subs = self.all_subvolumes(op, fs, &prefix)?;
        subs.retain(|s| fs.path_of(&s.name).starts_with(&prefix));
        Ok(subs)
    }

    /// The subvolume at this `/file` path, or `None`. Read-only.
    pub fn subvolume(&self, fs: &BtrfsFs, path: &str) -> Result<Option<Subvolume>, Error> {
        let op = Op::ListSubvolumes;
        let name = self.name_in(op, fs, path)?;
        self.find_subvolume(op, fs, &name)
    }

    /// Makes an empty writable subvolume at `path`. A second call returns
    /// the same subvolume; one of that name that is a snapshot or read-only
    /// is someone else's: `Error::SubvolumeExists` (`Kind::AlreadyExists`).
    pub fn create_subvolume(&self, fs: &BtrfsFs, path: &str) -> Result<Subvolume, Error> {
        self.add_subvolume(Op::CreateSubvolume, fs, None, path, false)
    }

    /// Snapshots the subvolume at `source` into a new subvolume at `path`,
    /// read-only (a snapshot) or writable (a clone). A second call with the
    /// same arguments returns the same subvolume, even after the source is
    /// gone; a subvolume at `path` with another parent or another
    /// `read-only` is `Error::SubvolumeExists`. A missing source is
    /// `Error::NoSubvolume` (`Kind::NotFound`); RouterOS refuses a source
    /// that is not a subvolume (a plain folder) with `Kind::Rejected`.
    pub fn snapshot_subvolume(
        &self,
        fs: &BtrfsFs,
        source: &str,
        path: &str,
        read_only: bool,
    ) -> Result<Subvolume, Error> {
        self.add_subvolume(Op::SnapshotSubvolume, fs, Some(source), path, read_only)
    }

    fn add_subvolume(
        &self,
        op: Op,
        fs: &BtrfsFs,
        source: Option<&str>,
        path: &str,
        read_only: bool,
    ) -> Result<Subvolume, Error> {
        let name = self.name_in(op, fs, path)?;
        let parent = source.map(|s| self.name_in(op, fs, s)).transpose()?;
        self.require(op, &name, BTRFS_SUBVOLUMES)?;
        // Optimistic: one PUT. What is there is looked at only when RouterOS
        // refuses (it exists, or the source is missing or not a subvolume).
        let mut body = json!({ "fs": fs.label, "name": name });
        if let Some(parent) = &parent {
            body["parent"] = parent.clone().into();
            body["read-only"] = if read_only { "true" } else { "false" }.into();
        }
        match self.call(op, &name, Method::Put, MENU, &[], Some(&body)) {
            Ok(answer) => match as_record(&answer).and_then(Subvolume::from_record) {
                Ok(sub) => Ok(sub),
                Err(_) => self.find_subvolume(op, fs, &name)?.ok_or_else(|| Error::Decode {
                    op,
                    target: name.clone(),
                    what: "the created subvolume is not listed".to_string(),
                }),
            },
            // A second call, a concurrent create, or our own PUT applied
            // before its answer was lost: look at what is there.
            Err(e) if e.kind() == Kind::AlreadyExists => {
                let existing = self.find_subvolume(op, fs, &name)?.ok_or(e)?;
                self.check_same_subvolume(op, &name, parent.as_deref(), read_only, &existing)
            }
            Err(e) if e.is_transient() => Err(e),
            Err(e) => {
                let all = self.all_subvolumes(op, fs, &name)?;
                // Made meanwhile (a lost answer, then a refusal of the retry).
                if let Some(existing) = all.iter().find(|s| s.name == name) {
                    return self.check_same_subvolume(op, &name, parent.as_deref(), read_only, existing);
                }
                match &parent {
                    Some(parent) if !all.iter().any(|s| &s.name == parent) => Err(Error::NoSubvolume {
                        op,
                        name: parent.clone(),
                    }),
                    _ => Err(e),
                }
            }
        }
    }

    fn check_same_subvolume(
        &self,
        op: Op,
        name: &str,
        parent: Option<&str>,
        read_only: bool,
        found: &Subvolume,
    ) -> Result<Subvolume, Error> {
        let exists = |field, expected: String, found: String| {
            Err(Error::SubvolumeExists {
                op,
                name: name.to_string(),
                field,
                expected,
                found,
            })
        };
        if found.parent.as_deref() != parent {
            return exists(
                "parent",
                parent.unwrap_or("").to_string(),
                found.parent.clone().unwrap_or_default(),
            );
        }
        if found.read_only != read_only {
            return exists("read-only", read_only.to_string(), found.read_only.to_string());
        }
        Ok(found.clone())
    }

    /// Removes the subvolume at `path` (and everything in it). Returns
    /// whether it existed; a second call returns `false`. Refused
    /// (`Kind::Rejected`) before anything is sent when `path` is not under
    /// the client's base path (see `with_base_path`); RouterOS refuses a
    /// subvolume that holds a disk's backing file (`Kind::Rejected`).
    pub fn remove_subvolume(&self, fs: &BtrfsFs, path: &str) -> Result<bool, Error> {
        let op = Op::RemoveSubvolume;
        let path = super::types::strip_leading_slash(path);
        self.check_confined(op, &path, &path)?;
        let name = self.name_in(op, fs, &path)?;
        let Some(sub) = self.find_subvolume(op, fs, &name)? else {
            return Ok(false);
        };
        let item = format!("{MENU}/{}", escape_segment(&sub.id));
        match self.call(op, &name, Method::Delete, &item, &[], None) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}
