//! The emulated `/file` menu: files and folders on the pool, the pool's
//! mount root listed as `type=disk`, and removal refused while a disk uses
//! a file.

use super::*;

impl Store {
    pub(super) fn file_record(&self, f: &FileRec) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(".id".into(), ros_id(f.id).into());
        m.insert("name".into(), f.name.clone().into());
        let kind = if f.dir {
            "directory".to_string()
        } else {
            match f.name.rsplit('/').next().and_then(|b| b.rsplit_once('.')) {
                Some((_, ext)) if !ext.is_empty() => format!(".{ext} file"),
                _ => "file".to_string(),
            }
        };
        m.insert("type".into(), kind.into());
        if !f.dir {
            m.insert("size".into(), self.file_size(&f.name).to_string().into());
        }
        m.insert("last-modified".into(), format_time(f.modified).into());
        m
    }

    /// The pool's mount point, as RouterOS lists a mounted disk's root in
    /// `/file`: `type=disk`, not `directory`.
    pub(super) fn pool_dir_record(&self) -> Map<String, Value> {
        let mut m = self.file_record(&FileRec {
            id: POOL_ID,
            name: self.cfg.pool_slot.clone(),
            dir: true,
            modified: self.started_at,
        });
        m.insert("type".into(), "disk".into());
        m
    }

    pub fn list_files(&self) -> Vec<Map<String, Value>> {
        let mut out = vec![self.pool_dir_record()];
        out.extend(self.files.iter().map(|f| self.file_record(f)));
        out
    }

    pub fn get_file(&self, id: &str) -> Result<Map<String, Value>, Error> {
        let id = parse_id(id).ok_or(Error::NoSuchItem)?;
        if id == POOL_ID {
            return Ok(self.pool_dir_record());
        }
        let f = self.files.iter().find(|f| f.id == id).ok_or(Error::NoSuchItem)?;
        Ok(self.file_record(f))
    }

    /// `PUT /rest/file`: a directory (`type=directory`) or a small file with
    /// `contents`, on the pool.
    pub fn add_file(&mut self, body: &Map<String, Value>) -> Result<Map<String, Value>, Error> {
        let p = Params(body);
        p.check_known(&["name", "type", "contents"])?;
        let name = p.text("name")?.ok_or(Error::MissingArgument { name: "name" })?;
        let name = clean_name(name)
            .filter(|n| n.starts_with(&format!("{}/", self.cfg.pool_slot)))
            .ok_or_else(|| Error::InvalidValue {
                argument: "name".into(),
            })?;
        let dir = match p.text("type")? {
            Some("directory") => true,
            None | Some("file") => false,
            Some(_) => {
                return Err(Error::InvalidValue {
                    argument: "type".into(),
                })
            }
        };
        if self.files.iter().any(|f| f.name == name) {
            return Err(Error::FileExists);
        }
        if let Some(ro) = self.read_only_subvolume_of(&name) {
            return Err(Error::ReadOnlySubvolume {
                name: ro.name.clone(),
            });
        }
        let contents = p.text("contents")?.unwrap_or("").to_string();
        if !dir && self.used() + contents.len() as u64 > self.cfg.pool_size {
            return Err(Error::NotEnoughSpace);
        }
        self.make_parents(&name)?;
        let real = self.real_path(&name);
        if dir {
            fs::create_dir_all(&real).map_err(storage("create", &real))?;
        } else {
            fs::write(&real, contents.as_bytes()).map_err(storage("write", &real))?;
        }
        let rec = FileRec {
            id: self.next_file,
            name,
            dir,
            modified: now_secs(),
        };
        self.next_file += 1;
        log::info!("file {} added", rec.name);
        self.files.push(rec.clone());
        self.save()?;
        Ok(self.file_record(&rec))
    }

    /// `DELETE /rest/file/<id>`: refused for a disk's backing file and for a
    /// directory with entries in it.
    pub fn remove_file(&mut self, id: &str) -> Result<(), Error> {
        let id = parse_id(id).ok_or(Error::NotFound)?;
        if id == POOL_ID {
            return Err(Error::Protected {
                what: "the pool's mount point".into(),
            });
        }
        let index = self
            .files
            .iter()
            .position(|f| f.id == id)
            .ok_or(Error::NotFound)?;
        let file = self.files[index].clone();
        if let Some(d) = self.disks.iter().find(|d| d.file_path == file.name) {
            return Err(Error::FileInUse { slot: d.slot.clone() });
        }
        if self.is_subvolume_dir(&file.name) {
            return Err(Error::IsSubvolume);
        }
        if let Some(ro) = self.read_only_subvolume_of(&file.name) {
            return Err(Error::ReadOnlySubvolume {
                name: ro.name.clone(),
            });
        }
        let real = self.real_path(&file.name);
        if file.dir {
            let prefix = format!("{}/", file.name);
            if self.files.iter().any(|f| f.name.starts_with(&prefix)) {
                return Err(Error::DirectoryNotEmpty);
            }
            match fs::remove_dir(&real) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(storage("remove", &real)(e)),
            }
        } else {
            match fs::remove_file(&real) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(storage("remove", &real)(e)),
            }
        }
        self.files.remove(index);
        log::info!("file {} removed", file.name);
        self.save()
    }
}
