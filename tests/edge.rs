//! The gRPC edge of the real driver: whatever a caller sends, the answer
//! keeps the handler's code with a bounded message, every log line the
//! driver writes stays one line under 1 KiB, oversized fields are refused
//! naming the field, and bytes that are not a request message are
//! INVALID_ARGUMENT, not INTERNAL.

mod common;

use std::io::Read;

use common::csi::{create_request, status_of, ControllerEnv, GIB};
use common::driver::{opt, Driver};
use grpcio::{GrpcSlice, MessageReader, Method, MethodType, RpcStatusCode};
use rds_csi::proto::csi;

const MIB: usize = 1 << 20;

/// Every line of the driver's log is shorter than 1 KiB.
fn assert_log_lines_bounded(log: &str) {
    for line in log.lines() {
        assert!(
            line.len() < 1024,
            "a log line of {} bytes: {}…",
            line.len(),
            &line[..200.min(line.len())]
        );
    }
}

#[test]
fn a_huge_or_multiline_name_is_invalid_argument_with_a_bounded_message_and_log() {
    let mut env = ControllerEnv::start(&[]);
    // 1 MiB: refused as INVALID_ARGUMENT, not RESOURCE_EXHAUSTED (what gRPC
    // answers when the message overflows its metadata limit).
    let huge = "a".repeat(MIB);
    let st = status_of(env.create(&create_request(&huge, GIB, &[])).unwrap_err());
    assert_eq!(
        st.code(),
        RpcStatusCode::INVALID_ARGUMENT,
        "{}",
        &st.message()[..200.min(st.message().len())]
    );
    assert!(st.message().len() <= 1024, "{} bytes", st.message().len());
    assert!(st.message().contains("name"), "{}", st.message());

    // Under the edge's field limit but still far too long for a message:
    // the handler's own (whole) echo is cut at the edge, its code kept.
    let long = format!("{}\nFORGED-LINE-MARKER long", "b".repeat(3000));
    let st = status_of(env.create(&create_request(&long, GIB, &[])).unwrap_err());
    assert_eq!(st.code(), RpcStatusCode::INVALID_ARGUMENT);
    assert!(st.message().len() <= 1024, "{} bytes", st.message().len());

    // A newline in a name forges no log line.
    let forged = "pvc-x\nFORGED-LINE-MARKER rpc DeleteVolume volume=victim code=OK";
    let st = status_of(env.create(&create_request(forged, GIB, &[])).unwrap_err());
    assert_eq!(st.code(), RpcStatusCode::INVALID_ARGUMENT);

    env.driver.stop();
    let log = env.driver.log_text();
    assert!(log.contains("rpc CreateVolume"), "no call logged:\n{log}");
    for line in log.lines().filter(|l| l.contains("FORGED-LINE-MARKER")) {
        assert!(line.contains("rpc CreateVolume"), "a forged log line: {line:?}");
    }
    assert_log_lines_bounded(&log);
}

fn stage(volume_id: &str, staging: &str) -> csi::NodeStageVolumeRequest {
    let mut req = csi::NodeStageVolumeRequest::new();
    req.volume_id = volume_id.into();
    req.staging_target_path = staging.into();
    req.volume_capability = protobuf::MessageField::some(common::csi::rwo());
    req
}

fn publish(volume_id: &str, staging: &str, target: &str) -> csi::NodePublishVolumeRequest {
    let mut req = csi::NodePublishVolumeRequest::new();
    req.volume_id = volume_id.into();
    req.staging_target_path = staging.into();
    req.target_path = target.into();
    req.volume_capability = protobuf::MessageField::some(common::csi::rwo());
    req
}

