//! Online expansion: rescan the namespace, wait for the size the
//! controller grew it to, grow the filesystem.

use std::path::Path;
use std::time::Instant;

use log::info;

use super::stats::At;
use super::{Error, Host, NodeService};
use crate::host::nvme;
use crate::volume::VolumeId;

impl<H: Host> NodeService<H> {
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
            self.host.rescan(&c.name)?;
        }
        let (wait, poll) = self.host.resize_wait();
        let started = Instant::now();
        let size = loop {
            let size = self.host.size_bytes(&ns.name)?;
            if size >= required {
                break size;
            }
            if started.elapsed() >= wait {
                return Err(Error::SizeNotReached {
                    device: ns.name.clone(),
                    size,
                    required,
                });
            }
            std::thread::sleep(poll);
        };
        if !m.block {
            let dev = self.host.device_node(&ns).map_err(|_| Error::NotAttached {
                path: path.to_path_buf(),
                dev: m.dev,
            })?;
            self.host.grow(&dev.path, &m.entry.mount_point, &m.entry.fstype)?;
        }
        info!("expanded {} ({}) to {size} bytes", sub.nqn, ns.name);
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::fake::{self, dev, Disk, STAGING};
    use super::super::Error;

    #[test]
    fn expand_rescans_grows_and_waits_for_the_size() {
        let svc = fake::service();
        let (id, nqn, ctx) = fake::volume("pvc-1");
        svc.host.export(&nqn, "nvme1n1", dev(1), Disk::Blank);
        svc.stage(&id, Path::new(STAGING), &fake::filesystem(), false, &ctx)
            .unwrap();
        svc.host.state().log.clear();
        assert_eq!(svc.expand(&id, Path::new(STAGING), 1 << 30).unwrap(), 1 << 30);
        assert_eq!(svc.host.effects("rescan").len(), 1);
        assert_eq!(svc.host.effects("grow"), vec!["grow /dev/nvme1n1"]);
        // Asked for more than the namespace shows: not reached, not grown.
        let e = svc.expand(&id, Path::new(STAGING), 2 << 30).unwrap_err();
        assert!(matches!(e, Error::SizeNotReached { .. }), "{e:?}");
        assert_eq!(svc.host.effects("grow").len(), 1);
    }
}
