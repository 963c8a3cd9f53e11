//! The emulator's REST surface: Basic auth, RouterOS's `/rest/...` menus and answer conventions, and the `/sim/...` control endpoints the real RouterOS does not have.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::faults::{Control, FailKind, Verdict};
use crate::http::{status_message, Request, Response};
use crate::state::{self, Store};

/// Everything a connection thread needs.
pub struct App {
    pub store: Mutex<Store>,
    pub control: Control,
    pub username: String,
    pub password_file: PathBuf,
}

/// What a connection does after a request.
pub enum Outcome {
    Respond(Response),
    /// Close the connection without an answer (injected fault).
    Drop,
    /// Answer, then go down (refuse connections) for a while.
    RespondThenGoDown(Response),
}

/// RouterOS's error body: `{"error": 404, "message": "Not Found", "detail": ...}`.
pub fn ros_error(status: u16, detail: Option<&str>) -> Response {
    let mut body = json!({ "error": status, "message": status_message(status) });
    if let Some(detail) = detail {
        body["detail"] = Value::String(detail.to_string());
    }
    Response::json(status, &body)
}

fn state_error(e: state::Error) -> Response {
    if e.status() >= 500 {
        log::error!("{e}");
    }
    ros_error(e.status(), e.detail().as_deref())
}

