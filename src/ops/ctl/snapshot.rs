//! `ctl snapshot create|list|delete`, and the content source of
//! `ctl create --from-snapshot/--from-volume` (snapshots and clones on
//! Btrfs pools).

use serde_json::{json, Value};

use super::args::{usage, Args, CtlError};
use super::{call_error, gib, need, Ctx, Output};
use crate::csi::proto::csi;

/// The CreateVolume content source `--from-snapshot` or `--from-volume`
/// asks for (they exclude each other); none when neither is given.
pub(super) fn content_source(a: &Args) -> Result<Option<csi::VolumeContentSource>, CtlError> {
    let mut src = csi::VolumeContentSource::new();
    match (&a.from_snapshot, &a.from_volume) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => return Err(usage("--from-snapshot and --from-volume exclude each other")),
        (Some(id), None) => {
            let mut s = csi::volume_content_source::SnapshotSource::new();
            s.snapshot_id = id.clone();
            src.set_snapshot(s);
        }
        (None, Some(id)) => {
            let mut v = csi::volume_content_source::VolumeSource::new();
            v.volume_id = id.clone();
            src.set_volume(v);
        }
    }
    Ok(Some(src))
}

fn snapshot_json(s: &csi::Snapshot) -> Value {
    json!({
        "snapshot_id": s.snapshot_id,
        "source_volume_id": s.source_volume_id,
        "size_bytes": s.size_bytes,
        "creation_time": s.creation_time.as_ref().map(|t| t.seconds),
        "ready_to_use": s.ready_to_use,
    })
}

/// `snapshot create NAME --volume ID`, `snapshot list [--volume ID]`,
/// `snapshot delete ID`.
pub(super) fn run(c: &Ctx, a: &Args) -> Result<Output, CtlError> {
    let (sub, rest) = a
        .positional
        .split_first()
        .ok_or_else(|| usage("snapshot: create, list or delete is required"))?;
    let arg = |what: &str| match rest {
        [v] => Ok(v.clone()),
        [] => Err(usage(format!("snapshot {sub}: {what} is required"))),
        more => Err(usage(format!(
            "snapshot {sub}: one {what} expected, got {}",
            more.len()
        ))),
    };
    match sub.as_str() {
        "create" => {
            let name = arg("NAME")?;
            let mut req = csi::CreateSnapshotRequest::new();
            req.name = name.clone();
            req.source_volume_id = need(&a.volume, "volume")?.to_string();
            let r = c
                .controller
                .create_snapshot(&req, c.opt())
                .map_err(|e| call_error("CreateSnapshot", e))?;
            let s = r.snapshot.unwrap_or_default();
            Ok(Output {
                text: format!(
                    "created snapshot {} of volume {} ({} bytes, {}) for {name}\n",
                    s.snapshot_id,
                    s.source_volume_id,
                    s.size_bytes,
                    gib(s.size_bytes)
                ),
                json: snapshot_json(&s),
            })
        }
        "delete" => {
            let id = arg("SNAPSHOT_ID")?;
            let mut req = csi::DeleteSnapshotRequest::new();
            req.snapshot_id = id.clone();
            c.controller
                .delete_snapshot(&req, c.opt())
                .map_err(|e| call_error("DeleteSnapshot", e))?;
            Ok(Output {
                text: format!("deleted snapshot {id}\n"),
                json: json!({ "snapshot_id": id, "deleted": true }),
            })
        }
        "list" => {
            if !rest.is_empty() {
                return Err(usage("snapshot list takes no arguments (--volume filters)"));
            }
            list(c, a)
        }
        other => Err(usage(format!(
            "snapshot {other:?}: expected create, list or delete"
        ))),
    }
}

/// Every page of ListSnapshots, filtered by `--volume`.
fn list(c: &Ctx, a: &Args) -> Result<Output, CtlError> {
    let mut token = String::new();
    let mut rows = Vec::new();
    loop {
        let mut req = csi::ListSnapshotsRequest::new();
        req.max_entries = a.max.unwrap_or(0);
        req.starting_token = token.clone();
        req.source_volume_id = a.volume.clone().unwrap_or_default();
        let r = c
            .controller
            .list_snapshots(&req, c.opt())
            .map_err(|e| call_error("ListSnapshots", e))?;
        rows.extend(r.entries.into_iter().map(|e| e.snapshot.unwrap_or_default()));
        if r.next_token.is_empty() {
            break;
        }
        token = r.next_token;
    }
    let mut text = format!(
        "{:<34} {:<36} {:>14}  created\n",
        "SNAPSHOT", "SOURCE VOLUME", "BYTES"
    );
    for s in &rows {
        text.push_str(&format!(
            "{:<34} {:<36} {:>14}  {}\n",
            s.snapshot_id,
            s.source_volume_id,
            s.size_bytes,
            s.creation_time.as_ref().map(|t| t.seconds).unwrap_or(0)
        ));
    }
    text.push_str(&format!("{} snapshot(s)\n", rows.len()));
    Ok(Output {
        text,
        json: json!({ "snapshots": rows.iter().map(snapshot_json).collect::<Vec<_>>() }),
    })
}
