//! The emulated `/disk` menu: the pool entry, file disks (add, set,
//! remove) with RouterOS's field rules and version gates.

use super::*;

impl Store {
    pub(super) fn pool_record(&self) -> Map<String, Value> {
        let used = self.used();
        let free = self.cfg.pool_size.saturating_sub(used);
        let pct = used
            .saturating_mul(100)
            .checked_div(self.cfg.pool_size)
            .unwrap_or(0);
        let mut m = Map::new();
        for (k, v) in [
            (".id", ros_id(POOL_ID)),
            ("type", "raid".into()),
            ("slot", self.cfg.pool_slot.clone()),
            ("mount-point", self.cfg.pool_slot.clone()),
            ("fs", self.cfg.pool_fs.clone()),
            ("fs-label", self.cfg.pool_fs_label.clone()),
            ("raid-type", "raid10".into()),
            ("size", self.cfg.pool_size.to_string()),
            ("free", free.to_string()),
            ("use", format!("{pct}%")),
            ("state", "clean".into()),
            ("mounted", "true".into()),
            ("block-device", "true".into()),
            ("disabled", "false".into()),
            ("comment", String::new()),
        ] {
            m.insert(k.into(), Value::String(v));
        }
        m
    }

    pub(super) fn disk_record(&self, d: &DiskRec) -> Map<String, Value> {
        let size = self.file_size(&d.file_path).to_string();
        let mut m = Map::new();
        let mut put = |k: &str, v: String| {
            m.insert(k.into(), Value::String(v));
        };
        put(".id", ros_id(d.id));
        put("type", "file".into());
        put("slot", d.slot.clone());
        put("file-path", format!("/{}", d.file_path));
        put("file-size", size.clone());
        put("size", size);
        put("model", format!("/{}", d.file_path));
        put("mount-filesystem", bool_text(d.mount_filesystem).into());
        put("mounted", "false".into());
        put("block-device", "true".into());
        put("disabled", "false".into());
        put("comment", d.comment.clone());
        put("nvme-tcp-export", bool_text(d.export).into());
        put("nvme-tcp-server-port", d.port.to_string());
        if let Some(nqn) = &d.nqn {
            put("nvme-tcp-server-nqn", nqn.clone());
        }
        put(
            "nvme-tcp-server-allow-host-name",
            d.allow_host.clone().unwrap_or_default(),
        );
        for (name, kind, _) in EXTRA_FIELDS {
            let default = match kind {
                ExtraKind::Bool => "false",
                ExtraKind::Size => "0",
            };
            let value = d
                .extra
                .get(*name)
                .and_then(Value::as_str)
                .unwrap_or(default)
                .to_string();
            m.insert((*name).into(), Value::String(value));
        }
        m
    }

    pub fn list_disks(&self) -> Vec<Map<String, Value>> {
        let mut out = vec![self.pool_record()];
        out.extend(self.disks.iter().map(|d| self.disk_record(d)));
        out
    }

    pub fn get_disk(&self, id: &str) -> Result<Map<String, Value>, Error> {
        let id = parse_id(id).ok_or(Error::NoSuchItem)?;
        if id == POOL_ID {
            return Ok(self.pool_record());
        }
        let d = self.disks.iter().find(|d| d.id == id).ok_or(Error::NoSuchItem)?;
        Ok(self.disk_record(d))
    }

    pub(super) fn check_version_gates(&self, params: &Params) -> Result<(), Error> {
        let v = self.version();
        let gates: [(&str, (u32, u32)); 4] = [
            ("file-path", (7, 17)),
            ("file-size", (7, 17)),
            ("nvme-tcp-server-nqn", (7, 21)),
            ("nvme-tcp-server-password", PASSWORD_SINCE),
        ];
        let extra = EXTRA_FIELDS
            .iter()
            .filter_map(|(name, _, since)| since.map(|s| (*name, s)));
        for (name, since) in gates.into_iter().chain(extra) {
            if params.0.contains_key(name) && v < since {
                return Err(Error::UnknownParameter { name: name.into() });
            }
        }
        Ok(())
    }

    /// The extra fields of a request, checked; `compress` needs Btrfs.
    pub(super) fn extra_fields(&self, p: &Params) -> Result<Map<String, Value>, Error> {
        let mut out = Map::new();
        for (name, kind, _) in EXTRA_FIELDS {
            let value = match kind {
                ExtraKind::Bool => p.parsed(name, parse_bool)?.map(|b| bool_text(b).to_string()),
                ExtraKind::Size => p.parsed(name, parse_size)?.map(|n| n.to_string()),
            };
            if let Some(value) = value {
                if *name == "compress" && value == "true" && self.cfg.pool_fs != "btrfs" {
                    return Err(Error::InvalidValue {
                        argument: "compress".into(),
                    });
                }
                out.insert((*name).into(), Value::String(value));
            }
        }
        Ok(out)
    }

