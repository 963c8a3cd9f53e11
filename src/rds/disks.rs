//! Checking a created disk, and changing one after it exists: its allow
//! list, export, size and comment (each one `PATCH` on a disk just looked
//! up, its answer the read-back), and removing it with its backing file.

use serde_json::json;

use super::transport::{escape_segment, Method};
use super::types::strip_leading_slash;
use super::{Client, Disk, Error, NewDisk, Op, Removed, FILE_DISKS};

impl Client {
    /// Sets `nvme-tcp-server-allow-host-name` of a disk just looked up: one
    /// `PATCH` (none when it already reads so), whose answer is returned
    /// for the caller to check (what RouterOS makes of a list is
    /// unverified).
    pub fn set_allowed_hosts_known(&self, disk: &Disk, value: &str) -> Result<Disk, Error> {
        if disk.nvme_tcp_allow_host == value {
            return Ok(disk.clone());
        }
        self.patch_disk(
            Op::SetAllowedHosts,
            &disk.slot,
            &disk.id,
            &json!({ "nvme-tcp-server-allow-host-name": value }),
        )
    }

    /// Turns the NVMe/TCP export of a disk just looked up on or off: one
    /// `PATCH` (none when it already is), whose answer is the read-back; an
    /// answer with the export otherwise is `Error::Verify`.
    pub fn set_export_known(&self, disk: &Disk, on: bool) -> Result<Disk, Error> {
        if disk.nvme_tcp_export == on {
            return Ok(disk.clone());
        }
        let op = if on { Op::ExportDisk } else { Op::UnexportDisk };
        let changes = json!({ "nvme-tcp-export": on.to_string() });
        let d = self.patch_disk(op, &disk.slot, &disk.id, &changes)?;
        if d.nvme_tcp_export != on {
            return Err(Error::Verify {
                op,
                slot: disk.slot.clone(),
                field: "nvme-tcp-export",
                expected: on.to_string(),
                found: d.nvme_tcp_export.to_string(),
            });
        }
        Ok(d)
    }

    /// Whether an existing disk is the one `new` describes (possibly with its
    /// export still off or half-set by our own earlier attempt).
    pub(super) fn check_same_disk(
        &self,
        op: Op,
        new: &NewDisk,
        file_path: &str,
        d: &Disk,
    ) -> Result<(), Error> {
        let exists = |field, expected: String, found: String| {
            Err(Error::Exists {
                op,
                slot: new.slot.clone(),
                field,
                expected,
                found,
            })
        };
        if d.kind.as_deref().is_some_and(|k| k != "file") {
            return exists("type", "file".into(), d.kind.clone().unwrap_or_default());
        }
        let found_path = d.file_path.clone().unwrap_or_default();
        if found_path != file_path {
            return exists("file-path", file_path.to_string(), found_path);
        }
        if let Some(bytes) = d.bytes() {
            if bytes < new.size_bytes {
                return exists("size", new.size_bytes.to_string(), bytes.to_string());
            }
        }
        if d.nvme_tcp_export {
            if d.effective_port() != new.port {
                return exists(
                    "nvme-tcp-server-port",
                    new.port.to_string(),
                    d.effective_port().to_string(),
                );
            }
            if let Some(nqn) = &new.nqn {
                if d.effective_nqn() != nqn {
                    return exists("nvme-tcp-server-nqn", nqn.clone(), d.effective_nqn().into());
                }
            }
        }
        Ok(())
    }

    pub(super) fn verify_created(
        &self,
        op: Op,
        new: &NewDisk,
        file_path: &str,
        d: &Disk,
        export: bool,
    ) -> Result<(), Error> {
        let verify = |field, expected: String, found: String| {
            if expected == found {
                Ok(())
            } else {
                Err(Error::Verify {
                    op,
                    slot: new.slot.clone(),
                    field,
                    expected,
                    found,
                })
            }
        };
        verify(
            "file-path",
            file_path.to_string(),
            d.file_path.clone().unwrap_or_default(),
        )?;
        if export {
            verify("nvme-tcp-export", "true".into(), d.nvme_tcp_export.to_string())?;
        }
        verify(
            "nvme-tcp-server-port",
            new.port.to_string(),
            d.effective_port().to_string(),
        )?;
        if let Some(nqn) = &new.nqn {
            verify("nvme-tcp-server-nqn", nqn.clone(), d.effective_nqn().into())?;
        }
        let size = d.bytes().map(|b| b.to_string()).unwrap_or_default();
        // A disk we finished may be larger than asked if it was grown since.
        if d.bytes().is_none_or(|b| b < new.size_bytes) {
            verify("size", new.size_bytes.to_string(), size)?;
        }
        Ok(())
    }

    /// Grows a disk to `new_size` bytes (`PATCH file-size`) and checks from
    /// the answer that `size` grew. A disk already at least that large is
    /// returned unchanged (so a second call is a no-op); disks never shrink.
    pub fn grow_disk(&self, slot: &str, new_size: u64) -> Result<Disk, Error> {
        let op = Op::GrowDisk;
        let disk = self.find_disk(op, slot)?.ok_or_else(|| Error::NoDisk {
            op,
            slot: slot.to_string(),
        })?;
        self.grow_disk_known(&disk, new_size)
    }

