//! The cheap-call load: what kubelet, the sidecars and liveness probes pay
//! all day. Many clients, each on its own connection, call Probe,
//! NodeGetCapabilities and NodeGetInfo against one driver serving identity,
//! controller and node; the driver's CPU comes from `/proc/<pid>/stat`.
//! With `--compare-bin` the same load runs against a second binary in
//! interleaved rounds, and the table shows new / old ratios from one run.

use super::*;

/// How the load is run (from the command line).
pub(super) struct CheapOpts {
    /// A second `rds-csi` (e.g. built from an older commit) measured alike.
    pub compare: Option<PathBuf>,
    /// Prepended to the driver's argv (e.g. `valgrind --tool=callgrind`).
    pub wrap: Vec<String>,
    pub clients: usize,
    pub seconds: f64,
    pub rounds: usize,
    pub sequential: usize,
}

/// One binary measured once.
#[derive(Clone, Default)]
struct Sample {
    idle_rss_kib: f64,
    threads_idle: f64,
    probe_p50_us: f64,
    caps_p50_us: f64,
    calls_per_s: f64,
    cpu_us_per_call: f64,
    p50_us: f64,
    p99_us: f64,
    peak_rss_kib: f64,
    threads_peak: f64,
    /// Calls refused with RESOURCE_EXHAUSTED during the load.
    refused: f64,
    /// Calls answered during the load.
    calls: f64,
    /// The kernel's share of `cpu_us_per_call`.
    sys_us_per_call: f64,
}

/// The driver's user and system CPU so far, in microseconds.
fn cpu_us(pid: u32) -> Res<(f64, f64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    // Fields after the parenthesised name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').ok_or("odd /proc/pid/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Res<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| format!("no field {} in /proc/{pid}/stat", i + 3))
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((ticks(11)? * 1e6 / hz, ticks(12)? * 1e6 / hz))
}

/// Calls one of the three cheap methods, chosen by `i`: true when it was
/// answered, false when the driver refused it as over its in-flight bound
/// (counted, not fatal: an older build does that under this load).
fn cheap_call(id: &IdentityClient, node: &NodeClient, i: usize) -> Res<bool> {
    let outcome = match i % 3 {
        0 => id.probe(&csi::ProbeRequest::new(), opt()).map(drop),
        1 => node
            .node_get_capabilities(&csi::NodeGetCapabilitiesRequest::new(), opt())
            .map(drop),
        _ => node
            .node_get_info(&csi::NodeGetInfoRequest::new(), opt())
            .map(drop),
    };
    match outcome {
        Ok(()) => Ok(true),
        Err(grpcio::Error::RpcFailure(st)) if st.code() == grpcio::RpcStatusCode::RESOURCE_EXHAUSTED => {
            Ok(false)
        }
        Err(e) => Err(format!("cheap call {}: {e}", i % 3)),
    }
}

/// A channel of its own: gRPC shares one connection between channels to the
/// same address unless each keeps a local subchannel pool.
fn own_channel(grpc: &Arc<Environment>, socket: &Path) -> grpcio::Channel {
    ChannelBuilder::new(Arc::clone(grpc))
        .use_local_subchannel_pool(true)
        .connect(&format!("unix:{}", socket.display()))
}

