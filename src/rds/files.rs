//! The `/file` menu: listing and removing backing files (confined to the
//! base path), and making the volume folders.

use serde_json::json;

use super::transport::{escape_segment, Method};
use super::types::{as_records, strip_leading_slash, File};
use super::{Client, Error, Kind, Op};

impl Client {
    /// Files and directories whose name (without a leading `/`) starts with
    /// `prefix`; give `dir/` for everything under a directory. Read-only.
    pub fn list_files(&self, prefix: &str) -> Result<Vec<File>, Error> {
        let op = Op::ListFiles;
        let prefix = strip_leading_slash(prefix);
        let answer = self.call(op, &prefix, Method::Get, "/rest/file", &[], None)?;
        let mut files = Vec::new();
        for rec in as_records(&answer).map_err(Self::decode_err(op, &prefix))? {
            let file = File::from_record(rec).map_err(Self::decode_err(op, &prefix))?;
            if file.name.starts_with(&prefix) {
                files.push(file);
            }
        }
        Ok(files)
    }

    /// Removes one file or empty directory by its full name. Returns whether
    /// it existed; a second call returns `false`. RouterOS refuses to remove
    /// the backing file of an existing disk (`Kind::Rejected`); this client
    /// refuses anything not under its base path (`Kind::Rejected`).
    pub fn remove_file(&self, name: &str) -> Result<bool, Error> {
        let name = strip_leading_slash(name);
        self.check_confined(Op::RemoveFile, &name, &name)?;
        self.remove_file_as(Op::RemoveFile, &name, &name)
    }

    pub(super) fn remove_file_as(&self, op: Op, target: &str, name: &str) -> Result<bool, Error> {
        let answer = self.call(op, target, Method::Get, "/rest/file", &[("name", name)], None)?;
        let mut removed = false;
        for rec in as_records(&answer).map_err(Self::decode_err(op, target))? {
            let file = File::from_record(rec).map_err(Self::decode_err(op, target))?;
            if file.name != name {
                continue;
            }
            let path = format!("/rest/file/{}", escape_segment(&file.id));
            match self.call(op, target, Method::Delete, &path, &[], None) {
                Ok(_) => removed = true,
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// Makes a directory on the RDS (`PUT /rest/file type=directory`,
    /// RouterOS 7.9+). An existing directory, or a mounted disk's root (the
    /// pool's mount point lists as `type=disk`), is fine, so a second call
    /// is a no-op. A plain file of that name is `Error::NotAFolder`.
    pub fn make_directory(&self, path: &str) -> Result<(), Error> {
        let op = Op::MakeDirectory;
        let path = strip_leading_slash(path);
        let existing = self.folder_kind(op, &path)?;
        match existing {
            Some(kind) if kind.is_empty() => return Ok(()),
            Some(kind) => return Err(Error::NotAFolder { op, path, kind }),
            None => {}
        }
        let body = json!({ "name": path, "type": "directory" });
        match self.call(op, &path, Method::Put, "/rest/file", &[], Some(&body)) {
            Ok(_) => Ok(()),
            // Made meanwhile by someone else, or something else is there.
            Err(e) if e.kind() == Kind::AlreadyExists => match self.folder_kind(op, &path)? {
                Some(kind) if kind.is_empty() => Ok(()),
                Some(kind) => Err(Error::NotAFolder { op, path, kind }),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// What `/file` holds at `path`: `None` for nothing, `Some("")` for a
    /// folder, `Some(type)` for anything else.
    pub(super) fn folder_kind(&self, op: Op, path: &str) -> Result<Option<String>, Error> {
        let answer = self.call(op, path, Method::Get, "/rest/file", &[("name", path)], None)?;
        let mut found = None;
        for rec in as_records(&answer).map_err(Self::decode_err(op, path))? {
            let Ok(f) = File::from_record(rec) else { continue };
            if f.name != path {
                continue;
            }
            if f.is_folder() {
                return Ok(Some(String::new()));
            }
            found = Some(if f.kind.is_empty() {
                "file".to_string()
            } else {
                f.kind
            });
        }
        Ok(found)
    }
}
