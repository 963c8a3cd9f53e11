//! One REST call to RouterOS: pooled keep-alive connections, Basic auth from files, the in-flight cap, deadlines, retries, and the mapping of answers to `Error`.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use super::config::{Address, ClientConfig, Scheme, Trust};
use super::error::{classify, Error, Op};
use super::tls::{self, Presented};
use crate::retry;

/// Largest answer read from RouterOS: a `/file` listing of a busy RDS is a
/// few MB; anything near this is not RouterOS.
const MAX_ANSWER_BYTES: u64 = 64 << 20;

/// An attempt never gets less than this, even when the retry deadline is
/// nearly spent, so the last attempt can still succeed.
const MIN_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

/// REST verbs as RouterOS maps them: GET print, PUT add, PATCH set,
/// DELETE remove. (POST runs a command; the client needs none.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Put,
    Patch,
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// The value of an Authorization header; never printed.
#[derive(Clone)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Identity of a file's current content, cheap to compare: a Kubernetes
/// Secret update swaps a symlink, which changes inode and mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    mtime: i64,
    mtime_nsec: i64,
    len: u64,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
        len: m.len(),
    })
}

#[derive(Debug, Default)]
struct CachedCredentials {
    stamps: Option<(Stamp, Stamp)>,
    header: Option<Secret>,
}

/// Username and password files, read at start and re-read whenever either
/// file changes (checked with a `stat` per request).
#[derive(Debug)]
struct Credentials {
    username_file: PathBuf,
    password_file: PathBuf,
    cached: Mutex<CachedCredentials>,
}

impl Credentials {
    fn new(username_file: PathBuf, password_file: PathBuf) -> Result<Credentials, Error> {
        let creds = Credentials {
            username_file,
            password_file,
            cached: Mutex::new(CachedCredentials::default()),
        };
        creds.header()?;
        Ok(creds)
    }

    fn lock(&self) -> MutexGuard<'_, CachedCredentials> {
        // A panic elsewhere while holding the lock leaves valid data behind.
        self.cached.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current Authorization header, re-read if a file changed. When a
    /// re-read fails (a Secret being swapped) the previous value is kept.
    fn header(&self) -> Result<Secret, Error> {
        let stamps = stamp(&self.username_file)
            .and_then(|u| stamp(&self.password_file).map(|p| (u, p)))
            .ok();
        let mut cached = self.lock();
        if let (Some(now), Some(header)) = (stamps, &cached.header) {
            if cached.stamps == Some(now) {
                return Ok(header.clone());
            }
        }
        match self.read() {
            Ok(header) => {
                if cached.header.is_some() {
                    log::info!("rds credentials files changed; using the new credentials");
                }
                cached.stamps = stamps;
                cached.header = Some(header.clone());
                Ok(header)
            }
            Err(e) => match &cached.header {
                Some(old) => {
                    log::warn!("{e}; keeping the previous rds credentials");
                    Ok(old.clone())
                }
                None => Err(e),
            },
        }
    }

    fn read(&self) -> Result<Secret, Error> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| Error::ReadCredentials {
                path: path.to_path_buf(),
                source,
            })
        };
        let username = read(&self.username_file)?;
        let username = username.trim();
        if username.is_empty() {
            return Err(Error::EmptyUsername {
                path: self.username_file.clone(),
            });
        }
        let password = read(&self.password_file)?;
        // Secrets made with `echo` end in a newline that is not part of the
        // password; other whitespace may be.
        let password = password
            .strip_suffix('\n')
            .map(|p| p.strip_suffix('\r').unwrap_or(p))
            .unwrap_or(&password);
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        Ok(Secret(format!("Basic {token}")))
    }
}

/// A counting semaphore: at most `max` requests to the RDS at once.
#[derive(Debug)]
struct Limiter {
    max: usize,
    used: Mutex<usize>,
    freed: Condvar,
}

struct Permit<'a>(&'a Limiter);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut used = self.0.used.lock().unwrap_or_else(|p| p.into_inner());
        *used = used.saturating_sub(1);
        self.0.freed.notify_one();
    }
}

