//! `rds-csi ctl`: a CSI client for operators and the demo. Talks to any CSI
//! socket, one subcommand per CSI call, human-readable output or `--json`;
//! failures print the gRPC code and message and exit non-zero.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use grpcio::{CallOption, ChannelBuilder, EnvBuilder, RpcStatusCode};
use serde_json::{json, Map, Value};

use crate::proto::csi;
use crate::proto::csi::volume_capability::access_mode::Mode;
use crate::proto::grpc::{ControllerClient, IdentityClient, NodeClient};
use crate::server::Endpoint;
use crate::status::code_name;
use crate::volume::parse_bytes;

const HELP: &str = "rds-csi ctl — talk to a CSI socket (this driver's or any other)

Usage: rds-csi ctl [--endpoint URL] [--json] [--timeout SECONDS] <command> [args]

Global flags:
  --endpoint URL       CSI socket (default unix:///csi/csi.sock; env RDS_CSI_ENDPOINT)
  --json               print results as JSON (one object per command)
  --timeout SECONDS    deadline for the call (default 60)

Commands:
  info                                  plugin name, version and capabilities
  probe                                 is the plugin ready?
  create NAME --size SIZE [--param K=V]... [--block] [--fs ext4|xfs] [--access MODE]
                                        CreateVolume; SIZE like 1Gi or bytes
  delete VOLUME_ID                      DeleteVolume
  create NAME --size SIZE (--from-snapshot SNAPSHOT_ID | --from-volume VOLUME_ID) ...
                                        CreateVolume restoring a snapshot or cloning a volume
  snapshot create NAME --volume VOLUME_ID   CreateSnapshot (Btrfs pools)
  snapshot list [--volume VOLUME_ID] [--max N]
                                        ListSnapshots (all pages)
  snapshot delete SNAPSHOT_ID           DeleteSnapshot
  list [--max N]                        ListVolumes (all pages)
  capacity [--param K=V]...             GetCapacity
  publish VOLUME_ID --node NODE_ID [--block] [--access MODE] [--readonly]
                                        ControllerPublishVolume
  unpublish VOLUME_ID [--node NODE_ID]  ControllerUnpublishVolume
  stage VOLUME_ID --staging-path DIR (--context K=V... | --context-file FILE)
        [--block] [--fs ext4|xfs] [--mount-flag F]... [--access MODE]
                                        NodeStageVolume
  publish-node VOLUME_ID --staging-path DIR --target-path PATH
        [--context K=V... | --context-file FILE] [--block] [--readonly] [--access MODE]
                                        NodePublishVolume
  unpublish-node VOLUME_ID --target-path PATH
                                        NodeUnpublishVolume
  unstage VOLUME_ID --staging-path DIR  NodeUnstageVolume
  stats VOLUME_ID --path PATH [--staging-path DIR]
                                        NodeGetVolumeStats (bytes, inodes, condition)
  expand VOLUME_ID --size SIZE [--block] [--node-path PATH [--staging-path DIR]]
                                        ControllerExpandVolume, then NodeExpandVolume
                                        when --node-path is given

MODE: rwo (single-node writer, default), rwop (single-node single writer),
      rox (multi-node reader), rwx (multi-node multi writer).
--context-file takes the JSON printed by `ctl --json create` (or any JSON
object of strings): its volume_context is passed on.
Exit codes: 0 success, 1 the call failed (code and message printed), 2 usage.
";

/// A failed `ctl` run: usage (exit 2) or a call that failed (exit 1).
#[derive(Debug)]
pub enum CtlError {
    Usage(String),
    Call {
        method: &'static str,
        code: String,
        message: String,
    },
    Local(String),
}

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtlError::Usage(m) => write!(f, "{m} (see rds-csi ctl --help)"),
            CtlError::Call {
                method,
                code,
                message,
            } => write!(f, "{method} failed: {code}: {message}"),
            CtlError::Local(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CtlError {}

fn usage(msg: impl Into<String>) -> CtlError {
    CtlError::Usage(msg.into())
}

/// What a command asks for, parsed from its arguments.
#[derive(Debug, Default)]
struct Args {
    positional: Vec<String>,
    size: Option<u64>,
    params: HashMap<String, String>,
    context: HashMap<String, String>,
    block: bool,
    fs: Option<String>,
    access: Option<Mode>,
    readonly: bool,
    node: Option<String>,
    staging: Option<String>,
    target: Option<String>,
    path: Option<String>,
    node_path: Option<String>,
    mount_flags: Vec<String>,
    max: Option<i32>,
    // Snapshots and clones (issue 13).
    from_snapshot: Option<String>,
    from_volume: Option<String>,
    volume: Option<String>,
}

struct Global {
    endpoint: Endpoint,
    json: bool,
    timeout: Duration,
}

/// Runs `rds-csi ctl <args>`; prints the result on stdout.
pub fn run(args: Vec<OsString>, env: &dyn Fn(&str) -> Option<String>) -> Result<(), CtlError> {
    let (global, command, rest) = parse_global(args, env)?;
    let Some(command) = command else {
        print!("{HELP}");
        return Ok(());
    };
    let args = parse_command_args(&command, rest)?;
    let grpc_env = Arc::new(EnvBuilder::new().cq_count(1).build());
    let channel = ChannelBuilder::new(grpc_env).connect(&global.endpoint.grpc_address());
    let ctx = Ctx {
        identity: IdentityClient::new(channel.clone()),
        controller: ControllerClient::new(channel.clone()),
        node: NodeClient::new(channel),
        timeout: global.timeout,
    };
    let out = execute(&ctx, &command, &args)?;
    if global.json {
        println!("{}", serde_json::to_string_pretty(&out.json).unwrap_or_default());
    } else {
        print!("{}", out.text);
    }
    Ok(())
}

fn parse_global(
    args: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Global, Option<String>, Vec<OsString>), CtlError> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut endpoint = env("RDS_CSI_ENDPOINT").unwrap_or_else(|| "unix:///csi/csi.sock".into());
    let mut json = false;
    let mut timeout = 60u64;
    let command = loop {
        match p.next().map_err(|e| usage(e.to_string()))? {
            None => break None,
            Some(Long("help")) | Some(Short('h')) => break None,
            Some(Long("endpoint")) => endpoint = text(&mut p, "endpoint")?,
            Some(Long("json")) => json = true,
            Some(Long("timeout")) => {
                let t = text(&mut p, "timeout")?;
                timeout = t
                    .parse()
                    .ok()
                    .filter(|n| (1..=3600).contains(n))
                    .ok_or_else(|| usage(format!("--timeout {t:?}: expected seconds from 1 to 3600")))?;
            }
            Some(Value(v)) => break Some(v.to_string_lossy().into_owned()),
            Some(other) => return Err(usage(format!("{} for 'rds-csi ctl'", other.unexpected()))),
        }
    };
    let endpoint = Endpoint::parse(&endpoint).map_err(|e| usage(format!("--endpoint: {e}")))?;
    let rest: Vec<OsString> = p.raw_args().map(|r| r.collect()).unwrap_or_default();
    Ok((
        Global {
            endpoint,
            json,
            timeout: Duration::from_secs(timeout),
        },
        command,
        rest,
    ))
}

fn text(p: &mut lexopt::Parser, flag: &str) -> Result<String, CtlError> {
    p.value()
        .map_err(|_| usage(format!("--{flag} needs a value")))?
        .into_string()
        .map_err(|_| usage(format!("--{flag}: value is not valid UTF-8")))
}

fn key_value(raw: &str, flag: &str) -> Result<(String, String), CtlError> {
    raw.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| usage(format!("--{flag} {raw:?}: expected KEY=VALUE")))
}

