//! Command line: subcommands and flags (lexopt), each flag also readable from
//! an `RDS_CSI_<NAME>` environment variable. Parsing does no I/O: the
//! environment comes in as a lookup function, and values stay strings until
//! `config` validates them.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;

/// The subcommands that take flags from the table below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    Serve,
    Doctor,
}

impl Sub {
    fn name(self) -> &'static str {
        match self {
            Sub::Serve => "serve",
            Sub::Doctor => "doctor",
        }
    }

    fn summary(self) -> &'static str {
        match self {
            Sub::Serve => "run the CSI controller and/or node plugin on a unix socket",
            Sub::Doctor => "check the RDS connection and this node's prerequisites",
        }
    }
}

mod flags;

pub use flags::{flag, Flag, FLAGS};

/// The environment variable that mirrors a flag: `--node-id` → `RDS_CSI_NODE_ID`.
pub fn env_name(flag: &str) -> String {
    format!("RDS_CSI_{}", flag.to_ascii_uppercase().replace('-', "_"))
}

/// Where a value came from, so errors can name what the user actually wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Env(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub value: String,
    pub origin: Origin,
}

/// The raw settings of one invocation, by flag name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Values {
    map: BTreeMap<&'static str, Setting>,
}

impl Values {
    pub fn get(&self, flag: &str) -> Option<&Setting> {
        self.map.get(flag)
    }

    /// The value, or the table's default.
    pub fn value_or_default(&self, flag: &str) -> Option<&str> {
        self.map
            .get(flag)
            .map(|s| s.value.as_str())
            .or_else(|| FLAGS.iter().find(|f| f.name == flag).and_then(|f| f.default))
    }