impl App {
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks `Authorization: Basic`, reading the password file each time so
    /// tests can change it while the emulator runs.
    fn authorized(&self, req: &Request) -> bool {
        let Some(value) = req.header("authorization") else {
            return false;
        };
        let Some(token) = value
            .strip_prefix("Basic ")
            .or_else(|| value.strip_prefix("basic "))
        else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(token.trim()) else {
            return false;
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, pass)) = text.split_once(':') else {
            return false;
        };
        let Ok(want) = fs::read_to_string(&self.password_file) else {
            log::error!("cannot read the password file {}", self.password_file.display());
            return false;
        };
        let want = want.strip_suffix('\n').unwrap_or(&want);
        user == self.username && pass == want
    }

    /// Handles one request. `rest_seen` tracks whether this connection has
    /// carried a `/rest` request yet (for the connection-reuse counter).
    pub fn handle(&self, req: &Request, rest_seen: &mut bool) -> Outcome {
        self.control.stats.requests.fetch_add(1, Ordering::Relaxed);
        let is_sim = req.path.starts_with("/sim/");
        // Counted before the injected latency, as a client sees it.
        let _in_flight = (!is_sim).then(|| self.control.stats.enter());
        if !is_sim {
            match self.control.verdict(&req.method) {
                Verdict::Serve => {}
                Verdict::Fail(FailKind::Drop) => return Outcome::Drop,
                Verdict::Fail(FailKind::Status5xx) => return Outcome::Respond(ros_error(503, None)),
                Verdict::Fail(FailKind::SessionClosed) => {
                    return Outcome::Respond(ros_error(400, Some("Session closed")))
                }
                Verdict::Fail(FailKind::NoSuchCommand) => {
                    let word = command_word(&req.method);
                    return Outcome::Respond(no_such_command(word));
                }
                Verdict::Fail(FailKind::NotAllowed) => {
                    return Outcome::Respond(ros_error(500, Some("std failure: not allowed (9)")))
                }
            }
        }
        if !self.authorized(req) {
            let mut resp = ros_error(401, None);
            resp.extra_headers
                .push(("WWW-Authenticate", "Basic realm=\"RouterOS\"".into()));
            return Outcome::Respond(resp);
        }
        if is_sim {
            return self.handle_sim(req);
        }
        if req.path.starts_with("/rest/") {
            if !*rest_seen {
                *rest_seen = true;
                self.control
                    .stats
                    .rest_connections
                    .fetch_add(1, Ordering::Relaxed);
            }
            self.control.stats.rest_requests.fetch_add(1, Ordering::Relaxed);
        }
        Outcome::Respond(self.handle_rest(req))
    }

    fn handle_rest(&self, req: &Request) -> Response {
        let parts: Vec<&str> = req
            .path
            .trim_start_matches("/rest/")
            .trim_end_matches('/')
            .split('/')
            .collect();
        let body = match parse_body(req) {
            Ok(body) => body,
            Err(resp) => return resp,
        };
        let no_space = self.control.no_space();
        let file_size = self.control.file_size_mode();
        let units = self.control.file_size_units();
        let cli = |record: Map<String, Value>| if units { with_cli_file_size(record) } else { record };
        let cli_all = |records: Vec<Map<String, Value>>| records.into_iter().map(cli).collect::<Vec<_>>();
        let method = req.method.as_str();
        let list = |records: Vec<Map<String, Value>>| Response::json(200, &select(records, &req.query, &[]));
        let one = |record: Result<Map<String, Value>, state::Error>| match record {
            Ok(r) => Response::json(200, &Value::Object(proplist(r, &req.query))),
            Err(e) => state_error(e),
        };
        let done = |result: Result<(), state::Error>| match result {
            Ok(()) => Response::empty(204),
            Err(e) => state_error(e),
        };
        match (method, parts.as_slice()) {
            // `/disk/btrfs/subvolume` (7.18+; older boxes lack the menu).
            (_, ["disk", "btrfs", ..]) if !self.store().has_btrfs_menu() => no_such_command("btrfs"),
            ("GET", ["disk", "btrfs", "subvolume"]) => list(self.store().list_subvolumes()),
            ("GET", ["disk", "btrfs", "subvolume", id]) => one(self.store().get_subvolume(id)),
            ("PUT", ["disk", "btrfs", "subvolume"]) => one(self.store().add_subvolume(&body)),
            ("POST", ["disk", "btrfs", "subvolume", "add"]) => added(self.store().add_subvolume(&body)),
            ("DELETE", ["disk", "btrfs", "subvolume", id]) => done(self.store().remove_subvolume(id)),
            ("POST", ["disk", "btrfs", "subvolume", "remove"]) => match item_id(&body) {
                Some(id) => listed(self.store().remove_subvolume(&id)),
                None => ros_error(400, Some("missing value(s) of argument(s) .id")),
            },
            ("POST", ["disk", "btrfs", "subvolume", "print"]) => print(self.store().list_subvolumes(), &body),
            ("GET", ["system", "resource"]) => Response::json(200, &self.store().system_resource()),
            ("GET", ["disk"]) => list(cli_all(self.store().list_disks())),
            ("GET", ["disk", id]) => one(self.store().get_disk(id).map(cli)),
            ("PUT", ["disk"]) => one(self.store().add_disk(&body, no_space).map(cli)),
            ("PATCH", ["disk", id]) => one(self.store().set_disk(id, &body, no_space, file_size).map(cli)),
            ("DELETE", ["disk", id]) => done(self.store().remove_disk(id)),
            ("POST", ["disk", "print"]) => print(cli_all(self.store().list_disks()), &body),
            ("GET", ["file"]) => list(self.store().list_files()),
            ("GET", ["file", id]) => one(self.store().get_file(id)),
            ("PUT", ["file"]) => one(self.store().add_file(&body)),
            ("DELETE", ["file", id]) => done(self.store().remove_file(id)),
            ("POST", ["file", "print"]) => print(self.store().list_files(), &body),
            // The console commands behind the verbs, as RouterOS also
            // takes them: `add` answers the new id as {"ret": ...},
            // `set` and `remove` (of `.id` or `numbers`) answer [].
            ("POST", ["disk", "add"]) => added(self.store().add_disk(&body, no_space)),
            ("POST", ["file", "add"]) => added(self.store().add_file(&body)),
            ("POST", ["disk", "set"]) => match item_id(&body) {
                Some(id) => {
                    let mut changes = body.clone();
                    changes.remove(".id");
                    changes.remove("numbers");
                    listed(
                        self.store()
                            .set_disk(&id, &changes, no_space, file_size)
                            .map(|_| ()),
                    )
                }
                None => ros_error(400, Some("missing value(s) of argument(s) .id")),
            },
            ("POST", ["disk", "remove"]) => match item_id(&body) {
                Some(id) => listed(self.store().remove_disk(&id)),
                None => ros_error(400, Some("missing value(s) of argument(s) .id")),
            },
            ("POST", ["file", "remove"]) => match item_id(&body) {
                Some(id) => listed(self.store().remove_file(&id)),
                None => ros_error(400, Some("missing value(s) of argument(s) .id")),
            },
            // RouterOS names the first word it does not know: a menu the box
            // lacks (a missing package), or a command the menu lacks.
            _ => no_such_command(first_unknown_word(method, &parts)),
        }
    }

    fn handle_sim(&self, req: &Request) -> Outcome {
        let body = match parse_body(req) {
            Ok(body) => body,
            Err(resp) => return Outcome::Respond(resp),
        };
        match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/sim/fault") => match self.control.set_faults(&body) {
                Ok(down) => {
                    let resp = Response::json(200, &self.control.faults_json());
                    if down {
                        Outcome::RespondThenGoDown(resp)
                    } else {
                        Outcome::Respond(resp)
                    }
                }
                Err(e) => Outcome::Respond(Response::json(400, &json!({ "error": e.to_string() }))),
            },
            ("GET", "/sim/fault") => Outcome::Respond(Response::json(200, &self.control.faults_json())),
            ("POST", "/sim/reset-faults") => {
                self.control.reset_faults();
                Outcome::Respond(Response::json(200, &self.control.faults_json()))
            }
            ("GET", "/sim/stats") => Outcome::Respond(Response::json(200, &self.control.stats_json())),
            ("POST", "/sim/reset-peak") => {
                self.control.reset_peak();
                Outcome::Respond(Response::json(200, &self.control.stats_json()))
            }
            ("GET", "/sim/exports") => Outcome::Respond(Response::json(200, &self.store().exports())),
            (method, "/sim/nvmet") => Outcome::Respond(self.nvmet_control(method, &body)),
            _ => Outcome::Respond(Response::json(404, &json!({ "error": "no such sim endpoint" }))),
        }
    }
}