    /// Every field `PUT`/`PATCH /rest/disk` accepts besides `type`, `slot`
    /// and `file-path`.
    pub(super) fn settable_fields() -> Vec<&'static str> {
        let mut known = vec![
            "comment",
            "file-size",
            "mount-filesystem",
            "nvme-tcp-export",
            "nvme-tcp-server-port",
            "nvme-tcp-server-nqn",
            "nvme-tcp-server-allow-host-name",
            "nvme-tcp-server-password",
        ];
        known.extend(EXTRA_FIELDS.iter().map(|(name, _, _)| *name));
        known
    }

    pub(super) fn check_slot(&self, slot: &str) -> Result<(), Error> {
        if slot.is_empty()
            || slot.chars().count() > self.cfg.max_slot_len
            || slot.contains(['/', ' ', '\t', '\n'])
        {
            return Err(Error::InvalidValue {
                argument: "slot".into(),
            });
        }
        if slot == self.cfg.pool_slot || self.disks.iter().any(|d| d.slot == slot) {
            return Err(Error::SlotExists);
        }
        Ok(())
    }

    /// `PUT /rest/disk`: adds a file disk, creating its sparse backing file
    /// (and parent directories) unless the file exists, which is reused.
    pub fn add_disk(
        &mut self,
        body: &Map<String, Value>,
        no_space: bool,
    ) -> Result<Map<String, Value>, Error> {
        let p = Params(body);
        let mut known = vec!["type", "slot", "file-path"];
        known.extend(Self::settable_fields());
        p.check_known(&known)?;
        self.check_version_gates(&p)?;
        match p.text("type")? {
            Some("file") => {}
            Some(_) => {
                return Err(Error::InvalidValue {
                    argument: "type".into(),
                })
            }
            None => return Err(Error::MissingArgument { name: "type" }),
        }
        let slot = p
            .text("slot")?
            .ok_or(Error::MissingArgument { name: "slot" })?
            .to_string();
        self.check_slot(&slot)?;
        let file_path = p
            .text("file-path")?
            .ok_or(Error::MissingArgument { name: "file-path" })?;
        let file_path = clean_name(file_path)
            .filter(|n| n.starts_with(&format!("{}/", self.cfg.pool_slot)))
            .ok_or_else(|| Error::InvalidValue {
                argument: "file-path".into(),
            })?;
        let size = p.parsed("file-size", |t| parse_size(t).filter(|s| *s > 0))?;
        let mount_filesystem = p.parsed("mount-filesystem", parse_bool)?.unwrap_or(true);
        let export = p.parsed("nvme-tcp-export", parse_bool)?.unwrap_or(false);
        let port = p.parsed("nvme-tcp-server-port", parse_port)?.unwrap_or(4420);
        let nqn = p.text("nvme-tcp-server-nqn")?.map(str::to_string);
        let allow_host = p
            .text("nvme-tcp-server-allow-host-name")?
            .filter(|h| !h.is_empty())
            .map(str::to_string);
        let comment = p.text("comment")?.unwrap_or("").to_string();
        let extra = self.extra_fields(&p)?;
        let password = p
            .text("nvme-tcp-server-password")?
            .filter(|s| !s.is_empty())
            .map(str::to_string);

        if let Some(ro) = self.read_only_subvolume_of(&file_path) {
            return Err(Error::ReadOnlySubvolume {
                name: ro.name.clone(),
            });
        }
        if let Some(user) = self.disks.iter().find(|d| d.file_path == file_path) {
            return Err(Error::FileInUse {
                slot: user.slot.clone(),
            });
        }
        let existing = self.files.iter().find(|f| f.name == file_path).cloned();
        if existing.as_ref().is_some_and(|f| f.dir) {
            return Err(Error::InvalidValue {
                argument: "file-path".into(),
            });
        }
        let have = existing.as_ref().map(|f| self.file_size(&f.name)).unwrap_or(0);
        let size = match (size, &existing) {
            (Some(s), _) => s,
            (None, Some(_)) => have,
            (None, None) => return Err(Error::MissingArgument { name: "file-size" }),
        };
        let grow = size.saturating_sub(have);
        if no_space || self.used().saturating_add(grow) > self.cfg.pool_size {
            return Err(Error::NotEnoughSpace);
        }
        self.make_parents(&file_path)?;
        let real = self.real_path(&file_path);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&real)
            .map_err(storage("create", &real))?;
        if size > have {
            file.set_len(size).map_err(storage("resize", &real))?;
        }
        if existing.is_none() {
            let id = self.next_file;
            self.next_file += 1;
            self.files.push(FileRec {
                id,
                name: file_path.clone(),
                dir: false,
                modified: now_secs(),
            });
        }
        let id = self.next_disk;
        self.next_disk += 1;
        let disk = DiskRec {
            id,
            slot,
            file_path,
            mount_filesystem,
            comment,
            export,
            port,
            nqn,
            allow_host,
            extra,
            password,
        };
        log::info!("disk {} added: {} ({size} bytes)", disk.slot, disk.file_path);
        self.disks.push(disk.clone());
        self.save()?;
        Ok(self.disk_record(&disk))
    }

    /// Adds `/file` directory entries (and real directories) for every
    /// parent of `name` on the pool.
    pub(super) fn make_parents(&mut self, name: &str) -> Result<(), Error> {
        let parts: Vec<&str> = name.split('/').collect();
        for i in 1..parts.len() {
            let dir = parts[..i].join("/");
            if dir == self.cfg.pool_slot {
                continue;
            }
            if !self.files.iter().any(|f| f.name == dir) {
                let id = self.next_file;
                self.next_file += 1;
                self.files.push(FileRec {
                    id,
                    name: dir.clone(),
                    dir: true,
                    modified: now_secs(),
                });
            }
            let real = self.real_path(&dir);
            fs::create_dir_all(&real).map_err(storage("create", &real))?;
        }
        Ok(())
    }

    /// `PATCH /rest/disk/<id>`.
    pub fn set_disk(
        &mut self,
        id: &str,
        body: &Map<String, Value>,
        no_space: bool,
        file_size_mode: FileSizeMode,
    ) -> Result<Map<String, Value>, Error> {
        let index = self.disk_index(id, Error::NoSuchItem)?;
        let p = Params(body);
        p.check_known(&Self::settable_fields())?;
        self.check_version_gates(&p)?;
        let mut disk = self.disks[index].clone();
        disk.extra.extend(self.extra_fields(&p)?);
        if let Some(pw) = p.text("nvme-tcp-server-password")? {
            disk.password = Some(pw.to_string()).filter(|s| !s.is_empty());
        }
        if let Some(c) = p.text("comment")? {
            disk.comment = c.to_string();
        }
        if let Some(m) = p.parsed("mount-filesystem", parse_bool)? {
            disk.mount_filesystem = m;
        }
        if let Some(e) = p.parsed("nvme-tcp-export", parse_bool)? {
            disk.export = e;
        }
        if let Some(port) = p.parsed("nvme-tcp-server-port", parse_port)? {
            disk.port = port;
        }
        if let Some(nqn) = p.text("nvme-tcp-server-nqn")? {
            disk.nqn = Some(nqn.to_string()).filter(|n| !n.is_empty());
        }
        if let Some(h) = p.text("nvme-tcp-server-allow-host-name")? {
            disk.allow_host = Some(h.to_string()).filter(|h| !h.is_empty());
        }
        let mut new_size = p.parsed("file-size", |t| parse_size(t).filter(|s| *s > 0))?;
        // All checks before any change, so a refused PATCH changes nothing.
        let have = self.file_size(&disk.file_path);
        match file_size_mode {
            FileSizeMode::Apply => {}
            FileSizeMode::Refuse if new_size.is_some_and(|s| s != have) => return Err(Error::FileSizeFixed),
            FileSizeMode::Refuse => {}
            FileSizeMode::Ignore => {
                if new_size.is_some_and(|s| s != have) {
                    log::info!("disk {}: ignoring a file-size change (fault)", disk.slot);
                }
                new_size = None;
            }
        }
        if new_size.is_some_and(|s| s > have) {
            if let Some(ro) = self.read_only_subvolume_of(&disk.file_path) {
                return Err(Error::ReadOnlySubvolume {
                    name: ro.name.clone(),
                });
            }
        }
        if let Some(size) = new_size {
            if size < have {
                return Err(Error::ShrinkDisk);
            }
            if size > have && (no_space || self.used() + (size - have) > self.cfg.pool_size) {
                return Err(Error::NotEnoughSpace);
            }
        }
        if let Some(size) = new_size.filter(|s| *s > have) {
            let real = self.real_path(&disk.file_path);
            let file = fs::OpenOptions::new()
                .write(true)
                .open(&real)
                .map_err(storage("open", &real))?;
            file.set_len(size).map_err(storage("resize", &real))?;
            if let Some(f) = self.files.iter_mut().find(|f| f.name == disk.file_path) {
                f.modified = now_secs();
            }
            log::info!("disk {} grown to {size} bytes", disk.slot);
        }
        if disk.export != self.disks[index].export {
            log::info!(
                "disk {} export {}",
                disk.slot,
                if disk.export { "on" } else { "off" }
            );
        }
        self.disks[index] = disk.clone();
        self.save()?;
        Ok(self.disk_record(&disk))
    }

    /// Where the disk with the REST id `id` (`*N`) is in the list; `missing`
    /// when there is none (RouterOS words it differently per verb), and
    /// the pool itself is never a disk to change or remove.
    fn disk_index(&self, id: &str, missing: Error) -> Result<usize, Error> {
        let Some(id) = parse_id(id) else {
            return Err(missing);
        };
        if id == POOL_ID {
            return Err(Error::Protected {
                what: "the storage pool".into(),
            });
        }
        self.disks.iter().position(|d| d.id == id).ok_or(missing)
    }

    /// `DELETE /rest/disk/<id>`: the backing file stays, as on RouterOS.
    pub fn remove_disk(&mut self, id: &str) -> Result<(), Error> {
        let index = self.disk_index(id, Error::NotFound)?;
        let disk = self.disks.remove(index);
        log::info!("disk {} removed (file {} kept)", disk.slot, disk.file_path);
        self.save()
    }
}
