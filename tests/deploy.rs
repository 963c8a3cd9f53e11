//! The deployment files in deploy/ against the real binary and against each
//! other: every YAML document parses and names itself; every flag and
//! environment variable that the manifests, the Helm chart and the systemd
//! unit give rds-csi passes `rds-csi serve --check-config`; every sidecar's
//! socket is the driver's socket (through the volume mounts, down to
//! kubelet's host path); the CSIDriver and the StorageClasses are what the
//! driver implements and accepts; and the plain manifests are the Helm chart,
//! the one source, rendered by Helm's own engine (scripts/render-deploy.sh):
//! rendering again changes nothing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use serde_json::{json, Value};
use yaml_rust2::{Yaml, YamlLoader};

const BIN: &str = env!("CARGO_BIN_EXE_rds-csi");
/// The namespace and Helm release name the plain manifests correspond to.
const NAMESPACE: &str = "rds-csi";
const RELEASE: &str = "rds-csi";
/// The RDS address written in the plain manifests (TEST-NET-1).
const EXAMPLE_RDS: &str = "https://192.0.2.10";
/// Sample values for the Downward API fields the manifests use.
const SAMPLE_NODE: &str = "k3s-node-1";
const SAMPLE_POD: &str = "rds-csi-controller-7d9f8-x2x4q";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy_dir() -> PathBuf {
    repo().join("deploy")
}

fn chart_dir() -> PathBuf {
    deploy_dir().join("helm/rds-csi")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn fail_if_any(what: &str, problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

// ---------------------------------------------------------------------------
// YAML documents
// ---------------------------------------------------------------------------

/// One YAML document, as JSON values (what Kubernetes turns YAML into).
#[derive(Debug, Clone)]
struct Doc {
    /// Where it came from: a path under deploy/, or a chart template.
    file: String,
    index: usize,
    obj: Value,
}

impl Doc {
    fn str_at(&self, pointer: &str) -> &str {
        self.obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
    }
    fn kind(&self) -> &str {
        self.str_at("/kind")
    }
    fn name(&self) -> &str {
        self.str_at("/metadata/name")
    }
    fn namespace(&self) -> &str {
        self.str_at("/metadata/namespace")
    }
    fn id(&self) -> String {
        format!("{}#{} {}/{}", self.file, self.index, self.kind(), self.name())
    }
    /// kind, namespace and name: what makes an object one object.
    fn key(&self) -> (String, String, String) {
        (
            self.kind().to_string(),
            self.namespace().to_string(),
            self.name().to_string(),
        )
    }
}

fn yaml_to_json(y: &Yaml, at: &str) -> Result<Value, String> {
    Ok(match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(r) => r
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("{at}: {r:?} is not a finite number"))?,
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| yaml_to_json(v, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Hash(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let Yaml::String(k) = k else {
                    return Err(format!("{at}: key {k:?} is not a string"));
                };
                out.insert(k.clone(), yaml_to_json(v, &format!("{at}.{k}"))?);
            }
            Value::Object(out)
        }
        Yaml::Alias(_) => return Err(format!("{at}: YAML aliases are not used in deploy/")),
        Yaml::BadValue => return Err(format!("{at}: unreadable value")),
    })
}

/// Every document of a (multi-document) YAML text. Empty documents are
/// errors unless `allow_empty` (Helm's output has them).
fn parse_docs(text: &str, file: &str, allow_empty: bool) -> Result<Vec<Doc>, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| format!("{file}: {e}"))?;
    let mut out = Vec::new();
    for (index, y) in docs.iter().enumerate() {
        let obj = yaml_to_json(y, &format!("{file}#{index}"))?;
        if obj.is_null() {
            if allow_empty {
                continue;
            }
            return Err(format!("{file}#{index}: empty document"));
        }
        out.push(Doc {
            file: file.to_string(),
            index,
            obj,
        });
    }
    Ok(out)
}

/// The YAML files under `dir`, recursively, except the chart's templates
/// (Go templates, not YAML until Helm renders them).
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                if !path.ends_with("templates") {
                    stack.push(path);
                }
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml") | Some("yml")
            ) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(repo()).unwrap_or(path).display().to_string()
}

/// Every Kubernetes document under deploy/kubernetes/.
fn plain_docs() -> Vec<Doc> {
    let mut docs = Vec::new();
    for path in yaml_files(&deploy_dir().join("kubernetes")) {
        docs.extend(parse_docs(&read(&path), &relative(&path), false).unwrap_or_else(|e| panic!("{e}")));
    }
    docs
}

/// Kubernetes reads YAML 1.1: there `yes`/`no`/`on`/`off` are booleans and
/// `0644` is octal, while this test's YAML 1.2 parser reads a string and
/// decimal 644. Values like that would mean one thing here and another in
/// the cluster, so they are not allowed in deploy/.
fn yaml_1_1_problems(text: &str, file: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split(" #").next().unwrap_or("").trim();
        if code.starts_with('#') {
            continue;
        }
        let value = match code.split_once(": ") {
            Some((_, v)) => v.trim(),
            None => code.strip_prefix("- ").unwrap_or("").trim(),
        };
        let octal =
            value.len() > 1 && value.starts_with('0') && value.bytes().all(|b| (b'0'..=b'7').contains(&b));
        let bool11 = matches!(
            value.to_ascii_lowercase().as_str(),
            "yes" | "no" | "on" | "off" | "y" | "n"
        );
        if octal || bool11 {
            problems.push(format!(
                "{file}:{}: {value:?} means something else to Kubernetes (YAML 1.1): write {}",
                n + 1,
                if octal {
                    "the decimal number"
                } else {
                    "true/false, or quote it"
                }
            ));
        }
    }
    problems
}