/// The item a `set`/`remove` command names: `.id`, or `numbers`.
fn item_id(body: &Map<String, Value>) -> Option<String> {
    body.get(".id")
        .or_else(|| body.get("numbers"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// `POST .../add`: `{"ret": "<.id>"}`.
fn added(result: Result<Map<String, Value>, state::Error>) -> Response {
    match result {
        Ok(record) => Response::json(
            200,
            &json!({ "ret": record.get(".id").cloned().unwrap_or_default() }),
        ),
        Err(e) => state_error(e),
    }
}

/// `POST .../set` and `.../remove`: `[]`.
fn listed(result: Result<(), state::Error>) -> Response {
    match result {
        Ok(()) => Response::json(200, &json!([])),
        Err(e) => state_error(e),
    }
}

/// A disk record with `file-size` as the CLI prints it (`50.0GiB`).
fn with_cli_file_size(mut record: Map<String, Value>) -> Map<String, Value> {
    let bytes = record
        .get("file-size")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<u64>().ok());
    if let Some(bytes) = bytes {
        record.insert("file-size".into(), Value::String(cli_size(bytes)));
    }
    record
}

/// `53687091200` → `50.0GiB`, `1536` → `1536B`... as RouterOS's console
/// renders sizes: the largest binary unit, one decimal.
fn cli_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = None;
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = Some(u);
    }
    match unit {
        None => format!("{bytes}B"),
        Some(u) => format!("{value:.1}{u}"),
    }
}

/// RouterOS's answer for a menu or command it does not have. Field reports
/// (7.22) show HTTP 400; MikroTik's REST page lists it under 406. The
/// emulator answers 400, as the field reports.
fn no_such_command(word: &str) -> Response {
    ros_error(400, Some(&format!("no such command or directory ({word})")))
}

/// The console command a REST verb stands for.
fn command_word(method: &str) -> &'static str {
    match method {
        "GET" => "print",
        "PUT" => "add",
        "PATCH" => "set",
        "DELETE" => "remove",
        _ => "command",
    }
}

/// The menus the emulator has, as path words.
const MENUS: &[&[&str]] = &[&["system", "resource"], &["disk"], &["file"]];

