//! Prometheus metrics: the one registry every module records into, the
//! list of metric families (names, types, help), the text exposition
//! format, and the small HTTP endpoint `--metrics-address` serves it on.
//!
//! Recording is a counter bump under a mutex: CSI call rates are a few per
//! second, so nothing cleverer is needed, and no module has to carry a
//! handle around.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use log::{debug, info, warn};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric this driver exports. Names follow Prometheus conventions:
/// `rds_csi_` prefix, `_total` for counters, `_seconds` for durations.
const FAMILIES: &[(&str, Kind, &str)] = &[
    (
        "rds_csi_build_info",
        Kind::Gauge,
        "Build of the running driver (always 1).",
    ),
    (
        "rds_csi_rpc_requests_total",
        Kind::Counter,
        "CSI calls answered, by method and gRPC code.",
    ),
    (
        "rds_csi_rpc_duration_seconds",
        Kind::Histogram,
        "Time to answer a CSI call, by method and gRPC code.",
    ),
    (
        "rds_csi_rpc_in_flight",
        Kind::Gauge,
        "CSI calls being worked on now.",
    ),
    (
        "rds_csi_rds_requests_total",
        Kind::Counter,
        "RouterOS REST requests, by client operation and outcome (after retries).",
    ),
    (
        "rds_csi_rds_retries_total",
        Kind::Counter,
        "RouterOS REST attempts repeated after a transient failure, by operation.",
    ),
    (
        "rds_csi_nvme_connects_total",
        Kind::Counter,
        "NVMe/TCP connects, by outcome (connected, reused, failed).",
    ),
    (
        "rds_csi_nvme_connect_duration_seconds",
        Kind::Histogram,
        "Time from connect to a usable block device.",
    ),
    (
        "rds_csi_nvme_disconnects_total",
        Kind::Counter,
        "NVMe/TCP disconnects, by outcome (ok, failed).",
    ),
    (
        "rds_csi_orphans_cleaned_total",
        Kind::Counter,
        "Stale NVMe/TCP connections under the managed prefix disconnected at start.",
    ),
    (
        "rds_csi_fence_operations_total",
        Kind::Counter,
        "Fencing changes made on the RDS by the controller: export, unexport, allow-list.",
    ),
    (
        "rds_csi_volumes_staged",
        Kind::Gauge,
        "Volumes staged (connected and in use) on this node.",
    ),
    (
        "rds_csi_volumes_abnormal",
        Kind::Gauge,
        "Connected volumes on this node whose controller is not live.",
    ),
];

const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Histogram {
    /// Cumulative counts per bucket of `BUCKETS`.
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

/// A gauge whose samples are computed when Prometheus scrapes.
type GaugeFn = Box<dyn Fn() -> Vec<(Labels, f64)> + Send + Sync>;

#[derive(Default)]
struct Registry {
    values: Mutex<BTreeMap<(&'static str, Labels), f64>>,
    histograms: Mutex<BTreeMap<(&'static str, Labels), Histogram>>,
    gauge_fns: Mutex<Vec<(&'static str, GaugeFn)>>,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

fn family(name: &str) -> Option<Kind> {
    FAMILIES.iter().find(|(n, _, _)| *n == name).map(|(_, k, _)| *k)
}

/// Adds 1 to a counter.
pub fn inc(name: &'static str, pairs: &[(&'static str, &str)]) {
    add(name, pairs, 1.0);
}

/// Adds `by` to a counter, or sets nothing if `name` is not a known family
/// (a typo must not create a metric nobody documented).
pub fn add(name: &'static str, pairs: &[(&'static str, &str)], by: f64) {
    debug_assert!(family(name).is_some(), "unknown metric {name}");
    let mut v = registry().values.lock().unwrap_or_else(|p| p.into_inner());
    *v.entry((name, labels(pairs))).or_insert(0.0) += by;
}

/// Sets a gauge.
pub fn set(name: &'static str, pairs: &[(&'static str, &str)], value: f64) {
    debug_assert!(family(name).is_some(), "unknown metric {name}");
    let mut v = registry().values.lock().unwrap_or_else(|p| p.into_inner());
    v.insert((name, labels(pairs)), value);
}

/// Records one observation in a histogram.
pub fn observe(name: &'static str, pairs: &[(&'static str, &str)], seconds: f64) {
    debug_assert!(family(name) == Some(Kind::Histogram), "unknown histogram {name}");
    let mut h = registry().histograms.lock().unwrap_or_else(|p| p.into_inner());
    let entry = h.entry((name, labels(pairs))).or_insert_with(|| Histogram {
        buckets: vec![0; BUCKETS.len()],
        ..Default::default()
    });
    for (i, bound) in BUCKETS.iter().enumerate() {
        if seconds <= *bound {
            entry.buckets[i] += 1;
        }
    }
    entry.sum += seconds;
    entry.count += 1;
}

