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

#[cfg(test)]
mod tests {
    //! Publish and unpublish against the in-memory RDS: the single-node fence, export on publish, host ACLs, crashes half-way.

    use std::collections::HashMap;

    use crate::controller::fake::*;
    use crate::controller::*;
    use crate::fence::{self, HostIdentity};
    use crate::volume::GIB;

    #[test]
    fn the_fence_refuses_a_second_node() {
        let c = controller(10 * GIB);
        let v = create(&c, "vol-a", &HashMap::new(), GIB).unwrap();
        let cap = mount_cap(AccessMode::SingleNodeWriter);
        let ctx = c.publish(v.id.as_str(), "node-a", &cap, &HashMap::new()).unwrap();
        assert_eq!(ctx["nqn"], format!("nqn.2000-02.com.mikrotik:{}", v.id));
        assert_eq!(ctx["nvmeAddress"], "10.0.0.1");
        // Again to the same node: no change.
        let changes = c.rds.changes();
        c.publish(v.id.as_str(), "node-a", &cap, &HashMap::new()).unwrap();
        assert_eq!(c.rds.changes(), changes);
        let err = c
            .publish(v.id.as_str(), "node-b", &cap, &HashMap::new())
            .unwrap_err();
        match &err {
            Error::PublishedElsewhere { other, node, .. } => {
                assert_eq!((other.as_str(), node.as_str()), ("node-a", "node-b"))
            }
            other => panic!("{other}"),
        }
        // The fence lives on the RDS: a new controller over it refuses too.
        let restarted = Controller::new(FakeRds::default(), settings());
        restarted.rds.insert(c.rds.state().disks[v.id.slot()].clone());
        assert!(matches!(
            restarted.publish(v.id.as_str(), "node-b", &cap, &HashMap::new()),
            Err(Error::PublishedElsewhere { .. })
        ));
        // Unpublished from node-a, it may go to node-b.
        c.unpublish(v.id.as_str(), Some("node-a")).unwrap();
        c.publish(v.id.as_str(), "node-b", &cap, &HashMap::new()).unwrap();
    }

    #[test]
    fn shared_block_volumes_go_to_many_nodes_when_allowed() {
        let c = Controller::new(
            FakeRds::with_pool(10 * GIB),
            ControllerSettings {
                allow_multi_node_block: true,
                ..settings()
            },
        );
        let caps = [block_cap(AccessMode::MultiNodeMultiWriter)];
        let v = c
            .create(CreateRequest {
                name: "shared",
                capabilities: &caps,
                parameters: &HashMap::new(),
                capacity: CapacityRange::default(),
                content_source: None,
            })
            .unwrap();
        for node in ["n1", "n2"] {
            c.publish(v.id.as_str(), node, &caps[0], &HashMap::new()).unwrap();
        }
        assert_eq!(c.get(v.id.as_str()).unwrap().nodes, vec!["n1", "n2"]);
        // No node named: unpublished from every node.
        c.unpublish(v.id.as_str(), None).unwrap();
        assert!(c.get(v.id.as_str()).unwrap().nodes.is_empty());
    }

    #[test]
    fn volumes_are_exported_only_while_published() {
        let c = controller(10 * GIB);
        let cap = mount_cap(AccessMode::SingleNodeWriter);
        let v = create(&c, "vol-a", &HashMap::new(), GIB).unwrap();
        // Made with its export off: port and NQN set, nothing on the network.
        assert!(!exported(&c, &v.id));
        assert!(
            !c.rds.changes().iter().any(|x| x.starts_with("export")),
            "{:?}",
            c.rds.changes()
        );
        assert!(!c.get(v.id.as_str()).unwrap().condition.abnormal);
        c.publish(v.id.as_str(), "node-a", &cap, &HashMap::new()).unwrap();
        assert!(exported(&c, &v.id));
        assert_eq!(c.rds.changes().last().unwrap(), &format!("export {}", v.id));
        // A repeat makes no request.
        let changes = c.rds.changes();
        c.publish(v.id.as_str(), "node-a", &cap, &HashMap::new()).unwrap();
        assert_eq!(c.rds.changes(), changes);
        // Unpublished from a node it is not published to: still exported.
        c.unpublish(v.id.as_str(), Some("node-z")).unwrap();
        assert!(exported(&c, &v.id));
        c.unpublish(v.id.as_str(), Some("node-a")).unwrap();
        assert!(!exported(&c, &v.id));
        let changes = c.rds.changes();
        assert_eq!(
            changes[changes.len() - 2],
            format!("unexport {}", v.id),
            "off before the record: {changes:?}"
        );
        c.unpublish(v.id.as_str(), Some("node-a")).unwrap();
        assert_eq!(c.rds.changes(), changes);
    }

