//! `rds-csi ctl`'s command line: the global flags, the commands as one enum
//! (each with the flags it takes), and their arguments. No gRPC here: what
//! the arguments mean as CSI requests is `ctl`'s business.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::time::Duration;

use serde_json::Value;

use crate::csi::server::Endpoint;
use crate::volume::parse_bytes;

pub(super) const HELP: &str = "rds-csi ctl — talk to a CSI socket (this driver's or any other)

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
  create NAME --size SIZE (--from-snapshot SNAPSHOT_ID | --from-volume VOLUME_ID) ...
                                        CreateVolume restoring a snapshot or cloning a volume
  delete VOLUME_ID                      DeleteVolume
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
        [--publish-context-file FILE] [--block] [--fs ext4|xfs] [--mount-flag F]... [--access MODE]
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
object of strings): its volume_context is passed on. --publish-context-file
takes the JSON printed by `ctl --json publish`: its publish_context is passed on.
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

pub(super) fn usage(msg: impl Into<String>) -> CtlError {
    CtlError::Usage(msg.into())
}

/// The commands `ctl` runs: one CSI call each (`expand` two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Command {
    Info,
    Probe,
    Create,
    Delete,
    List,
    Capacity,
    Publish,
    Unpublish,
    Stage,
    PublishNode,
    UnpublishNode,
    Unstage,
    Stats,
    Expand,
    Snapshot,
}

impl Command {
    pub(super) const ALL: [Command; 15] = [
        Command::Info,
        Command::Probe,
        Command::Create,
        Command::Delete,
        Command::List,
        Command::Capacity,
        Command::Publish,
        Command::Unpublish,
        Command::Stage,
        Command::PublishNode,
        Command::UnpublishNode,
        Command::Unstage,
        Command::Stats,
        Command::Expand,
        Command::Snapshot,
    ];

    /// The name on the command line.
    pub(super) fn name(self) -> &'static str {
        match self {
            Command::Info => "info",
            Command::Probe => "probe",
            Command::Create => "create",
            Command::Delete => "delete",
            Command::List => "list",
            Command::Capacity => "capacity",
            Command::Publish => "publish",
            Command::Unpublish => "unpublish",
            Command::Stage => "stage",
            Command::PublishNode => "publish-node",
            Command::UnpublishNode => "unpublish-node",
            Command::Unstage => "unstage",
            Command::Stats => "stats",
            Command::Expand => "expand",
            Command::Snapshot => "snapshot",
        }
    }

    fn parse(name: &str) -> Result<Command, CtlError> {
        Command::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| usage(format!("unknown command {name:?}")))
    }

    /// The flags the command takes.
    fn opts(self) -> &'static [Opt] {
        use Opt::*;
        match self {
            Command::Info | Command::Probe | Command::Delete => &[],
            Command::Create => &[Size, Param, Block, Fs, Access, FromSnapshot, FromVolume],
            Command::List => &[Max],
            Command::Capacity => &[Param],
            Command::Publish => &[Node, Block, Access, Readonly],
            Command::Unpublish => &[Node],
            Command::Stage => &[
                StagingPath,
                Context,
                ContextFile,
                PublishContextFile,
                Block,
                Fs,
                MountFlag,
                Access,
            ],
            Command::PublishNode => &[
                StagingPath,
                TargetPath,
                Context,
                ContextFile,
                Block,
                Readonly,
                Access,
                Fs,
                MountFlag,
            ],
            Command::UnpublishNode => &[TargetPath],
            Command::Unstage => &[StagingPath],
            Command::Stats => &[Path, StagingPath],
            Command::Expand => &[Size, Block, NodePath, StagingPath],
            Command::Snapshot => &[Volume, Max],
        }
    }
}

/// A command's flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt {
    Size,
    Param,
    Block,
    Fs,
    Access,
    Node,
    Readonly,
    StagingPath,
    TargetPath,
    Context,
    ContextFile,
    PublishContextFile,
    Path,
    NodePath,
    MountFlag,
    Max,
    FromSnapshot,
    FromVolume,
    Volume,
}

