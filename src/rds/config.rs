//! What the RouterOS client needs to know: the RDS address, how to trust its certificate, where the credentials are, timeouts, retries and the in-flight cap.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::error::Error;
use crate::retry;

/// How the client decides to trust the RDS's TLS certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Mozilla's roots (webpki-roots) plus the system CA bundle if present;
    /// the certificate must name the host in the address.
    System,
    /// Only the CA certificates in this PEM file (`--rds-ca-file`); the
    /// certificate must name the host in the address.
    CaFile(PathBuf),
    /// Only the certificate whose DER has this SHA-256 (`--rds-tls-fingerprint`).
    Fingerprint([u8; 32]),
    /// Anything (`--rds-insecure-skip-verify`); logged as a warning at start.
    InsecureSkipVerify,
}

/// Settings of a `Client`.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://host[:port]` (or a bare `host[:port]`, taken as https), or
    /// `http://host[:port]` for plain HTTP.
    pub address: String,
    pub trust: Trust,
    /// File holding the RouterOS username (as a Kubernetes Secret mounts it).
    pub username_file: PathBuf,
    /// File holding the RouterOS password.
    pub password_file: PathBuf,
    /// Limit for the TCP connect and TLS handshake.
    pub connect_timeout: Duration,
    /// Limit for one REST request, connect included.
    pub request_timeout: Duration,
    /// Backoff for transient failures of one REST request.
    pub retry: retry::Policy,
    /// Requests in flight to the RDS at once; more wait their turn.
    pub max_in_flight: usize,
}

impl ClientConfig {
    /// Defaults: system trust, 5 s connect, 30 s per request (RouterOS
    /// itself gives up after 60 s), the default retry policy, 4 in flight.
    pub fn new(
        address: impl Into<String>,
        username_file: impl Into<PathBuf>,
        password_file: impl Into<PathBuf>,
    ) -> Self {
        ClientConfig {
            address: address.into(),
            trust: Trust::System,
            username_file: username_file.into(),
            password_file: password_file.into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            retry: retry::Policy::default(),
            max_in_flight: 4,
        }
    }
}

/// Scheme of the RDS address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// A parsed RDS address: scheme, host and port, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub scheme: Scheme,
    /// Host as written (brackets kept for IPv6).
    pub host: String,
    pub port: u16,
}

impl Address {
    /// Parses `https://host[:port]`, `http://host[:port]` or `host[:port]`
    /// (https). A trailing `/` or `/rest` is tolerated; other paths,
    /// user-info and queries are refused.
    pub fn parse(address: &str) -> Result<Address, Error> {
        let bad = |reason| {
            Err(Error::ParseAddress {
                address: redact_userinfo(address),
                reason,
            })
        };
        let text = address.trim();
        let (scheme, rest) = if let Some(rest) = strip_prefix_ci(text, "https://") {
            (Scheme::Https, rest)
        } else if let Some(rest) = strip_prefix_ci(text, "http://") {
            (Scheme::Http, rest)
        } else if text.contains("://") {
            return bad("the scheme must be https:// or http://");
        } else {
            (Scheme::Https, text)
        };
        let rest = rest.trim_end_matches('/');
        let rest = rest.strip_suffix("/rest").unwrap_or(rest);
        if rest.is_empty() {
            return bad("no host");
        }
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return bad("give only scheme, host and port (no path)");
        }
        if rest.contains('@') {
            return bad("credentials belong in --rds-username-file/--rds-password-file, not in the address");
        }
        let default_port = match scheme {
            Scheme::Https => 443,
            Scheme::Http => 80,
        };
        let (host, port) = if let Some(after) = rest.strip_prefix('[') {
            // [v6]:port
            let Some(end) = after.find(']') else {
                return bad("unclosed [ in an ipv6 address");
            };
            let host = &rest[..end + 2];
            match &after[end + 1..] {
                "" => (host, default_port),
                p => match p.strip_prefix(':').and_then(|p| p.parse::<u16>().ok()) {
                    Some(port) => (host, port),
                    None => return bad("invalid port"),
                },
            }
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => match port.parse::<u16>() {
                    Ok(port) => (host, port),
                    Err(_) => return bad("invalid port"),
                },
                None => (rest, default_port),
            }
        };
        if host.is_empty() || host == "[]" {
            return bad("no host");
        }
        if port == 0 {
            return bad("port 0");
        }
        Ok(Address {
            scheme,
            host: host.to_string(),
            port,
        })
    }

    /// `scheme://host:port`, the prefix of every request URL.
    pub fn base_url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Https => "https",
            Scheme::Http => "http",
        };
        format!("{scheme}://{}:{}", self.host, self.port)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base_url())
    }
}