#[test]
fn every_yaml_document_in_deploy_parses_and_names_itself() {
    let files = yaml_files(&deploy_dir());
    assert!(files.len() >= 8, "too few YAML files found: {files:?}");
    let mut problems = Vec::new();
    for path in &files {
        let file = relative(path);
        let text = read(path);
        problems.extend(yaml_1_1_problems(&text, &file));
        let docs = match parse_docs(&text, &file, false) {
            Ok(d) => d,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        if docs.is_empty() {
            problems.push(format!("{file}: no documents"));
        }
        if path.starts_with(chart_dir()) {
            // Chart.yaml and values.yaml: one mapping each.
            if docs.len() != 1 || !docs[0].obj.is_object() {
                problems.push(format!("{file}: expected one mapping"));
            }
            continue;
        }
        for d in &docs {
            for (field, v) in [
                ("apiVersion", d.str_at("/apiVersion")),
                ("kind", d.kind()),
                ("metadata.name", d.name()),
            ] {
                if v.is_empty() {
                    problems.push(format!("{}: no {field}", d.id()));
                }
            }
            let namespaced = !matches!(
                d.kind(),
                "Namespace"
                    | "ClusterRole"
                    | "ClusterRoleBinding"
                    | "CSIDriver"
                    | "StorageClass"
                    | "VolumeSnapshotClass"
            );
            if namespaced && d.namespace() != NAMESPACE {
                problems.push(format!(
                    "{}: namespace {:?}, expected {NAMESPACE}",
                    d.id(),
                    d.namespace()
                ));
            }
            if !namespaced && !d.namespace().is_empty() {
                problems.push(format!("{}: a cluster-scoped object with a namespace", d.id()));
            }
        }
    }
    let chart = &parse_docs(&read(&chart_dir().join("Chart.yaml")), "Chart.yaml", false).unwrap()[0].obj;
    for field in ["apiVersion", "name", "version", "appVersion"] {
        if chart.get(field).and_then(Value::as_str).unwrap_or("").is_empty() {
            problems.push(format!("Chart.yaml: no {field}"));
        }
    }
    assert_eq!(
        chart["apiVersion"], "v2",
        "Chart.yaml: Helm 3+ charts are apiVersion v2"
    );
    assert_eq!(chart["name"], "rds-csi");
    fail_if_any("deploy/ YAML", problems);
}

#[test]
fn a_yaml_1_1_trap_is_caught() {
    assert_eq!(yaml_1_1_problems("mode: 0644\nreadOnly: yes\n", "t").len(), 2);
    assert!(yaml_1_1_problems("mode: 420\nreadOnly: true\nx: \"0\"\n", "t").is_empty());
    assert!(
        parse_docs("a: 1\na: 2\n", "t", false).is_err(),
        "duplicate keys are errors"
    );
}

// ---------------------------------------------------------------------------
// Pods, containers, environment
// ---------------------------------------------------------------------------

fn pod_spec(d: &Doc) -> Option<&Value> {
    match d.kind() {
        "Deployment" | "DaemonSet" | "StatefulSet" => d.obj.pointer("/spec/template/spec"),
        "Pod" => d.obj.get("spec"),
        _ => None,
    }
}

fn items<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    items(v, key)
        .iter()
        .map(|a| match a {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

fn container_name(c: &Value) -> &str {
    c.get("name").and_then(Value::as_str).unwrap_or("")
}

/// Every pod template with its containers (init containers included).
fn pods(docs: &[Doc]) -> Vec<(&Doc, &Value)> {
    docs.iter().filter_map(|d| pod_spec(d).map(|p| (d, p))).collect()
}

/// Kubernetes' `$(VAR)` expansion in command, args and env values: `$$` is
/// a literal `$`, `$(NAME)` becomes NAME's value when NAME is defined and
/// stays as written otherwise.
fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let (Some(body), true) = (tail.strip_prefix("$("), tail.contains(')')) {
            let end = body.find(')').unwrap_or(0);
            let name = &body[..end];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&tail[..end + 3]),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// A Secret's or ConfigMap's key, from the documents at hand.
fn object_key(docs: &[Doc], kind: &str, ns: &str, name: &str, key: &str) -> Option<String> {
    let d = docs
        .iter()
        .find(|d| d.kind() == kind && d.name() == name && d.namespace() == ns)?;
    if let Some(v) = d
        .obj
        .pointer(&format!("/stringData/{key}"))
        .and_then(Value::as_str)
    {
        return Some(v.to_string());
    }
    let data = d.obj.pointer(&format!("/data/{key}")).and_then(Value::as_str)?;
    if kind == "Secret" {
        let bytes = base64::engine::general_purpose::STANDARD.decode(data).ok()?;
        String::from_utf8(bytes).ok()
    } else {
        Some(data.to_string())
    }
}

/// The environment a container gets, resolved the way kubelet would, with
/// sample values for the Downward API and Secret/ConfigMap keys read from
/// the documents at hand.
fn container_env(c: &Value, ns: &str, docs: &[Doc]) -> Result<BTreeMap<String, String>, String> {
    let who = container_name(c);
    let mut env = BTreeMap::new();
    if let Some(from) = items(c, "envFrom").first() {
        return Err(format!("{who}: envFrom {from} is not resolved by this test"));
    }
    for e in items(c, "env") {
        let name = e
            .get("name")
            .and_then(Value::as_str)
            .ok_or(format!("{who}: env without a name"))?;
        let value = if let Some(v) = e.get("value") {
            let v = v
                .as_str()
                .ok_or(format!("{who}: env {name}: the value must be a string"))?;
            expand(v, &env)
        } else if let Some(path) = e.pointer("/valueFrom/fieldRef/fieldPath").and_then(Value::as_str) {
            match path {
                "spec.nodeName" => SAMPLE_NODE.to_string(),
                "metadata.name" => SAMPLE_POD.to_string(),
                "metadata.namespace" => ns.to_string(),
                other => {
                    return Err(format!(
                        "{who}: env {name}: fieldRef {other} unknown to this test"
                    ))
                }
            }
        } else if let Some(r) = e
            .pointer("/valueFrom/secretKeyRef")
            .or(e.pointer("/valueFrom/configMapKeyRef"))
        {
            let kind = if e.pointer("/valueFrom/secretKeyRef").is_some() {
                "Secret"
            } else {
                "ConfigMap"
            };
            let obj = r.get("name").and_then(Value::as_str).unwrap_or("");
            let key = r.get("key").and_then(Value::as_str).unwrap_or("");
            match object_key(docs, kind, ns, obj, key) {
                Some(v) => v,
                None if r.get("optional") == Some(&Value::Bool(true)) => continue,
                None => {
                    return Err(format!(
                        "{who}: env {name}: {kind} {ns}/{obj} key {key:?} is in none of the manifests"
                    ))
                }
            }
        } else {
            return Err(format!("{who}: env {name}: no value this test understands"));
        };
        env.insert(name.to_string(), value);
    }
    Ok(env)
}

/// The rds-csi containers: the driver itself, in whichever pod.
fn is_driver(c: &Value) -> bool {
    container_name(c) == "rds-csi"
}

/// The value of `--flag=v` or `--flag v` (Go flags also take one dash).
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    let bare = flag.trim_start_matches('-');
    for (i, a) in args.iter().enumerate() {
        let stripped = a.strip_prefix("--").or_else(|| a.strip_prefix('-'));
        let Some(s) = stripped else { continue };
        if let Some(v) = s.strip_prefix(bare).and_then(|r| r.strip_prefix('=')) {
            return Some(v.to_string());
        }
        if s == bare {
            return args.get(i + 1).cloned();
        }
    }
    None
}

fn has_flag(args: &[String], flag: &str) -> bool {
    let bare = flag.trim_start_matches('-');
    args.iter().any(|a| {
        let s = a.trim_start_matches('-');
        s == bare || s.strip_prefix(bare).is_some_and(|r| r.starts_with('='))
    })
}

/// Runs `rds-csi <args> --check-config` with exactly `env`.
fn check_config(args: &[String], env: &BTreeMap<String, String>) -> Result<(), String> {
    let out = Command::new(BIN)
        .args(args)
        .arg("--check-config")
        .env_clear()
        .envs(env)
        .output()
        .map_err(|e| format!("run {BIN}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`rds-csi {} --check-config` with env {env:?} exited {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The driver container's args (after `$(VAR)` expansion) and environment.
fn driver_invocation(
    d: &Doc,
    c: &Value,
    docs: &[Doc],
) -> Result<(Vec<String>, BTreeMap<String, String>), String> {
    let env = container_env(c, d.namespace(), docs)?;
    if c.get("command").is_some() {
        return Err("the rds-csi container must use the image's entrypoint (no command:)".into());
    }
    let args: Vec<String> = strings(c, "args").iter().map(|a| expand(a, &env)).collect();
    if args.first().map(String::as_str) != Some("serve") {
        return Err(format!("args must start with serve: {args:?}"));
    }
    Ok((args, env))
}

/// Every rds-csi container in `docs` must pass `--check-config`.
fn driver_flag_problems(docs: &[Doc]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = 0;
    for (d, spec) in pods(docs) {
        for c in items(spec, "containers").iter().filter(|c| is_driver(c)) {
            seen += 1;
            match driver_invocation(d, c, docs).and_then(|(args, env)| check_config(&args, &env)) {
                Ok(()) => {}
                Err(e) => problems.push(format!("{}: {e}", d.id())),
            }
        }
    }
    if seen == 0 {
        problems.push("no rds-csi container found".into());
    }
    problems
}

#[test]
fn the_driver_accepts_every_flag_and_env_var_the_manifests_pass() {
    let docs = plain_docs();
    let drivers = pods(&docs)
        .iter()
        .flat_map(|(_, s)| items(s, "containers").iter().filter(|c| is_driver(c)))
        .count();
    assert_eq!(
        drivers, 2,
        "expected the controller's and the node's rds-csi containers"
    );
    fail_if_any("rds-csi flags in deploy/kubernetes", driver_flag_problems(&docs));
}

#[test]
fn check_config_catches_a_bad_flag_and_a_bad_env_var() {
    // The check above means something only if --check-config can fail.
    let serve = |extra: &[&str]| -> Vec<String> {
        ["serve", "--node", "--node-id=n1"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    assert!(check_config(&serve(&[]), &BTreeMap::new()).is_ok());
    assert!(check_config(&serve(&["--no-such-flag"]), &BTreeMap::new()).is_err());
    let env = BTreeMap::from([("RDS_CSI_LOG_LEVEL".to_string(), "loud".to_string())]);
    let e = check_config(&serve(&[]), &env).unwrap_err();
    assert!(e.contains("RDS_CSI_LOG_LEVEL"), "{e}");
    assert_eq!(
        expand(
            "--node-id=$(NODE_NAME)",
            &BTreeMap::from([("NODE_NAME".into(), "a".into())])
        ),
        "--node-id=a"
    );
    assert_eq!(expand("$(UNSET) $$(x) $", &BTreeMap::new()), "$(UNSET) $(x) $");
}

// ---------------------------------------------------------------------------
// Sockets
// ---------------------------------------------------------------------------

/// The volume and the path inside it that `path` names in container `c`.
fn resolve_mount(c: &Value, path: &str) -> Result<(String, String), String> {
    let mut best: Option<(usize, String, String)> = None;
    for m in items(c, "volumeMounts") {
        let mount = m
            .get("mountPath")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim_end_matches('/');
        let rest = if path == mount {
            Some("")
        } else {
            path.strip_prefix(mount).and_then(|r| r.strip_prefix('/'))
        };
        let Some(rest) = rest else { continue };
        if best.as_ref().is_some_and(|(len, _, _)| *len >= mount.len()) {
            continue;
        }
        let vol = m.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        let rel = match m.get("subPath").and_then(Value::as_str) {
            Some(sub) if rest.is_empty() => sub.to_string(),
            Some(sub) => format!("{sub}/{rest}"),
            None => rest.to_string(),
        };
        best = Some((mount.len(), vol, rel));
    }
    best.map(|(_, v, r)| (v, r))
        .ok_or_else(|| format!("{}: {path} is on no mounted volume", container_name(c)))
}

fn volume<'a>(spec: &'a Value, name: &str) -> Option<&'a Value> {
    items(spec, "volumes")
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
}

fn host_path<'a>(spec: &'a Value, name: &str) -> Option<&'a str> {
    volume(spec, name)?
        .pointer("/hostPath/path")
        .and_then(Value::as_str)
}

fn join(dir: &str, rel: &str) -> String {
    if rel.is_empty() {
        dir.trim_end_matches('/').to_string()
    } else {
        format!("{}/{rel}", dir.trim_end_matches('/'))
    }
}

/// The driver's socket path inside its container.
fn driver_socket(args: &[String], env: &BTreeMap<String, String>) -> Result<String, String> {
    let endpoint = flag_value(args, "--endpoint")
        .or_else(|| env.get("RDS_CSI_ENDPOINT").cloned())
        .or_else(|| env.get("CSI_ENDPOINT").cloned())
        .unwrap_or_else(|| "unix:///csi/csi.sock".to_string());
    endpoint
        .strip_prefix("unix://")
        .filter(|p| p.starts_with('/'))
        .map(str::to_string)
        .ok_or(format!("endpoint {endpoint:?} is not unix:///<absolute path>"))
}

/// What `socket_problems` learned: the kubelet registration paths of the
/// registrars that run without a driver beside them (for a host plugin).
#[derive(Default)]
struct Sockets {
    problems: Vec<String>,
    host_registrations: Vec<String>,
}

fn socket_problems(docs: &[Doc], driver_name: &str) -> Sockets {
    let mut out = Sockets::default();
    for (d, spec) in pods(docs) {
        let mut p = |msg: String| out.problems.push(format!("{}: {msg}", d.id()));
        let containers = items(spec, "containers");
        let drivers: Vec<&Value> = containers.iter().filter(|c| is_driver(c)).collect();
        let mut driver_sock = None;
        if let Some(c) = drivers.first() {
            match driver_invocation(d, c, docs)
                .and_then(|(args, env)| driver_socket(&args, &env))
                .and_then(|path| resolve_mount(c, &path))
            {
                Ok(sock) => driver_sock = Some(sock),
                Err(e) => p(e),
            }
        }
        for c in containers.iter().filter(|c| !is_driver(c)) {
            let args = strings(c, "args");
            let Some(addr) = flag_value(&args, "--csi-address") else {
                p(format!("{}: no --csi-address", container_name(c)));
                continue;
            };
            let sock = match resolve_mount(c, &addr) {
                Ok(s) => s,
                Err(e) => {
                    p(e);
                    continue;
                }
            };
            if let Some(ds) = &driver_sock {
                if &sock != ds {
                    p(format!(
                        "{}: --csi-address {addr} is {sock:?} (volume, path), the driver listens on {ds:?}",
                        container_name(c)
                    ));
                }
            }
            if let Some(reg) = flag_value(&args, "--kubelet-registration-path") {
                // The host path of the socket must be what kubelet is told.
                match host_path(spec, &sock.0) {
                    Some(dir) if join(dir, &sock.1) == reg => {}
                    Some(dir) => p(format!(
                        "registrar: socket on the host is {}, --kubelet-registration-path is {reg}",
                        join(dir, &sock.1)
                    )),
                    None => p(format!("registrar: socket volume {} is no hostPath", sock.0)),
                }
                let suffix = format!("/plugins/{driver_name}/csi.sock");
                let Some(kubelet) = reg.strip_suffix(&suffix) else {
                    p(format!("registrar: {reg} is not <kubelet dir>{suffix}"));
                    continue;
                };
                match resolve_mount(c, "/registration") {
                    Ok((vol, rel)) if rel.is_empty() => {
                        let want = format!("{kubelet}/plugins_registry");
                        if host_path(spec, &vol) != Some(want.as_str()) {
                            p(format!("registrar: /registration is not the host's {want}"));
                        }
                    }
                    _ => p("registrar: /registration is not a mounted volume".into()),
                }
                match drivers.first() {
                    Some(drv) => {
                        node_driver_problems(spec, drv, kubelet, &mut p);
                        match driver_invocation(d, drv, docs) {
                            Ok((args, env)) => {
                                if let Some(e) = kubelet_dir_problem(&args, &env, kubelet) {
                                    p(format!("node plugin: {e}"));
                                }
                            }
                            Err(e) => p(e),
                        }
                    }
                    None => out.host_registrations.push(reg.clone()),
                }
            }
        }
        // The controller's socket is private to its pod.
        if let (Some(c), Some((vol, _))) = (drivers.first(), &driver_sock) {
            let controller = strings(c, "args").iter().any(|a| a == "--controller");
            let empty_dir = volume(spec, vol).is_some_and(|v| v.get("emptyDir").is_some());
            if controller && !empty_dir {
                p(format!("controller socket volume {vol} is not an emptyDir"));
            }
        }
        health_port_problems(spec, &mut p);
    }
    out
}

/// The node plugin confines staging and target paths under its
/// `--kubelet-dir` (or RDS_CSI_KUBELET_DIR): it must be given, and be
/// kubelet's directory, or every stage is refused.
fn kubelet_dir_problem(args: &[String], env: &BTreeMap<String, String>, kubelet: &str) -> Option<String> {
    let given = flag_value(args, "--kubelet-dir").or_else(|| env.get("RDS_CSI_KUBELET_DIR").cloned());
    match given {
        None => Some(format!(
            "no --kubelet-dir (or RDS_CSI_KUBELET_DIR): pass kubelet's directory {kubelet}"
        )),
        Some(dir) if dir.trim_end_matches('/') != kubelet.trim_end_matches('/') => Some(format!(
            "--kubelet-dir is {dir}, but kubelet's directory is {kubelet}"
        )),
        Some(_) => None,
    }
}

/// The node plugin next to a registrar: kubelet's directory at the same
/// path with bidirectional propagation, privileged, on the host's network.
fn node_driver_problems(spec: &Value, drv: &Value, kubelet: &str, p: &mut impl FnMut(String)) {
    let kubelet_mount = items(drv, "volumeMounts")
        .iter()
        .find(|m| m.get("mountPath").and_then(Value::as_str) == Some(kubelet));
    match kubelet_mount {
        None => p(format!(
            "node plugin: kubelet's {kubelet} is not mounted at the same path"
        )),
        Some(m) => {
            let vol = m.get("name").and_then(Value::as_str).unwrap_or("");
            if host_path(spec, vol) != Some(kubelet) {
                p(format!(
                    "node plugin: {kubelet} inside is not the host's {kubelet}"
                ));
            }
            if m.get("mountPropagation").and_then(Value::as_str) != Some("Bidirectional") {
                p(format!(
                    "node plugin: {kubelet} needs mountPropagation: Bidirectional"
                ));
            }
        }
    }
    for (dir, why) in [
        ("/dev", "NVMe devices"),
        ("/sys", "sysfs"),
        ("/etc/nvme", "the host NQN"),
    ] {
        let mounted = items(drv, "volumeMounts").iter().any(|m| {
            m.get("mountPath").and_then(Value::as_str) == Some(dir)
                && host_path(spec, m.get("name").and_then(Value::as_str).unwrap_or("")) == Some(dir)
        });
        if !mounted {
            p(format!(
                "node plugin: the host's {dir} ({why}) is not mounted at {dir}"
            ));
        }
    }
    if drv.pointer("/securityContext/privileged") != Some(&Value::Bool(true)) {
        p("node plugin: must be privileged (mounts, bidirectional propagation)".into());
    }
    if spec.get("hostNetwork") != Some(&Value::Bool(true)) {
        p(
            "node plugin: NVMe/TCP connections must be made in the host's network namespace (hostNetwork)"
                .into(),
        );
    }
}

/// Every container port must be where some container listens: a sidecar's
/// `--http-endpoint`, or the driver's `--metrics-address`.
fn health_port_problems(spec: &Value, p: &mut impl FnMut(String)) {
    let containers = items(spec, "containers");
    let listening: BTreeSet<String> = containers
        .iter()
        .flat_map(|c| {
            let args = strings(c, "args");
            let metrics = flag_value(&args, "--metrics-address")
                .and_then(|a| a.rsplit_once(':').map(|(_, port)| format!(":{port}")));
            flag_value(&args, "--http-endpoint").into_iter().chain(metrics)
        })
        .collect();
    for c in containers {
        for port in items(c, "ports") {
            let n = port.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
            if !listening.contains(&format!(":{n}")) {
                p(format!(
                    "{}: port {n} is served by no --http-endpoint in the pod",
                    container_name(c)
                ));
            }
        }
        for probe in ["livenessProbe", "readinessProbe"] {
            let Some(port) = c.pointer(&format!("/{probe}/httpGet/port")) else {
                continue;
            };
            let known = match port {
                Value::String(name) => items(c, "ports")
                    .iter()
                    .any(|q| q.get("name").and_then(Value::as_str) == Some(name.as_str())),
                Value::Number(n) => listening.contains(&format!(":{n}")),
                _ => false,
            };
            if !known {
                p(format!(
                    "{}: {probe} port {port} is not a port of this container",
                    container_name(c)
                ));
            }
        }
    }
}

#[test]
fn every_sidecar_socket_is_the_driver_socket() {
    let docs = plain_docs();
    let s = socket_problems(&docs, rds_csi::DEFAULT_DRIVER_NAME);
    fail_if_any("sockets in deploy/kubernetes", s.problems);
    assert_eq!(
        s.host_registrations,
        vec![format!(
            "/var/lib/kubelet/plugins/{}/csi.sock",
            rds_csi::DEFAULT_DRIVER_NAME
        )],
        "alternatives/node-registrar.yaml registers the host plugin's socket"
    );
}

#[test]
fn a_missing_or_wrong_kubelet_dir_is_caught() {
    let args = |extra: &[&str]| -> Vec<String> {
        ["serve", "--node"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let none = BTreeMap::new();
    let k = "/var/lib/kubelet";
    assert!(kubelet_dir_problem(&args(&[]), &none, k).is_some());
    assert!(kubelet_dir_problem(&args(&["--kubelet-dir=/data/kubelet"]), &none, k).is_some());
    assert_eq!(
        kubelet_dir_problem(&args(&["--kubelet-dir=/var/lib/kubelet/"]), &none, k),
        None
    );
    let env = BTreeMap::from([("RDS_CSI_KUBELET_DIR".to_string(), k.to_string())]);
    assert_eq!(kubelet_dir_problem(&args(&[]), &env, k), None);
    // In a manifest: dropping the flag from the node plugin is a problem.
    let mut docs = plain_docs();
    let ds = docs
        .iter_mut()
        .find(|d| d.kind() == "DaemonSet" && d.obj.to_string().contains("--kubelet-dir"))
        .expect("a node DaemonSet passing --kubelet-dir");
    let containers = ds.obj["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap();
    for c in containers.iter_mut() {
        if let Some(a) = c.get_mut("args").and_then(Value::as_array_mut) {
            a.retain(|v| !v.as_str().is_some_and(|s| s.starts_with("--kubelet-dir")));
        }
    }
    let problems = socket_problems(&docs, rds_csi::DEFAULT_DRIVER_NAME).problems;
    assert!(
        problems.iter().any(|p| p.contains("--kubelet-dir")),
        "{problems:?}"
    );
}

#[test]
fn a_wrong_socket_path_is_caught() {
    let mut docs = plain_docs();
    let node = docs
        .iter_mut()
        .find(|d| d.kind() == "DaemonSet" && d.file.ends_with("40-node.yaml"))
        .expect("node DaemonSet");
    let registrar = node
        .obj
        .pointer_mut("/spec/template/spec/containers/1/args/1")
        .expect("registrar args");
    *registrar = json!("--kubelet-registration-path=/var/lib/kubelet/plugins/other.driver/csi.sock");
    let s = socket_problems(&docs, rds_csi::DEFAULT_DRIVER_NAME);
    assert!(
        s.problems
            .iter()
            .any(|p| p.contains("--kubelet-registration-path")),
        "{:?}",
        s.problems
    );
}

// ---------------------------------------------------------------------------
// CSIDriver, StorageClasses, sidecar flags
// ---------------------------------------------------------------------------

fn csidriver_problems(docs: &[Doc]) -> Vec<String> {
    let drivers: Vec<&Doc> = docs.iter().filter(|d| d.kind() == "CSIDriver").collect();
    if drivers.len() != 1 {
        return vec![format!("expected one CSIDriver, found {}", drivers.len())];
    }
    let d = drivers[0];
    let mut problems = Vec::new();
    if d.name() != rds_csi::DEFAULT_DRIVER_NAME {
        problems.push(format!(
            "{}: name must be {}",
            d.id(),
            rds_csi::DEFAULT_DRIVER_NAME
        ));
    }
    let want = json!({
        "attachRequired": true,
        "podInfoOnMount": true,
        "storageCapacity": true,
        "fsGroupPolicy": "File",
        "volumeLifecycleModes": ["Persistent"],
    });
    if d.obj["spec"] != want {
        problems.push(format!("{}: spec {} is not {want}", d.id(), d.obj["spec"]));
    }
    problems
}

#[test]
fn the_csidriver_attaches_passes_pod_info_publishes_capacity_and_owns_fsgroup() {
    fail_if_any("CSIDriver", csidriver_problems(&plain_docs()));
}

/// The controller's `--volume-base-path` as it resolves it (StorageClass
/// volumePath must lie inside).
fn controller_base_path(docs: &[Doc]) -> Option<String> {
    for (d, spec) in pods(docs) {
        for c in items(spec, "containers").iter().filter(|c| is_driver(c)) {
            let Ok((args, env)) = driver_invocation(d, c, docs) else {
                continue;
            };
            if !args.iter().any(|a| a == "--controller") {
                continue;
            }
            let get = |flag: &str| {
                flag_value(&args, flag).or_else(|| {
                    env.get(&rds_csi::cli::env_name(flag.trim_start_matches('-')))
                        .cloned()
                })
            };
            let pool = get("--rds-pool").unwrap_or_else(|| "storage-pool".into());
            return Some(get("--volume-base-path").unwrap_or(format!("{pool}/csi")));
        }
    }
    None
}

fn storage_class_problems(docs: &[Doc]) -> Vec<String> {
    let base = controller_base_path(docs).unwrap_or_else(|| "storage-pool/csi".into());
    let mut problems = Vec::new();
    let classes: Vec<&Doc> = docs.iter().filter(|d| d.kind() == "StorageClass").collect();
    if classes.is_empty() {
        problems.push("no StorageClass".into());
    }
    for d in classes {
        let mut p = |m: String| problems.push(format!("{}: {m}", d.id()));
        if d.str_at("/provisioner") != rds_csi::DEFAULT_DRIVER_NAME {
            p(format!("provisioner must be {}", rds_csi::DEFAULT_DRIVER_NAME));
        }
        if d.obj.get("allowVolumeExpansion") != Some(&Value::Bool(true)) {
            p("the driver expands volumes: allowVolumeExpansion: true".into());
        }
        let mut params = std::collections::HashMap::new();
        for (k, v) in d
            .obj
            .get("parameters")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            match v.as_str() {
                Some(s) => {
                    params.insert(k.clone(), s.to_string());
                }
                // kubectl refuses a StorageClass whose parameter is a number.
                None => p(format!("parameter {k}: {v} must be a string (quote it)")),
            }
        }
        match rds_csi::controller::VolumeParams::parse(&params) {
            Ok(vp) => {
                if let Some(path) = vp.volume_path.as_deref() {
                    if let Err(e) = rds_csi::volume::resolve_volume_path(&base, Some(path)) {
                        p(format!("volumePath {path:?}: {e}"));
                    }
                }
            }
            Err(e) => p(format!("the driver refuses the parameters: {e}")),
        }
    }
    problems
}

#[test]
fn storage_class_parameters_pass_the_drivers_own_validator() {
    let docs = plain_docs();
    let names: BTreeSet<&str> = docs
        .iter()
        .filter(|d| d.kind() == "StorageClass")
        .map(Doc::name)
        .collect();
    assert_eq!(names, BTreeSet::from(["rds-block", "rds-ext4", "rds-xfs"]));
    fail_if_any("StorageClasses", storage_class_problems(&docs));
    // ... and a typo or a number would be caught.
    let mut bad = docs.clone();
    for d in bad.iter_mut().filter(|d| d.kind() == "StorageClass") {
        d.obj["parameters"]["ctrlLossTimeout"] = json!("-1");
        d.obj["parameters"]["reconnectDelay"] = json!(5);
    }
    let problems = storage_class_problems(&bad);
    assert!(
        problems.iter().any(|p| p.contains("ctrlLossTimeout")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("must be a string")),
        "{problems:?}"
    );
}

/// The controller sidecars and the flags each needs for this driver.
fn sidecar_flag_problems(docs: &[Doc]) -> Vec<String> {
    let mut problems = Vec::new();
    let controller = pods(docs).into_iter().find(|(_, spec)| {
        items(spec, "containers")
            .iter()
            .any(|c| is_driver(c) && strings(c, "args").iter().any(|a| a == "--controller"))
    });
    let Some((d, spec)) = controller else {
        return vec!["no controller pod".into()];
    };
    let by_image = |needle: &str| {
        items(spec, "containers").iter().find(|c| {
            c.get("image")
                .and_then(Value::as_str)
                .is_some_and(|i| i.contains(needle))
        })
    };
    let required: &[(&str, &[&str])] = &[
        (
            "/csi-provisioner:",
            &[
                "--leader-election",
                "--extra-create-metadata",
                "--enable-capacity",
                "--capacity-ownerref-level",
            ],
        ),
        ("/csi-attacher:", &["--leader-election"]),
        ("/csi-resizer:", &["--leader-election"]),
        ("/csi-snapshotter:", &["--leader-election"]),
        ("/livenessprobe:", &[]),
    ];
    for (image, flags) in required {
        let Some(c) = by_image(image) else {
            problems.push(format!("{}: no {image} container", d.id()));
            continue;
        };
        let args = strings(c, "args");
        for f in *flags {
            if !has_flag(&args, f) {
                problems.push(format!("{}: {} lacks {f}", d.id(), container_name(c)));
            }
        }
        // Pinned tags, never :latest or :canary.
        let img = c["image"].as_str().unwrap_or("");
        let tag = img.rsplit(':').next().unwrap_or("");
        if !(img.starts_with("registry.k8s.io/sig-storage/") && tag.starts_with('v') && tag.contains('.')) {
            problems.push(format!(
                "{}: {img} is not a pinned registry.k8s.io/sig-storage release",
                d.id()
            ));
        }
    }
    // Capacity tracking finds its owner through these (--capacity-ownerref-level).
    if let Some(c) = by_image("/csi-provisioner:") {
        let env: BTreeSet<&str> = items(c, "env")
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        for var in ["NAMESPACE", "POD_NAME"] {
            if !env.contains(var) {
                problems.push(format!(
                    "{}: csi-provisioner needs env {var} for --enable-capacity",
                    d.id()
                ));
            }
        }
    }
    // Only the API-facing sidecars get a token.
    if spec.get("automountServiceAccountToken") != Some(&Value::Bool(false)) {
        problems.push(format!(
            "{}: the pod must not automount a token for every container",
            d.id()
        ));
    }
    for c in items(spec, "containers") {
        let has_token = items(c, "volumeMounts")
            .iter()
            .any(|m| m["mountPath"].as_str() == Some("/var/run/secrets/kubernetes.io/serviceaccount"));
        let needs = [
            "/csi-provisioner:",
            "/csi-attacher:",
            "/csi-resizer:",
            "/csi-snapshotter:",
        ]
        .iter()
        .any(|n| c["image"].as_str().unwrap_or("").contains(n));
        if has_token != needs {
            problems.push(format!(
                "{}: {} {} a Kubernetes API token",
                d.id(),
                container_name(c),
                if needs { "needs" } else { "must not get" }
            ));
        }
    }
    problems
}

#[test]
fn the_controller_runs_provisioner_attacher_resizer_and_probe_with_their_flags() {
    fail_if_any("controller sidecars", sidecar_flag_problems(&plain_docs()));
}

/// The node pod's init container script, as the shell will see it.
fn init_scripts(docs: &[Doc]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (d, spec) in pods(docs) {
        for c in items(spec, "initContainers") {
            let cmd = strings(c, "command");
            assert_eq!(
                cmd.get(..2),
                Some(&["/bin/sh".to_string(), "-ec".to_string()][..]),
                "{}",
                d.id()
            );
            out.push((d.id(), expand(&cmd[2], &BTreeMap::new())));
        }
    }
    out
}

fn shell_syntax_problems(scripts: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, (id, script)) in scripts.iter().enumerate() {
        let file = std::env::temp_dir().join(format!("rds-csi-deploy-{}-{i}.sh", std::process::id()));
        std::fs::write(&file, script).expect("write script");
        let out = Command::new("sh")
            .arg("-n")
            .arg(&file)
            .output()
            .expect("run sh -n");
        let _ = std::fs::remove_file(&file);
        if !out.status.success() {
            problems.push(format!(
                "{id}: sh -n: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        for needle in ["/sys/module/nvme_tcp", "modprobe nvme_tcp", "/etc/nvme/hostnqn"] {
            if !script.contains(needle) {
                problems.push(format!("{id}: the node setup script no longer mentions {needle}"));
            }
        }
    }
    problems
}

#[test]
fn the_node_setup_script_is_valid_shell() {
    let scripts = init_scripts(&plain_docs());
    assert_eq!(
        scripts.len(),
        1,
        "one init container (nvme-setup) in 40-node.yaml"
    );
    fail_if_any("node setup script", shell_syntax_problems(&scripts));
    let broken = vec![(
        "t".to_string(),
        "if true; then echo /sys/module/nvme_tcp".to_string(),
    )];
    assert!(!shell_syntax_problems(&broken).is_empty());
}

// ---------------------------------------------------------------------------
// Helm
// ---------------------------------------------------------------------------

fn template_files() -> Vec<PathBuf> {
    let dir = chart_dir().join("templates");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
}

fn values_yaml() -> Value {
    let path = chart_dir().join("values.yaml");
    parse_docs(&read(&path), "values.yaml", false).expect("values.yaml")[0]
        .obj
        .clone()
}

/// Every `.Values.a.b.c` a template reads: each must be a key in
/// values.yaml, so a misspelt name cannot silently render as empty.
#[test]
fn every_value_the_templates_read_is_in_values_yaml() {
    let values = values_yaml();
    let mut problems = Vec::new();
    let mut seen = 0;
    for path in template_files() {
        let text = read(&path);
        let mut rest = text.as_str();
        while let Some(i) = rest.find(".Values.") {
            rest = &rest[i + ".Values.".len()..];
            let end = rest
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_' || ch == '.'))
                .unwrap_or(rest.len());
            let dotted = rest[..end].trim_end_matches('.');
            seen += 1;
            let mut v = &values;
            for part in dotted.split('.') {
                match v.get(part) {
                    Some(next) => v = next,
                    None => {
                        problems.push(format!(
                            "{}: .Values.{dotted} is not in values.yaml",
                            relative(&path)
                        ));
                        break;
                    }
                }
            }
        }
    }
    assert!(seen > 30, "found only {seen} .Values references");
    fail_if_any("Helm values", problems);
}

#[test]
fn helm_template_delimiters_are_balanced() {
    let mut problems = Vec::new();
    for path in template_files() {
        let text = read(&path);
        let mut depth = 0i32;
        let mut i = 0;
        let b = text.as_bytes();
        while i + 1 < b.len() {
            match &b[i..i + 2] {
                b"{{" => {
                    depth += 1;
                    i += 2;
                }
                b"}}" => {
                    depth -= 1;
                    i += 2;
                }
                _ => i += 1,
            }
            if !(0..=1).contains(&depth) {
                problems.push(format!("{}: unbalanced {{{{ }}}} near byte {i}", relative(&path)));
                break;
            }
        }
        if depth != 0 {
            problems.push(format!("{}: a {{{{ is never closed", relative(&path)));
        }
    }
    fail_if_any("Helm templates", problems);
}

/// The Python with Helm's engine (scripts/setup.sh installs it). Without it
/// the rendering tests fail, unless RDS_CSI_SKIP_HELM=1 says to skip them
/// (loudly; under CI=true a skip fails).
fn helm_python() -> Option<PathBuf> {
    let tools = std::env::var_os("RDS_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".tools"));
    let python = tools.join("helm/bin/python3");
    if python.exists() {
        return Some(python);
    }
    if std::env::var("RDS_CSI_SKIP_HELM").as_deref() == Ok("1") {
        common::skip(
            "the Helm rendering tests",
            &format!("RDS_CSI_SKIP_HELM=1 and {} missing", python.display()),
        );
        return None;
    }
    panic!(
        "Helm's template engine is not installed ({} missing): run scripts/setup.sh, \
         or set RDS_CSI_SKIP_HELM=1 to skip the Helm rendering tests",
        python.display()
    );
}

fn helm_script(python: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(python)
        .arg(repo().join("scripts/helm-render.py"))
        .args(args)
        .output()
        .map_err(|e| format!("run {}: {e}", python.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// `helm template` of the chart with `values`, release rds-csi in namespace
/// rds-csi, as documents.
fn render(python: &Path, values: &Value) -> Result<Vec<Doc>, String> {
    let chart = chart_dir();
    let out = helm_script(
        python,
        &[
            "render",
            chart.to_str().expect("utf-8 path"),
            RELEASE,
            NAMESPACE,
            &values.to_string(),
        ],
    )?;
    let files: BTreeMap<String, String> =
        serde_json::from_str(&out).map_err(|e| format!("render output: {e}"))?;
    let mut docs = Vec::new();
    for (file, text) in files {
        docs.extend(parse_docs(&text, &file, true)?);
    }
    Ok(docs)
}

/// The labels Helm adds for its own bookkeeping.
const HELM_LABELS: &[&str] = &[
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
];

fn without_helm_labels(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("labels", Value::Object(labels)) => Value::Object(
                            labels
                                .iter()
                                .filter(|(l, _)| !HELM_LABELS.contains(&l.as_str()))
                                .map(|(l, v)| (l.clone(), v.clone()))
                                .collect(),
                        ),
                        _ => without_helm_labels(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_helm_labels).collect()),
        other => other.clone(),
    }
}

/// Where two JSON values differ, as JSON pointers.
fn diff(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let path = format!("{at}/{k}");
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => diff(p, q, &path, out),
                    (Some(p), None) => out.push(format!("{path}: only in the manifests: {p}")),
                    (None, Some(q)) => out.push(format!("{path}: only in the chart: {q}")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                diff(p, q, &format!("{at}/{i}"), out);
            }
        }
        _ if a != b => out.push(format!("{at}: manifests {a}, chart {b}")),
        _ => {}
    }
}

/// Plain and rendered documents must be the same objects, field for field
/// (Helm's bookkeeping labels aside).
fn compare(plain: &[Doc], rendered: &[Doc]) -> Vec<String> {
    let index = |docs: &[Doc]| -> BTreeMap<(String, String, String), Value> {
        docs.iter()
            .map(|d| (d.key(), without_helm_labels(&d.obj)))
            .collect()
    };
    let (p, r) = (index(plain), index(rendered));
    let mut problems = Vec::new();
    for key in p.keys().chain(r.keys()).collect::<BTreeSet<_>>() {
        match (p.get(key), r.get(key)) {
            (Some(a), Some(b)) => {
                let mut d = Vec::new();
                diff(a, b, "", &mut d);
                problems.extend(d.into_iter().map(|x| format!("{key:?} {x}")));
            }
            (Some(_), None) => problems.push(format!("{key:?}: in the manifests, not rendered by the chart")),
            (None, Some(_)) => problems.push(format!("{key:?}: rendered by the chart, not in the manifests")),
            (None, None) => {}
        }
    }
    problems
}

fn plain_from(files: &[&str]) -> Vec<Doc> {
    let dir = deploy_dir().join("kubernetes");
    let mut docs = Vec::new();
    for f in files {
        let path = dir.join(f);
        docs.extend(parse_docs(&read(&path), &relative(&path), false).expect("manifest"));
    }
    docs
}

/// The files scripts/render-deploy.sh writes (scripts/helm-render.py's
/// MANIFESTS); every other file under deploy/kubernetes/ is written by hand.
const RENDERED: &[&str] = &[
    "10-rbac.yaml",
    "20-csidriver.yaml",
    "30-controller.yaml",
    "40-node.yaml",
    "examples/storageclasses.yaml",
    "examples/volumesnapshotclass.yaml",
    "alternatives/node-registrar.yaml",
];
const HAND_WRITTEN: &[&str] = &["00-namespace.yaml", "examples/secret.yaml"];

/// Runs scripts/render-deploy.sh into `out` with the Helm engine at `python`.
fn render_deploy(python: &Path, out: &Path) -> Result<(), String> {
    let tools = python
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .ok_or_else(|| format!("no tool folder above {}", python.display()))?;
    let run = Command::new(repo().join("scripts/render-deploy.sh"))
        .arg(out)
        .env("RDS_TOOLS", tools)
        .output()
        .map_err(|e| format!("run scripts/render-deploy.sh: {e}"))?;
    if run.status.success() {
        Ok(())
    } else {
        Err(format!(
            "scripts/render-deploy.sh: {}\n{}",
            run.status,
            String::from_utf8_lossy(&run.stderr)
        ))
    }
}

/// Where the files rendered into `fresh` differ from those in `committed`.
fn rendered_differences(fresh: &Path, committed: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for name in RENDERED {
        let want = read(&fresh.join(name));
        let have = std::fs::read_to_string(committed.join(name)).unwrap_or_default();
        if want != have {
            let at = want
                .lines()
                .zip(have.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| want.lines().count().min(have.lines().count()));
            problems.push(format!(
                "deploy/kubernetes/{name} differs from the chart from line {}: \
                 chart {:?}, file {:?} (run scripts/render-deploy.sh)",
                at + 1,
                want.lines().nth(at).unwrap_or("<end>"),
                have.lines().nth(at).unwrap_or("<end>"),
            ));
        }
    }
    problems
}

#[test]
fn the_plain_manifests_are_the_chart_rendered_again() {
    let Some(python) = helm_python() else { return };
    let out = common::TempDir::new("render-deploy");
    render_deploy(&python, &out.path).unwrap_or_else(|e| panic!("{e}"));
    let plain = deploy_dir().join("kubernetes");
    let mut problems = rendered_differences(&out.path, &plain);
    // Nothing else under deploy/kubernetes/ that the script would not write
    // or that is not known to be written by hand.
    for path in yaml_files(&plain) {
        let name = path.strip_prefix(&plain).unwrap_or(&path).display().to_string();
        if !RENDERED.contains(&name.as_str()) && !HAND_WRITTEN.contains(&name.as_str()) {
            problems.push(format!(
                "deploy/kubernetes/{name} is neither rendered from the chart nor known to be hand-written"
            ));
        }
    }
    fail_if_any("deploy/kubernetes vs the chart", problems);
}

#[test]
fn a_hand_edit_of_a_rendered_manifest_is_caught() {
    let Some(python) = helm_python() else { return };
    let fresh = common::TempDir::new("render-deploy-fresh");
    render_deploy(&python, &fresh.path).unwrap_or_else(|e| panic!("{e}"));
    let edited = common::TempDir::new("render-deploy-edited");
    for name in RENDERED {
        let text = read(&fresh.path.join(name));
        let path = edited.path.join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
        let text = if *name == "30-controller.yaml" {
            text.replace("--log-level=info", "--log-level=debug")
        } else {
            text
        };
        std::fs::write(path, text).expect("write");
    }
    assert!(rendered_differences(&fresh.path, &fresh.path).is_empty());
    let problems = rendered_differences(&fresh.path, &edited.path);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("30-controller.yaml") && problems[0].contains("--log-level=debug"),
        "{problems:?}"
    );
    // Generated files say so, and carry none of Helm's bookkeeping labels.
    let controller = read(&fresh.path.join("30-controller.yaml"));
    assert!(
        controller.starts_with("# Generated by scripts/render-deploy.sh"),
        "{controller}"
    );
    assert!(!controller.contains("managed-by: Helm"), "{controller}");
}

#[test]
fn the_example_secret_is_the_one_the_chart_makes() {
    let Some(python) = helm_python() else { return };
    let example = plain_from(&["examples/secret.yaml"]);
    let data = &example[0].obj["stringData"];
    let values = json!({"rds": {"address": EXAMPLE_RDS, "secret": {
        "create": true,
        "username": data["username"],
        "password": data["password"],
        "tlsFingerprint": data["tls-fingerprint"],
    }}});
    let secret: Vec<Doc> = render(&python, &values)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|d| d.kind() == "Secret")
        .collect();
    fail_if_any(
        "chart (rds.secret.create) vs examples/secret.yaml",
        compare(&example, &secret),
    );
}

#[test]
fn the_helm_chart_with_other_values_passes_every_check() {
    let Some(python) = helm_python() else { return };
    let kubelet = "/var/snap/microk8s/common/var/lib/kubelet";
    let values = json!({
        "fullnameOverride": "storage",
        "kubeletDir": format!("{kubelet}/"),
        "logLevel": "debug",
        "rds": {
            "address": "https://[fd00::5]:8443",
            "pool": "raid1",
            "volumeBasePath": "raid1/k8s",
            "nvmeAddress": "10.20.0.5",
            "nqnPrefix": "nqn.2024-01.lan.example",
            "capacityReserve": "50Gi",
            "tls": {"mode": "ca"},
            "secret": {"create": true, "username": "csi", "password": "p: #x", "caCert": "-----BEGIN CERTIFICATE-----\n"},
        },
        "controller": {"allowMultiNodeBlock": true, "extraArgs": ["--rds-timeout=20"], "replicas": 2},
        "node": {"extraArgs": ["--shutdown-grace=10"], "healthPort": 29808},
        "metrics": {"enabled": true, "controllerPort": 9191, "nodePort": 29810},
        "storageClasses": [{
            "name": "fast", "default": true, "allowVolumeExpansion": true,
            "parameters": {"fsType": "xfs", "volumePath": "raid1/k8s/fast", "ctrlLossTmo": 600, "nvmePort": 4421},
        }],
    });
    let docs = render(&python, &values).unwrap_or_else(|e| panic!("{e}"));
    let mut problems = driver_flag_problems(&docs);
    let sockets = socket_problems(&docs, rds_csi::DEFAULT_DRIVER_NAME);
    problems.extend(sockets.problems);
    problems.extend(csidriver_problems(&docs));
    problems.extend(storage_class_problems(&docs));
    problems.extend(sidecar_flag_problems(&docs));
    problems.extend(shell_syntax_problems(&init_scripts(&docs)));
    fail_if_any("chart with non-default values", problems);
    let args: Vec<String> = docs
        .iter()
        .filter(|d| d.kind() == "Deployment")
        .flat_map(|d| strings(&d.obj["spec"]["template"]["spec"]["containers"][0], "args"))
        .collect();
    for want in [
        "--rds-ca-file=/etc/rds-csi/rds/ca.crt",
        "--volume-base-path=raid1/k8s",
        "--allow-multi-node-block",
        "--rds-timeout=20",
        "--metrics-address=0.0.0.0:9191",
    ] {
        assert!(args.iter().any(|a| a == want), "{want} not in {args:?}");
    }
    let ds = docs.iter().find(|d| d.kind() == "DaemonSet").expect("DaemonSet");
    let node_args = strings(&ds.obj["spec"]["template"]["spec"]["containers"][0], "args");
    assert!(
        node_args.iter().any(|a| a == "--metrics-address=0.0.0.0:29810"),
        "{node_args:?}"
    );
    assert!(ds
        .obj
        .to_string()
        .contains(&format!("{kubelet}/plugins/{}", rds_csi::DEFAULT_DRIVER_NAME)));
    let sc = docs
        .iter()
        .find(|d| d.kind() == "StorageClass")
        .expect("StorageClass");
    assert_eq!(
        sc.obj["parameters"]["ctrlLossTmo"], "600",
        "numbers become strings"
    );
    assert_eq!(
        sc.obj["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"],
        "true"
    );
}

#[test]
fn the_helm_chart_refuses_values_it_cannot_deploy() {
    let Some(python) = helm_python() else { return };
    let cases = [
        (json!({}), "rds.address is required"),
        (
            json!({"rds": {"address": EXAMPLE_RDS, "tls": {"mode": "pinned"}}}),
            "rds.tls.mode",
        ),
        (
            json!({"rds": {"address": EXAMPLE_RDS}, "node": {"mode": "both"}}),
            "node.mode",
        ),
        (
            json!({"rds": {"address": EXAMPLE_RDS, "secret": {"create": true}}}),
            "rds.secret.username",
        ),
    ];
    for (values, needle) in cases {
        match render(&python, &values) {
            Ok(_) => panic!("{values} rendered; expected a failure naming {needle}"),
            Err(e) => assert!(e.contains(needle), "{values}: {e}"),
        }
    }
}

#[test]
fn the_helm_chart_lints_clean() {
    let Some(python) = helm_python() else { return };
    let chart = chart_dir();
    let values = json!({"rds": {"address": EXAMPLE_RDS}}).to_string();
    let out = helm_script(
        &python,
        &["lint", chart.to_str().expect("utf-8"), NAMESPACE, &values],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let report: Value = serde_json::from_str(&out).expect("lint JSON");
    assert_eq!(report["errors"], json!([]), "{report}");
    // Severity 1 is "info" (e.g. "icon is recommended"); 2 warning, 3 error.
    let serious: Vec<&Value> = items(&report, "messages")
        .iter()
        .filter(|m| m["severity"].as_i64().unwrap_or(3) >= 2)
        .collect();
    assert!(serious.is_empty(), "helm lint: {serious:?}");
}

// ---------------------------------------------------------------------------
// systemd
// ---------------------------------------------------------------------------

/// `(section, key, value)` of a unit file, in order.
fn unit_entries(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
        } else if let Some((k, v)) = line.split_once('=') {
            out.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

fn unquote(v: &str) -> String {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
        .to_string()
}

/// The environment systemd gives ExecStart: Environment= lines, then the
/// EnvironmentFile (which wins), with %H as a sample host name.
fn unit_env(entries: &[(String, String, String)], env_file: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (_, _, v) in entries
        .iter()
        .filter(|(s, k, _)| s == "Service" && k == "Environment")
    {
        for assignment in v.split_whitespace() {
            if let Some((name, value)) = unquote(assignment).split_once('=') {
                env.insert(
                    name.to_string(),
                    value.replace("%H", SAMPLE_NODE).replace("%%", "%"),
                );
            }
        }
    }
    for line in env_file.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let (name, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("env file line {line:?}"));
        env.insert(name.trim().to_string(), unquote(value.trim()));
    }
    env
}

const UNIT: &str = "deploy/systemd/rds-csi-node.service";
const ENV_FILE: &str = "deploy/systemd/rds-csi-node.env";

#[test]
fn the_systemd_unit_passes_check_config_and_registers_where_the_registrar_looks() {
    let entries = unit_entries(&read(&repo().join(UNIT)));
    let get = |section: &str, key: &str| -> Vec<&str> {
        entries
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("Service", "Restart"), ["on-failure"]);
    assert_eq!(get("Service", "NoNewPrivileges"), ["yes"]);
    assert_eq!(
        get("Service", "KillMode"),
        ["mixed"],
        "mkfs must not get SIGTERM with the plugin"
    );
    assert!(get("Unit", "After")
        .iter()
        .any(|v| v.contains("network-online.target")));
    assert!(get("Unit", "Wants")
        .iter()
        .any(|v| v.contains("network-online.target")));
    assert_eq!(
        get("Service", "EnvironmentFile"),
        ["-/etc/rds-csi/node.env"],
        "the README installs {ENV_FILE} there"
    );
    let exec = get("Service", "ExecStart");
    assert_eq!(exec.len(), 1);
    let mut words = exec[0]
        .trim_start_matches(['-', '+', '@', ':', '!'])
        .split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/rds-csi"));
    let args: Vec<String> = words.map(str::to_string).collect();
    assert!(args.iter().any(|a| a == "--node"), "{args:?}");

    let env = unit_env(&entries, &read(&repo().join(ENV_FILE)));
    check_config(&args, &env).unwrap_or_else(|e| panic!("{UNIT} with {ENV_FILE}: {e}"));

    // The host plugin's socket is what the registrar-only DaemonSet hands
    // kubelet, and its kubelet dir is the one that socket lives in.
    let socket = driver_socket(&args, &env).expect("endpoint");
    let suffix = format!("/plugins/{}/csi.sock", rds_csi::DEFAULT_DRIVER_NAME);
    let kubelet = socket
        .strip_suffix(&suffix)
        .expect("socket under <kubelet>/plugins");
    assert_eq!(kubelet_dir_problem(&args, &env, kubelet), None);
    let registrar = socket_problems(&plain_docs(), rds_csi::DEFAULT_DRIVER_NAME).host_registrations;
    assert_eq!(registrar, vec![socket]);
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let Ok(v) = Command::new("systemd-analyze").arg("--version").output() else {
        // scripts/setup.sh installs it (Debian package systemd).
        common::skip(
            "systemd_analyze_verifies_the_unit",
            "systemd-analyze is not installed (run scripts/setup.sh)",
        );
        return;
    };
    assert!(v.status.success());
    // verify insists that ExecStart exists: point it at the binary under test.
    let dir = std::env::temp_dir().join(format!("rds-csi-deploy-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let unit = read(&repo().join(UNIT)).replace("/usr/local/bin/rds-csi", BIN);
    let path = dir.join("rds-csi-node.service");
    std::fs::write(&path, unit).expect("write unit");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify {UNIT}: {}\n{text}",
        out.status
    );
}

// ---------------------------------------------------------------------------
// Dockerfile (no container engine here: what can be checked without one)
// ---------------------------------------------------------------------------

#[test]
fn both_dockerfile_targets_copy_and_run_the_static_binary() {
    let text = read(&deploy_dir().join("Dockerfile"));
    let mut stages: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first().map(|w| w.to_ascii_uppercase()) == Some("FROM".into()) {
            let name = words
                .iter()
                .position(|w| w.eq_ignore_ascii_case("AS"))
                .and_then(|i| words.get(i + 1))
                .map(|s| s.to_string());
            current = name.clone();
            stages.insert(name.unwrap_or_default(), vec![line.to_string()]);
        } else if let Some(stage) = &current {
            stages.get_mut(stage).expect("stage").push(line.to_string());
        }
    }
    for (stage, from) in [("controller", "FROM scratch"), ("node", "FROM debian:")] {
        let lines = stages
            .get(stage)
            .unwrap_or_else(|| panic!("no stage {stage}: {stages:?}"));
        let body = lines.join("\n");
        assert!(lines[0].starts_with(from), "{stage}: {}", lines[0]);
        let copy = lines
            .iter()
            .find_map(|l| l.strip_prefix("COPY dist/rds-csi "))
            .unwrap_or_else(|| panic!("{stage}: no COPY dist/rds-csi"));
        let target = copy.split_whitespace().last().expect("COPY target");
        assert!(
            body.contains(&format!("ENTRYPOINT [\"{target}\"]")),
            "{stage}: ENTRYPOINT must run {target}"
        );
    }
    let node = stages["node"].join("\n");
    for pkg in ["nvme-cli", "e2fsprogs", "xfsprogs", "util-linux", "mount", "kmod"] {
        assert!(
            node.split_whitespace().any(|w| w == pkg),
            "the node image lacks {pkg}"
        );
    }
}

#[test]
fn a_cluster_without_the_snapshot_crds_gets_no_volume_snapshot_class() {
    let Some(python) = helm_python() else { return };
    let classes = |create: Value| -> Result<usize, String> {
        let values = json!({"rds": {"address": EXAMPLE_RDS}, "snapshots": {"volumeSnapshotClass": {"create": create}}});
        Ok(render(&python, &values)?
            .iter()
            .filter(|d| d.kind() == "VolumeSnapshotClass")
            .count())
    };
    // Rendered offline no API beyond Kubernetes' own is served, as on a
    // k3s without the CRDs: `auto` (the default) makes none, so the install
    // cannot fail on a kind the cluster does not know.
    assert_eq!(classes(json!("auto")), Ok(0));
    assert_eq!(classes(json!(true)), Ok(1));
    assert_eq!(classes(json!(false)), Ok(0));
    let err = classes(json!("maybe")).unwrap_err();
    assert!(
        err.contains("snapshots.volumeSnapshotClass.create must be auto, true or false"),
        "{err}"
    );
}