#[test]
fn node_calls_with_a_huge_id_or_path_are_invalid_argument() {
    let mut d = Driver::start(&["--node", "--node-id", "n1", "--nvme-bin", "/bin/true"]);
    let node = d.node();
    let huge_id = format!("pvc-{}\nFORGED-LINE-MARKER", "1".repeat(MIB));
    let huge_path = format!("/var/lib/kubelet/{}", "p".repeat(MIB));
    let staging = "/var/lib/kubelet/plugins/kubernetes.io/csi/x/globalmount";
    let target = "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/pvc-1/mount";
    let cases: Vec<(&str, grpcio::Result<()>)> = vec![
        (
            "stage with a huge volume id",
            node.node_stage_volume(&stage(&huge_id, staging), opt(20))
                .map(|_| ()),
        ),
        (
            "stage with a huge staging path",
            node.node_stage_volume(&stage("pvc-1", &huge_path), opt(20))
                .map(|_| ()),
        ),
        (
            "publish with a huge volume id",
            node.node_publish_volume(&publish(&huge_id, staging, target), opt(20))
                .map(|_| ()),
        ),
        (
            "publish with a huge target path",
            node.node_publish_volume(&publish("pvc-1", staging, &huge_path), opt(20))
                .map(|_| ()),
        ),
    ];
    for (what, result) in cases {
        let st = status_of(result.expect_err(what));
        assert_eq!(
            st.code(),
            RpcStatusCode::INVALID_ARGUMENT,
            "{what}: {}",
            &st.message()[..300.min(st.message().len())]
        );
        assert!(st.message().len() <= 1024, "{what}: {} bytes", st.message().len());
    }
    d.stop();
    let log = d.log_text();
    assert!(log.contains("rpc NodeStageVolume"), "no call logged:\n{log}");
    for line in log.lines().filter(|l| l.contains("FORGED-LINE-MARKER")) {
        assert!(line.contains("rpc Node"), "a forged log line: {line:?}");
    }
    assert_log_lines_bounded(&log);
}

// The marshaller's signature is fixed by grpcio: `fn(&T, ...)` with T = Vec<u8>.
#[allow(clippy::ptr_arg)]
fn raw_ser(bytes: &Vec<u8>, buf: &mut GrpcSlice) -> grpcio::Result<()> {
    *buf = GrpcSlice::from(bytes.clone());
    Ok(())
}

fn raw_de(mut reader: MessageReader) -> grpcio::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|e| grpcio::Error::Codec(Box::new(e)))?;
    Ok(bytes)
}

/// Sends `bytes` as the request of `name` (`/csi.v1.Service/Method`),
/// whatever they are.
fn raw_call(d: &Driver, name: &'static str, bytes: &[u8]) -> grpcio::Result<Vec<u8>> {
    let method: Method<Vec<u8>, Vec<u8>> = Method {
        ty: MethodType::Unary,
        name,
        req_mar: grpcio::Marshaller {
            ser: raw_ser,
            de: raw_de,
        },
        resp_mar: grpcio::Marshaller {
            ser: raw_ser,
            de: raw_de,
        },
    };
    grpcio::Client::new(d.channel()).unary_call(&method, &bytes.to_vec(), opt(10))
}

#[test]
fn a_request_that_does_not_decode_is_invalid_argument() {
    let d = Driver::start(&["--node", "--node-id", "n1", "--nvme-bin", "/bin/true"]);
    // The raw client itself works: an empty GetPluginInfoRequest is valid.
    raw_call(&d, "/csi.v1.Identity/GetPluginInfo", &[]).expect("a valid empty request");
    let cases: [(&str, &'static str, &[u8]); 3] = [
        // Field 1, length 5, but only one byte follows.
        ("truncated", "/csi.v1.Identity/GetPluginInfo", &[0x0a, 0x05, b'a']),
        // volume_id (field 1) holding bytes that are not UTF-8.
        (
            "not utf-8",
            "/csi.v1.Node/NodeUnstageVolume",
            &[0x0a, 0x02, 0xff, 0xfe],
        ),
        // Wire type 7 does not exist.
        ("bad wire type", "/csi.v1.Node/NodeGetInfo", &[0x0f, 0x01]),
    ];
    for (what, method, bytes) in cases {
        let st = status_of(raw_call(&d, method, bytes).expect_err(what));
        assert_eq!(
            st.code(),
            RpcStatusCode::INVALID_ARGUMENT,
            "{what}: {}",
            st.message()
        );
        assert!(st.message().contains("not a valid"), "{what}: {}", st.message());
    }
}
