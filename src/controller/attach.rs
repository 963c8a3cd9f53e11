//! The attachment fence: which nodes a volume is published to, recorded on
//! the RDS disk itself, so a single-node volume is refused to a second node
//! even by a controller restarted in between.

use std::collections::HashMap;

use log::{info, warn};

use crate::echo::echo;
use crate::fence::{self, HostIdentity};
use crate::rds;
use crate::volume::{self, Nqn, VolumeId};

use super::access::{check_access, Capability};
use super::error::Error;
use super::{Controller, ControllerSettings, Lookup, RdsApi};

impl<R: RdsApi> Controller<R> {
    /// Publishes one of our volumes to `node` and returns what the node
    /// needs to attach it. A single-node volume published elsewhere is
    /// refused; publishing again to the same node changes nothing.
    pub fn publish(
        &self,
        volume_id: &str,
        node: &str,
        cap: &Capability,
        volume_context: &HashMap<String, String>,
    ) -> Result<HashMap<String, String>, Error> {
        let access = check_access(std::slice::from_ref(cap), self.settings.allow_multi_node_block).map_err(
            |reason| Error::Invalid {
                context: format!("ControllerPublishVolume {}", echo(volume_id)),
                reason,
            },
        )?;
        // With host ACLs the node id is the source of the node's host NQN:
        // one that cannot form it is a bad argument, named with its rule.
        let host = if self.settings.host_acl {
            Some(HostIdentity::for_node(node).map_err(|rule| Error::HostNqnRule {
                node: node.to_string(),
                rule,
            })?)
        } else {
            None
        };
        crate::volume::check_node_id(node).map_err(|rule| Error::UnknownNode {
            node: node.to_string(),
            rule,
        })?;
        let _guard = self.lock("ControllerPublishVolume", &[volume_id])?;
        let (id, disk, mut own) = self.find_ours("ControllerPublishVolume", volume_id)?;
        if !own.nodes.iter().any(|n| n == node) {
            if !access.multi_node {
                if let Some(other) = own.nodes.first() {
                    return Err(Error::PublishedElsewhere {
                        id,
                        other: other.clone(),
                        node: node.to_string(),
                    });
                }
            }
            own.nodes.push(node.to_string());
            // Recorded first, exported second: a crash in between leaves a
            // record the retry (or the last unpublish) finishes, never an
            // export no record accounts for.
            self.write_record("ControllerPublishVolume", &id, &disk, &own)?;
            info!("ControllerPublishVolume {id}: published to node {}", echo(node));
        }
        // Then the allow list (every recorded node's host, never empty
        // here), then the export: the export is never on with an empty list.
        let disk = if self.settings.host_acl {
            self.set_allowed("ControllerPublishVolume", &id, &disk, &own.nodes)?
        } else {
            disk
        };
        if self.settings.export_on_publish {
            self.set_export("ControllerPublishVolume", &id, &disk, true)?;
        }
        let mut ctx = publish_context(&self.settings, &id, &disk, volume_context);
        if let Some(host) = host {
            ctx.insert(fence::KEY_HOST_NQN.to_string(), host.nqn);
            ctx.insert(fence::KEY_HOST_ID.to_string(), host.id);
        }
        Ok(ctx)
    }

    /// Unpublishes a volume from `node` (`None`: from every node). A volume
    /// that is gone is unpublished everywhere; a repeat changes nothing.
    pub fn unpublish(&self, volume_id: &str, node: Option<&str>) -> Result<(), Error> {
        let _guard = self.lock("ControllerUnpublishVolume", &[volume_id])?;
        let (id, disk, mut own) = match self.lookup("ControllerUnpublishVolume", volume_id)? {
            Lookup::Ours(id, disk, own) => (id, *disk, own),
            // A volume that is gone is unpublished everywhere (CSI spec).
            Lookup::Missing => return Ok(()),
            Lookup::Foreign(disk) => {
                warn!(
                    "ControllerUnpublishVolume: disk {} is not a volume of this driver; not touching it",
                    echo(&disk.slot)
                );
                return Err(Error::NoSuchVolume {
                    op: "ControllerUnpublishVolume",
                    volume_id: volume_id.to_string(),
                });
            }
        };
        let before = own.nodes.len();
        own.nodes.retain(|n| node.is_some_and(|node| n != node));
        // The last node gone: off the network before the record says the
        // volume is free. A retry after a crash between the two, and a Go
        // driver volume (always exported) at its next unpublish, find no
        // node and an export, and turn it off here.
        let disk = if self.settings.export_on_publish && own.nodes.is_empty() {
            self.set_export("ControllerUnpublishVolume", &id, &disk, false)?
        } else {
            disk
        };
        // Then the node's host leaves the allow list (empty only with the
        // export off, just above), then the record lets go of the node.
        let disk = if self.settings.host_acl {
            self.set_allowed("ControllerUnpublishVolume", &id, &disk, &own.nodes)?
        } else {
            disk
        };
        // Leaving the allow list only stops the node's next connect: a
        // controller it holds now stays up (the kernel target, which the
        // RDS runs, drops controllers when a subsystem leaves its port,
        // not when a host leaves its allow list). When other nodes keep
        // the volume, the export goes off and on again, so every
        // connection is cut and only the allowed hosts come back; theirs
        // reconnect within their reconnectDelay (I/O waits, nothing
        // fails). Done until the record lets go of the node, so a retry
        // after a crash in between cuts again.
        let disk = if self.settings.host_acl && own.nodes.len() != before && !own.nodes.is_empty() {
            self.cut_connections("ControllerUnpublishVolume", &id, &disk)?
        } else {
            disk
        };
        if own.nodes.len() != before {
            self.write_record("ControllerUnpublishVolume", &id, &disk, &own)?;
            info!(
                "ControllerUnpublishVolume {id}: unpublished from {}",
                echo(node.unwrap_or_default())
            );
        }
        Ok(())
    }
}

