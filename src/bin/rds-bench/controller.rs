//! Controller figures: CreateVolume + DeleteVolume through the driver
//! against the same REST work done directly, and REST requests per CSI call.

use super::*;

/// One CreateVolume + DeleteVolume through the driver.
pub(crate) fn driver_pair(c: &ControllerClient, name: &str) -> Res<()> {
    let mut req = csi::CreateVolumeRequest::new();
    req.name = name.to_string();
    let mut range = csi::CapacityRange::new();
    range.required_bytes = GIB as i64;
    req.capacity_range = Some(range).into();
    req.volume_capabilities = vec![mount_cap()];
    let v = c
        .create_volume(&req, opt())
        .map_err(|e| format!("CreateVolume {name}: {e}"))?;
    let mut del = csi::DeleteVolumeRequest::new();
    del.volume_id = v.volume.volume_id.clone();
    c.delete_volume(&del, opt())
        .map_err(|e| format!("DeleteVolume {name}: {e}"))?;
    Ok(())
}

/// The REST requests the controller makes for the same pair, issued
/// directly with the same client library and settings: look up the slot,
/// read the pool, create and export the disk; look it up, remove it.
pub(crate) fn direct_pair(client: &rds::Client, name: &str) -> Res<()> {
    let id = VolumeId::for_name(name);
    let slot = id.slot();
    let file_path = format!("storage-pool/csi/{slot}.img");
    let e = |what: &str, err: rds::Error| format!("{what} {slot}: {err}");
    let found = client.disk(slot).map_err(|x| e("look up", x))?;
    client.pool("storage-pool").map_err(|x| e("pool", x))?;
    let own = Ownership {
        name: name.to_string(),
        params_digest: "000000000000".into(),
        ..Default::default()
    };
    let new = NewDisk {
        slot: slot.to_string(),
        file_path,
        size_bytes: GIB,
        comment: own.to_comment(),
        nqn: Some(format!("{PREFIX}:{slot}")),
        port: 4420,
    };
    client
        .create_disk_known(&new, found.as_ref())
        .map_err(|x| e("create", x))?;
    let disk = client
        .disk(slot)
        .map_err(|x| e("look up", x))?
        .ok_or_else(|| format!("{slot}: gone after create"))?;
    client.remove_disk_known(&disk).map_err(|x| e("remove", x))?;
    Ok(())
}