    #[test]
    fn a_shared_volume_stays_exported_until_its_last_node_goes() {
        let c = Controller::new(
            FakeRds::with_pool(10 * GIB),
            ControllerSettings {
                allow_multi_node_block: true,
                ..settings()
            },
        );
        let (cap, v) = shared_block(&c, "vol-s");
        c.publish(v.id.as_str(), "node-a", &cap, &HashMap::new()).unwrap();
        c.publish(v.id.as_str(), "node-b", &cap, &HashMap::new()).unwrap();
        c.unpublish(v.id.as_str(), Some("node-a")).unwrap();
        assert!(exported(&c, &v.id));
        c.unpublish(v.id.as_str(), None).unwrap();
        assert!(!exported(&c, &v.id));
        assert!(c.get(v.id.as_str()).unwrap().nodes.is_empty());
    }

    #[test]
    fn a_crash_between_recording_and_exporting_is_finished_by_the_retry() {
        let c = controller(10 * GIB);
        let cap = mount_cap(AccessMode::SingleNodeWriter);
        let v = create(&c, "vol-a", &HashMap::new(), GIB).unwrap();
        c.rds.state().fail_exports = 1;
        assert!(c.publish(v.id.as_str(), "node-a", &cap, &HashMap::new()).is_err());
        // Recorded, not exported: the node is fenced in, nothing is on the network.
        assert_eq!(c.get(v.id.as_str()).unwrap().nodes, vec!["node-a".to_string()]);
        assert!(!exported(&c, &v.id));
        assert!(c.get(v.id.as_str()).unwrap().condition.abnormal);
        c.publish(v.id.as_str(), "node-a", &cap, &HashMap::new()).unwrap();
        assert!(exported(&c, &v.id));
        // The unpublish fails before its record: the retry finishes both.
        c.rds.state().fail_exports = 1;
        assert!(c.unpublish(v.id.as_str(), Some("node-a")).is_err());
        assert!(exported(&c, &v.id));
        assert_eq!(c.get(v.id.as_str()).unwrap().nodes, vec!["node-a".to_string()]);
        c.unpublish(v.id.as_str(), Some("node-a")).unwrap();
        assert!(!exported(&c, &v.id));
        assert!(c.get(v.id.as_str()).unwrap().nodes.is_empty());
    }

    #[test]
    fn an_always_exported_volume_follows_the_rule_from_its_next_unpublish() {
        // As a Go driver volume or one made with --export-always: exported, no node.
        let always = controller_always(10 * GIB);
        let v = create(&always, "vol-a", &HashMap::new(), GIB).unwrap();
        assert!(exported(&always, &v.id));
        let c = controller(10 * GIB);
        c.rds.insert(always.rds.state().disks[v.id.slot()].clone());
        c.unpublish(v.id.as_str(), Some("node-a")).unwrap();
        assert!(!exported(&c, &v.id));
        // With --export-always an unpublish leaves the export alone.
        always.unpublish(v.id.as_str(), Some("node-a")).unwrap();
        assert!(exported(&always, &v.id));
    }