fn measure(
    argv: &[String],
    dir: &Path,
    args: &[String],
    grpc: &Arc<Environment>,
    o: &CheapOpts,
) -> Res<Sample> {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let (proc, socket) = start_driver_program(argv, dir, args)?;
    let pid = proc.pid();
    let mut s = Sample::default();
    let id = IdentityClient::new(channel(grpc, &socket));
    let node = NodeClient::new(channel(grpc, &socket));
    if !cheap_call(&id, &node, 0)? {
        return Err("the first Probe was refused".into());
    }
    s.idle_rss_kib = status_kib(pid, "VmRSS:")?;
    s.threads_idle = status_kib(pid, "Threads:")?;
    // Sequential: one client, one call at a time.
    let mut probe = Vec::new();
    let mut caps = Vec::new();
    for _ in 0..o.sequential {
        let t = Instant::now();
        if !cheap_call(&id, &node, 0)? {
            return Err("a sequential Probe was refused".into());
        }
        probe.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        if !cheap_call(&id, &node, 1)? {
            return Err("a sequential NodeGetCapabilities was refused".into());
        }
        caps.push(t.elapsed().as_secs_f64() * 1e6);
    }
    s.probe_p50_us = percentile(&sorted(probe), 0.5);
    s.caps_p50_us = percentile(&sorted(caps), 0.5);

    // The load: every client connects (one call) before the clock starts.
    let start = Arc::new(Barrier::new(o.clients + 1));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for c in 0..o.clients {
        let (start, stop) = (Arc::clone(&start), Arc::clone(&stop));
        let ch = own_channel(grpc, &socket);
        workers.push(std::thread::spawn(move || -> Res<(Vec<f64>, usize)> {
            let id = IdentityClient::new(ch.clone());
            let node = NodeClient::new(ch);
            let warm = cheap_call(&id, &node, c);
            start.wait();
            warm?;
            let mut lat = Vec::new();
            let mut refused = 0;
            let mut i = c;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                if cheap_call(&id, &node, i)? {
                    lat.push(t.elapsed().as_secs_f64() * 1e6);
                } else {
                    refused += 1;
                }
                i += 1;
            }
            Ok((lat, refused))
        }));
    }
    start.wait();
    let (cpu0, t0) = (cpu_us(pid)?, Instant::now());
    let mut threads_peak = s.threads_idle;
    while t0.elapsed().as_secs_f64() < o.seconds {
        std::thread::sleep(Duration::from_millis(20));
        threads_peak = threads_peak.max(status_kib(pid, "Threads:").unwrap_or(0.0));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut lat = Vec::new();
    let mut failed = None;
    for w in workers {
        match w.join() {
            Ok(Ok((l, refused))) => {
                lat.extend(l);
                s.refused += refused as f64;
            }
            Ok(Err(e)) => failed = Some(e),
            Err(_) => failed = Some("a client thread panicked".into()),
        }
    }
    let (cpu1, elapsed) = (cpu_us(pid)?, t0.elapsed().as_secs_f64());
    if let Some(e) = failed {
        return Err(format!("{e}: {}", proc.log_text()));
    }
    let calls = lat.len().max(1) as f64;
    s.calls = calls;
    s.calls_per_s = calls / elapsed;
    s.cpu_us_per_call = (cpu1.0 + cpu1.1 - cpu0.0 - cpu0.1) / calls;
    s.sys_us_per_call = (cpu1.1 - cpu0.1) / calls;
    let lat = sorted(lat);
    s.p50_us = percentile(&lat, 0.5);
    s.p99_us = percentile(&lat, 0.99);
    s.peak_rss_kib = status_kib(pid, "VmHWM:")?;
    s.threads_peak = threads_peak;
    if s.refused > 0.0 {
        eprintln!(
            "rds-bench: {} refused {} cheap calls with RESOURCE_EXHAUSTED ({} answered)",
            argv.last().map(String::as_str).unwrap_or_default(),
            s.refused,
            lat.len()
        );
    }
    proc.stop();
    Ok(s)
}

fn median_of(samples: &[Sample], f: fn(&Sample) -> f64) -> f64 {
    percentile(&sorted(samples.iter().map(f).collect()), 0.5)
}

