//! `rds-sim`: a RouterOS REST emulator of a MikroTik RDS with real sparse backing files, for tests and demos. Command line, listener, connections and signals.
//!
//! It is an independent implementation of RouterOS behaviour (it shares no
//! code with the driver's client), so tests of the client against it mean
//! something. Where RouterOS's behaviour is not documented, the emulator's
//! choice is written beside the code in `state.rs`.
//!
//! Control endpoints (not RouterOS), on the same listener and with the same
//! Basic auth; JSON numbers and booleans here, not RouterOS strings:
//! - `POST /sim/fault` `{"latency_ms": 100, "fail_next": 2, "fail_kind":
//!   "5xx"|"drop"|"session-closed"|"no-such-command"|"not-allowed",
//!   "fail_method": "DELETE", "down_for_ms": 3000, "no_space": true,
//!   "file_size": "apply"|"refuse"|"ignore", "file_size_units": true}`:
//!   any subset (`file_size_units` prints disks' `file-size` as the CLI
//!   does, `50.0GiB`); answers the
//!   faults now in force. `fail_method` makes only requests of that HTTP
//!   method count down `fail_next`; `pass_next` serves that many of them
//!   first (a call stopped right after its N-th change). `down_for_ms` closes every
//!   connection and refuses new ones for that long, after answering.
//! - `GET /sim/fault`, `POST /sim/reset-faults`.
//! - `GET /sim/stats`: `connections`, `tls_handshakes`, `rest_connections`
//!   (connections that carried a `/rest` request), `requests`,
//!   `rest_requests`, `injected_failures`, `in_flight` and `peak_in_flight`
//!   (`/rest` requests being handled at once); `POST /sim/reset-peak`
//!   restarts the peak.
//! - `GET /sim/exports`: the content of `<data-dir>/exports.json`.
//! - `GET /sim/nvmet`, `POST /sim/nvmet {"outage": true|false}` (with
//!   `--nvmet`): what the kernel target serves; an outage unlinks every
//!   export from its port until it is ended (see `nvmet.rs`).
//!
//! Faults apply to `/rest` requests only, never to `/sim`.

mod api;
mod faults;
mod http;
mod nvmet;
mod state;
mod tls;

