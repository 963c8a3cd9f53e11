//! `rds-csi ctl`: a CSI client for operators and the demo. Talks to any CSI
//! socket, one subcommand per CSI call, human-readable output or `--json`;
//! failures print the gRPC code and message and exit non-zero. The command
//! line is parsed in `args`; this file turns commands into CSI calls.

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use grpcio::{CallOption, ChannelBuilder, EnvBuilder, RpcStatusCode};
use serde_json::{json, Map, Value};

use crate::csi::proto::csi;
use crate::csi::proto::csi::volume_capability::access_mode::Mode;
use crate::csi::proto::grpc::{ControllerClient, IdentityClient, NodeClient};
use crate::csi::status::code_name;

mod args;
mod snapshot;

pub use args::CtlError;
use args::{parse_command, parse_global, usage, Access, Args, Command, HELP};

/// Runs `rds-csi ctl <args>`; prints the result on stdout.
pub fn run(args: Vec<OsString>, env: &dyn Fn(&str) -> Option<String>) -> Result<(), CtlError> {
    let (global, command, rest) = parse_global(args, env)?;
    let Some(command) = command else {
        print!("{HELP}");
        return Ok(());
    };
    let (command, args) = parse_command(&command, rest)?;
    let grpc_env = Arc::new(EnvBuilder::new().cq_count(1).build());
    let channel = ChannelBuilder::new(grpc_env).connect(&global.endpoint.grpc_address());
    let ctx = Ctx {
        identity: IdentityClient::new(channel.clone()),
        controller: ControllerClient::new(channel.clone()),
        node: NodeClient::new(channel),
        timeout: global.timeout,
    };
    let out = execute(&ctx, command, &args)?;
    if global.json {
        println!("{}", serde_json::to_string_pretty(&out.json).unwrap_or_default());
    } else {
        print!("{}", out.text);
    }
    Ok(())
}

struct Ctx {
    identity: IdentityClient,
    controller: ControllerClient,
    node: NodeClient,
    timeout: Duration,
}

impl Ctx {
    fn opt(&self) -> CallOption {
        CallOption::default().timeout(self.timeout)
    }
}

/// A command's result as text and as JSON.
struct Output {
    text: String,
    json: Value,
}

fn call_error(method: &'static str, err: grpcio::Error) -> CtlError {
    match err {
        grpcio::Error::RpcFailure(st) => CtlError::Call {
            method,
            code: code_name(st.code()).to_string(),
            message: st.message().to_string(),
        },
        other => CtlError::Call {
            method,
            code: code_name(RpcStatusCode::UNKNOWN).to_string(),
            message: other.to_string(),
        },
    }
}

fn one(args: &Args, what: &str) -> Result<String, CtlError> {
    match args.positional.as_slice() {
        [v] => Ok(v.clone()),
        [] => Err(usage(format!("{what} is required"))),
        more => Err(usage(format!("one {what} expected, got {}", more.len()))),
    }
}

fn need<'a>(v: &'a Option<String>, flag: &str) -> Result<&'a str, CtlError> {
    v.as_deref().ok_or_else(|| usage(format!("--{flag} is required")))
}

fn capability(args: &Args) -> csi::VolumeCapability {
    let mut cap = csi::VolumeCapability::new();
    if args.block {
        cap.set_block(csi::volume_capability::BlockVolume::new());
    } else {
        let mut m = csi::volume_capability::MountVolume::new();
        m.fs_type = args.fs.clone().unwrap_or_default();
        m.mount_flags = args.mount_flags.clone();
        cap.set_mount(m);
    }
    let mut am = csi::volume_capability::AccessMode::new();
    am.mode = mode(args.access.unwrap_or(Access::Rwo)).into();
    cap.access_mode = Some(am).into();
    cap
}

fn mode(access: Access) -> Mode {
    match access {
        Access::Rwo => Mode::SINGLE_NODE_WRITER,
        Access::Rwop => Mode::SINGLE_NODE_SINGLE_WRITER,
        Access::Rox => Mode::MULTI_NODE_READER_ONLY,
        Access::Rwx => Mode::MULTI_NODE_MULTI_WRITER,
    }
}