/// The figures: medians over the rounds, and new / old ratios when a
/// second binary was given.
pub(super) fn cheap_load(
    bins: &Path,
    work: &Work,
    grpc: &Arc<Environment>,
    o: &CheapOpts,
) -> Res<Vec<Figure>> {
    let dir = work.sub("cheap");
    let sim = start_sim(bins, &dir.join("sim"), 0)?;
    let fabric = make_fabric(bins, &dir.join("fabric-root"), &sim)?;
    work.track_fabric(&fabric.nvme);
    let mut args = controller_args(&sim);
    args.extend(node_args(&fabric));
    let argv_of = |bin: &Path| -> Vec<String> {
        let mut v = o.wrap.clone();
        v.push(bin.display().to_string());
        v
    };
    let new_argv = argv_of(&bins.join("rds-csi"));
    let old_argv = o.compare.as_deref().map(argv_of);
    let (mut new, mut old) = (Vec::new(), Vec::new());
    for round in 0..o.rounds {
        // Alternate which goes first, so neither always meets a warmer machine.
        let order: Vec<bool> = if round % 2 == 0 {
            vec![true, false]
        } else {
            vec![false, true]
        };
        for is_new in order {
            match (is_new, &old_argv) {
                (true, _) => new.push(measure(&new_argv, &dir.join("drv"), &args, grpc, o)?),
                (false, Some(argv)) => old.push(measure(argv, &dir.join("drv"), &args, grpc, o)?),
                (false, None) => {}
            }
        }
    }
    type Get = fn(&Sample) -> f64;
    // key, label, unit, getter, reference target (absolute), the ratio
    // target against the old binary, and whether lower is better.
    let rows: [(&'static str, &'static str, Get, f64, f64, bool); 8] = [
        (
            "cheap_cpu_us_per_call",
            "cheap calls: server CPU per call (µs)",
            |s| s.cpu_us_per_call,
            110.0,
            0.40,
            true,
        ),
        (
            "cheap_calls_per_s",
            "cheap calls/s, 64 clients",
            |s| s.calls_per_s,
            5000.0,
            1.5,
            false,
        ),
        (
            "cheap_p50_us",
            "cheap call p50 under load (µs)",
            |s| s.p50_us,
            f64::INFINITY,
            f64::INFINITY,
            true,
        ),
        (
            "cheap_p99_us",
            "cheap call p99 under load (µs)",
            |s| s.p99_us,
            f64::INFINITY,
            f64::INFINITY,
            true,
        ),
        (
            "probe_p50_us",
            "sequential Probe p50 (µs)",
            |s| s.probe_p50_us,
            539.0,
            0.9,
            true,
        ),
        (
            "node_caps_p50_us",
            "sequential NodeGetCapabilities p50 (µs)",
            |s| s.caps_p50_us,
            517.0,
            0.9,
            true,
        ),
        (
            "cheap_idle_rss_kib",
            "cheap load: idle RSS (KiB)",
            |s| s.idle_rss_kib,
            15.26 * 1024.0,
            1.0,
            true,
        ),
        (
            "cheap_peak_rss_kib",
            "cheap load: peak RSS (KiB)",
            |s| s.peak_rss_kib,
            27.7 * 1024.0,
            1.0,
            true,
        ),
    ];
    let mut figures = Vec::new();
    for (key, label, get, reference, ratio_target, lower) in rows {
        let value = median_of(&new, get);
        let (shown, target, met, detail) = if old.is_empty() {
            let met = if lower {
                value <= reference
            } else {
                value >= reference
            };
            (
                format!("{value:.0}"),
                if reference.is_finite() { "reference" } else { "-" },
                met,
                json!({ "samples": new.iter().map(get).collect::<Vec<_>>(), "reference": reference.is_finite().then_some(reference) }),
            )
        } else {
            let was = median_of(&old, get);
            let ratio = value / was.max(f64::MIN_POSITIVE);
            let met = if lower {
                ratio <= ratio_target
            } else {
                ratio >= ratio_target
            };
            (
                format!("{value:.0} / {was:.0} = {ratio:.2}"),
                if ratio_target.is_finite() { "vs old" } else { "-" },
                met,
                json!({ "new": new.iter().map(get).collect::<Vec<_>>(), "old": old.iter().map(get).collect::<Vec<_>>(), "ratio": ratio, "ratio_target": ratio_target.is_finite().then_some(ratio_target) }),
            )
        };
        figures.push(Figure {
            key,
            label,
            value,
            shown,
            target,
            met,
            detail,
        });
    }
    let threads = format!(
        "threads idle / under load: {:.0} / {:.0}{}",
        median_of(&new, |s| s.threads_idle),
        median_of(&new, |s| s.threads_peak),
        if old.is_empty() {
            String::new()
        } else {
            format!(
                " (old: {:.0} / {:.0})",
                median_of(&old, |s| s.threads_idle),
                median_of(&old, |s| s.threads_peak)
            )
        }
    );
    eprintln!("rds-bench: {threads}");
    figures.push(Figure {
        key: "cheap_threads_peak",
        label: "cheap load: driver threads under load",
        value: median_of(&new, |s| s.threads_peak),
        shown: threads
            .trim_start_matches("threads idle / under load: ")
            .to_string(),
        target: "-",
        met: true,
        detail: json!({
            "idle": new.iter().map(|s| s.threads_idle).collect::<Vec<_>>(),
            "peak": new.iter().map(|s| s.threads_peak).collect::<Vec<_>>(),
            "refused": new.iter().map(|s| s.refused).collect::<Vec<_>>(),
            "calls": new.iter().map(|s| s.calls).collect::<Vec<_>>(),
            "old_calls": old.iter().map(|s| s.calls).collect::<Vec<_>>(),
            "sys_us_per_call": new.iter().map(|s| s.sys_us_per_call).collect::<Vec<_>>(),
            "old_sys_us_per_call": old.iter().map(|s| s.sys_us_per_call).collect::<Vec<_>>(),
            "old_refused": old.iter().map(|s| s.refused).collect::<Vec<_>>(),
        }),
    });
    Ok(figures)
}
