//! What the controller needs from the RDS, as a trait: the REST client
//! implements it, and the controller's unit tests use an in-memory stand-in,
//! so the provisioning rules are tested without a network.

use crate::rds::{self, BtrfsFs, Disk, Error, File, NewDisk, Pool, Removed, Subvolume};

/// The RDS operations the controller's rules use. Each has the meaning of
/// the `rds::Client` method of the same name.
pub trait RdsApi: Send + Sync {
    /// The disk with this slot, `None` when there is none.
    fn disk(&self, slot: &str) -> Result<Option<Disk>, Error>;
    /// The pool's size and free space.
    fn pool(&self, slot_or_mount_point: &str) -> Result<Pool, Error>;
    /// Disks whose slot starts with `slot_prefix`.
    fn list_disks(&self, slot_prefix: &str) -> Result<Vec<Disk>, Error>;
    /// Creates the disk when `existing` is `None`, then sets its port and
    /// NQN and, with `export`, exports it; without `export` an existing
    /// disk's export is left as it is. The answer is the disk as it now is.
    fn create_disk_known(&self, new: &NewDisk, existing: Option<&Disk>, export: bool) -> Result<Disk, Error>;
    /// Turns the export of a disk just looked up on or off; the answer is
    /// the disk as RouterOS read it back.
    fn set_export_known(&self, disk: &Disk, on: bool) -> Result<Disk, Error>;
    /// Sets the host allow list of a disk just looked up; the answer is the
    /// disk as RouterOS now has it, for the caller to check.
    fn set_allowed_hosts_known(&self, disk: &Disk, value: &str) -> Result<Disk, Error>;
    /// Sets the comment of a disk just looked up; the answer is the disk.
    fn set_comment_known(&self, disk: &Disk, comment: &str) -> Result<Disk, Error>;
    /// Grows a disk just looked up to `new_size` bytes.
    fn grow_disk_known(&self, disk: &Disk, new_size: u64) -> Result<Disk, Error>;
    /// Unexports and removes the disk with this slot and its backing file.
    fn remove_disk(&self, slot: &str, file_path: &str) -> Result<Removed, Error>;
    /// `remove_disk` for a disk just looked up.
    fn remove_disk_known(&self, disk: &Disk) -> Result<Removed, Error>;
    /// Files whose name starts with `prefix`.
    fn list_files(&self, prefix: &str) -> Result<Vec<File>, Error>;
    /// Removes one file; `false` when it was already gone.
    fn remove_file(&self, name: &str) -> Result<bool, Error>;
    /// Makes a folder (and its parents) unless it exists.
    fn make_directory(&self, path: &str) -> Result<(), Error>;
    /// Btrfs subvolumes whose `/file` path starts with `path_prefix`.
    fn list_subvolumes(&self, fs: &BtrfsFs, path_prefix: &str) -> Result<Vec<Subvolume>, Error>;
    /// Makes an empty writable subvolume unless it exists.
    fn create_subvolume(&self, fs: &BtrfsFs, path: &str) -> Result<Subvolume, Error>;
    /// Snapshots the subvolume at `source` to `path` unless done already.
    fn snapshot_subvolume(
        &self,
        fs: &BtrfsFs,
        source: &str,
        path: &str,
        read_only: bool,
    ) -> Result<Subvolume, Error>;
    /// Removes a subvolume; `false` when it was already gone.
    fn remove_subvolume(&self, fs: &BtrfsFs, path: &str) -> Result<bool, Error>;
}

impl RdsApi for rds::Client {
    fn disk(&self, slot: &str) -> Result<Option<Disk>, Error> {
        rds::Client::disk(self, slot)
    }
    fn pool(&self, slot_or_mount_point: &str) -> Result<Pool, Error> {
        rds::Client::pool(self, slot_or_mount_point)
    }
    fn list_disks(&self, slot_prefix: &str) -> Result<Vec<Disk>, Error> {
        rds::Client::list_disks(self, slot_prefix)
    }
    fn create_disk_known(&self, new: &NewDisk, existing: Option<&Disk>, export: bool) -> Result<Disk, Error> {
        rds::Client::create_disk_known_as(self, new, existing, export)
    }
    fn set_export_known(&self, disk: &Disk, on: bool) -> Result<Disk, Error> {
        rds::Client::set_export_known(self, disk, on)
    }
    fn set_allowed_hosts_known(&self, disk: &Disk, value: &str) -> Result<Disk, Error> {
        rds::Client::set_allowed_hosts_known(self, disk, value)
    }
    fn set_comment_known(&self, disk: &Disk, comment: &str) -> Result<Disk, Error> {
        rds::Client::set_comment_known(self, disk, comment)
    }
    fn grow_disk_known(&self, disk: &Disk, new_size: u64) -> Result<Disk, Error> {
        rds::Client::grow_disk_known(self, disk, new_size)
    }
    fn remove_disk(&self, slot: &str, file_path: &str) -> Result<Removed, Error> {
        rds::Client::remove_disk(self, slot, file_path)
    }
    fn remove_disk_known(&self, disk: &Disk) -> Result<Removed, Error> {
        rds::Client::remove_disk_known(self, disk)
    }
    fn list_files(&self, prefix: &str) -> Result<Vec<File>, Error> {
        rds::Client::list_files(self, prefix)
    }
    fn remove_file(&self, name: &str) -> Result<bool, Error> {
        rds::Client::remove_file(self, name)
    }
    fn make_directory(&self, path: &str) -> Result<(), Error> {
        rds::Client::make_directory(self, path)
    }
    fn list_subvolumes(&self, fs: &BtrfsFs, path_prefix: &str) -> Result<Vec<Subvolume>, Error> {
        rds::Client::list_subvolumes(self, fs, path_prefix)
    }
    fn create_subvolume(&self, fs: &BtrfsFs, path: &str) -> Result<Subvolume, Error> {
        rds::Client::create_subvolume(self, fs, path)
    }
    fn snapshot_subvolume(
        &self,
        fs: &BtrfsFs,
        source: &str,
        path: &str,
        read_only: bool,
    ) -> Result<Subvolume, Error> {
        rds::Client::snapshot_subvolume(self, fs, source, path, read_only)
    }
    fn remove_subvolume(&self, fs: &BtrfsFs, path: &str) -> Result<bool, Error> {
        rds::Client::remove_subvolume(self, fs, path)
    }
}