/// The address with any `user:password@` replaced, so an error message
/// never repeats a password typed into the address by mistake.
fn redact_userinfo(address: &str) -> String {
    let start = address.find("://").map(|i| i + 3).unwrap_or(0);
    match address[start..].find('@') {
        Some(at) => format!("{}***{}", &address[..start], &address[start + at..]),
        None => address.to_string(),
    }
}

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    if text.len() >= prefix.len() && text[..prefix.len()].eq_ignore_ascii_case(prefix) {
        Some(&text[prefix.len()..])
    } else {
        None
    }
}

/// Parses a `--rds-tls-fingerprint`: 64 hex digits of the certificate's
/// SHA-256, optionally prefixed with `sha256:` and separated by colons (as
/// `openssl x509 -fingerprint -sha256` prints it), any case.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], Error> {
    let bad = |reason| Err(Error::ParseFingerprint { reason });
    let text = text.trim();
    let text = strip_prefix_ci(text, "sha256:")
        .or_else(|| strip_prefix_ci(text, "sha256 fingerprint="))
        .unwrap_or(text);
    let digits: Vec<u8> = text.bytes().filter(|b| *b != b':').collect();
    if digits.len() != 64 {
        return bad("not 64 hex digits");
    }
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks(2).enumerate() {
        let hi = hex_value(pair[0]);
        let lo = hex_value(pair[1]);
        match (hi, lo) {
            (Some(hi), Some(lo)) => out[i] = hi << 4 | lo,
            _ => return bad("not a hex digit"),
        }
    }
    Ok(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `sha256:` and 64 lowercase hex digits, the form `parse_fingerprint` reads
/// and `rds-sim` prints.
pub fn format_fingerprint(digest: &[u8; 32]) -> String {
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_forms() {
        let hex = "ab".repeat(32);
        let want = [0xabu8; 32];
        assert_eq!(parse_fingerprint(&hex).unwrap(), want);
        assert_eq!(parse_fingerprint(&format!("sha256:{hex}")).unwrap(), want);
        assert_eq!(
            parse_fingerprint(&format!("SHA256:{}", hex.to_uppercase())).unwrap(),
            want
        );
        let colons: Vec<String> = (0..32).map(|_| "AB".to_string()).collect();
        assert_eq!(parse_fingerprint(&colons.join(":")).unwrap(), want);
        assert_eq!(format_fingerprint(&want), format!("sha256:{hex}"));
    }

    #[test]
    fn bad_fingerprints_name_the_flag() {
        for bad in ["", "abc", &"zz".repeat(32), &"ab".repeat(33)] {
            let e = parse_fingerprint(bad).unwrap_err();
            assert!(e.to_string().contains("--rds-tls-fingerprint"), "{e}");
        }
    }

    #[test]
    fn addresses() {
        let a = Address::parse("https://rds.lan").unwrap();
        assert_eq!(a.base_url(), "https://rds.lan:443");
        let a = Address::parse("http://10.0.0.1:8080/").unwrap();
        assert_eq!(a.base_url(), "http://10.0.0.1:8080");
        assert_eq!(a.scheme, Scheme::Http);
        let a = Address::parse("10.0.0.1").unwrap();
        assert_eq!(a.base_url(), "https://10.0.0.1:443");
        let a = Address::parse("https://[fd00::1]:8443/rest").unwrap();
        assert_eq!(a.host, "[fd00::1]");
        assert_eq!(a.port, 8443);
        let a = Address::parse("https://[fd00::1]").unwrap();
        assert_eq!(a.port, 443);
        for bad in [
            "",
            "ftp://x",
            "https://",
            "https://x:notaport",
            "https://x/some/path",
            "https://admin:pw@x",
            "https://x:0",
        ] {
            let e = Address::parse(bad).unwrap_err();
            assert!(matches!(e, Error::ParseAddress { .. }), "{bad}");
            // The message must never echo a password given by mistake.
            if bad.contains("pw") {
                let text = e.to_string();
                assert!(text.contains("credentials belong"), "{text}");
                assert!(!text.contains("pw"), "{text}");
            }
        }
    }
}
