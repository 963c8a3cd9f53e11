//! Replies reach the client, whether completed on gRPC's own thread or on
//! a worker: a regression test for calls the driver logged as OK arriving
//! as CANCELLED (about one in 2000 with a new channel per call, as
//! kubelet's short-lived clients do), when the code let go of the call
//! before gRPC had finished it.

mod common;

use common::driver::{opt, Driver};
use rds_csi::proto::csi;

#[test]
fn quick_replies_are_never_cancelled() {
    let d = Driver::start(&["--node", "--node-id", "n1", "--nvme-bin", "/bin/true"]);
    let mut failures = Vec::new();
    for i in 0..3000 {
        // A new channel per call, alternating services.
        let r = if i % 2 == 0 {
            d.identity()
                .get_plugin_info(&csi::GetPluginInfoRequest::new(), opt(10))
                .map(|_| ())
        } else {
            d.node()
                .node_get_info(&csi::NodeGetInfoRequest::new(), opt(10))
                .map(|_| ())
        };
        if let Err(e) = r {
            failures.push(format!("call {i}: {e:?}"));
        }
    }
    assert!(failures.is_empty(), "{} failed: {:?}", failures.len(), failures);
}

/// The same for calls answered by a pooled worker thread (the cheap calls
/// above are answered on gRPC's own thread): a NodeGetVolumeStats without a
/// volume id is refused by its handler, on a worker, at once.
#[test]
fn worker_replies_are_never_cancelled() {
    let d = Driver::start(&["--node", "--node-id", "n1", "--nvme-bin", "/bin/true"]);
    let mut failures = Vec::new();
    for i in 0..2000 {
        let r = d
            .node()
            .node_get_volume_stats(&csi::NodeGetVolumeStatsRequest::new(), opt(10));
        match r {
            Err(grpcio::Error::RpcFailure(st)) if st.code() == grpcio::RpcStatusCode::INVALID_ARGUMENT => {}
            other => failures.push(format!("call {i}: {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{} failed: {:?}", failures.len(), failures);
}