/// REST requests each controller RPC makes, counted by rds-sim
/// (`rest_requests` of `/sim/stats`) around one call of each, after a
/// warm-up (cached RouterOS version, the volume folder made) and with the
/// background health check held off so only the RPC is counted.
pub(crate) fn request_counts(bins: &Path, work: &Work, grpc: &Arc<Environment>) -> Res<Figure> {
    let dir = work.sub("requests");
    let sim = start_sim_with(bins, &dir.join("sim"), 0, false)?;
    let args: Vec<String> = [
        "--controller",
        "--rds-address",
        &sim.url,
        "--rds-username-file",
        sim.user.to_str().unwrap_or_default(),
        "--rds-password-file",
        sim.pass.to_str().unwrap_or_default(),
        "--nvme-address",
        "127.0.0.1",
        "--rds-check-interval",
        "3600",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (driver, socket) = start_driver(bins, &dir, &args)?;
    let identity = IdentityClient::new(channel(grpc, &socket));
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = identity
            .probe(&csi::ProbeRequest::new(), opt())
            .map_err(|e| e.to_string())?
            .ready
            .value;
        if ready {
            break;
        }
        if Instant::now() > end {
            return Err(format!(
                "the controller never became ready: {}",
                driver.log_text()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let password = fs::read_to_string(&sim.pass).map_err(|e| e.to_string())?;
    let auth = {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("admin:{}", password.trim_end_matches('\n')));
        format!("Basic {token}")
    };
    let stats_url = format!("{}/sim/stats", sim.url);
    let rest_requests = || -> Res<u64> {
        let text = ureq::get(&stats_url)
            .set("Authorization", &auth)
            .call()
            .map_err(|e| format!("GET /sim/stats: {e}"))?
            .into_string()
            .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        v["rest_requests"]
            .as_u64()
            .ok_or_else(|| format!("/sim/stats has no rest_requests: {text}"))
    };
    let ctl = ControllerClient::new(channel(grpc, &socket));
    driver_pair(&ctl, "bench-requests-warm")?;

    let mut create = csi::CreateVolumeRequest::new();
    create.name = "bench-requests".into();
    create.volume_capabilities = vec![mount_cap()];
    let mut counts: Vec<(&str, u64)> = Vec::new();
    let mut count = |rpc: &'static str, f: &dyn Fn() -> Res<()>| -> Res<()> {
        let before = rest_requests()?;
        f()?;
        counts.push((rpc, rest_requests()? - before));
        Ok(())
    };
    let id = std::cell::RefCell::new(String::new());
    let rpc_err = |rpc: &'static str| move |e: grpcio::Error| format!("{rpc}: {e}");
    count("CreateVolume", &|| {
        *id.borrow_mut() = ctl
            .create_volume(&create, opt())
            .map_err(rpc_err("CreateVolume"))?
            .volume
            .volume_id
            .clone();
        Ok(())
    })?;
    let id = id.into_inner();
    count("CreateVolume (again)", &|| {
        ctl.create_volume(&create, opt())
            .map(|_| ())
            .map_err(rpc_err("CreateVolume"))
    })?;
    count("ControllerPublishVolume", &|| {
        let mut r = csi::ControllerPublishVolumeRequest::new();
        r.volume_id = id.clone();
        r.node_id = "node-a".into();
        r.volume_capability = Some(mount_cap()).into();
        ctl.controller_publish_volume(&r, opt())
            .map(|_| ())
            .map_err(rpc_err("ControllerPublishVolume"))
    })?;
    count("ControllerUnpublishVolume", &|| {
        let mut r = csi::ControllerUnpublishVolumeRequest::new();
        r.volume_id = id.clone();
        r.node_id = "node-a".into();
        ctl.controller_unpublish_volume(&r, opt())
            .map(|_| ())
            .map_err(rpc_err("ControllerUnpublishVolume"))
    })?;
    count("ControllerExpandVolume", &|| {
        let mut r = csi::ControllerExpandVolumeRequest::new();
        r.volume_id = id.clone();
        let mut range = csi::CapacityRange::new();
        range.required_bytes = 2 * GIB as i64;
        r.capacity_range = Some(range).into();
        ctl.controller_expand_volume(&r, opt())
            .map(|_| ())
            .map_err(rpc_err("ControllerExpandVolume"))
    })?;
    count("DeleteVolume", &|| {
        let mut r = csi::DeleteVolumeRequest::new();
        r.volume_id = id.clone();
        ctl.delete_volume(&r, opt())
            .map(|_| ())
            .map_err(rpc_err("DeleteVolume"))
    })?;
    for (rpc, n) in &counts {
        eprintln!("  {rpc}: {n} REST requests");
    }
    let get = |rpc: &str| counts.iter().find(|(r, _)| *r == rpc).map_or(0, |(_, n)| *n);
    let (c, d) = (get("CreateVolume"), get("DeleteVolume"));
    Ok(Figure {
        key: "rest_requests_per_rpc",
        label: "REST requests per create / delete (XFS pool)",
        value: (c + d) as f64,
        shown: format!("{c} / {d}"),
        target: "≤ 4 / ≤ 5",
        met: c <= 4 && d <= 5,
        detail: Value::Object(counts.iter().map(|(r, n)| (r.to_string(), json!(n))).collect()),
    })
}

/// Runs `pairs` pairs on `threads` threads; returns each pair's latency in ms.
pub(crate) fn timed_pairs(threads: usize, pairs: usize, tag: &str, op: PairOp) -> Res<(Vec<f64>, f64)> {
    let per = pairs.div_ceil(threads);
    let barrier = Arc::new(Barrier::new(threads));
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (op, barrier, tag) = (Arc::clone(&op), Arc::clone(&barrier), tag.to_string());
            std::thread::spawn(move || -> Res<Vec<f64>> {
                barrier.wait();
                let mut lat = Vec::new();
                for i in 0..per {
                    let name = format!("bench-{tag}-{t}-{i}-{}", fastrand::u32(..));
                    let s = Instant::now();
                    op(&name)?;
                    lat.push(ms(s.elapsed()));
                }
                Ok(lat)
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().map_err(|_| "a benchmark thread panicked")??);
    }
    Ok((all, ms(started.elapsed())))
}

pub(crate) fn controller_overhead(
    bins: &Path,
    work: &Work,
    grpc: &Arc<Environment>,
    quick: bool,
) -> Res<Vec<Figure>> {
    let dir = work.sub("controller");
    let sim = start_sim(bins, &dir.join("sim"), SIM_LATENCY_MS)?;
    let (_driver, socket) = start_driver(bins, &dir, &controller_args(&sim))?;
    let ctl = ControllerClient::new(channel(grpc, &socket));
    let client = sim_client(&sim)?;
    client
        .make_directory("storage-pool/csi")
        .map_err(|e| e.to_string())?;
    // Warm both paths: TLS sessions, cached RouterOS version, the folder.
    for i in 0..3 {
        driver_pair(&ctl, &format!("bench-warm-d-{i}"))?;
        direct_pair(&client, &format!("bench-warm-r-{i}"))?;
    }
    // The floor of any CSI call: a round trip that does no work.
    let identity = IdentityClient::new(channel(grpc, &socket));
    let mut rtt = Vec::new();
    for _ in 0..200 {
        let s = Instant::now();
        identity
            .get_plugin_info(&csi::GetPluginInfoRequest::new(), opt())
            .map_err(|e| e.to_string())?;
        rtt.push(ms(s.elapsed()));
    }
    let rtt = sorted(rtt);
    eprintln!(
        "  empty call round trip: p50 {:.3} ms, p99 {:.3} ms",
        percentile(&rtt, 0.5),
        percentile(&rtt, 0.99)
    );
    let ctl = Arc::new(ctl);
    let client = Arc::new(client);
    let d: PairOp = {
        let ctl = Arc::clone(&ctl);
        Arc::new(move |n: &str| driver_pair(&ctl, n))
    };
    let r: PairOp = {
        let client = Arc::clone(&client);
        Arc::new(move |n: &str| direct_pair(&client, n))
    };
    let mut out = Vec::new();
    for (threads, key, label, target, limit) in [
        (
            1usize,
            "controller_overhead_c1",
            "controller overhead, concurrency 1 (p50)",
            "≤ 1.05",
            1.05,
        ),
        (
            32,
            "controller_overhead_c32",
            "controller overhead, concurrency 32 (p50)",
            "≤ 1.10",
            1.10,
        ),
    ] {
        let (rounds, pairs) = match (threads, quick) {
            (1, false) => (10, 10),
            (1, true) => (2, 5),
            (_, false) => (5, 128),
            (_, true) => (1, 64),
        };
        let (mut dl, mut rl, mut dw, mut rw) = (Vec::new(), Vec::new(), 0.0, 0.0);
        // Interleaved rounds: drift on a shared machine hits both sides.
        for round in 0..rounds {
            let (l, w) = timed_pairs(threads, pairs, &format!("d{threads}-{round}"), Arc::clone(&d))?;
            dl.extend(l);
            dw += w;
            let (l, w) = timed_pairs(threads, pairs, &format!("r{threads}-{round}"), Arc::clone(&r))?;
            rl.extend(l);
            rw += w;
        }
        let (dl, rl) = (sorted(dl), sorted(rl));
        let (d50, r50, d99, r99) = (
            percentile(&dl, 0.5),
            percentile(&rl, 0.5),
            percentile(&dl, 0.99),
            percentile(&rl, 0.99),
        );
        let ratio = d50 / r50;
        out.push(Figure {
            key,
            label,
            value: ratio,
            shown: format!("{ratio:.3} ({d50:.1}/{r50:.1} ms)"),
            target,
            met: ratio <= limit,
            detail: json!({
                "pairs": dl.len(),
                "driver_p50_ms": d50, "direct_p50_ms": r50,
                "driver_p99_ms": d99, "direct_p99_ms": r99,
                "p99_ratio": d99 / r99,
                "wall_ratio": dw / rw,
            }),
        });
        eprintln!(
            "  concurrency {threads}: driver p50 {d50:.2} ms p99 {d99:.2} ms; direct p50 {r50:.2} ms p99 {r99:.2} ms; p50 ratio {ratio:.3}, p99 ratio {:.3}, wall ratio {:.3}",
            d99 / r99,
            dw / rw
        );
    }
    Ok(out)
}
