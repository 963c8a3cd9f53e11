//! Online expansion: rescan the namespace, wait for the size the
//! controller grew it to, grow the filesystem.

use std::path::Path;
use std::time::{Duration, Instant};

use log::info;

use super::stats::At;
use super::{Error, NodeService};
use crate::host::device;
use crate::host::mount;
use crate::host::nvme;
use crate::volume::VolumeId;

/// How long a grown namespace may take to show its new size after a rescan.
const RESIZE_WAIT: Duration = Duration::from_secs(15);

impl NodeService {
    /// call finds nothing to grow and returns the same size.
    pub fn expand(&self, id: &VolumeId, path: &Path, required: u64) -> Result<u64, Error> {
        let (m, owner) = match self.volume_at(id, path)? {
            At::Mounted(found) => *found,
            At::Gone => {
                return Err(Error::MountGone {
                    path: path.to_path_buf(),
                })
            }
        };
        let Some((sub, ns)) = owner else {
            return Err(Error::NotAttached {
                path: path.to_path_buf(),
                dev: m.dev,
            });
        };
        if !sub.is_live() {
            return Err(Error::Nvme(nvme::Error::Reconnecting {
                nqn: sub.nqn.clone(),
                states: sub.states(),
            }));
        }
        for c in sub.controllers.iter().filter(|c| c.state == "live") {
            self.nvme.rescan(&c.name)?;
        }
        let started = Instant::now();
        let size = loop {
            let size = self.sysfs().size_bytes(&ns.name)?;
            if size >= required {
                break size;
            }
            if started.elapsed() >= RESIZE_WAIT {
                return Err(Error::SizeNotReached {
                    device: ns.name.clone(),
                    size,
                    required,
                });
            }
            std::thread::sleep(device::POLL_INTERVAL);
        };
        if !m.block {
            let dev = self.sysfs().device_node(&ns).map_err(|_| Error::NotAttached {
                path: path.to_path_buf(),
                dev: m.dev,
            })?;
            mount::grow_filesystem(&dev.path, &m.entry.mount_point, &m.entry.fstype)?;
        }
        info!("expanded {} ({}) to {size} bytes", sub.nqn, ns.name);
        Ok(size)
    }
}
