//! The shipped binary: statically linked when built for a static target (as
//! scripts/test.sh does), and the stripped copy in dist/ serves the socket.

mod common;

use std::process::Command;

use common::driver::{driver_bin, opt, Driver};
use rds_csi::proto::csi;

fn file_says(path: &std::path::Path) -> String {
    let out = Command::new("file")
        .arg("-b")
        .arg(path)
        .output()
        .expect("run file(1)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_binary_is_linked_the_way_it_was_built() {
    let bin = driver_bin();
    let info = file_says(&bin);
    let is_static = info.contains("statically linked") || info.contains("static-pie linked");
    // This test binary and the driver share one target and its flags.
    assert_eq!(
        is_static,
        cfg!(target_feature = "crt-static"),
        "{}: {info}",
        bin.display()
    );
}

#[test]
fn the_dist_binary_is_static_stripped_and_serves() {
    let Some(dist) = std::env::var_os("RDS_CSI_DIST_BIN") else {
        // Only scripts/test.sh builds dist/; it always sets the variable.
        common::skip(
            "the_dist_binary_is_static_stripped_and_serves",
            "RDS_CSI_DIST_BIN is not set: scripts/test.sh builds dist/rds-csi and sets it",
        );
        return;
    };
    // A variable naming no file would make driver_bin() fall back to
    // cargo's binary: say which file is missing instead.
    assert!(
        std::path::Path::new(&dist).is_file(),
        "RDS_CSI_DIST_BIN={} is not a file",
        dist.to_string_lossy()
    );
    let dist = std::path::PathBuf::from(dist);
    let info = file_says(&dist);
    assert!(
        info.contains("statically linked") || info.contains("static-pie linked"),
        "{info}"
    );
    assert!(
        info.contains("stripped") && !info.contains("not stripped"),
        "{info}"
    );
    // Driver::start uses the dist binary when RDS_CSI_DIST_BIN is set.
    assert_eq!(driver_bin(), dist);
    let d = Driver::start(&["--controller=false", "--node", "--node-id", "n1"]);
    let info = d
        .identity()
        .get_plugin_info(&csi::GetPluginInfoRequest::new(), opt(5))
        .unwrap();
    assert_eq!(info.name, "rds.csi.srvlab.io");
}