    #[test]
    fn host_acls_allow_exactly_the_published_nodes_and_never_export_an_empty_list() {
        let c = acl_controller();
        let (cap, v) = shared_block(&c, "vol-acl");
        assert_eq!(allow_list(&c, &v.id), "");
        let a = HostIdentity::for_node("node-a").unwrap();
        let b = HostIdentity::for_node("node-b").unwrap();
        let ctx = c.publish(v.id.as_str(), "node-a", &cap, &HashMap::new()).unwrap();
        assert_eq!(ctx[fence::KEY_HOST_NQN], a.nqn);
        assert_eq!(ctx[fence::KEY_HOST_ID], a.id);
        assert_eq!(allow_list(&c, &v.id), a.nqn);
        assert!(exported(&c, &v.id));
        // The allow list is written before the export goes on.
        let changes = c.rds.changes();
        let allow_at = changes.iter().position(|x| x.starts_with("allow ")).unwrap();
        let export_at = changes.iter().position(|x| x.starts_with("export ")).unwrap();
        assert!(allow_at < export_at, "{changes:?}");
        let ctx = c.publish(v.id.as_str(), "node-b", &cap, &HashMap::new()).unwrap();
        assert_eq!(ctx[fence::KEY_HOST_NQN], b.nqn);
        assert_eq!(
            allow_list(&c, &v.id),
            fence::format_allow_list(&[a.nqn.clone(), b.nqn.clone()])
        );
        // A repeat changes nothing.
        let changes = c.rds.changes();
        c.publish(v.id.as_str(), "node-b", &cap, &HashMap::new()).unwrap();
        assert_eq!(c.rds.changes(), changes);
        // Unpublishing one cuts off only that one: off the list first, then
        // the export off and on again drops the connection it may still hold.
        let before = c.rds.changes().len();
        c.unpublish(v.id.as_str(), Some("node-a")).unwrap();
        assert_eq!(allow_list(&c, &v.id), b.nqn);
        assert!(exported(&c, &v.id));
        let slot = v.id.slot();
        assert_eq!(
            c.rds.changes()[before..].to_vec(),
            vec![
                format!("allow {slot} {}", b.nqn),
                format!("unexport {slot}"),
                format!("export {slot}"),
                format!("comment {slot}"),
            ],
            "the allow list, the cut, then the record"
        );
        // A repeat (the node already gone) cuts nobody again.
        let changes = c.rds.changes();
        c.unpublish(v.id.as_str(), Some("node-a")).unwrap();
        assert_eq!(c.rds.changes(), changes);
        // The last one: the export goes off before the list empties.
        c.unpublish(v.id.as_str(), Some("node-b")).unwrap();
        assert_eq!(allow_list(&c, &v.id), "");
        assert!(!exported(&c, &v.id));
        let changes = c.rds.changes();
        let unexport_at = changes.iter().rposition(|x| x.starts_with("unexport ")).unwrap();
        let emptied_at = changes.iter().rposition(|x| x.starts_with("allow ")).unwrap();
        assert!(unexport_at < emptied_at, "{changes:?}");
    }

    #[test]
    fn an_allow_list_the_rds_did_not_keep_fails_naming_what_it_stored() {
        let c = acl_controller();
        let v = create(&c, "vol-acl", &HashMap::new(), GIB).unwrap();
        c.rds.state().allow_mangle = Some("somebody-else".into());
        let cap = mount_cap(AccessMode::SingleNodeWriter);
        let err = c
            .publish(v.id.as_str(), "node-a", &cap, &HashMap::new())
            .unwrap_err();
        assert!(matches!(err, Error::AllowListNotKept { .. }), "{err}");
        assert!(err.to_string().contains("\"somebody-else\""), "{err}");
        // Never exported with a list it did not mean.
        assert!(!exported(&c, &v.id));
    }

    #[test]
    fn a_node_id_that_cannot_form_a_host_nqn_is_a_bad_argument() {
        let c = acl_controller();
        let v = create(&c, "vol-acl", &HashMap::new(), GIB).unwrap();
        let cap = mount_cap(AccessMode::SingleNodeWriter);
        let err = c
            .publish(v.id.as_str(), "node a", &cap, &HashMap::new())
            .unwrap_err();
        assert!(matches!(err, Error::HostNqnRule { .. }), "{err}");
        assert!(err.to_string().contains("may only contain"), "{err}");
        assert!(c.get(v.id.as_str()).unwrap().nodes.is_empty());
    }

    #[test]
    fn a_crash_while_cutting_a_node_off_is_finished_by_the_retry() {
        let c = acl_controller();
        let (cap, v) = shared_block(&c, "vol-cut");
        c.publish(v.id.as_str(), "node-a", &cap, &HashMap::new()).unwrap();
        c.publish(v.id.as_str(), "node-b", &cap, &HashMap::new()).unwrap();
        // The export goes off, then turning it on again fails.
        let before = c.rds.changes().len();
        c.rds.state().fail_after_exports = Some(1);
        assert!(c.unpublish(v.id.as_str(), Some("node-a")).is_err());
        // Off the network, node-a still recorded: the retry cuts and exports again.
        assert!(!exported(&c, &v.id));
        assert_eq!(c.get(v.id.as_str()).unwrap().nodes.len(), 2);
        assert!(c.rds.changes().len() > before);
        c.unpublish(v.id.as_str(), Some("node-a")).unwrap();
        assert!(exported(&c, &v.id));
        assert_eq!(c.get(v.id.as_str()).unwrap().nodes, vec!["node-b".to_string()]);
        let b = HostIdentity::for_node("node-b").unwrap();
        assert_eq!(allow_list(&c, &v.id), b.nqn);
    }
}