fn map_json(m: &HashMap<String, String>) -> Value {
    let mut sorted: Vec<_> = m.iter().collect();
    sorted.sort();
    Value::Object(
        sorted
            .into_iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<_, _>>(),
    )
}

fn map_text(m: &HashMap<String, String>) -> String {
    let mut sorted: Vec<_> = m.iter().collect();
    sorted.sort();
    sorted.into_iter().map(|(k, v)| format!("  {k}={v}\n")).collect()
}

fn gib(bytes: i64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn execute(c: &Ctx, command: Command, a: &Args) -> Result<Output, CtlError> {
    match command {
        Command::Info => info(c),
        Command::Probe => {
            let r = c
                .identity
                .probe(&csi::ProbeRequest::new(), c.opt())
                .map_err(|e| call_error("Probe", e))?;
            let ready = r.ready.as_ref().is_none_or(|b| b.value);
            Ok(Output {
                text: format!("ready: {ready}\n"),
                json: json!({ "ready": ready }),
            })
        }
        Command::Create => {
            let name = one(a, "NAME")?;
            let size = a.size.ok_or_else(|| usage("--size is required"))?;
            let mut req = csi::CreateVolumeRequest::new();
            req.name = name.clone();
            let mut range = csi::CapacityRange::new();
            range.required_bytes = size as i64;
            req.capacity_range = Some(range).into();
            req.volume_capabilities = vec![capability(a)];
            req.parameters = a.params.clone();
            req.volume_content_source = snapshot::content_source(a)?.into();
            let r = c
                .controller
                .create_volume(&req, c.opt())
                .map_err(|e| call_error("CreateVolume", e))?;
            let v = r.volume.unwrap_or_default();
            Ok(Output {
                text: format!(
                    "created volume {} ({} bytes, {}) for {name}\nvolume context:\n{}",
                    v.volume_id,
                    v.capacity_bytes,
                    gib(v.capacity_bytes),
                    map_text(&v.volume_context)
                ),
                json: json!({
                    "name": name,
                    "volume_id": v.volume_id,
                    "capacity_bytes": v.capacity_bytes,
                    "volume_context": map_json(&v.volume_context),
                }),
            })
        }
        Command::Delete => {
            let id = one(a, "VOLUME_ID")?;
            let mut req = csi::DeleteVolumeRequest::new();
            req.volume_id = id.clone();
            c.controller
                .delete_volume(&req, c.opt())
                .map_err(|e| call_error("DeleteVolume", e))?;
            Ok(Output {
                text: format!("deleted volume {id}\n"),
                json: json!({ "volume_id": id, "deleted": true }),
            })
        }
        Command::List => list(c, a),
        Command::Capacity => {
            let mut req = csi::GetCapacityRequest::new();
            req.parameters = a.params.clone();
            let r = c
                .controller
                .get_capacity(&req, c.opt())
                .map_err(|e| call_error("GetCapacity", e))?;
            Ok(Output {
                text: format!(
                    "available: {} bytes ({})\n",
                    r.available_capacity,
                    gib(r.available_capacity)
                ),
                json: json!({
                    "available_capacity": r.available_capacity,
                    "maximum_volume_size": r.maximum_volume_size.as_ref().map(|v| v.value),
                    "minimum_volume_size": r.minimum_volume_size.as_ref().map(|v| v.value),
                }),
            })
        }
        Command::Publish => {
            let id = one(a, "VOLUME_ID")?;
            let mut req = csi::ControllerPublishVolumeRequest::new();
            req.volume_id = id.clone();
            req.node_id = need(&a.node, "node")?.to_string();
            req.volume_capability = Some(capability(a)).into();
            req.readonly = a.readonly;
            let r = c
                .controller
                .controller_publish_volume(&req, c.opt())
                .map_err(|e| call_error("ControllerPublishVolume", e))?;
            Ok(Output {
                text: format!(
                    "published {id} to node {}\npublish context:\n{}",
                    req.node_id,
                    map_text(&r.publish_context)
                ),
                json: json!({ "volume_id": id, "node_id": req.node_id, "publish_context": map_json(&r.publish_context) }),
            })
        }
        Command::Unpublish => {
            let id = one(a, "VOLUME_ID")?;
            let mut req = csi::ControllerUnpublishVolumeRequest::new();
            req.volume_id = id.clone();
            req.node_id = a.node.clone().unwrap_or_default();
            c.controller
                .controller_unpublish_volume(&req, c.opt())
                .map_err(|e| call_error("ControllerUnpublishVolume", e))?;
            Ok(Output {
                text: format!(
                    "unpublished {id} from {}\n",
                    if req.node_id.is_empty() {
                        "every node"
                    } else {
                        &req.node_id
                    }
                ),
                json: json!({ "volume_id": id, "node_id": req.node_id }),
            })
        }
        Command::Stage => {
            let id = one(a, "VOLUME_ID")?;
            let mut req = csi::NodeStageVolumeRequest::new();
            req.volume_id = id.clone();
            req.staging_target_path = need(&a.staging, "staging-path")?.to_string();
            req.volume_capability = Some(capability(a)).into();
            req.volume_context = a.context.clone();
            req.publish_context = a.publish_context.clone();
            c.node
                .node_stage_volume(&req, c.opt())
                .map_err(|e| call_error("NodeStageVolume", e))?;
            Ok(Output {
                text: format!("staged {id} at {}\n", req.staging_target_path),
                json: json!({ "volume_id": id, "staging_target_path": req.staging_target_path }),
            })
        }
        Command::PublishNode => {
            let id = one(a, "VOLUME_ID")?;
            let mut req = csi::NodePublishVolumeRequest::new();
            req.volume_id = id.clone();
            req.staging_target_path = need(&a.staging, "staging-path")?.to_string();
            req.target_path = need(&a.target, "target-path")?.to_string();
            req.volume_capability = Some(capability(a)).into();
            req.volume_context = a.context.clone();
            req.readonly = a.readonly;
            c.node
                .node_publish_volume(&req, c.opt())
                .map_err(|e| call_error("NodePublishVolume", e))?;
            Ok(Output {
                text: format!(
                    "published {id} at {}{}\n",
                    req.target_path,
                    if a.readonly { " (read-only)" } else { "" }
                ),
                json: json!({ "volume_id": id, "target_path": req.target_path, "readonly": a.readonly }),
            })
        }
        Command::UnpublishNode => {
            let id = one(a, "VOLUME_ID")?;
            let mut req = csi::NodeUnpublishVolumeRequest::new();
            req.volume_id = id.clone();
            req.target_path = need(&a.target, "target-path")?.to_string();
            c.node
                .node_unpublish_volume(&req, c.opt())
                .map_err(|e| call_error("NodeUnpublishVolume", e))?;
            Ok(Output {
                text: format!("unpublished {id} from {}\n", req.target_path),
                json: json!({ "volume_id": id, "target_path": req.target_path }),
            })
        }
        Command::Unstage => {
            let id = one(a, "VOLUME_ID")?;
            let mut req = csi::NodeUnstageVolumeRequest::new();
            req.volume_id = id.clone();
            req.staging_target_path = need(&a.staging, "staging-path")?.to_string();
            c.node
                .node_unstage_volume(&req, c.opt())
                .map_err(|e| call_error("NodeUnstageVolume", e))?;
            Ok(Output {
                text: format!("unstaged {id} from {}\n", req.staging_target_path),
                json: json!({ "volume_id": id, "staging_target_path": req.staging_target_path }),
            })
        }
        Command::Stats => stats(c, a),
        Command::Expand => expand(c, a),
        Command::Snapshot => snapshot::run(c, a),
    }
}

fn info(c: &Ctx) -> Result<Output, CtlError> {
    let info = c
        .identity
        .get_plugin_info(&csi::GetPluginInfoRequest::new(), c.opt())
        .map_err(|e| call_error("GetPluginInfo", e))?;
    let caps = c
        .identity
        .get_plugin_capabilities(&csi::GetPluginCapabilitiesRequest::new(), c.opt())
        .map_err(|e| call_error("GetPluginCapabilities", e))?;
    let plugin: Vec<String> = caps
        .capabilities
        .iter()
        .map(|cap| {
            if cap.has_service() {
                format!("{:?}", cap.service().type_.enum_value_or_default())
            } else {
                format!(
                    "VOLUME_EXPANSION_{:?}",
                    cap.volume_expansion().type_.enum_value_or_default()
                )
            }
        })
        .collect();
    // The services answer UNIMPLEMENTED when this process does not serve them.
    let controller: Option<Vec<String>> = c
        .controller
        .controller_get_capabilities(&csi::ControllerGetCapabilitiesRequest::new(), c.opt())
        .ok()
        .map(|r| {
            r.capabilities
                .iter()
                .map(|cap| format!("{:?}", cap.rpc().type_.enum_value_or_default()))
                .collect()
        });
    let node: Option<Vec<String>> = c
        .node
        .node_get_capabilities(&csi::NodeGetCapabilitiesRequest::new(), c.opt())
        .ok()
        .map(|r| {
            r.capabilities
                .iter()
                .map(|cap| format!("{:?}", cap.rpc().type_.enum_value_or_default()))
                .collect()
        });
    let node_info = c
        .node
        .node_get_info(&csi::NodeGetInfoRequest::new(), c.opt())
        .ok();
    let mut text = format!(
        "plugin: {} {}\nplugin capabilities: {}\n",
        info.name,
        info.vendor_version,
        plugin.join(", ")
    );
    match &controller {
        Some(caps) => text.push_str(&format!("controller: {}\n", caps.join(", "))),
        None => text.push_str("controller: not served here\n"),
    }
    match &node {
        Some(caps) => text.push_str(&format!("node: {}\n", caps.join(", "))),
        None => text.push_str("node: not served here\n"),
    }
    if let Some(n) = &node_info {
        text.push_str(&format!(
            "node id: {} (max volumes {})\n",
            n.node_id, n.max_volumes_per_node
        ));
    }
    Ok(Output {
        text,
        json: json!({
            "name": info.name,
            "vendor_version": info.vendor_version,
            "plugin_capabilities": plugin,
            "controller_capabilities": controller,
            "node_capabilities": node,
            "node_id": node_info.as_ref().map(|n| n.node_id.clone()),
            "max_volumes_per_node": node_info.as_ref().map(|n| n.max_volumes_per_node),
        }),
    })
}

fn list(c: &Ctx, a: &Args) -> Result<Output, CtlError> {
    let mut token = String::new();
    let mut rows = Vec::new();
    loop {
        let mut req = csi::ListVolumesRequest::new();
        req.max_entries = a.max.unwrap_or(0);
        req.starting_token = token.clone();
        let r = c
            .controller
            .list_volumes(&req, c.opt())
            .map_err(|e| call_error("ListVolumes", e))?;
        rows.extend(r.entries);
        if r.next_token.is_empty() {
            break;
        }
        token = r.next_token;
    }
    let mut text = format!("{:<36} {:>14}  {:<10} condition\n", "VOLUME", "BYTES", "NODES");
    let mut items = Vec::new();
    for e in &rows {
        let nodes = e.status.published_node_ids.join(",");
        let cond = e.status.volume_condition.as_ref().map(|c| {
            if c.abnormal {
                format!("abnormal: {}", c.message)
            } else {
                "ok".to_string()
            }
        });
        text.push_str(&format!(
            "{:<36} {:>14}  {:<10} {}\n",
            e.volume.volume_id,
            e.volume.capacity_bytes,
            if nodes.is_empty() { "-" } else { &nodes },
            cond.clone().unwrap_or_default()
        ));
        items.push(json!({
            "volume_id": e.volume.volume_id,
            "capacity_bytes": e.volume.capacity_bytes,
            "published_node_ids": e.status.published_node_ids,
            "abnormal": e.status.volume_condition.as_ref().map(|c| c.abnormal),
            "condition": e.status.volume_condition.as_ref().map(|c| c.message.clone()),
        }));
    }
    text.push_str(&format!("{} volume(s)\n", rows.len()));
    Ok(Output {
        text,
        json: json!({ "volumes": items }),
    })
}

fn stats(c: &Ctx, a: &Args) -> Result<Output, CtlError> {
    let id = one(a, "VOLUME_ID")?;
    let mut req = csi::NodeGetVolumeStatsRequest::new();
    req.volume_id = id.clone();
    req.volume_path = need(&a.path, "path")?.to_string();
    req.staging_target_path = a.staging.clone().unwrap_or_default();
    let r = c
        .node
        .node_get_volume_stats(&req, c.opt())
        .map_err(|e| call_error("NodeGetVolumeStats", e))?;
    let mut text = format!("volume {id} at {}\n", req.volume_path);
    let mut usage_json = Vec::new();
    for u in &r.usage {
        let unit = format!("{:?}", u.unit.enum_value_or_default()).to_lowercase();
        text.push_str(&format!(
            "  {unit}: {} used of {} ({} available)\n",
            u.used, u.total, u.available
        ));
        usage_json.push(json!({ "unit": unit, "total": u.total, "used": u.used, "available": u.available }));
    }
    let (abnormal, message) = r
        .volume_condition
        .as_ref()
        .map(|c| (c.abnormal, c.message.clone()))
        .unwrap_or((false, String::new()));
    text.push_str(&format!(
        "  condition: {}{}\n",
        if abnormal { "ABNORMAL" } else { "ok" },
        if message.is_empty() {
            String::new()
        } else {
            format!(" ({message})")
        }
    ));
    Ok(Output {
        text,
        json: json!({ "volume_id": id, "usage": usage_json, "abnormal": abnormal, "message": message }),
    })
}

fn expand(c: &Ctx, a: &Args) -> Result<Output, CtlError> {
    let id = one(a, "VOLUME_ID")?;
    let size = a.size.ok_or_else(|| usage("--size is required"))?;
    let mut range = csi::CapacityRange::new();
    range.required_bytes = size as i64;
    let mut req = csi::ControllerExpandVolumeRequest::new();
    req.volume_id = id.clone();
    req.capacity_range = Some(range.clone()).into();
    req.volume_capability = Some(capability(a)).into();
    let r = c
        .controller
        .controller_expand_volume(&req, c.opt())
        .map_err(|e| call_error("ControllerExpandVolume", e))?;
    let mut text = format!(
        "volume {id} is {} bytes ({}) on the RDS\n",
        r.capacity_bytes,
        gib(r.capacity_bytes)
    );
    let mut node_bytes = None;
    if let Some(path) = &a.node_path {
        let mut nreq = csi::NodeExpandVolumeRequest::new();
        nreq.volume_id = id.clone();
        nreq.volume_path = path.clone();
        nreq.staging_target_path = a.staging.clone().unwrap_or_default();
        nreq.capacity_range = Some(range).into();
        nreq.volume_capability = Some(capability(a)).into();
        let nr = c
            .node
            .node_expand_volume(&nreq, c.opt())
            .map_err(|e| call_error("NodeExpandVolume", e))?;
        text.push_str(&format!(
            "the node sees {} bytes ({}) at {path}\n",
            nr.capacity_bytes,
            gib(nr.capacity_bytes)
        ));
        node_bytes = Some(nr.capacity_bytes);
    } else if r.node_expansion_required {
        text.push_str("the filesystem grows when the node expands it (give --node-path to do it now)\n");
    }
    Ok(Output {
        text,
        json: json!({
            "volume_id": id,
            "capacity_bytes": r.capacity_bytes,
            "node_expansion_required": r.node_expansion_required,
            "node_capacity_bytes": node_bytes,
        }),
    })
}