impl Limiter {
    fn new(max: usize) -> Limiter {
        Limiter {
            max: max.max(1),
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Waits up to `wait` for a free slot.
    fn acquire(&self, wait: Duration) -> Option<Permit<'_>> {
        let deadline = Instant::now() + wait;
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while *used >= self.max {
            let left = deadline.checked_duration_since(Instant::now())?;
            used = self
                .freed
                .wait_timeout(used, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *used += 1;
        Some(Permit(self))
    }
}

/// Sends REST requests to one RDS.
#[derive(Debug)]
pub(crate) struct Transport {
    address: Address,
    base_url: String,
    agent: ureq::Agent,
    credentials: Credentials,
    limiter: Limiter,
    presented: Arc<Presented>,
    request_timeout: Duration,
    retry: retry::Policy,
}

impl Transport {
    pub(crate) fn new(config: &ClientConfig) -> Result<Transport, Error> {
        let address = Address::parse(&config.address)?;
        let presented = Arc::new(Presented::default());
        let max_in_flight = config.max_in_flight.max(1);
        let mut builder = ureq::AgentBuilder::new()
            .timeout_connect(config.connect_timeout)
            .timeout(config.request_timeout)
            // Keep one idle connection per possible in-flight request, so a
            // burst does not end in handshakes on the next burst.
            .max_idle_connections(max_in_flight)
            .max_idle_connections_per_host(max_in_flight)
            // RouterOS does not redirect its REST API; following one could
            // send the credentials elsewhere.
            .redirects(0)
            .user_agent(concat!("rds-csi/", env!("CARGO_PKG_VERSION")));
        if address.scheme == Scheme::Https {
            if config.trust == Trust::InsecureSkipVerify {
                log::warn!(
                    "tls verification of the rds at {address} is off (--rds-insecure-skip-verify): anyone on the path can read the rds credentials"
                );
            }
            builder = builder.tls_config(tls::client_config(&config.trust, presented.clone())?);
        } else {
            log::warn!(
                "talking to the rds at {address} over plain http: the credentials cross the network unencrypted"
            );
        }
        Ok(Transport {
            base_url: address.base_url(),
            address,
            agent: builder.build(),
            credentials: Credentials::new(config.username_file.clone(), config.password_file.clone())?,
            limiter: Limiter::new(max_in_flight),
            presented,
            request_timeout: config.request_timeout,
            retry: config.retry,
        })
    }

    pub(crate) fn address(&self) -> &Address {
        &self.address
    }

    /// One REST call, retried on transient failures per the policy. `target`
    /// (a slot, path or empty) only names the object in errors. Returns the
    /// decoded JSON answer, `Null` for an empty one.
    pub(crate) fn call(
        &self,
        op: Op,
        target: &str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        let body = body.map(Value::to_string);
        let mut attempts = 0;
        let result = retry::run_blocking(&self.retry, Error::is_transient, |attempt| {
            attempts = attempt.number;
            let timeout = self
                .request_timeout
                .min(attempt.remaining.max(MIN_ATTEMPT_TIMEOUT));
            let result = self.attempt(op, target, method, path, query, body.as_deref(), timeout);
            if let Err(e) = &result {
                if e.is_transient() {
                    log::debug!(
                        "{op} {}: attempt {} failed: {e}",
                        super::error::shown(target),
                        attempt.number
                    );
                }
            }
            result
        });
        record_metrics(op, &result, attempts);
        result.map_err(|failure| {
            if failure.gave_up == retry::GaveUp::Definite || failure.attempts <= 1 {
                failure.error
            } else {
                Error::GaveUp {
                    op,
                    target: target.to_string(),
                    attempts: failure.attempts,
                    elapsed: failure.elapsed,
                    last: Box::new(failure.error),
                }
            }
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn attempt(
        &self,
        op: Op,
        target: &str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&str>,
        timeout: Duration,
    ) -> Result<Value, Error> {
        let auth = self.credentials.header()?;
        let started = Instant::now();
        let _permit = self.limiter.acquire(timeout).ok_or_else(|| Error::Busy {
            op,
            target: target.to_string(),
            waited: timeout,
            limit: self.limiter.max,
        })?;
        // Waiting for a permit used part of the budget; keep a floor so the
        // request itself can still be made.
        let timeout = timeout
            .saturating_sub(started.elapsed())
            .max(MIN_ATTEMPT_TIMEOUT.min(timeout));
        let mut request = self
            .agent
            .request(method.as_str(), &format!("{}{}", self.base_url, path))
            .timeout(timeout)
            .set("Accept", "application/json")
            .set("Authorization", &auth.0);
        for (name, value) in query {
            request = request.query(name, value);
        }
        let result = match body {
            Some(body) => request.set("Content-Type", "application/json").send_string(body),
            None => request.call(),
        };
        let answer = match result {
            Ok(response) => {
                let status = response.status();
                let text = read_body(response).map_err(|e| Error::Decode {
                    op,
                    target: target.to_string(),
                    what: format!("cannot read the answer: {e}"),
                })?;
                log::debug!(
                    "rds {} {path} -> {status} in {:?}",
                    method.as_str(),
                    started.elapsed()
                );
                if text.trim().is_empty() {
                    return Ok(Value::Null);
                }
                serde_json::from_str(&text).map_err(|e| Error::Decode {
                    op,
                    target: target.to_string(),
                    what: format!("the answer is not json: {e}"),
                })?
            }
            Err(ureq::Error::Status(status, response)) => {
                log::debug!(
                    "rds {} {path} -> {status} in {:?}",
                    method.as_str(),
                    started.elapsed()
                );
                let status_text = response.status_text().to_string();
                // Reading the body also returns the connection to the pool.
                let text = read_body(response).unwrap_or_default();
                return Err(self.answer_error(op, target, status, &status_text, &text));
            }
            Err(ureq::Error::Transport(transport)) => {
                return Err(self.transport_error(op, target, transport));
            }
        };
        Ok(answer)
    }

    /// Builds `Error::Answer` from RouterOS's `{"error", "message", "detail"}`.
    fn answer_error(&self, op: Op, target: &str, status: u16, status_text: &str, text: &str) -> Error {
        let parsed: Option<Value> = serde_json::from_str(text).ok();
        let field = |name: &str| {
            parsed
                .as_ref()
                .and_then(|v| v.get(name))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let message = field("message").unwrap_or_else(|| status_text.to_string());
        let detail = field("detail").filter(|d| !d.is_empty());
        Error::Answer {
            op,
            target: target.to_string(),
            status,
            message,
            kind: classify(status, detail.as_deref()),
            detail,
        }
    }

    fn transport_error(&self, op: Op, target: &str, transport: ureq::Transport) -> Error {
        let address = self.address.to_string();
        if let Some(tls) = tls::rustls_error(&transport) {
            return Error::Tls {
                op,
                target: target.to_string(),
                address,
                reason: match tls {
                    // Our own verifier's words, without rustls's "unexpected
                    // error" prefix.
                    rustls::Error::General(text) => text.clone(),
                    other => other.to_string(),
                },
                presented: self.presented.last(),
                source: Box::new(transport),
            };
        }
        Error::Connect {
            op,
            target: target.to_string(),
            address,
            cause: transport_cause(&transport),
            source: Box::new(transport),
        }
    }
}

/// A short, fixed description of why a request got no answer.
fn transport_cause(transport: &ureq::Transport) -> &'static str {
    use std::io::ErrorKind as Io;
    if transport.kind() == ureq::ErrorKind::Dns {
        return "cannot resolve the host name";
    }
    let mut source = std::error::Error::source(transport);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                Io::ConnectionRefused => "connection refused",
                Io::ConnectionReset => "connection reset",
                Io::ConnectionAborted | Io::UnexpectedEof | Io::BrokenPipe => {
                    "connection closed without an answer"
                }
                Io::TimedOut | Io::WouldBlock => "timed out",
                _ => "network error",
            };
        }
        source = err.source();
    }
    match transport.kind() {
        ureq::ErrorKind::ConnectionFailed => "connection failed",
        ureq::ErrorKind::BadStatus | ureq::ErrorKind::BadHeader => "malformed http answer",
        _ => "network error",
    }
}

fn read_body(response: ureq::Response) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    response
        .into_reader()
        .take(MAX_ANSWER_BYTES)
        .read_to_end(&mut bytes)?;
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Escapes a RouterOS `.id` (or any path segment) for a URL path. `*` stays
/// literal, as RouterOS expects (`/rest/disk/*1F`).
pub(crate) fn escape_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'*' | b'.' | b'_' | b'-' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Counts one REST operation by outcome (after retries), and its retries.
fn record_metrics(op: Op, result: &Result<Value, retry::Failure<Error>>, attempts: u32) {
    let operation = op.to_string().replace(' ', "_");
    let outcome = match result {
        Ok(_) => "ok".to_string(),
        Err(f) => format!("{:?}", f.error.kind()).to_ascii_lowercase(),
    };
    crate::metrics::inc(
        "rds_csi_rds_requests_total",
        &[("operation", &operation), ("outcome", &outcome)],
    );
    if attempts > 1 {
        crate::metrics::add(
            "rds_csi_rds_retries_total",
            &[("operation", &operation)],
            f64::from(attempts - 1),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rds-transport-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn ids_keep_their_star() {
        assert_eq!(escape_segment("*1F"), "*1F");
        assert_eq!(escape_segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn credentials_are_reread_when_the_files_change() {
        let dir = temp_dir("creds");
        let user = dir.join("username");
        let pass = dir.join("password");
        std::fs::write(&user, "admin\n").unwrap();
        std::fs::write(&pass, "secret one\n").unwrap();
        let creds = Credentials::new(user.clone(), pass.clone()).unwrap();
        let first = creds.header().unwrap().0;
        let want = base64::engine::general_purpose::STANDARD.encode("admin:secret one");
        assert_eq!(first, format!("Basic {want}"));
        // Same content, no change.
        assert_eq!(creds.header().unwrap().0, first);
        // A Secret update writes a new file and swaps it in.
        let next = dir.join("password.new");
        std::fs::write(&next, "secret-two-longer").unwrap();
        std::fs::rename(&next, &pass).unwrap();
        let second = creds.header().unwrap().0;
        let want = base64::engine::general_purpose::STANDARD.encode("admin:secret-two-longer");
        assert_eq!(second, format!("Basic {want}"));
        // A vanished file keeps the last good credentials.
        std::fs::remove_file(&pass).unwrap();
        assert_eq!(creds.header().unwrap().0, second);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn credential_errors_never_show_the_secret() {
        let dir = temp_dir("creds-bad");
        let user = dir.join("username");
        let pass = dir.join("password");
        std::fs::write(&user, "  \n").unwrap();
        std::fs::write(&pass, "hunter2").unwrap();
        let e = Credentials::new(user.clone(), pass.clone()).unwrap_err();
        assert!(matches!(e, Error::EmptyUsername { .. }));
        assert!(!format!("{e} {e:?}").contains("hunter2"));
        std::fs::write(&user, "admin").unwrap();
        let creds = Credentials::new(user, pass).unwrap();
        assert!(!format!("{creds:?}").contains("hunter2"));
        assert!(!format!("{creds:?}").contains("Basic"));
        let e = Credentials::new(dir.join("nope"), dir.join("nope2")).unwrap_err();
        assert!(matches!(e, Error::ReadCredentials { .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn limiter_caps_and_times_out() {
        let limiter = Limiter::new(2);
        let a = limiter.acquire(Duration::from_millis(10)).unwrap();
        let _b = limiter.acquire(Duration::from_millis(10)).unwrap();
        assert!(limiter.acquire(Duration::from_millis(20)).is_none());
        drop(a);
        assert!(limiter.acquire(Duration::from_millis(20)).is_some());
    }
}