fn access_mode(raw: &str) -> Result<Mode, CtlError> {
    match raw {
        "rwo" => Ok(Mode::SINGLE_NODE_WRITER),
        "rwop" => Ok(Mode::SINGLE_NODE_SINGLE_WRITER),
        "rox" => Ok(Mode::MULTI_NODE_READER_ONLY),
        "rwx" => Ok(Mode::MULTI_NODE_MULTI_WRITER),
        _ => Err(usage(format!("--access {raw:?}: expected rwo, rwop, rox or rwx"))),
    }
}

/// The flags each command accepts.
fn allowed(command: &str) -> Option<&'static [&'static str]> {
    Some(match command {
        "info" | "probe" => &[],
        "create" => &[
            "size",
            "param",
            "block",
            "fs",
            "access",
            "from-snapshot",
            "from-volume",
        ],
        "snapshot" => &["volume", "max"],
        "delete" => &[],
        "list" => &["max"],
        "capacity" => &["param"],
        "publish" => &["node", "block", "access", "readonly"],
        "unpublish" => &["node"],
        "stage" => &[
            "staging-path",
            "context",
            "context-file",
            "block",
            "fs",
            "mount-flag",
            "access",
        ],
        "publish-node" => &[
            "staging-path",
            "target-path",
            "context",
            "context-file",
            "block",
            "readonly",
            "access",
            "fs",
            "mount-flag",
        ],
        "unpublish-node" => &["target-path"],
        "unstage" => &["staging-path"],
        "stats" => &["path", "staging-path"],
        "expand" => &["size", "block", "node-path", "staging-path"],
        _ => return None,
    })
}

