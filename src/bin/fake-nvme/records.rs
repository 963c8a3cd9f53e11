//! fake-nvme's records: the fabric lock, the injected faults, and one
//! attached controller as the fake remembers it.

use super::*;

/// Serialises mutations of one fabric (the driver connects several volumes at once).
pub(super) struct Lock {
    pub(super) _file: fs::File,
}

impl Lock {
    pub(super) fn take(f: &Fabric) -> Res<Lock> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(f.state.join("lock"))
            .map_err(|e| io_fail("lock", e))?;
        // SAFETY: flock on a descriptor we own; released when it is closed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(io_fail("flock", std::io::Error::last_os_error()));
        }
        Ok(Lock { _file: file })
    }
}

#[derive(Default)]
pub(super) struct Faults {
    pub(super) connect_fail: u64,
    pub(super) connect_fail_kind: String,
    pub(super) disconnect_fail: u64,
    pub(super) device_delay_ms: u64,
    pub(super) unreadable: bool,
}

impl Faults {
    pub(super) fn read(f: &Fabric) -> Faults {
        let v: Value = fs::read_to_string(f.state.join("faults.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        Faults {
            connect_fail: v["connect_fail"].as_u64().unwrap_or(0),
            connect_fail_kind: v["connect_fail_kind"].as_str().unwrap_or("transient").to_string(),
            disconnect_fail: v["disconnect_fail"].as_u64().unwrap_or(0),
            device_delay_ms: v["device_delay_ms"].as_u64().unwrap_or(0),
            unreadable: v["unreadable"].as_bool().unwrap_or(false),
        }
    }

    pub(super) fn to_json(&self) -> Value {
        json!({
            "connect_fail": self.connect_fail,
            "connect_fail_kind": self.connect_fail_kind,
            "disconnect_fail": self.disconnect_fail,
            "device_delay_ms": self.device_delay_ms,
            "unreadable": self.unreadable,
        })
    }

    pub(super) fn write(&self, f: &Fabric) -> Res<()> {
        write_atomic(&f.state.join("faults.json"), &format!("{}\n", self.to_json()))
    }
}

pub(super) fn write_atomic(path: &Path, text: &str) -> Res<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, text).map_err(|e| io_fail(&format!("write {}", tmp.display()), e))?;
    fs::rename(&tmp, path).map_err(|e| io_fail(&format!("rename {}", path.display()), e))
}

pub(super) fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// One attached controller, as the fake remembers it.
pub(super) struct Ctrl {
    pub(super) name: String,
    pub(super) instance: u32,
    pub(super) subsys: u32,
    pub(super) nqn: String,
    pub(super) address: String,
    pub(super) port: String,
    pub(super) loop_dev: String,
    pub(super) host_nqn: String,
}

impl Ctrl {
    pub(super) fn path(f: &Fabric, name: &str) -> PathBuf {
        f.state.join("ctrl").join(format!("{name}.json"))
    }

    pub(super) fn read(f: &Fabric, name: &str) -> Option<Ctrl> {
        let v: Value = serde_json::from_str(&fs::read_to_string(Ctrl::path(f, name)).ok()?).ok()?;
        let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
        Some(Ctrl {
            name: s("name"),
            instance: v["instance"].as_u64()? as u32,
            subsys: v["subsys"].as_u64()? as u32,
            nqn: s("nqn"),
            address: s("address"),
            port: s("port"),
            loop_dev: s("loop"),
            host_nqn: s("host_nqn"),
        })
    }

    pub(super) fn all(f: &Fabric) -> Vec<Ctrl> {
        let mut out: Vec<Ctrl> = fs::read_dir(f.state.join("ctrl"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        let name = e.file_name().into_string().ok()?;
                        Ctrl::read(f, name.strip_suffix(".json")?)
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by_key(|c| c.instance);
        out
    }

    pub(super) fn write(&self, f: &Fabric) -> Res<()> {
        let v = json!({
            "name": self.name, "instance": self.instance, "subsys": self.subsys, "nqn": self.nqn,
            "address": self.address, "port": self.port, "loop": self.loop_dev, "host_nqn": self.host_nqn,
        });
        write_atomic(&Ctrl::path(f, &self.name), &format!("{v}\n"))
    }

    pub(super) fn subsys_name(&self) -> String {
        format!("nvme-subsys{}", self.subsys)
    }

    /// The usable namespace device and, with multipath, the hidden path.
    pub(super) fn namespace(&self, multipath: bool) -> (String, Option<String>) {
        if multipath {
            (
                format!("nvme{}n1", self.subsys),
                Some(format!("nvme{}c{}n1", self.subsys, self.instance)),
            )
        } else {
            (format!("nvme{}n1", self.instance), None)
        }
    }
}