impl<R: RdsApi> Controller<R> {
    /// Turns the export of `disk` (just looked up) on or off and checks
    /// RouterOS read it back so; no request when it already is.
    fn set_export(
        &self,
        op: &'static str,
        id: &VolumeId,
        disk: &rds::Disk,
        on: bool,
    ) -> Result<rds::Disk, Error> {
        if disk.nvme_tcp_export == on {
            return Ok(disk.clone());
        }
        let what = if on { "export" } else { "unexport" };
        let written = self.rds.set_export_known(disk, on).map_err(|source| Error::Rds {
            context: format!("{op} {id}: {what} over NVMe/TCP"),
            source: Box::new(source),
        })?;
        info!("{op} {id}: {what}ed over NVMe/TCP");
        crate::metrics::fence_operation(what);
        Ok(written)
    }

    /// Cuts every live connection to a disk other nodes keep by turning
    /// its export off and on again, each read back; the hosts its allow
    /// list names reconnect by themselves. A disk found off (a retry after
    /// a crash in between) has no connection left and is only turned on.
    fn cut_connections(&self, op: &'static str, id: &VolumeId, disk: &rds::Disk) -> Result<rds::Disk, Error> {
        let off = self.set_export(op, id, disk, false)?;
        let on = self.set_export(op, id, &off, true)?;
        info!("{op} {id}: cut the removed node's connection (export off and on again)");
        Ok(on)
    }

    /// Sets the disk's host allow list to the host NQNs of `nodes` (read,
    /// modify, write under the volume's lock; the caller holds it) and
    /// checks RouterOS's answer holds exactly that list: anything else
    /// fails, naming what it stored. No request when it already does.
    fn set_allowed(
        &self,
        op: &'static str,
        id: &VolumeId,
        disk: &rds::Disk,
        nodes: &[String],
    ) -> Result<rds::Disk, Error> {
        let mut hosts = Vec::with_capacity(nodes.len());
        for n in nodes {
            let h = HostIdentity::for_node(n).map_err(|rule| Error::HostNqnRule {
                node: n.clone(),
                rule,
            })?;
            hosts.push(h.nqn);
        }
        let want = fence::format_allow_list(&hosts);
        if disk.nvme_tcp_allow_host == want {
            return Ok(disk.clone());
        }
        let written = self
            .rds
            .set_allowed_hosts_known(disk, &want)
            .map_err(|source| Error::Rds {
                context: format!("{op} {id}: set the host allow list"),
                source: Box::new(source),
            })?;
        if written.nvme_tcp_allow_host != want {
            return Err(Error::AllowListNotKept {
                op,
                id: id.clone(),
                wrote: want,
                stored: written.nvme_tcp_allow_host,
            });
        }
        info!("{op} {id}: host allow list is now {}", echo(&want));
        crate::metrics::fence_operation("allow-list");
        Ok(written)
    }
}

/// What the node needs to attach the volume: the volume context's own
/// values when the CO passes them, else what the disk and the settings say.
fn publish_context(
    s: &ControllerSettings,
    id: &VolumeId,
    disk: &rds::Disk,
    volume_context: &HashMap<String, String>,
) -> HashMap<String, String> {
    let mut ctx = HashMap::new();
    let nqn = disk
        .nvme_tcp_nqn
        .clone()
        .unwrap_or_else(|| Nqn::for_volume(&s.nqn_prefix, id).to_string());
    ctx.insert(volume::KEY_NQN.to_string(), nqn);
    ctx.insert(
        volume::KEY_NVME_ADDRESS.to_string(),
        volume_context
            .get(volume::KEY_NVME_ADDRESS)
            .cloned()
            .unwrap_or_else(|| s.nvme_address.clone()),
    );
    ctx.insert(
        volume::KEY_NVME_PORT.to_string(),
        disk.effective_port().to_string(),
    );
    ctx
}
