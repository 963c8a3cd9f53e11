//! The RouterOS REST client for the RDS: disks, files, Btrfs subvolumes, the pool and the system resource, each operation idempotent and documented for a second call.
//!
//! `Client` is cheap to clone and safe to share between threads; clones share
//! one connection pool, one in-flight cap and one credentials cache.
//!
//! Layout: `config` (what the client is told), `tls` (trust), `transport`
//! (one REST call with auth, cap, deadline and retries), `types` (typed
//! records), `subvolume` (Btrfs subvolumes and snapshots), `error` (the one
//! error type).

mod config;
mod disks;
mod error;
mod files;
mod subvolume;
mod tls;
mod transport;
mod types;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

pub use config::{format_fingerprint, parse_fingerprint, Address, ClientConfig, Scheme, Trust};
pub use error::REQUIRED_POLICIES;
pub use error::{Error, Kind, Op};
pub use tls::certificate_fingerprint;
pub use types::{BtrfsFs, Disk, File, Pool, Subvolume, SystemResource, Version};

use transport::{escape_segment, Method, Transport};
use types::{as_record, as_records, strip_leading_slash, DecodeError};

/// `file-path`/`file-size` on `/disk` (file-backed disks).
const FILE_DISKS: (&str, Version) = ("file-backed disks (file-path, file-size)", Version::new(7, 17, 0));
/// `nvme-tcp-server-nqn` on `/disk`.
const EXPORT_NQN: (&str, Version) = ("nvme-tcp-server-nqn", Version::new(7, 21, 0));

/// How long a read version is trusted: an upgrade reboots the RDS, so a
/// stale answer is short-lived and a failed request would show it anyway.
const VERSION_TTL: Duration = Duration::from_secs(300);

/// What `create_disk` makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDisk {
    /// The disk's name on the RDS (at most 32 characters on RouterOS 7.24).
    pub slot: String,
    /// Backing file on the pool, e.g. `storage-pool/csi/pvc-x.img` (a
    /// leading `/` is ignored).
    pub file_path: String,
    /// Exact size in bytes, sent as a plain byte count.
    pub size_bytes: u64,
    /// Free text, e.g. the CSI volume name.
    pub comment: String,
    /// NVMe/TCP subsystem NQN; `None` leaves RouterOS's default (the slot),
    /// which also works on RouterOS older than 7.21.
    pub nqn: Option<String>,
    /// NVMe/TCP port, usually 4420.
    pub port: u16,
}

/// What `remove_disk` found to remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// The disk entry existed and was removed.
    pub disk: bool,
    /// The backing file existed and was removed.
    pub file: bool,
}

/// A RouterOS REST client for one RDS.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// The folder every file this client may delete lies under
    /// (`--volume-base-path`); `None` until `with_base_path`, and then
    /// nothing is deleted at all.
    base_path: Option<Arc<str>>,
}

#[derive(Debug)]
struct Inner {
    transport: Transport,
    version: Mutex<Option<(Instant, Option<Version>, String)>>,
}

impl Client {
    /// Builds the client: parses the address, sets up TLS trust and reads the
    /// credentials files. No request is sent yet.
    pub fn new(config: ClientConfig) -> Result<Client, Error> {
        let transport = Transport::new(&config)?;
        Ok(Client {
            inner: Arc::new(Inner {
                transport,
                version: Mutex::new(None),
            }),
            base_path: None,
        })
    }

    /// Confines every deletion (`remove_disk`, `remove_disk_known`,
    /// `remove_file`) to files strictly under `base_path`: a second line of
    /// defence behind the controller's ownership check, so no caller, id or
    /// disk record can make this client delete a file elsewhere. A client
    /// without a base path deletes nothing.
    pub fn with_base_path(mut self, base_path: &str) -> Client {
        self.base_path = Some(Arc::from(strip_leading_slash(base_path).trim_end_matches('/')));
        self
    }

