//! Fault injection and counters of the emulator: latency, failing the next requests, being down, `not enough space`, and what tests count (connections, handshakes, requests).

use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

/// How an injected failure looks to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailKind {
    /// `503 Service Unavailable`.
    Status5xx,
    /// The connection is closed without an answer.
    Drop,
    /// `400` with RouterOS's detail `Session closed`.
    SessionClosed,
    /// `400` `no such command or directory (<verb>)`: what RouterOS says for
    /// a menu or command it lacks (a wrong path, a missing package).
    NoSuchCommand,
    /// `500` `std failure: not allowed (9)`: a user without the `api`
    /// policy, as RouterOS 7.24 answers it.
    NotAllowed,
}

impl FailKind {
    pub fn parse(text: &str) -> Option<FailKind> {
        match text {
            "5xx" | "503" => Some(FailKind::Status5xx),
            "drop" => Some(FailKind::Drop),
            "session-closed" => Some(FailKind::SessionClosed),
            "no-such-command" => Some(FailKind::NoSuchCommand),
            "not-allowed" => Some(FailKind::NotAllowed),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FailKind::Status5xx => "5xx",
            FailKind::Drop => "drop",
            FailKind::SessionClosed => "session-closed",
            FailKind::NoSuchCommand => "no-such-command",
            FailKind::NotAllowed => "not-allowed",
        }
    }
}

/// What a `PATCH file-size` does: RouterOS's reference does not document
/// growing a file disk, so the client must cope with a box that refuses or
/// silently ignores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileSizeMode {
    Apply,
    /// `400 failure: cannot change file-size` (a guessed wording).
    Refuse,
    /// Answers as if applied but the size stays.
    Ignore,
}

impl FileSizeMode {
    pub fn parse(text: &str) -> Option<FileSizeMode> {
        match text {
            "apply" => Some(FileSizeMode::Apply),
            "refuse" => Some(FileSizeMode::Refuse),
            "ignore" => Some(FileSizeMode::Ignore),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FileSizeMode::Apply => "apply",
            FileSizeMode::Refuse => "refuse",
            FileSizeMode::Ignore => "ignore",
        }
    }
}

/// The faults in force.
#[derive(Debug, Clone)]
pub struct Faults {
    pub latency: Duration,
    /// Matching requests served before `fail_next` starts failing them, so
    /// a test can stop a call after exactly its N-th change.
    pub pass_next: u64,
    pub fail_next: u64,
    pub fail_kind: FailKind,
    /// Only requests with this HTTP method count down `fail_next` (all
    /// when `None`), so a test can fail the DELETE of a teardown and not
    /// the look-up before it.
    pub fail_method: Option<String>,
    pub down_until: Option<Instant>,
    pub no_space: bool,
    pub file_size: FileSizeMode,
    /// Print `file-size` as the CLI does (`50.0GiB`) instead of bytes: how
    /// REST renders it on a real box is unverified, so the client must
    /// cope with either.
    pub file_size_units: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency: Duration::ZERO,
            pass_next: 0,
            fail_next: 0,
            fail_kind: FailKind::Status5xx,
            fail_method: None,
            down_until: None,
            no_space: false,
            file_size: FileSizeMode::Apply,
            file_size_units: false,
        }
    }
}

/// A refused `/sim/fault` body.
#[derive(Debug)]
pub enum Error {
    ParseFault { field: &'static str },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::ParseFault { field } => write!(f, "invalid value for fault field {field}"),
        }
    }
}

impl std::error::Error for Error {}

/// What to do with one REST request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Serve,
    Fail(FailKind),
}

/// Counters tests read through `/sim/stats`.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub tls_handshakes: AtomicU64,
    /// Connections that carried at least one `/rest` request.
    pub rest_connections: AtomicU64,
    pub requests: AtomicU64,
    pub rest_requests: AtomicU64,
    pub injected_failures: AtomicU64,
    /// `/rest` requests being handled right now, and the most ever at once.
    pub in_flight: AtomicU64,
    pub peak_in_flight: AtomicU64,
}

/// Counts one `/rest` request as in flight until dropped.
pub struct InFlight<'a>(&'a Stats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Stats {
    pub fn enter(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(self)
    }
}

