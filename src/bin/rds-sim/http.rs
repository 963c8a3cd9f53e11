//! The emulator's small HTTP/1.1 server side: read one request (httparse, Content-Length bodies), write one response, keep-alive.

use std::fmt;
use std::io::{self, BufRead, Write};

/// Largest request head and body the emulator accepts.
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 16 * 1024 * 1024;

/// One parsed request.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// Percent-decoded path without the query.
    pub path: String,
    /// Percent-decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub keep_alive: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One response; `Content-Length` is always sent.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    pub extra_headers: Vec<(&'static str, String)>,
}

impl Response {
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response {
            status,
            body: value.to_string().into_bytes(),
            extra_headers: Vec::new(),
        }
    }

    pub fn empty(status: u16) -> Response {
        Response {
            status,
            body: Vec::new(),
            extra_headers: Vec::new(),
        }
    }
}

/// Why a request could not be read.
#[derive(Debug)]
pub enum Error {
    ReadRequest { source: io::Error },
    ParseRequest { reason: &'static str },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ReadRequest { .. } => f.write_str("cannot read the request"),
            Error::ParseRequest { reason } => write!(f, "malformed request: {reason}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::ReadRequest { source } => Some(source),
            Error::ParseRequest { .. } => None,
        }
    }
}

/// Reads the next request; `Ok(None)` when the client closed the
/// connection between requests.
pub fn read_request(reader: &mut impl BufRead) -> Result<Option<Request>, Error> {
    let mut head = Vec::new();
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(Error::ReadRequest { source }),
        };
        if buf.is_empty() {
            if head.is_empty() {
                return Ok(None);
            }
            return Err(Error::ParseRequest {
                reason: "connection closed in the request head",
            });
        }
        // Take bytes up to and including the end of the head, no further:
        // the body stays in the reader.
        let start = head.len();
        head.extend_from_slice(buf);
        let scan_from = start.saturating_sub(3);
        let end = head[scan_from..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| scan_from + i + 4);
        match end {
            Some(end) => {
                reader.consume(end - start);
                head.truncate(end);
                break;
            }
            None => {
                let n = head.len() - start;
                reader.consume(n);
                if head.len() > MAX_HEAD {
                    return Err(Error::ParseRequest {
                        reason: "request head too large",
                    });
                }
            }
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(Error::ParseRequest {
                reason: "incomplete request head",
            })
        }
        Err(_) => {
            return Err(Error::ParseRequest {
                reason: "invalid request head",
            })
        }
    }
    let method = req.method.unwrap_or("").to_string();
    let target = req.path.unwrap_or("/");
    let version = req.version.unwrap_or(1);
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    if find("transfer-encoding").is_some() {
        return Err(Error::ParseRequest {
            reason: "chunked request bodies are not supported",
        });
    }
    let length = match find("content-length") {
        None => 0,
        Some(v) => v.parse::<usize>().map_err(|_| Error::ParseRequest {
            reason: "invalid content-length",
        })?,
    };
    if length > MAX_BODY {
        return Err(Error::ParseRequest {
            reason: "request body too large",
        });
    }
    let mut body = vec![0u8; length];
    reader
        .read_exact(&mut body)
        .map_err(|source| Error::ReadRequest { source })?;
    let connection = find("connection").unwrap_or_default();
    let keep_alive = if version == 0 {
        connection.contains("keep-alive")
    } else {
        !connection.contains("close")
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (decode_query(k), decode_query(v)),
            None => (decode_query(pair), String::new()),
        })
        .collect();
    Ok(Some(Request {
        method,
        path: decode(path),
        query,
        headers,
        body,
        keep_alive,
    }))
}

/// Percent-decoding of a path.
fn decode(text: &str) -> String {
    decode_with(text, false)
}

/// Percent-decoding of a query part, where `+` is a space (form encoding,
/// which ureq uses).
fn decode_query(text: &str) -> String {
    decode_with(text, true)
}

fn decode_with(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// The reason phrase RouterOS puts in `message`.
pub fn status_message(status: u16) -> &'static str {
    reason(status)
}

pub fn write_response(out: &mut impl Write, resp: &Response, keep_alive: bool) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    if resp.status != 204 {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    for (name, value) in &resp.extra_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&resp.body);
    out.write_all(&bytes)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Cursor};

    #[test]
    fn reads_two_pipelined_requests() {
        let raw = b"PUT /rest/disk?slot=a%2Ab&x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}GET /rest/disk/%2A1 HTTP/1.1\r\nConnection: close\r\n\r\n";
        let mut r = BufReader::with_capacity(7, Cursor::new(&raw[..]));
        let a = read_request(&mut r).unwrap().unwrap();
        assert_eq!(a.method, "PUT");
        assert_eq!(a.path, "/rest/disk");
        assert_eq!(
            a.query,
            vec![("slot".into(), "a*b".into()), ("x".into(), String::new())]
        );
        assert_eq!(a.body, b"{}");
        assert!(a.keep_alive);
        let b = read_request(&mut r).unwrap().unwrap();
        assert_eq!(b.path, "/rest/disk/*1");
        assert!(!b.keep_alive);
        assert!(read_request(&mut r).unwrap().is_none());
    }

    #[test]
    fn decodes_percent_edge_cases() {
        assert_eq!(decode("a%2"), "a%2");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode_query("a+b"), "a b");
        assert_eq!(decode("a+b"), "a+b");
        assert_eq!(decode("%41"), "A");
    }
}