fn parse_command_args(command: &str, rest: Vec<OsString>) -> Result<Args, CtlError> {
    use lexopt::prelude::*;
    let allowed = allowed(command).ok_or_else(|| usage(format!("unknown command {command:?}")))?;
    let mut p = lexopt::Parser::from_args(rest);
    let mut a = Args::default();
    while let Some(arg) = p.next().map_err(|e| usage(e.to_string()))? {
        match arg {
            Value(v) => a.positional.push(v.to_string_lossy().into_owned()),
            Long(name) => {
                let name = name.to_string();
                if !allowed.contains(&name.as_str()) {
                    return Err(usage(format!("unknown flag --{name} for 'ctl {command}'")));
                }
                match name.as_str() {
                    "block" => a.block = true,
                    "readonly" => a.readonly = true,
                    "size" => {
                        let v = text(&mut p, "size")?;
                        a.size = Some(parse_bytes(&v).map_err(|e| usage(format!("--size: {e}")))?);
                    }
                    "param" => {
                        let (k, v) = key_value(&text(&mut p, "param")?, "param")?;
                        a.params.insert(k, v);
                    }
                    "context" => {
                        let (k, v) = key_value(&text(&mut p, "context")?, "context")?;
                        a.context.insert(k, v);
                    }
                    "context-file" => {
                        let path = text(&mut p, "context-file")?;
                        a.context.extend(read_context_file(&path)?);
                    }
                    "fs" => a.fs = Some(text(&mut p, "fs")?),
                    "access" => a.access = Some(access_mode(&text(&mut p, "access")?)?),
                    "node" => a.node = Some(text(&mut p, "node")?),
                    "staging-path" => a.staging = Some(text(&mut p, "staging-path")?),
                    "target-path" => a.target = Some(text(&mut p, "target-path")?),
                    "path" => a.path = Some(text(&mut p, "path")?),
                    "node-path" => a.node_path = Some(text(&mut p, "node-path")?),
                    "mount-flag" => a.mount_flags.push(text(&mut p, "mount-flag")?),
                    "from-snapshot" => a.from_snapshot = Some(text(&mut p, "from-snapshot")?),
                    "from-volume" => a.from_volume = Some(text(&mut p, "from-volume")?),
                    "volume" => a.volume = Some(text(&mut p, "volume")?),
                    "max" => {
                        let v = text(&mut p, "max")?;
                        a.max = Some(
                            v.parse()
                                .map_err(|_| usage(format!("--max {v:?}: expected a number")))?,
                        );
                    }
                    _ => return Err(usage(format!("unknown flag --{name} for 'ctl {command}'"))),
                }
            }
            other => return Err(usage(format!("{} for 'ctl {command}'", other.unexpected()))),
        }
    }
    Ok(a)
}

/// Reads a volume context: the JSON `ctl --json create` printed (its
/// `volume_context`), or a flat JSON object of strings.
fn read_context_file(path: &str) -> Result<HashMap<String, String>, CtlError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CtlError::Local(format!("cannot read --context-file {path}: {e}")))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| CtlError::Local(format!("--context-file {path} is not JSON: {e}")))?;
    let obj = v.get("volume_context").unwrap_or(&v);
    let map = obj
        .as_object()
        .ok_or_else(|| CtlError::Local(format!("--context-file {path}: expected a JSON object")))?;
    map.iter()
        .map(|(k, v)| match v.as_str() {
            Some(s) => Ok((k.clone(), s.to_string())),
            None => Err(CtlError::Local(format!(
                "--context-file {path}: value of {k:?} is not a string"
            ))),
        })
        .collect()
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
    am.mode = args.access.unwrap_or(Mode::SINGLE_NODE_WRITER).into();
    cap.access_mode = Some(am).into();
    cap
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