/// The first word of `parts` that names no menu or command here: a menu
/// word that does not exist, else the command (the word after the menu,
/// or the verb's command when the path is an item).
fn first_unknown_word<'a>(method: &str, parts: &[&'a str]) -> &'a str {
    let longest = MENUS
        .iter()
        .filter(|m| parts.len() >= m.len() && parts[..m.len()] == m[..])
        .map(|m| m.len())
        .max();
    match longest {
        None => {
            // The first word no menu starts with.
            for depth in 0..parts.len() {
                let known = MENUS
                    .iter()
                    .any(|m| m.len() > depth && m[..=depth] == parts[..=depth]);
                if !known {
                    return parts[depth];
                }
            }
            parts.last().copied().unwrap_or("")
        }
        Some(n) => match parts.get(n) {
            // An item (`*1F`) with a verb the menu does not take there.
            Some(word) if word.starts_with('*') => command_word(method),
            Some(word) => word,
            None => command_word(method),
        },
    }
}

/// The JSON object of a PUT/PATCH/POST body; an empty body is `{}`.
fn parse_body(req: &Request) -> Result<Map<String, Value>, Response> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(ros_error(
            400,
            Some("failure: the request body is not a json object"),
        )),
    }
}

/// Equality filters from the query string (`?slot=pvc-1`), then `.proplist`.
fn select(records: Vec<Map<String, Value>>, query: &[(String, String)], extra: &[(String, String)]) -> Value {
    let filters: Vec<&(String, String)> = query
        .iter()
        .chain(extra)
        .filter(|(k, _)| k != ".proplist")
        .collect();
    let picked: Vec<Value> = records
        .into_iter()
        .filter(|r| {
            filters
                .iter()
                .all(|(k, v)| r.get(k).and_then(Value::as_str) == Some(v.as_str()))
        })
        .map(|r| Value::Object(proplist(r, query)))
        .collect();
    Value::Array(picked)
}

/// Keeps only the fields named in `.proplist=a,b`: RouterOS returns exactly
/// what was asked, not even `.id` unless named.
fn proplist(record: Map<String, Value>, query: &[(String, String)]) -> Map<String, Value> {
    match query.iter().find(|(k, _)| k == ".proplist") {
        None => record,
        Some((_, list)) => {
            let wanted: Vec<&str> = list.split(',').map(str::trim).collect();
            record
                .into_iter()
                .filter(|(k, _)| wanted.contains(&k.as_str()))
                .collect()
        }
    }
}

/// `POST /rest/<menu>/print` with `{".proplist": [...], ".query": ["slot=x"]}`:
/// equality query words only.
fn print(records: Vec<Map<String, Value>>, body: &Map<String, Value>) -> Response {
    let mut query = Vec::new();
    if let Some(list) = body.get(".proplist") {
        let names: Vec<String> = match list {
            Value::Array(items) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Value::String(s) => s.split(',').map(str::to_string).collect(),
            _ => Vec::new(),
        };
        query.push((".proplist".to_string(), names.join(",")));
    }
    let mut filters = Vec::new();
    for word in body.get(".query").and_then(Value::as_array).into_iter().flatten() {
        let word = word.as_str().unwrap_or("");
        match word.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.starts_with(['<', '>', '#', '-']) => {
                filters.push((k.to_string(), v.to_string()))
            }
            _ => {
                return state_error(state::Error::UnsupportedQuery {
                    word: word.to_string(),
                })
            }
        }
    }
    Response::json(200, &select(records, &query, &filters))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_menus_and_commands_are_named_like_routeros() {
        assert_eq!(first_unknown_word("GET", &["wireless"]), "wireless");
        assert_eq!(first_unknown_word("GET", &["system", "package2"]), "package2");
        assert_eq!(
            first_unknown_word("GET", &["disk", "btrfs", "subvolume"]),
            "btrfs"
        );
        assert_eq!(first_unknown_word("POST", &["disk", "frobnicate"]), "frobnicate");
        assert_eq!(first_unknown_word("DELETE", &["disk"]), "remove");
        assert_eq!(first_unknown_word("POST", &["disk", "*3"]), "command");
        assert_eq!(first_unknown_word("GET", &["system", "resource", "x"]), "x");
    }

    #[test]
    fn cli_sizes() {
        assert_eq!(cli_size(50 << 30), "50.0GiB");
        assert_eq!(cli_size(1536), "1.5KiB");
        assert_eq!(cli_size(100), "100B");
    }
}