/// Registers a gauge computed at scrape time (e.g. volumes staged, read
/// from the host so that it is right after a restart too).
pub fn register_gauge_fn(name: &'static str, f: impl Fn() -> Vec<(Labels, f64)> + Send + Sync + 'static) {
    debug_assert!(family(name) == Some(Kind::Gauge), "unknown gauge {name}");
    registry()
        .gauge_fns
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((name, Box::new(f)));
}

/// Records the build info gauge.
/// Counts one fencing change on the RDS (`export`, `unexport`, `allow-list`).
pub fn fence_operation(operation: &str) {
    inc("rds_csi_fence_operations_total", &[("operation", operation)]);
}

pub fn record_build_info() {
    set("rds_csi_build_info", &[("version", &crate::version())], 1.0);
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn label_text(l: &[(&'static str, String)], extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = l.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn number(v: f64) -> String {
    if v.is_finite() && v == v.trunc() && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The registry in the Prometheus text exposition format (version 0.0.4).
pub fn render() -> String {
    let reg = registry();
    // Scrape-time gauges first, without holding the value lock.
    let computed: Vec<(&'static str, Vec<(Labels, f64)>)> = {
        let fns = reg.gauge_fns.lock().unwrap_or_else(|p| p.into_inner());
        fns.iter().map(|(name, f)| (*name, f())).collect()
    };
    let values = reg.values.lock().unwrap_or_else(|p| p.into_inner());
    let histograms = reg.histograms.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = String::new();
    for (name, kind, help) in FAMILIES {
        let kind_text = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind_text}");
        for ((n, l), v) in values.iter() {
            if n == name {
                let _ = writeln!(out, "{name}{} {}", label_text(l, None), number(*v));
            }
        }
        for (n, samples) in &computed {
            if n == name {
                for (l, v) in samples {
                    let _ = writeln!(out, "{name}{} {}", label_text(l, None), number(*v));
                }
            }
        }
        for ((n, l), h) in histograms.iter() {
            if n != name {
                continue;
            }
            for (bound, count) in BUCKETS.iter().zip(&h.buckets) {
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {count}",
                    label_text(l, Some(("le", number(*bound))))
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{} {}",
                label_text(l, Some(("le", "+Inf".into()))),
                h.count
            );
            let _ = writeln!(out, "{name}_sum{} {}", label_text(l, None), h.sum);
            let _ = writeln!(out, "{name}_count{} {}", label_text(l, None), h.count);
        }
    }
    out
}

/// Errors of starting the metrics endpoint.
#[derive(Debug)]
pub enum MetricsError {
    Bind(SocketAddr, io::Error),
    Spawn(io::Error),
}

impl std::fmt::Display for MetricsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsError::Bind(a, _) => write!(f, "cannot serve metrics on {a} (--metrics-address)"),
            MetricsError::Spawn(_) => f.write_str("cannot start the metrics thread"),
        }
    }
}

impl std::error::Error for MetricsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MetricsError::Bind(_, e) | MetricsError::Spawn(e) => Some(e),
        }
    }
}

/// Connections served at once; one more is closed at once. Prometheus
/// scrapes every few seconds over one connection; a few more leave room
/// for a second scraper and a curl, and the bound keeps a flood of idle
/// connections from costing a thread each.
const MAX_CONNECTIONS: usize = 8;

/// How long one connection may take to send its request and get the
/// answer, in all: a slow or idle client is closed after it, so it never
/// holds a thread (or, before, every other scrape) for long.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);

/// Stack of a connection thread: it parses a request head and renders the
/// registry into a heap string.
const CONNECTION_STACK_BYTES: usize = 128 * 1024;

/// Serves `GET /metrics` on `addr`; returns the bound address (port 0
/// picks a free one). Each connection is served on a thread of its own
/// (at most [`MAX_CONNECTIONS`] at once) within [`REQUEST_DEADLINE`], so an
/// idle or dripping connection never delays a scrape.
pub fn serve(addr: SocketAddr) -> Result<SocketAddr, MetricsError> {
    let listener = TcpListener::bind(addr).map_err(|e| MetricsError::Bind(addr, e))?;
    let bound = listener.local_addr().map_err(|e| MetricsError::Bind(addr, e))?;
    record_build_info();
    std::thread::Builder::new()
        .name("metrics".into())
        .stack_size(CONNECTION_STACK_BYTES)
        .spawn(move || accept_loop(listener))
        .map_err(MetricsError::Spawn)?;
    info!("serving metrics on http://{bound}/metrics");
    Ok(bound)
}