fn execute(c: &Ctx, command: &str, a: &Args) -> Result<Output, CtlError> {
    match command {
        "info" => info(c),
        "probe" => {
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
        "create" => {
            let name = one(a, "NAME")?;
            let size = a.size.ok_or_else(|| usage("--size is required"))?;
            let mut req = csi::CreateVolumeRequest::new();
            req.name = name.clone();
            let mut range = csi::CapacityRange::new();
            range.required_bytes = size as i64;
            req.capacity_range = Some(range).into();
            req.volume_capabilities = vec![capability(a)];
            req.parameters = a.params.clone();
            req.volume_content_source = content_source(a)?.into();
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
        "delete" => {
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
        "list" => list(c, a),
        "capacity" => {
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
        "publish" => {
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
        "unpublish" => {
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
        "stage" => {
            let id = one(a, "VOLUME_ID")?;
            let mut req = csi::NodeStageVolumeRequest::new();
            req.volume_id = id.clone();
            req.staging_target_path = need(&a.staging, "staging-path")?.to_string();
            req.volume_capability = Some(capability(a)).into();
            req.volume_context = a.context.clone();
            c.node
                .node_stage_volume(&req, c.opt())
                .map_err(|e| call_error("NodeStageVolume", e))?;
            Ok(Output {
                text: format!("staged {id} at {}\n", req.staging_target_path),
                json: json!({ "volume_id": id, "staging_target_path": req.staging_target_path }),
            })
        }
        "publish-node" => {
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
        "unpublish-node" => {
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
        "unstage" => {
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
        "stats" => stats(c, a),
        "expand" => expand(c, a),
        "snapshot" => snapshot(c, a),
        _ => Err(usage(format!("unknown command {command:?}"))),
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

// ---- Snapshots, restore and clone (issue 13) -----------------------------

/// `--from-snapshot` / `--from-volume` as a CSI content source.
fn content_source(a: &Args) -> Result<Option<csi::VolumeContentSource>, CtlError> {
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

/// `ctl snapshot create NAME --volume ID | list [--volume ID] [--max N] | delete ID`.
fn snapshot(c: &Ctx, a: &Args) -> Result<Output, CtlError> {
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
        other => Err(usage(format!(
            "snapshot {other:?}: expected create, list or delete"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(args: &[&str]) -> Result<(Global, Option<String>, Vec<OsString>), CtlError> {
        parse_global(args.iter().map(OsString::from).collect(), &|_| None)
    }

    #[test]
    fn global_flags_then_command_and_its_arguments() {
        let (g, cmd, rest) = global(&[
            "--endpoint",
            "unix:///x.sock",
            "--json",
            "create",
            "v",
            "--size",
            "1Gi",
        ])
        .unwrap();
        assert_eq!(g.endpoint.to_string(), "unix:///x.sock");
        assert!(g.json);
        assert_eq!(cmd.as_deref(), Some("create"));
        let a = parse_command_args("create", rest).unwrap();
        assert_eq!(a.positional, vec!["v"]);
        assert_eq!(a.size, Some(1 << 30));
    }

    #[test]
    fn command_flags_are_checked() {
        let a = parse_command_args(
            "stage",
            [
                "pvc-1",
                "--staging-path",
                "/s",
                "--context",
                "nqn=x",
                "--mount-flag",
                "noatime",
                "--block",
            ]
            .iter()
            .map(OsString::from)
            .collect(),
        )
        .unwrap();
        assert_eq!(a.context["nqn"], "x");
        assert_eq!(a.mount_flags, vec!["noatime"]);
        assert!(a.block);
        for (cmd, args) in [
            ("delete", vec!["x", "--size", "1"]),
            ("create", vec!["x", "--size", "lots"]),
            ("create", vec!["x", "--param", "novalue"]),
            ("publish", vec!["x", "--access", "rw"]),
            ("nonsense", vec![]),
        ] {
            let r = parse_command_args(cmd, args.iter().map(OsString::from).collect());
            assert!(matches!(r, Err(CtlError::Usage(_))), "{cmd} {args:?}");
        }
        assert!(matches!(
            global(&["--timeout", "0", "info"]),
            Err(CtlError::Usage(_))
        ));
        assert!(matches!(
            global(&["--endpoint", "tcp://x", "info"]),
            Err(CtlError::Usage(_))
        ));
    }

    #[test]
    fn context_files_take_ctl_create_output_or_a_flat_object() {
        let dir = std::env::temp_dir().join(format!("rds-csi-ctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let created = dir.join("created.json");
        std::fs::write(
            &created,
            r#"{"volume_id":"pvc-1","volume_context":{"nqn":"nqn.x:pvc-1","nvmePort":"4420"}}"#,
        )
        .unwrap();
        let ctx = read_context_file(created.to_str().unwrap()).unwrap();
        assert_eq!(ctx["nqn"], "nqn.x:pvc-1");
        let flat = dir.join("flat.json");
        std::fs::write(&flat, r#"{"nqn":"nqn.y"}"#).unwrap();
        assert_eq!(read_context_file(flat.to_str().unwrap()).unwrap()["nqn"], "nqn.y");
        let bad = dir.join("bad.json");
        std::fs::write(&bad, r#"{"nqn":4}"#).unwrap();
        assert!(read_context_file(bad.to_str().unwrap()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