impl Opt {
    /// The name after `--`.
    fn name(self) -> &'static str {
        match self {
            Opt::Size => "size",
            Opt::Param => "param",
            Opt::Block => "block",
            Opt::Fs => "fs",
            Opt::Access => "access",
            Opt::Node => "node",
            Opt::Readonly => "readonly",
            Opt::StagingPath => "staging-path",
            Opt::TargetPath => "target-path",
            Opt::Context => "context",
            Opt::ContextFile => "context-file",
            Opt::PublishContextFile => "publish-context-file",
            Opt::Path => "path",
            Opt::NodePath => "node-path",
            Opt::MountFlag => "mount-flag",
            Opt::Max => "max",
            Opt::FromSnapshot => "from-snapshot",
            Opt::FromVolume => "from-volume",
            Opt::Volume => "volume",
        }
    }
}

/// `--access`: the CSI access mode, by its Kubernetes short name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// Single-node writer (ReadWriteOnce).
    Rwo,
    /// Single-node single writer (ReadWriteOncePod).
    Rwop,
    /// Multi-node reader only (ReadOnlyMany).
    Rox,
    /// Multi-node multi writer (ReadWriteMany).
    Rwx,
}

/// What a command asks for, parsed from its arguments.
#[derive(Debug, Default)]
pub(super) struct Args {
    pub(super) positional: Vec<String>,
    pub(super) size: Option<u64>,
    pub(super) params: HashMap<String, String>,
    pub(super) context: HashMap<String, String>,
    /// `--publish-context-file`: what ControllerPublishVolume answered
    /// (with `--nvme-host-acl`, the host NQN and ID to connect with).
    pub(super) publish_context: HashMap<String, String>,
    pub(super) block: bool,
    pub(super) fs: Option<String>,
    pub(super) access: Option<Access>,
    pub(super) readonly: bool,
    pub(super) node: Option<String>,
    pub(super) staging: Option<String>,
    pub(super) target: Option<String>,
    pub(super) path: Option<String>,
    pub(super) node_path: Option<String>,
    pub(super) mount_flags: Vec<String>,
    pub(super) max: Option<i32>,
    pub(super) from_snapshot: Option<String>,
    pub(super) from_volume: Option<String>,
    pub(super) volume: Option<String>,
}

pub(super) struct Global {
    pub(super) endpoint: Endpoint,
    pub(super) json: bool,
    pub(super) timeout: Duration,
}