    /// `grow_disk` for a disk the caller has just looked up: one `PATCH`,
    /// whose answer (the disk as RouterOS now has it) is the read-back.
    pub fn grow_disk_known(&self, disk: &Disk, new_size: u64) -> Result<Disk, Error> {
        let op = Op::GrowDisk;
        let slot = disk.slot.as_str();
        if disk.kind.as_deref().is_some_and(|k| k != "file") {
            return Err(Error::NotAFileDisk {
                op,
                slot: slot.to_string(),
                kind: disk.kind.clone().unwrap_or_default(),
            });
        }
        if disk.bytes().is_some_and(|b| b >= new_size) {
            return Ok(disk.clone());
        }
        self.require(op, slot, FILE_DISKS)?;
        let grown = self.patch_disk(op, slot, &disk.id, &json!({ "file-size": new_size.to_string() }))?;
        match grown.bytes() {
            Some(b) if b >= new_size => Ok(grown),
            found => Err(Error::Verify {
                op,
                slot: slot.to_string(),
                field: "size",
                expected: new_size.to_string(),
                found: found.map(|b| b.to_string()).unwrap_or_default(),
            }),
        }
    }

    /// Sets a disk's comment; a second call with the same comment changes
    /// nothing. Returns the disk as it now is.
    pub fn set_comment(&self, slot: &str, comment: &str) -> Result<Disk, Error> {
        let op = Op::SetComment;
        let disk = self.find_disk(op, slot)?.ok_or_else(|| Error::NoDisk {
            op,
            slot: slot.to_string(),
        })?;
        self.set_comment_known(&disk, comment)
    }

    /// `set_comment` for a disk the caller has just looked up: at most one
    /// `PATCH`, whose answer is returned.
    pub fn set_comment_known(&self, disk: &Disk, comment: &str) -> Result<Disk, Error> {
        if disk.comment == comment {
            return Ok(disk.clone());
        }
        self.patch_disk(
            Op::SetComment,
            &disk.slot,
            &disk.id,
            &json!({ "comment": comment }),
        )
    }

    /// Removes a volume in three steps, each treating "not found" as done:
    /// export off, `DELETE` the disk, `DELETE` its backing file (RouterOS
    /// keeps the file when a disk is removed). Calling it again after a crash
    /// between steps finishes the job; calling it for a gone volume is a
    /// no-op returning `Removed { disk: false, file: false }`.
    ///
    /// Refuses (`Kind::Rejected`), before sending anything, a `file_path`
    /// that is not under the client's base path (see `with_base_path`); and
    /// a disk that is not file-backed or whose backing file is not
    /// `file_path`, so a wrong slot never destroys someone else's data.
    pub fn remove_disk(&self, slot: &str, file_path: &str) -> Result<Removed, Error> {
        let op = Op::RemoveDisk;
        let file_path = strip_leading_slash(file_path);
        self.check_confined(op, slot, &file_path)?;
        match self.find_disk(op, slot)? {
            Some(disk) => {
                if let Some(found) = &disk.file_path {
                    if *found != file_path {
                        return Err(Error::FilePathMismatch {
                            op,
                            slot: slot.to_string(),
                            expected: file_path,
                            found: found.clone(),
                        });
                    }
                }
                self.remove_found(op, &disk, &file_path)
            }
            None => Ok(Removed {
                disk: false,
                file: self.remove_file_as(op, slot, &file_path)?,
            }),
        }
    }

    /// `remove_disk` for a disk the caller has just looked up, with the
    /// backing file the disk itself names: the same steps without a second
    /// lookup. Refuses a disk that is not file-backed, names no backing file,
    /// or whose file is not under the base path.
    pub fn remove_disk_known(&self, disk: &Disk) -> Result<Removed, Error> {
        let op = Op::RemoveDisk;
        let file_path = disk.file_path.clone().unwrap_or_default();
        self.check_confined(op, &disk.slot, &file_path)?;
        self.remove_found(op, disk, &file_path)
    }

    pub(super) fn remove_found(&self, op: Op, disk: &Disk, file_path: &str) -> Result<Removed, Error> {
        let slot = disk.slot.as_str();
        if disk.kind.as_deref().is_some_and(|k| k != "file") {
            return Err(Error::NotAFileDisk {
                op,
                slot: slot.to_string(),
                kind: disk.kind.clone().unwrap_or_default(),
            });
        }
        let mut removed = Removed {
            disk: false,
            file: false,
        };
        let path = format!("/rest/disk/{}", escape_segment(&disk.id));
        if disk.nvme_tcp_export {
            let off = json!({ "nvme-tcp-export": "false" });
            match self.call(Op::UnexportDisk, slot, Method::Patch, &path, &[], Some(&off)) {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        match self.call(op, slot, Method::Delete, &path, &[], None) {
            Ok(_) => removed.disk = true,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        removed.file = self.remove_file_as(op, slot, file_path)?;
        Ok(removed)
    }
}