/// Faults, counters and the open connections (to cut them when going down).
#[derive(Debug, Default)]
pub struct Control {
    faults: Mutex<Faults>,
    pub stats: Stats,
    conns: Mutex<HashMap<u64, TcpStream>>,
    next_conn: AtomicU64,
}

impl Control {
    pub fn new(faults: Faults) -> Control {
        Control {
            faults: Mutex::new(faults),
            ..Control::default()
        }
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True while the emulator must refuse connections.
    pub fn is_down(&self) -> bool {
        let mut f = self.faults();
        match f.down_until {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                f.down_until = None;
                log::info!("up again");
                false
            }
            None => false,
        }
    }

    pub fn no_space(&self) -> bool {
        self.faults().no_space
    }

    pub fn file_size_mode(&self) -> FileSizeMode {
        self.faults().file_size
    }

    pub fn file_size_units(&self) -> bool {
        self.faults().file_size_units
    }

    /// Applies latency, then decides whether this REST request (with HTTP
    /// `method`) fails.
    pub fn verdict(&self, method: &str) -> Verdict {
        let (latency, verdict) = {
            let mut f = self.faults();
            let counted = f
                .fail_method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method));
            let verdict = if f.fail_next > 0 && counted && f.pass_next > 0 {
                f.pass_next -= 1;
                Verdict::Serve
            } else if f.fail_next > 0 && counted {
                f.fail_next -= 1;
                Verdict::Fail(f.fail_kind)
            } else {
                Verdict::Serve
            };
            (f.latency, verdict)
        };
        if !latency.is_zero() {
            std::thread::sleep(latency);
        }
        if verdict != Verdict::Serve {
            self.stats.injected_failures.fetch_add(1, Ordering::Relaxed);
        }
        verdict
    }

    /// Applies a `/sim/fault` body; fields left out stay as they are.
    /// Returns whether the emulator must go down now.
    pub fn set_faults(&self, body: &Map<String, Value>) -> Result<bool, Error> {
        let num = |field: &'static str| -> Result<Option<u64>, Error> {
            match body.get(field) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .map(Some)
                    .ok_or(Error::ParseFault { field }),
            }
        };
        let latency = num("latency_ms")?;
        let fail_next = num("fail_next")?;
        let pass_next = num("pass_next")?;
        let down_for = num("down_for_ms")?;
        let kind = match body.get("fail_kind") {
            None => None,
            Some(v) => Some(
                v.as_str()
                    .and_then(FailKind::parse)
                    .ok_or(Error::ParseFault { field: "fail_kind" })?,
            ),
        };
        let fail_method = match body.get("fail_method") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(Value::String(s)) if s.is_empty() => Some(None),
            Some(Value::String(s)) => Some(Some(s.to_ascii_uppercase())),
            Some(_) => return Err(Error::ParseFault { field: "fail_method" }),
        };
        let file_size = match body.get("file_size") {
            None => None,
            Some(v) => Some(
                v.as_str()
                    .and_then(FileSizeMode::parse)
                    .ok_or(Error::ParseFault { field: "file_size" })?,
            ),
        };
        let flag = |field: &'static str| -> Result<Option<bool>, Error> {
            match body.get(field) {
                None => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
                Some(_) => Err(Error::ParseFault { field }),
            }
        };
        let no_space = flag("no_space")?;
        let file_size_units = flag("file_size_units")?;
        let mut f = self.faults();
        if let Some(ms) = latency {
            f.latency = Duration::from_millis(ms);
        }
        if let Some(n) = fail_next {
            f.fail_next = n;
        }
        if let Some(n) = pass_next {
            f.pass_next = n;
        }
        if let Some(k) = kind {
            f.fail_kind = k;
        }
        if let Some(b) = no_space {
            f.no_space = b;
        }
        if let Some(m) = fail_method {
            f.fail_method = m;
        }
        if let Some(m) = file_size {
            f.file_size = m;
        }
        if let Some(b) = file_size_units {
            f.file_size_units = b;
        }
        let going_down = match down_for {
            Some(ms) if ms > 0 => {
                f.down_until = Some(Instant::now() + Duration::from_millis(ms));
                log::info!("down for {ms} ms");
                true
            }
            Some(_) => {
                f.down_until = None;
                false
            }
            None => false,
        };
        Ok(going_down)
    }

    pub fn reset_faults(&self) {
        *self.faults() = Faults::default();
    }

    /// Forgets the peak of concurrent requests, so a test can measure its own.
    pub fn reset_peak(&self) {
        let now = self.stats.in_flight.load(Ordering::SeqCst);
        self.stats.peak_in_flight.store(now, Ordering::SeqCst);
    }

    pub fn faults_json(&self) -> Value {
        let f = self.faults();
        let down_ms = f
            .down_until
            .and_then(|t| t.checked_duration_since(Instant::now()))
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        json!({
            "latency_ms": f.latency.as_millis() as u64,
            "pass_next": f.pass_next,
            "fail_next": f.fail_next,
            "fail_kind": f.fail_kind.name(),
            "down_for_ms": down_ms,
            "no_space": f.no_space,
            "fail_method": f.fail_method,
            "file_size": f.file_size.name(),
            "file_size_units": f.file_size_units,
        })
    }

    pub fn stats_json(&self) -> Value {
        let s = &self.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "connections": get(&s.connections),
            "tls_handshakes": get(&s.tls_handshakes),
            "rest_connections": get(&s.rest_connections),
            "requests": get(&s.requests),
            "rest_requests": get(&s.rest_requests),
            "injected_failures": get(&s.injected_failures),
            "in_flight": get(&s.in_flight),
            "peak_in_flight": get(&s.peak_in_flight),
        })
    }

    /// Remembers an open connection so `cut_all` can close it.
    pub fn register(&self, stream: &TcpStream) -> Option<u64> {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let clone = stream.try_clone().ok()?;
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, clone);
        Some(id)
    }

    pub fn unregister(&self, id: Option<u64>) {
        if let Some(id) = id {
            self.conns.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        }
    }

    /// Closes every open connection, as a rebooting RDS would.
    pub fn cut_all(&self) {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        for stream in conns.values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_next_counts_down() {
        let c = Control::new(Faults::default());
        let body = json!({"fail_next": 2, "fail_kind": "drop"});
        assert!(!c.set_faults(body.as_object().unwrap()).unwrap());
        assert_eq!(c.verdict("GET"), Verdict::Fail(FailKind::Drop));
        assert_eq!(c.verdict("GET"), Verdict::Fail(FailKind::Drop));
        assert_eq!(c.verdict("GET"), Verdict::Serve);
        let body = json!({"fail_next": 1, "fail_kind": "no-such-command", "fail_method": "delete"});
        c.set_faults(body.as_object().unwrap()).unwrap();
        assert_eq!(c.verdict("GET"), Verdict::Serve);
        assert_eq!(c.verdict("DELETE"), Verdict::Fail(FailKind::NoSuchCommand));
        assert_eq!(c.verdict("DELETE"), Verdict::Serve);
        // Two PATCHes through, then one fails; other methods never count.
        let body = json!({"pass_next": 2, "fail_next": 1, "fail_kind": "5xx", "fail_method": "patch"});
        c.set_faults(body.as_object().unwrap()).unwrap();
        assert_eq!(c.verdict("PATCH"), Verdict::Serve);
        assert_eq!(c.verdict("GET"), Verdict::Serve);
        assert_eq!(c.verdict("PATCH"), Verdict::Serve);
        assert_eq!(c.verdict("PATCH"), Verdict::Fail(FailKind::Status5xx));
        assert_eq!(c.verdict("PATCH"), Verdict::Serve);
        let body = json!({"file_size": "ignore"});
        c.set_faults(body.as_object().unwrap()).unwrap();
        assert_eq!(c.file_size_mode(), FileSizeMode::Ignore);
        assert!(c
            .set_faults(json!({"file_size": "x"}).as_object().unwrap())
            .is_err());
        let body = json!({"fail_kind": "nonsense"});
        assert!(c.set_faults(body.as_object().unwrap()).is_err());
        let body = json!({"down_for_ms": 10_000});
        assert!(c.set_faults(body.as_object().unwrap()).unwrap());
        assert!(c.is_down());
        c.reset_faults();
        assert!(!c.is_down());
    }
}