    /// Refuses (`Error::FilePathMismatch`, `Kind::Rejected`) a file outside
    /// the base path, before any request is sent.
    fn check_confined(&self, op: Op, target: &str, file_path: &str) -> Result<(), Error> {
        let inside = self
            .base_path
            .as_deref()
            .is_some_and(|base| crate::volume::file_under_base(base, file_path));
        if inside {
            return Ok(());
        }
        Err(Error::FilePathMismatch {
            op,
            slot: target.to_string(),
            expected: match self.base_path.as_deref() {
                Some(base) => format!("a file under {base}/"),
                None => "a file under a configured base path (none is configured)".to_string(),
            },
            found: file_path.to_string(),
        })
    }

    /// The RDS address this client talks to, e.g. `https://10.0.0.5:443`.
    pub fn address(&self) -> &Address {
        self.inner.transport.address()
    }

    fn call(
        &self,
        op: Op,
        target: &str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        self.inner.transport.call(op, target, method, path, query, body)
    }

    fn decode_err(op: Op, target: &str) -> impl Fn(DecodeError) -> Error + '_ {
        move |e| Error::Decode {
            op,
            target: target.to_string(),
            what: e.0,
        }
    }

    /// `GET /rest/system/resource`: version, board, uptime, load. A cheap
    /// health probe; also refreshes the cached version. Read-only.
    pub fn system_resource(&self) -> Result<SystemResource, Error> {
        self.read_system_resource(Op::ReadSystemResource, "")
    }

    /// `system_resource` on behalf of `op` on `target`, so a failure names
    /// the operation the caller asked for.
    fn read_system_resource(&self, op: Op, target: &str) -> Result<SystemResource, Error> {
        let answer = self.call(op, target, Method::Get, "/rest/system/resource", &[], None)?;
        // Some RouterOS versions answer a singleton menu with a one-item list.
        let value = match &answer {
            Value::Array(items) if items.len() == 1 => &items[0],
            other => other,
        };
        let rec = as_record(value).map_err(Self::decode_err(op, target))?;
        let res = SystemResource::from_record(rec).map_err(Self::decode_err(op, target))?;
        if res.version.is_none() {
            log::warn!(
                "cannot parse the routeros version {:?}; version checks are skipped",
                res.version_text
            );
        }
        if let Ok(mut cached) = self.inner.version.lock() {
            *cached = Some((Instant::now(), res.version, res.version_text.clone()));
        }
        Ok(res)
    }

    /// The RouterOS version, read at most every few minutes. `None` when the
    /// RDS reports a version this client cannot parse.
    pub fn version(&self) -> Result<Option<Version>, Error> {
        Ok(self.version_text(Op::ReadSystemResource, "")?.0)
    }

    fn version_text(&self, op: Op, target: &str) -> Result<(Option<Version>, String), Error> {
        if let Ok(cached) = self.inner.version.lock() {
            if let Some((at, version, text)) = cached.as_ref() {
                if at.elapsed() < VERSION_TTL {
                    return Ok((*version, text.clone()));
                }
            }
        }
        let res = self.read_system_resource(op, target)?;
        Ok((res.version, res.version_text))
    }

    /// Fails with `Error::TooOld` when the RDS is older than `feature` needs.
    fn require(&self, op: Op, target: &str, feature: (&'static str, Version)) -> Result<(), Error> {
        let (version, text) = self.version_text(op, target)?;
        match version {
            Some(v) if !v.at_least(feature.1) => Err(Error::TooOld {
                op,
                target: target.to_string(),
                feature: feature.0,
                needs: feature.1,
                version: text,
            }),
            // Unparseable versions go ahead: RouterOS's own `unknown
            // parameter` answer then maps to `Kind::TooOld`.
            _ => Ok(()),
        }
    }

    /// The storage pool's capacity and filesystem (`fs`, `fs-label`): the
    /// `/disk` entry whose slot, or else whose mount point, is
    /// `slot_or_mount_point`. One request. Read-only.
    pub fn pool(&self, slot_or_mount_point: &str) -> Result<Pool, Error> {
        let op = Op::ReadPool;
        let name = strip_leading_slash(slot_or_mount_point);
        let answer = self.call(op, &name, Method::Get, "/rest/disk", &[], None)?;
        let records = as_records(&answer).map_err(Self::decode_err(op, &name))?;
        let field = |rec: &serde_json::Map<String, Value>, key: &str| {
            rec.get(key).and_then(Value::as_str).map(strip_leading_slash)
        };
        let rec = records
            .iter()
            .find(|r| field(r, "slot").as_deref() == Some(&name))
            .or_else(|| {
                records
                    .iter()
                    .find(|r| field(r, "mount-point").as_deref() == Some(&name))
            })
            .ok_or_else(|| Error::NoDisk {
                op,
                slot: name.clone(),
            })?;
        Pool::from_record(rec).map_err(Self::decode_err(op, &name))
    }

    /// The disk with this slot, or `None`. Read-only.
    pub fn disk(&self, slot: &str) -> Result<Option<Disk>, Error> {
        self.find_disk(Op::ReadDisk, slot)
    }

    fn find_disk(&self, op: Op, slot: &str) -> Result<Option<Disk>, Error> {
        let answer = self.call(op, slot, Method::Get, "/rest/disk", &[("slot", slot)], None)?;
        let mut found = Vec::new();
        for rec in as_records(&answer).map_err(Self::decode_err(op, slot))? {
            let disk = Disk::from_record(rec).map_err(Self::decode_err(op, slot))?;
            // The filter is RouterOS's; checking again costs nothing.
            if disk.slot == slot {
                found.push(disk);
            }
        }
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            n => Err(Error::Decode {
                op,
                target: slot.to_string(),
                what: format!("{n} disks have this slot"),
            }),
        }
    }

    fn all_disks(&self, op: Op, target: &str) -> Result<Vec<Disk>, Error> {
        let answer = self.call(op, target, Method::Get, "/rest/disk", &[], None)?;
        as_records(&answer)
            .map_err(Self::decode_err(op, target))?
            .into_iter()
            .map(|rec| Disk::from_record(rec).map_err(Self::decode_err(op, target)))
            .collect()
    }

    /// Every disk whose slot starts with `slot_prefix` (all disks for an
    /// empty prefix), in RouterOS's order. Read-only.
    pub fn list_disks(&self, slot_prefix: &str) -> Result<Vec<Disk>, Error> {
        let mut disks = self.all_disks(Op::ListDisks, slot_prefix)?;
        disks.retain(|d| d.slot.starts_with(slot_prefix));
        Ok(disks)
    }

    fn get_disk_by_id(&self, op: Op, slot: &str, id: &str) -> Result<Disk, Error> {
        let path = format!("/rest/disk/{}", escape_segment(id));
        let answer = self.call(op, slot, Method::Get, &path, &[], None)?;
        let rec = as_record(&answer).map_err(Self::decode_err(op, slot))?;
        Disk::from_record(rec).map_err(Self::decode_err(op, slot))
    }

    /// `PATCH /rest/disk/<id>`, returning the disk as RouterOS answers it
    /// (or re-read, if the answer is not a disk record).
    fn patch_disk(&self, op: Op, slot: &str, id: &str, changes: &Value) -> Result<Disk, Error> {
        let path = format!("/rest/disk/{}", escape_segment(id));
        let answer = self.call(op, slot, Method::Patch, &path, &[], Some(changes))?;
        match as_record(&answer).and_then(Disk::from_record) {
            Ok(disk) => Ok(disk),
            Err(_) => self.get_disk_by_id(op, slot, id),
        }
    }

    /// Creates a file-backed disk and exports it over NVMe/TCP: looks the
    /// slot up, then does what `create_disk_known` does.
    pub fn create_disk(&self, new: &NewDisk) -> Result<Disk, Error> {
        self.require_for_create(new)?;
        let existing = self.find_disk(Op::CreateDisk, &new.slot)?;
        self.create_disk_known(new, existing.as_ref())
    }

    fn require_for_create(&self, new: &NewDisk) -> Result<(), Error> {
        self.require(Op::CreateDisk, &new.slot, FILE_DISKS)?;
        if new.nqn.is_some() {
            self.require(Op::CreateDisk, &new.slot, EXPORT_NQN)?;
        }
        Ok(())
    }

    /// Creates a file-backed disk and exports it over NVMe/TCP, given what
    /// the caller's own lookup of the slot just found (`existing`), so the
    /// slot is not looked up again: `PUT /rest/disk` (type=file, exact
    /// `file-size` in bytes, `mount-filesystem=false`, comment) when there
    /// is no disk, then `PATCH` the export (on, port, NQN); RouterOS answers
    /// the PATCH with the disk as it now is, and that answer is the
    /// read-back checked for export, port, NQN and size. A disk already
    /// exported as asked costs no request at all. At most two requests.
    ///
    /// Called twice with the same `NewDisk` it returns the same disk. A create
    /// that failed half-way leaves a disk with the same slot and file path
    /// whose export is off; calling again finishes it (so does a retried PUT
    /// that RouterOS had already applied). A disk with the same slot but
    /// another file path, a smaller size, or a different export is someone
    /// else's: `Error::Exists` (`Kind::AlreadyExists`).
    pub fn create_disk_known(&self, new: &NewDisk, existing: Option<&Disk>) -> Result<Disk, Error> {
        self.create_disk_known_as(new, existing, true)
    }

    /// `create_disk_known` with the export's state chosen: `export` false
    /// (export on publish) makes the disk with its port and NQN set but its
    /// export off, so no host can reach it until `set_export_known` turns it
    /// on. An existing disk's export is then left as it is: it may be
    /// published. At most two requests; none for a disk already as asked.
    pub fn create_disk_known_as(
        &self,
        new: &NewDisk,
        existing: Option<&Disk>,
        export: bool,
    ) -> Result<Disk, Error> {
        let op = Op::CreateDisk;
        let slot = new.slot.as_str();
        self.require_for_create(new)?;
        let file_path = strip_leading_slash(&new.file_path);
        let disk = match existing {
            Some(existing) => {
                if existing.slot != slot {
                    return Err(Error::Exists {
                        op,
                        slot: slot.to_string(),
                        field: "slot",
                        expected: slot.to_string(),
                        found: existing.slot.clone(),
                    });
                }
                self.check_same_disk(op, new, &file_path, existing)?;
                log::debug!("create disk {slot}: exists already, finishing it");
                existing.clone()
            }
            None => {
                let body = json!({
                    "type": "file",
                    "slot": slot,
                    "file-path": file_path,
                    "file-size": new.size_bytes.to_string(),
                    "mount-filesystem": "false",
                    "comment": new.comment,
                });
                match self.call(op, slot, Method::Put, "/rest/disk", &[], Some(&body)) {
                    Ok(answer) => match as_record(&answer).and_then(Disk::from_record) {
                        Ok(disk) => disk,
                        Err(_) => self.find_disk(op, slot)?.ok_or_else(|| Error::Decode {
                            op,
                            target: slot.to_string(),
                            what: "the created disk is not listed".to_string(),
                        })?,
                    },
                    // A concurrent create, or our own PUT that RouterOS applied
                    // before the answer was lost: look at what is there.
                    Err(e) if e.kind() == Kind::AlreadyExists => {
                        let existing = self.find_disk(op, slot)?.ok_or(e)?;
                        self.check_same_disk(op, new, &file_path, &existing)?;
                        existing
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let configured = disk.effective_port() == new.port
            && new.nqn.as_deref().is_none_or(|nqn| disk.effective_nqn() == nqn);
        // Without `export` an exported disk is left exported (it is
        // published); one whose export is off only needs its port and NQN.
        let done = configured && (disk.nvme_tcp_export || !export);
        let disk = if done {
            disk
        } else {
            let mut changes = Map::new();
            if export {
                changes.insert("nvme-tcp-export".into(), "true".into());
            }
            changes.insert("nvme-tcp-server-port".into(), new.port.to_string().into());
            if let Some(nqn) = &new.nqn {
                changes.insert("nvme-tcp-server-nqn".into(), nqn.clone().into());
            }
            // The PATCH answer is the disk as RouterOS now has it (re-read
            // when the answer is not a disk record): the read-back.
            self.patch_disk(Op::ExportDisk, slot, &disk.id, &Value::Object(changes))?
        };
        self.verify_created(op, new, &file_path, &disk, export)?;
        Ok(disk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_is_shareable() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Client>();
        fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}
        assert_error::<Error>();
    }
}