fn accept_loop(listener: TcpListener) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                warn!("metrics: accept failed: {e}");
                // EMFILE and the like: do not spin on them.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            debug!("metrics: {MAX_CONNECTIONS} connections busy; closing a new one");
            drop(stream);
            continue;
        }
        let slot = ActiveSlot(Arc::clone(&active));
        let spawned = std::thread::Builder::new()
            .name("metrics-conn".into())
            .stack_size(CONNECTION_STACK_BYTES)
            .spawn(move || {
                let _slot = slot;
                if let Err(e) = answer(stream, Instant::now() + REQUEST_DEADLINE) {
                    debug!("metrics: {e}");
                }
            });
        if let Err(e) = spawned {
            // The closure, and with it the slot, was dropped.
            warn!("metrics: cannot start a connection thread: {e}");
        }
    }
}

/// Counts one served connection for as long as it lives.
struct ActiveSlot(Arc<AtomicUsize>);

impl Drop for ActiveSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The time left before `deadline`, or a timeout error once it passed.
fn left(deadline: Instant) -> io::Result<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "request deadline passed"))
}

/// Reads one request head and answers it, all before `deadline`; the
/// connection is then closed.
fn answer(mut stream: TcpStream, deadline: Instant) -> io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let (method, path) = loop {
        // Each read waits only for what is left of the whole deadline, so
        // a byte every second cannot stretch the request.
        stream.set_read_timeout(Some(left(deadline)?))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                break (
                    req.method.unwrap_or("").to_string(),
                    req.path.unwrap_or("").to_string(),
                );
            }
            Ok(httparse::Status::Partial) if buf.len() < 16 * 1024 => continue,
            _ => {
                return respond(
                    &mut stream,
                    deadline,
                    "400 Bad Request",
                    "text/plain",
                    "bad request\n",
                )
            }
        }
    };
    match (method.as_str(), path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => respond(
            &mut stream,
            deadline,
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            &render(),
        ),
        ("GET", _) => respond(
            &mut stream,
            deadline,
            "404 Not Found",
            "text/plain",
            "metrics are at /metrics\n",
        ),
        _ => respond(
            &mut stream,
            deadline,
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n",
        ),
    }
}

fn respond(
    stream: &mut TcpStream,
    deadline: Instant,
    status: &str,
    content_type: &str,
    body: &str,
) -> io::Result<()> {
    // A reader that stops reading gets what is left of the deadline, and at
    // least a moment to take an answer already rendered.
    stream.set_write_timeout(Some(left(deadline).unwrap_or(Duration::from_millis(100))))?;
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_histograms_and_escaping_render_in_text_format() {
        inc(
            "rds_csi_rpc_requests_total",
            &[("method", "UnitTestMethod"), ("code", "OK")],
        );
        inc(
            "rds_csi_rpc_requests_total",
            &[("method", "UnitTestMethod"), ("code", "OK")],
        );
        observe(
            "rds_csi_rpc_duration_seconds",
            &[("method", "UnitTestMethod"), ("code", "OK")],
            0.2,
        );
        set("rds_csi_build_info", &[("version", "a\"b\\c")], 1.0);
        let text = render();
        assert!(
            text.contains("# TYPE rds_csi_rpc_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains("rds_csi_rpc_requests_total{method=\"UnitTestMethod\",code=\"OK\"} 2"),
            "{text}"
        );
        assert!(text.contains(
            "rds_csi_rpc_duration_seconds_bucket{method=\"UnitTestMethod\",code=\"OK\",le=\"0.1\"} 0"
        ));
        assert!(text.contains(
            "rds_csi_rpc_duration_seconds_bucket{method=\"UnitTestMethod\",code=\"OK\",le=\"0.25\"} 1"
        ));
        assert!(text.contains(
            "rds_csi_rpc_duration_seconds_bucket{method=\"UnitTestMethod\",code=\"OK\",le=\"+Inf\"} 1"
        ));
        assert!(text.contains("rds_csi_rpc_duration_seconds_count{method=\"UnitTestMethod\",code=\"OK\"} 1"));
        assert!(
            text.contains("rds_csi_build_info{version=\"a\\\"b\\\\c\"} 1"),
            "{text}"
        );
        // Every family has HELP and TYPE lines, once.
        for (name, _, _) in FAMILIES {
            assert_eq!(text.matches(&format!("# TYPE {name} ")).count(), 1, "{name}");
        }
    }

    #[test]
    fn scrape_time_gauges_are_computed_on_render() {
        register_gauge_fn("rds_csi_volumes_abnormal", || {
            vec![(vec![("unit", "test".into())], 3.0)]
        });
        assert!(render().contains("rds_csi_volumes_abnormal{unit=\"test\"} 3"));
    }
}