pub(super) fn parse_global(
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

fn access_mode(raw: &str) -> Result<Access, CtlError> {
    match raw {
        "rwo" => Ok(Access::Rwo),
        "rwop" => Ok(Access::Rwop),
        "rox" => Ok(Access::Rox),
        "rwx" => Ok(Access::Rwx),
        _ => Err(usage(format!("--access {raw:?}: expected rwo, rwop, rox or rwx"))),
    }
}

/// The command named `name` and its arguments `rest`; a flag the command
/// does not take is a usage error naming both.
pub(super) fn parse_command(name: &str, rest: Vec<OsString>) -> Result<(Command, Args), CtlError> {
    use lexopt::prelude::*;
    let command = Command::parse(name)?;
    let mut p = lexopt::Parser::from_args(rest);
    let mut a = Args::default();
    while let Some(arg) = p.next().map_err(|e| usage(e.to_string()))? {
        match arg {
            Value(v) => a.positional.push(v.to_string_lossy().into_owned()),
            Long(flag) => {
                let opt = command
                    .opts()
                    .iter()
                    .copied()
                    .find(|o| o.name() == flag)
                    .ok_or_else(|| usage(format!("unknown flag --{flag} for 'ctl {name}'")))?;
                let flag = opt.name();
                match opt {
                    Opt::Block => a.block = true,
                    Opt::Readonly => a.readonly = true,
                    Opt::Size => {
                        let v = text(&mut p, flag)?;
                        a.size = Some(parse_bytes(&v).map_err(|e| usage(format!("--size: {e}")))?);
                    }
                    Opt::Param => {
                        let (k, v) = key_value(&text(&mut p, flag)?, flag)?;
                        a.params.insert(k, v);
                    }
                    Opt::Context => {
                        let (k, v) = key_value(&text(&mut p, flag)?, flag)?;
                        a.context.insert(k, v);
                    }
                    Opt::ContextFile => {
                        let path = text(&mut p, flag)?;
                        a.context.extend(read_context_file(&path)?);
                    }
                    Opt::PublishContextFile => {
                        let path = text(&mut p, flag)?;
                        a.publish_context.extend(read_json_map(
                            &path,
                            "publish-context-file",
                            "publish_context",
                        )?);
                    }
                    Opt::Fs => a.fs = Some(text(&mut p, flag)?),
                    Opt::Access => a.access = Some(access_mode(&text(&mut p, flag)?)?),
                    Opt::Node => a.node = Some(text(&mut p, flag)?),
                    Opt::StagingPath => a.staging = Some(text(&mut p, flag)?),
                    Opt::TargetPath => a.target = Some(text(&mut p, flag)?),
                    Opt::Path => a.path = Some(text(&mut p, flag)?),
                    Opt::NodePath => a.node_path = Some(text(&mut p, flag)?),
                    Opt::MountFlag => a.mount_flags.push(text(&mut p, flag)?),
                    Opt::FromSnapshot => a.from_snapshot = Some(text(&mut p, flag)?),
                    Opt::FromVolume => a.from_volume = Some(text(&mut p, flag)?),
                    Opt::Volume => a.volume = Some(text(&mut p, flag)?),
                    Opt::Max => {
                        let v = text(&mut p, flag)?;
                        a.max = Some(
                            v.parse()
                                .map_err(|_| usage(format!("--max {v:?}: expected a number")))?,
                        );
                    }
                }
            }
            other => return Err(usage(format!("{} for 'ctl {name}'", other.unexpected()))),
        }
    }
    Ok((command, a))
}

/// Reads a volume context: the JSON `ctl --json create` printed (its
/// `volume_context`), or a flat JSON object of strings.
fn read_context_file(path: &str) -> Result<HashMap<String, String>, CtlError> {
    read_json_map(path, "context-file", "volume_context")
}

/// A JSON object of strings from `path`: its member `key` when it has one
/// (the output of `ctl --json create` or `publish`), else the whole object.
fn read_json_map(path: &str, flag: &str, key: &str) -> Result<HashMap<String, String>, CtlError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CtlError::Local(format!("cannot read --{flag} {path}: {e}")))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| CtlError::Local(format!("--{flag} {path} is not JSON: {e}")))?;
    let obj = v.get(key).unwrap_or(&v);
    let map = obj
        .as_object()
        .ok_or_else(|| CtlError::Local(format!("--{flag} {path}: expected a JSON object")))?;
    map.iter()
        .map(|(k, v)| match v.as_str() {
            Some(s) => Ok((k.clone(), s.to_string())),
            None => Err(CtlError::Local(format!(
                "--{flag} {path}: value of {k:?} is not a string"
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(args: &[&str]) -> Result<(Global, Option<String>, Vec<OsString>), CtlError> {
        parse_global(args.iter().map(OsString::from).collect(), &|_| None)
    }

    fn parse_command_args(command: &str, rest: Vec<OsString>) -> Result<Args, CtlError> {
        parse_command(command, rest).map(|(_, a)| a)
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
    fn every_command_parses_by_its_name_and_is_in_the_help() {
        let mut names: Vec<&str> = Command::ALL.iter().map(|c| c.name()).collect();
        for c in Command::ALL {
            assert_eq!(Command::parse(c.name()).unwrap(), c);
            assert!(
                HELP.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{} ", c.name()))),
                "{} missing from the help",
                c.name()
            );
            // Every flag a command takes parses for it, and is in the help.
            for opt in c.opts() {
                let flag = format!("--{}", opt.name());
                assert!(HELP.contains(&flag), "{flag} missing from the help");
                let value = match opt {
                    Opt::Block | Opt::Readonly => None,
                    Opt::Size => Some("1Gi"),
                    Opt::Param | Opt::Context => Some("k=v"),
                    Opt::Access => Some("rwx"),
                    Opt::Max => Some("3"),
                    Opt::ContextFile | Opt::PublishContextFile => continue,
                    _ => Some("/x"),
                };
                let args: Vec<OsString> = std::iter::once(flag.clone())
                    .chain(value.map(str::to_string))
                    .map(OsString::from)
                    .collect();
                assert!(parse_command(c.name(), args).is_ok(), "{} {flag}", c.name());
            }
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Command::ALL.len(), "two commands share a name");
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
        // `ctl --json publish` output: its publish_context.
        let published = dir.join("published.json");
        std::fs::write(
            &published,
            r#"{"volume_id":"pvc-1","node_id":"n1","publish_context":{"hostNqn":"nqn.h","hostId":"i"}}"#,
        )
        .unwrap();
        let pc = read_json_map(
            published.to_str().unwrap(),
            "publish-context-file",
            "publish_context",
        )
        .unwrap();
        assert_eq!((pc["hostNqn"].as_str(), pc["hostId"].as_str()), ("nqn.h", "i"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