    /// How to name this flag in an error: `--endpoint`, or the environment
    /// variable it was read from.
    pub fn describe(&self, flag: &str) -> String {
        match self.map.get(flag).map(|s| &s.origin) {
            Some(Origin::Env(var)) => format!("{var} (--{flag})"),
            _ => format!("--{flag}"),
        }
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Help(String),
    Version,
    Run(Sub, Values),
    /// `ctl` parses its own arguments (see `crate::ops::ctl`).
    Ctl(Vec<OsString>),
}

/// A command line that cannot be run. The message names the flag.
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Parses `args` (without the program name). `env` looks up environment
/// variables; it is the only outside input.
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Command, UsageError> {
    use lexopt::prelude::*;
    let args: Vec<OsString> = args.into_iter().collect();
    let mut parser = lexopt::Parser::from_args(args.clone());
    let sub = match parser.next().map_err(usage)? {
        None => return Ok(Command::Help(top_help())),
        Some(Long("help")) | Some(Short('h')) => return Ok(Command::Help(top_help())),
        Some(Long("version")) | Some(Short('V')) => return Ok(Command::Version),
        Some(Value(v)) => match v.to_str() {
            Some("serve") => Sub::Serve,
            Some("doctor") => Sub::Doctor,
            Some("version") => return Ok(Command::Version),
            Some("help") => return Ok(Command::Help(top_help())),
            Some("ctl") => return Ok(Command::Ctl(args.into_iter().skip(1).collect())),
            _ => {
                return Err(UsageError(format!(
                    "unknown command {:?} (expected serve, ctl, doctor or version; see rds-csi --help)",
                    v.to_string_lossy()
                )))
            }
        },
        Some(other) => {
            return Err(UsageError(format!(
            "{} before a command (expected: rds-csi serve|ctl|doctor|version [flags]; see rds-csi --help)",
            other.unexpected()
        )))
        }
    };

    let mut values = Values::default();
    while let Some(arg) = parser.next().map_err(usage)? {
        match arg {
            Long("help") | Short('h') => return Ok(Command::Help(sub_help(sub))),
            Long(name) => {
                let flag = FLAGS
                    .iter()
                    .find(|f| f.name == name && f.subs.contains(&sub))
                    .ok_or_else(|| {
                        UsageError(format!(
                            "unknown flag --{name} for 'rds-csi {}' (see rds-csi {} --help)",
                            sub.name(),
                            sub.name()
                        ))
                    })?;
                let value = match flag.metavar {
                    Some(_) => {
                        let v = parser.value().map_err(|_| {
                            UsageError(format!(
                                "--{} needs a value: --{} <{}>",
                                flag.name,
                                flag.name,
                                flag.metavar.unwrap_or("VALUE")
                            ))
                        })?;
                        utf8(flag.name, v)?
                    }
                    // A switch may also be written --flag=false.
                    None => match parser.optional_value() {
                        Some(v) => utf8(flag.name, v)?,
                        None => "true".to_string(),
                    },
                };
                values.map.insert(
                    flag.name,
                    Setting {
                        value,
                        origin: Origin::Flag,
                    },
                );
            }
            Short(c) => {
                return Err(UsageError(format!(
                    "unknown flag -{c} for 'rds-csi {}' (flags are long: see rds-csi {} --help)",
                    sub.name(),
                    sub.name()
                )))
            }
            Value(v) => {
                return Err(UsageError(format!(
                    "unexpected argument {:?} for 'rds-csi {}' (see rds-csi {} --help)",
                    v.to_string_lossy(),
                    sub.name(),
                    sub.name()
                )))
            }
        }
    }

    // Flags given on the command line win over the environment.
    for flag in FLAGS.iter().filter(|f| f.subs.contains(&sub)) {
        if values.map.contains_key(flag.name) {
            continue;
        }
        let own = env_name(flag.name);
        let found = std::iter::once(own.as_str())
            .chain(flag.fallback_env.iter().copied())
            .find_map(|var| env(var).filter(|v| !v.is_empty()).map(|v| (var, v)));
        if let Some((var, value)) = found {
            values.map.insert(
                flag.name,
                Setting {
                    value,
                    origin: Origin::Env(var.to_string()),
                },
            );
        }
    }
    Ok(Command::Run(sub, values))
}

fn usage(err: lexopt::Error) -> UsageError {
    UsageError(err.to_string())
}

fn utf8(flag: &str, value: OsString) -> Result<String, UsageError> {
    value
        .into_string()
        .map_err(|v| UsageError(format!("--{flag}: value {v:?} is not valid UTF-8")))
}

fn top_help() -> String {
    let mut s = format!(
        "rds-csi {} — Kubernetes CSI driver for the MikroTik RDS over NVMe/TCP\n\n\
         Usage: rds-csi <command> [flags]\n\nCommands:\n",
        crate::version()
    );
    for sub in [Sub::Serve, Sub::Doctor] {
        s.push_str(&format!("  {:<9} {}\n", sub.name(), sub.summary()));
    }
    s.push_str(
        "  ctl       talk to a CSI socket: create, stage, publish, stats, ... (rds-csi ctl --help)\n  \
         version   print the version\n\n\
         Every flag can also be set with an environment variable RDS_CSI_<FLAG>, e.g.\n\
         --node-id as RDS_CSI_NODE_ID; the command line wins. `rds-csi <command> --help`\n\
         lists a command's flags.\n",
    );
    s
}

/// The help of one subcommand, generated from [`FLAGS`].
pub fn sub_help(sub: Sub) -> String {
    let mut s = format!(
        "rds-csi {} — {}\n\nUsage: rds-csi {} [flags]\n\nFlags (each also from its environment variable):\n",
        sub.name(),
        sub.summary(),
        sub.name()
    );
    for flag in FLAGS.iter().filter(|f| f.subs.contains(&sub)) {
        let left = match flag.metavar {
            Some(m) => format!("--{} <{m}>", flag.name),
            None => format!("--{}", flag.name),
        };
        s.push_str(&format!("  {left}\n      {}\n", flag.help));
        let mut env = env_name(flag.name);
        for extra in flag.fallback_env {
            env.push_str(", ");
            env.push_str(extra);
        }
        match flag.default {
            Some(d) => s.push_str(&format!("      env: {env}; default: {d}\n")),
            None => s.push_str(&format!("      env: {env}\n")),
        }
    }
    s.push_str("  --help\n      print this help\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Command, UsageError> {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse(args.iter().map(OsString::from), &move |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    fn values(args: &[&str], env: &[(&str, &str)]) -> Values {
        match run(args, env).unwrap() {
            Command::Run(_, v) => v,
            other => panic!("expected Run, got {other:?}"),
        }
    }

    #[test]
    fn every_flag_name_constant_has_exactly_one_row() {
        for name in flag::ALL {
            let rows = FLAGS.iter().filter(|f| f.name == *name).count();
            assert_eq!(rows, 1, "--{name} has {rows} rows in FLAGS");
        }
        for f in FLAGS {
            assert!(
                flag::ALL.contains(&f.name),
                "--{} has no constant in cli::flag",
                f.name
            );
        }
    }

    #[test]
    fn every_serve_flag_parses_from_the_command_line() {
        for flag in FLAGS.iter().filter(|f| f.subs.contains(&Sub::Serve)) {
            let long = format!("--{}", flag.name);
            let args: Vec<&str> = match flag.metavar {
                Some(_) => vec!["serve", &long, "x"],
                None => vec!["serve", &long],
            };
            let v = values(&args, &[]);
            let s = v.get(flag.name).unwrap_or_else(|| panic!("{long} not recorded"));
            assert_eq!(s.origin, Origin::Flag);
            assert_eq!(s.value, if flag.metavar.is_some() { "x" } else { "true" });
        }
    }

    #[test]
    fn every_flag_reads_its_environment_variable() {
        for flag in FLAGS {
            let var = env_name(flag.name);
            let sub = if flag.subs.contains(&Sub::Serve) {
                "serve"
            } else {
                "doctor"
            };
            let v = values(&[sub], &[(&var, "from-env")]);
            let s = v.get(flag.name).unwrap_or_else(|| panic!("{var} ignored"));
            assert_eq!(s.value, "from-env");
            assert_eq!(s.origin, Origin::Env(var.clone()));
            assert_eq!(v.describe(flag.name), format!("{var} (--{})", flag.name));
        }
    }

    #[test]
    fn the_command_line_wins_over_the_environment() {
        let v = values(
            &["serve", "--endpoint", "unix:///a.sock"],
            &[("RDS_CSI_ENDPOINT", "unix:///b.sock")],
        );
        assert_eq!(v.get("endpoint").unwrap().value, "unix:///a.sock");
        assert_eq!(v.describe("endpoint"), "--endpoint");
    }

    #[test]
    fn node_id_falls_back_to_node_id_then_node_name() {
        let v = values(&["serve"], &[("NODE_NAME", "n2"), ("NODE_ID", "n1")]);
        assert_eq!(v.get("node-id").unwrap().value, "n1");
        let v = values(&["serve"], &[("NODE_NAME", "n2")]);
        assert_eq!(v.get("node-id").unwrap().value, "n2");
        let v = values(&["serve"], &[("NODE_NAME", "n2"), ("RDS_CSI_NODE_ID", "n0")]);
        assert_eq!(v.get("node-id").unwrap().value, "n0");
    }

    #[test]
    fn switches_take_an_optional_value_and_values_take_equals() {
        let v = values(&["serve", "--controller=false", "--endpoint=unix:///x"], &[]);
        assert_eq!(v.get("controller").unwrap().value, "false");
        assert_eq!(v.get("endpoint").unwrap().value, "unix:///x");
    }

    #[test]
    fn defaults_come_from_the_table() {
        let v = values(&["serve"], &[]);
        assert_eq!(v.value_or_default("endpoint"), Some("unix:///csi/csi.sock"));
        assert_eq!(v.value_or_default("driver-name"), Some("rds.csi.srvlab.io"));
        assert_eq!(v.value_or_default("node-id"), None);
    }

    #[test]
    fn unknown_and_malformed_flags_name_the_flag() {
        let e = run(&["serve", "--bogus"], &[]).unwrap_err();
        assert!(e.0.contains("--bogus") && e.0.contains("serve"), "{e}");
        let e = run(&["serve", "--endpoint"], &[]).unwrap_err();
        assert!(e.0.contains("--endpoint"), "{e}");
        let e = run(&["serve", "-x"], &[]).unwrap_err();
        assert!(e.0.contains("-x"), "{e}");
        let e = run(&["serve", "stray"], &[]).unwrap_err();
        assert!(e.0.contains("stray"), "{e}");
        let e = run(&["frobnicate"], &[]).unwrap_err();
        assert!(e.0.contains("frobnicate"), "{e}");
        // A flag of another subcommand is unknown here.
        let e = run(&["doctor", "--endpoint", "unix:///x"], &[]).unwrap_err();
        assert!(e.0.contains("--endpoint") && e.0.contains("doctor"), "{e}");
    }

    #[test]
    fn help_and_version() {
        assert_eq!(run(&["--version"], &[]).unwrap(), Command::Version);
        assert_eq!(run(&["version"], &[]).unwrap(), Command::Version);
        assert!(matches!(run(&[], &[]).unwrap(), Command::Help(_)));
        let Command::Help(h) = run(&["serve", "--help"], &[]).unwrap() else {
            panic!("no help");
        };
        for flag in FLAGS.iter().filter(|f| f.subs.contains(&Sub::Serve)) {
            assert!(
                h.contains(&format!("--{}", flag.name)),
                "help lacks --{}",
                flag.name
            );
            assert!(
                h.contains(&env_name(flag.name)),
                "help lacks {}",
                env_name(flag.name)
            );
        }
    }

    #[test]
    fn ctl_keeps_its_arguments() {
        let c = run(&["ctl", "--endpoint", "unix:///x", "info"], &[]).unwrap();
        let Command::Ctl(rest) = c else { panic!("not ctl") };
        assert_eq!(
            rest,
            vec![OsString::from("--endpoint"), "unix:///x".into(), "info".into()]
        );
    }
}
