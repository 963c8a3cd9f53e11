//! The command line of the real binary: help, version, exit code 2 with a
//! message naming the flag, environment variables.

mod common;

use common::driver::{opt, run_cli, Driver, DriverOpts};
use rds_csi::proto::csi;

#[test]
fn version_prints_the_crate_version() {
    for args in [&["--version"][..], &["version"][..]] {
        let (code, out, _) = run_cli(args, &[]);
        assert_eq!(code, 0);
        assert!(
            out.starts_with(&format!("rds-csi {}", env!("CARGO_PKG_VERSION"))),
            "{out}"
        );
    }
}

#[test]
fn help_documents_every_flag_and_its_environment_variable() {
    let (code, out, _) = run_cli(&["--help"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("serve") && out.contains("RDS_CSI_"), "{out}");
    let (code, out, _) = run_cli(&["serve", "--help"], &[]);
    assert_eq!(code, 0);
    for flag in rds_csi::cli::FLAGS
        .iter()
        .filter(|f| f.subs.contains(&rds_csi::cli::Sub::Serve))
    {
        assert!(
            out.contains(&format!("--{}", flag.name)),
            "serve --help lacks --{}:\n{out}",
            flag.name
        );
        assert!(
            out.contains(&rds_csi::cli::env_name(flag.name)),
            "serve --help lacks its env var"
        );
    }
}

#[test]
fn bad_flags_exit_2_with_one_line_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["serve", "--no-such-flag"], "--no-such-flag"),
        (
            &["serve", "--controller", "--max-in-flight", "lots"],
            "--max-in-flight",
        ),
        (
            &["serve", "--controller", "--endpoint", "tcp://0:1"],
            "--endpoint",
        ),
        (&["serve", "--node"], "--node-id"),
        (&["serve", "--controller", "--log-level"], "--log-level"),
        (
            &["serve", "--controller", "--shutdown-grace", "1e9"],
            "--shutdown-grace",
        ),
        (&["launch"], "launch"),
    ];
    for (args, flag) in cases {
        let (code, out, err) = run_cli(args, &[]);
        assert_eq!(code, 2, "{args:?}: exit {code}, stderr {err}");
        assert!(out.is_empty(), "{args:?} printed to stdout: {out}");
        assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err}");
        assert!(err.contains(flag), "{args:?}: {err} does not name {flag}");
    }
}

#[test]
fn a_bad_environment_value_names_the_variable() {
    let (code, _, err) = run_cli(&["serve", "--controller"], &[("RDS_CSI_SHUTDOWN_GRACE", "soon")]);
    assert_eq!(code, 2);
    assert!(err.contains("RDS_CSI_SHUTDOWN_GRACE"), "{err}");
}

#[test]
fn flags_can_come_from_the_environment() {
    // Driver name, services and node id from the environment only.
    let d = Driver::start_with(DriverOpts {
        env: vec![
            ("RDS_CSI_NODE".into(), "true".into()),
            ("NODE_NAME".into(), "worker-7".into()),
            ("RDS_CSI_DRIVER_NAME".into(), "env.csi.example".into()),
        ],
        ..Default::default()
    });
    let info = d
        .identity()
        .get_plugin_info(&csi::GetPluginInfoRequest::new(), opt(5))
        .unwrap();
    assert_eq!(info.name, "env.csi.example");
}

#[test]
fn check_config_validates_without_serving() {
    let (code, out, err) = run_cli(
        &[
            "serve",
            "--controller",
            "--rds-address",
            "https://rds.lan",
            "--check-config",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("configuration is valid") && out.contains("rds.lan"),
        "{out}"
    );
    let (code, _, err) = run_cli(&["serve", "--controller", "--check-config"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--rds-address"), "{err}");
}