use std::fmt;
use std::io::{BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::{App, Outcome};
use faults::{Control, FailKind, Faults, FileSizeMode};
use state::{Config, Store};

/// A keep-alive connection idle this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

const USAGE: &str = "\
rds-sim: a RouterOS REST emulator of a MikroTik RDS, with real sparse backing files

usage: rds-sim --listen ADDR:PORT --data-dir DIR --pool-size BYTES --username NAME
               --password-file FILE (--self-signed | --tls-cert FILE --tls-key FILE | --plain-http)
               [options]

required:
  --listen ADDR:PORT      where to listen; port 0 picks a free one (the real one is printed)
  --data-dir DIR          state.json, exports.json, files/ (the sparse disk images), tls/,
                          nvmet.json (with --nvmet: what it made in configfs)
  --pool-size BYTES       capacity of the storage pool (plain bytes or K/M/G/T, binary)
  --username NAME         the one RouterOS user accepted (Basic auth)
  --password-file FILE    its password (trailing newline ignored; re-read on every request)
one of:
  --self-signed           generate (once per data dir) and use a self-signed certificate
  --tls-cert FILE --tls-key FILE   use this PEM certificate chain and key
  --plain-http            no TLS
options:
  --tls-san NAME          extra DNS name or IP for the self-signed certificate (repeatable)
  --pool-slot NAME        slot and mount point of the pool disk (default storage-pool)
  --pool-fs btrfs|xfs     filesystem the pool reports (default btrfs); a btrfs pool has
                          /disk/btrfs/subvolume (7.18+), with real subvolumes and snapshots
                          when --data-dir is on a btrfs filesystem (btrfs-progs)
  --pool-fs-label NAME    the pool filesystem's fs-label (default <pool-slot>-fs, as RouterOS)
  --version-string TEXT   what /rest/system/resource reports (default \"7.24.4 (stable)\");
                          below 7.17 file-path/file-size and below 7.21
                          nvme-tcp-server-nqn are unknown parameters
  --board-name TEXT       default RDS2216
  --nvme-address ADDR     address the NVMe/TCP exports claim (default the listen IP)
  --max-slot-len N        longest slot accepted (default 32, as RouterOS 7.24)
  --nvmet                 also export through the kernel's NVMe/TCP target (configfs): a
                          subsystem per exported disk, a port per address:port; restored
                          at start; only what rds-sim made is ever changed or removed
  --nvmet-root DIR        the nvmet configfs directory (default /sys/kernel/config/nvmet)
faults (also settable at run time with POST /sim/fault):
  --latency-ms N          added latency per /rest request
  --fail-next N           fail the next N /rest requests ...
  --fail-kind KIND        ... with 5xx (503), drop (close without answer), session-closed,
                          no-such-command (400 `no such command or directory (<verb>)`) or
                          not-allowed (500 `std failure: not allowed (9)`: a user without
                          the api policy)
  --fail-method METHOD    count only requests with this HTTP method (e.g. DELETE)
  --file-size MODE        what PATCH file-size does: apply (default), refuse (400) or
                          ignore (answers, size unchanged)
  --down-for-ms N         refuse connections for N ms after start
  --no-space              answer `not enough space` to every disk create and grow

output: `fingerprint sha256:<64 hex>` (with TLS), then `listening <url>`, on stdout.
SIGTERM or SIGINT stops it cleanly; state is saved after every change.
With --nvmet, SIGUSR1 begins an outage (every export unlinked) and SIGUSR2 ends it.

control endpoints (not RouterOS; same auth; JSON numbers/booleans):
  POST /sim/fault {\"latency_ms\":N,\"pass_next\":N,\"fail_next\":N,\"fail_kind\":\"5xx|drop|session-closed|
                   no-such-command|not-allowed\",\"fail_method\":\"DELETE\",\"down_for_ms\":N,
                   \"no_space\":bool,\"file_size\":\"apply|refuse|ignore\",
                   \"file_size_units\":bool (print file-size as 50.0GiB)}   (any subset)
  GET /sim/fault   POST /sim/reset-faults
  GET /sim/stats   connections, tls_handshakes, rest_connections, requests, rest_requests,
                   injected_failures, in_flight, peak_in_flight
  POST /sim/reset-peak   restart peak_in_flight
  GET /sim/exports the exports.json content: {\"nvme_address\":..., \"exports\":[{\"nqn\",
                   \"port\",\"slot\",\"backing_file\",\"size\"}]}
  GET /sim/nvmet   POST /sim/nvmet {\"outage\":bool}   (--nvmet) what the kernel serves;
                   an outage unlinks every export from its port until ended
";

/// Why the emulator could not start.
#[derive(Debug)]
enum Error {
    ParseArgs { reason: String },
    Bind { addr: String, source: std::io::Error },
    PrepareDataDir { path: PathBuf, source: std::io::Error },
    ReadPassword { path: PathBuf, source: std::io::Error },
    OpenStore { source: state::Error },
    OpenNvmet { source: nvmet::Error },
    SetUpTls { source: tls::Error },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ParseArgs { reason } => write!(f, "{reason} (see --help)"),
            Error::Bind { addr, .. } => write!(f, "cannot listen on {addr}"),
            Error::PrepareDataDir { path, .. } => {
                write!(f, "cannot use the data directory {}", path.display())
            }
            Error::ReadPassword { path, .. } => {
                write!(f, "cannot read the password file {}", path.display())
            }
            Error::OpenStore { .. } => f.write_str("cannot load the saved state"),
            Error::OpenNvmet { .. } => f.write_str("cannot serve through the kernel target"),
            Error::SetUpTls { .. } => f.write_str("cannot set up tls"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::ParseArgs { .. } => None,
            Error::Bind { source, .. }
            | Error::PrepareDataDir { source, .. }
            | Error::ReadPassword { source, .. } => Some(source),
            Error::OpenStore { source } => Some(source),
            Error::OpenNvmet { source } => Some(source),
            Error::SetUpTls { source } => Some(source),
        }
    }
}

enum Mode {
    SelfSigned,
    Files { cert: PathBuf, key: PathBuf },
    Plain,
}

struct Options {
    listen: String,
    data_dir: PathBuf,
    pool_size: u64,
    username: String,
    password_file: PathBuf,
    mode: Mode,
    tls_sans: Vec<String>,
    pool_slot: String,
    pool_fs: String,
    pool_fs_label: Option<String>,
    version: String,
    board_name: String,
    nvme_address: Option<String>,
    max_slot_len: usize,
    faults: Faults,
    down_for: Option<Duration>,
    /// `--nvmet`: the configfs root to serve exports through.
    nvmet: Option<PathBuf>,
}

fn usage_error(reason: impl Into<String>) -> Error {
    Error::ParseArgs {
        reason: reason.into(),
    }
}

/// The value of the current flag, as UTF-8.
fn value(parser: &mut lexopt::Parser) -> Result<String, Error> {
    parser
        .value()
        .map_err(|e| usage_error(e.to_string()))?
        .into_string()
        .map_err(|_| usage_error("arguments must be valid utf-8"))
}

fn parse_args() -> Result<Options, Error> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let mut listen = None;
    let mut data_dir = None;
    let mut pool_size = None;
    let mut username = None;
    let mut password_file = None;
    let (mut self_signed, mut plain) = (false, false);
    let (mut cert, mut key) = (None, None);
    let mut opts_sans = Vec::new();
    let mut pool_slot = "storage-pool".to_string();
    let mut pool_fs = "btrfs".to_string();
    let mut pool_fs_label = None;
    let mut version = "7.24.4 (stable)".to_string();
    let mut board_name = "RDS2216".to_string();
    let mut nvme_address = None;
    let mut max_slot_len = 32usize;
    let mut faults = Faults::default();
    let mut down_for = None;
    let (mut nvmet, mut nvmet_root) = (false, None);
    let bad = |e: lexopt::Error| usage_error(e.to_string());
    while let Some(arg) = parser.next().map_err(bad)? {
        let number = |flag: &str, text: String| -> Result<u64, Error> {
            text.parse::<u64>()
                .map_err(|_| usage_error(format!("--{flag} needs a whole number, not {text:?}")))
        };
        match arg {
            Long("help") | Short('h') => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            Long("listen") => listen = Some(value(&mut parser)?),
            Long("data-dir") => data_dir = Some(PathBuf::from(value(&mut parser)?)),
            Long("pool-size") => {
                let text = value(&mut parser)?;
                pool_size = Some(state::parse_size(&text).ok_or_else(|| {
                    usage_error(format!("--pool-size needs bytes or K/M/G/T, not {text:?}"))
                })?)
            }
            Long("username") => username = Some(value(&mut parser)?),
            Long("password-file") => password_file = Some(PathBuf::from(value(&mut parser)?)),
            Long("self-signed") => self_signed = true,
            Long("plain-http") => plain = true,
            Long("tls-cert") => cert = Some(PathBuf::from(value(&mut parser)?)),
            Long("tls-key") => key = Some(PathBuf::from(value(&mut parser)?)),
            Long("tls-san") => opts_sans.push(value(&mut parser)?),
            Long("pool-slot") => pool_slot = value(&mut parser)?,
            Long("pool-fs") => {
                pool_fs = value(&mut parser)?;
                if pool_fs != "btrfs" && pool_fs != "xfs" {
                    return Err(usage_error("--pool-fs must be btrfs or xfs"));
                }
            }
            Long("pool-fs-label") => pool_fs_label = Some(value(&mut parser)?),
            Long("version-string") => version = value(&mut parser)?,
            Long("board-name") => board_name = value(&mut parser)?,
            Long("nvme-address") => nvme_address = Some(value(&mut parser)?),
            Long("max-slot-len") => max_slot_len = number("max-slot-len", value(&mut parser)?)? as usize,
            Long("latency-ms") => {
                faults.latency = Duration::from_millis(number("latency-ms", value(&mut parser)?)?)
            }
            Long("fail-next") => faults.fail_next = number("fail-next", value(&mut parser)?)?,
            Long("fail-kind") => {
                let text = value(&mut parser)?;
                faults.fail_kind = FailKind::parse(&text).ok_or_else(|| {
                    usage_error(
                        "--fail-kind must be 5xx, drop, session-closed, no-such-command or not-allowed",
                    )
                })?
            }
            Long("fail-method") => faults.fail_method = Some(value(&mut parser)?.to_ascii_uppercase()),
            Long("file-size") => {
                let text = value(&mut parser)?;
                faults.file_size = FileSizeMode::parse(&text)
                    .ok_or_else(|| usage_error("--file-size must be apply, refuse or ignore"))?
            }
            Long("down-for-ms") => {
                down_for = Some(Duration::from_millis(number("down-for-ms", value(&mut parser)?)?))
            }
            Long("no-space") => faults.no_space = true,
            Long("nvmet") => nvmet = true,
            Long("nvmet-root") => nvmet_root = Some(PathBuf::from(value(&mut parser)?)),
            other => return Err(usage_error(other.unexpected().to_string())),
        }
    }
    let need = |name: &str| usage_error(format!("--{name} is required"));
    let mode = match (self_signed, plain, cert, key) {
        (true, false, None, None) => Mode::SelfSigned,
        (false, true, None, None) => Mode::Plain,
        (false, false, Some(cert), Some(key)) => Mode::Files { cert, key },
        _ => {
            return Err(usage_error(
                "give exactly one of --self-signed, --plain-http or --tls-cert with --tls-key",
            ))
        }
    };
    if pool_slot.is_empty() || pool_slot.contains('/') {
        return Err(usage_error("--pool-slot must be a plain name"));
    }
    Ok(Options {
        listen: listen.ok_or_else(|| need("listen"))?,
        data_dir: data_dir.ok_or_else(|| need("data-dir"))?,
        pool_size: pool_size.ok_or_else(|| need("pool-size"))?,
        username: username.ok_or_else(|| need("username"))?,
        password_file: password_file.ok_or_else(|| need("password-file"))?,
        mode,
        tls_sans: opts_sans,
        pool_slot,
        pool_fs,
        pool_fs_label,
        version,
        board_name,
        nvme_address,
        max_slot_len,
        faults,
        down_for,
        nvmet: nvmet_target(nvmet, nvmet_root)?,
    })
}

/// `--nvmet [--nvmet-root DIR]` → where the kernel target is.
fn nvmet_target(on: bool, root: Option<PathBuf>) -> Result<Option<PathBuf>, Error> {
    match (on, root) {
        (false, Some(_)) => Err(usage_error("--nvmet-root needs --nvmet")),
        (false, None) => Ok(None),
        (true, root) => Ok(Some(root.unwrap_or_else(|| PathBuf::from(nvmet::DEFAULT_ROOT)))),
    }
}

/// Blocks SIGTERM, SIGINT, SIGUSR1 and SIGUSR2 in this thread (and so in every thread started
/// later), to be taken with `sigwait` by one thread.
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t owned by this frame; the signal
    // numbers are valid; pthread_sigmask only reads `set`.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    set
}

/// Waits for SIGTERM/SIGINT, then exits once no change is half-done (the
/// store lock is held by every change). SIGUSR1/SIGUSR2 begin/end an
/// `--nvmet` outage (for clients without an HTTP client, such as a VM's
/// shell).
fn stop_on_signal(set: libc::sigset_t, app: Arc<App>) {
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is an initialised sigset_t and `sig` a valid out
        // pointer, both alive for the call.
        let rc = unsafe { libc::sigwait(&set, &mut sig) };
        if rc == 0 && (sig == libc::SIGUSR1 || sig == libc::SIGUSR2) {
            nvmet::outage_signal(&app, sig == libc::SIGUSR1);
            continue;
        }
        if rc == 0 && (sig == libc::SIGTERM || sig == libc::SIGINT) {
            let _store = app.store();
            log::info!("stopping on signal {sig}");
            let _ = std::io::stdout().flush();
            std::process::exit(0);
        }
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    if let Err(e) = run() {
        let mut text = format!("rds-sim: error: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        eprintln!("{text}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), Error> {
    let opts = parse_args()?;
    let signals = block_stop_signals();

    std::fs::create_dir_all(&opts.data_dir).map_err(|source| Error::PrepareDataDir {
        path: opts.data_dir.clone(),
        source,
    })?;
    let data_dir = opts
        .data_dir
        .canonicalize()
        .map_err(|source| Error::PrepareDataDir {
            path: opts.data_dir.clone(),
            source,
        })?;
    // Fail at start, not at the first request, if the password is unreadable.
    std::fs::read_to_string(&opts.password_file).map_err(|source| Error::ReadPassword {
        path: opts.password_file.clone(),
        source,
    })?;

    let addr = opts
        .listen
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| usage_error(format!("--listen {:?} is not ADDR:PORT", opts.listen)))?;
    let listener = TcpListener::bind(addr).map_err(|source| Error::Bind {
        addr: opts.listen.clone(),
        source,
    })?;
    let local = listener.local_addr().map_err(|source| Error::Bind {
        addr: opts.listen.clone(),
        source,
    })?;
    let shown_ip = if local.ip().is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        local.ip()
    };

    let identity = match &opts.mode {
        Mode::Plain => None,
        Mode::Files { cert, key } => {
            Some(tls::from_files(cert, key).map_err(|source| Error::SetUpTls { source })?)
        }
        Mode::SelfSigned => {
            let mut names = vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
                "::1".to_string(),
            ];
            if !local.ip().is_unspecified() && !local.ip().is_loopback() {
                names.push(local.ip().to_string());
            }
            names.extend(opts.tls_sans.iter().cloned());
            Some(tls::self_signed(&data_dir, &names).map_err(|source| Error::SetUpTls { source })?)
        }
    };

    let mut store = Store::open(Config {
        data_dir: data_dir.clone(),
        pool_slot: opts.pool_slot.clone(),
        pool_fs: opts.pool_fs.clone(),
        pool_fs_label: opts
            .pool_fs_label
            .clone()
            .unwrap_or_else(|| format!("{}-fs", opts.pool_slot)),
        pool_size: opts.pool_size,
        version: opts.version.clone(),
        board_name: opts.board_name.clone(),
        nvme_address: opts.nvme_address.clone().unwrap_or_else(|| shown_ip.to_string()),
        max_slot_len: opts.max_slot_len,
    })
    .map_err(|source| Error::OpenStore { source })?;
    if let Some(root) = &opts.nvmet {
        let target = nvmet::Nvmet::open(root, &data_dir).map_err(|source| Error::OpenNvmet { source })?;
        store.attach_nvmet(target);
    }

    let control = Control::new(opts.faults.clone());
    if let Some(down_for) = opts.down_for {
        let body = serde_json::json!({ "down_for_ms": down_for.as_millis() as u64 });
        if let Some(map) = body.as_object() {
            let _ = control.set_faults(map);
        }
    }
    let app = Arc::new(App {
        store: Mutex::new(store),
        control,
        username: opts.username.clone(),
        password_file: opts.password_file.clone(),
    });
    {
        let app = app.clone();
        std::thread::spawn(move || stop_on_signal(signals, app));
    }

    let scheme = if identity.is_some() { "https" } else { "http" };
    let mut out = std::io::stdout();
    if let Some(id) = &identity {
        let _ = writeln!(out, "fingerprint {}", tls::format_fingerprint(&id.fingerprint));
    }
    let shown = SocketAddr::new(shown_ip, local.port());
    let _ = writeln!(out, "listening {scheme}://{shown}");
    let _ = out.flush();
    log::info!("listening on {scheme}://{shown}");

    accept_loop(app, local, listener, identity.map(|i| i.config));
    Ok(())
}

/// Accepts connections (a thread each) for ever; while "down", closes the
/// listener so connections are refused, then binds the same address again.
fn accept_loop(
    app: Arc<App>,
    addr: SocketAddr,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let mut listener = Some(listener);
    loop {
        if app.control.is_down() {
            if listener.take().is_some() {
                app.control.cut_all();
                log::info!("down: refusing connections");
            }
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let Some(l) = &listener else {
            match TcpListener::bind(addr) {
                Ok(l) => {
                    log::info!("up: accepting connections again");
                    listener = Some(l);
                }
                Err(e) => {
                    log::warn!("cannot listen on {addr} again yet: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            continue;
        };
        // Poll with a timeout so going down is noticed without a connection.
        let mut pfd = libc::pollfd {
            fd: l.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd that outlives the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, 100) };
        if ready <= 0 {
            continue;
        }
        match l.accept() {
            Ok((stream, peer)) => {
                let app = app.clone();
                let tls = tls.clone();
                std::thread::spawn(move || {
                    log::debug!("connection from {peer}");
                    serve_connection(&app, stream, tls);
                });
            }
            Err(e) => log::debug!("accept failed: {e}"),
        }
    }
}

fn serve_connection(app: &App, stream: TcpStream, tls: Option<Arc<rustls::ServerConfig>>) {
    use std::sync::atomic::Ordering;
    let stats = &app.control.stats;
    stats.connections.fetch_add(1, Ordering::Relaxed);
    if app.control.is_down() {
        return;
    }
    let Ok(raw) = stream.try_clone() else {
        return;
    };
    let registration = app.control.register(&stream);
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    match tls {
        None => serve_requests(app, stream, &raw),
        Some(config) => match rustls::ServerConnection::new(config) {
            Ok(conn) => {
                let mut tls_stream = rustls::StreamOwned::new(conn, stream);
                let mut ok = true;
                while tls_stream.conn.is_handshaking() {
                    if let Err(e) = tls_stream.conn.complete_io(&mut tls_stream.sock) {
                        log::debug!("tls handshake failed: {e}");
                        ok = false;
                        break;
                    }
                }
                if ok {
                    stats.tls_handshakes.fetch_add(1, Ordering::Relaxed);
                    serve_requests(app, tls_stream, &raw);
                }
            }
            Err(e) => log::warn!("cannot start a tls session: {e}"),
        },
    }
    app.control.unregister(registration);
    let _ = raw.shutdown(Shutdown::Both);
}

fn serve_requests<S: Read + Write>(app: &App, stream: S, raw: &TcpStream) {
    let mut reader = BufReader::new(stream);
    let mut rest_seen = false;
    loop {
        let req = match http::read_request(&mut reader) {
            Ok(Some(req)) => req,
            Ok(None) => break,
            Err(http::Error::ParseRequest { reason }) => {
                let resp = api::ros_error(400, Some(reason));
                let _ = http::write_response(reader.get_mut(), &resp, false);
                break;
            }
            Err(e) => {
                log::debug!("{e}");
                break;
            }
        };
        if app.control.is_down() {
            break;
        }
        log::debug!("{} {}", req.method, req.path);
        match app.handle(&req, &mut rest_seen) {
            Outcome::Respond(resp) => {
                if http::write_response(reader.get_mut(), &resp, req.keep_alive).is_err() || !req.keep_alive {
                    break;
                }
            }
            Outcome::Drop => {
                let _ = raw.shutdown(Shutdown::Both);
                break;
            }
            Outcome::RespondThenGoDown(resp) => {
                let _ = http::write_response(reader.get_mut(), &resp, false);
                app.control.cut_all();
                break;
            }
        }
    }
}
