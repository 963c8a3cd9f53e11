//! `fake-nvme`: a stand-in for nvme-cli 2.x over loop devices, for the node
//! plugin's tests and the demo. No NVMe in the kernel is needed.
//!
//! The node plugin runs it with a cleared environment, so it finds its
//! configuration next to itself: `fabric.json` in the directory of `argv[0]`
//! as invoked (a symlink `<dir>/nvme` → this binary is the usual setup):
//! ```json
//! {"sys_root": "/tmp/f/sys", "dev_root": "/tmp/f/dev",
//!  "exports": "/tmp/sim/data/exports.json", "state_dir": "/tmp/f/state",
//!  "multipath": true}
//! ```
//! `exports` is the file `rds-sim` rewrites on every change (what the RDS
//! exports: NQN, port, backing file). Commands:
//! - `connect -t tcp -a ADDR -s PORT -n NQN [-l S] [-c S] [-k S] [-q HOSTNQN] [-I HOSTID]`:
//!   records its argv in `<state>/connects.jsonl` (with the time), refuses
//!   like nvme-cli 2.3 on Linux 6.1 when nothing listens at ADDR:PORT
//!   (`Connection refused`) or the NQN is not exported there, or the
//!   export has an `allowed_hosts` list without HOSTNQN
//!   (`Input/output error`), answers `already connected` for a connected
//!   NQN (every failure exits 1, as nvme-cli does), else attaches the
//!   backing file to a loop device and writes what the kernel would: the
//!   controller (`class/nvme/nvmeN`: subsysnqn, state, address, transport,
//!   ctrl_loss_tmo, reconnect_delay, kato), the subsystem
//!   (`class/nvme-subsystem/nvme-subsysK`), the namespace block device
//!   (head `nvmeKn1` in the subsystem plus a hidden `nvmeKcNn1` path with
//!   multipath, else `nvmeNn1` under the controller; `dev`, `size`, `nsid`,
//!   `holders/`; `class/block/<name>` links) and `<dev>/<name>` with the
//!   loop device's major:minor.
//! - `disconnect -n NQN`, `disconnect-all`: detach loop devices, remove
//!   the sysfs entries and nodes; print `NQN:<nqn> disconnected N controller(s)`.
//! - `list-subsys -o json`: nvme-cli 2.x JSON.
//! - `ns-rescan <dev>/nvmeN`: `losetup -c` and a new sysfs `size`.
//! - `version`.
//! - `fault connect-fail N transient|definite`, `fault disconnect-fail N`,
//!   `fault device-delay MS` (connect returns, the namespace appears MS
//!   later from a detached child, which records when in
//!   `<state>/appeared.jsonl`), `fault unreadable on|off` (the namespace
//!   node points at a device that does not exist), `fault state NQN STATE`
//!   (e.g. `connecting`), `fault clear`. Faults live in `<state>/faults.json`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

mod records;
use records::{now_ms, Ctrl, Faults, Lock};

/// What nvme-cli 2.3 on Linux 6.1 prints when nothing listens at the
/// address (measured in the real-kernel lane; see scripts/vm-test.sh).
const REFUSED: &str =
    "Failed to write to /dev/nvme-fabrics: Connection refused\ncould not add new controller: connection refused";
/// ... and when something listens there but does not export the NQN (or
/// does not allow this host): the kernel's `Connect Invalid Data
/// Parameter` reaches the tool as EIO.
const NOT_EXPORTED: &str = "Failed to write to /dev/nvme-fabrics: Input/output error\ncould not add new controller: failed to write to nvme-fabrics device";

/// The major number of the device an `unreadable` namespace points at:
/// in the range for local/experimental use, never registered here.
const NO_SUCH_MAJOR: u32 = 4000;

struct Fabric {
    /// How we were invoked, for re-invoking ourselves.
    argv0: String,
    sys: PathBuf,
    dev: PathBuf,
    exports: PathBuf,
    state: PathBuf,
    multipath: bool,
}

/// A failure with nvme-cli's words. nvme-cli 2.3 exits 1 on every
/// failure (connect, disconnect, usage), so the fake does too.
struct Fail {
    message: String,
}

fn fail(message: impl Into<String>) -> Fail {
    Fail {
        message: message.into(),
    }
}

type Res<T> = Result<T, Fail>;

fn io_fail(what: &str, e: impl std::fmt::Display) -> Fail {
    fail(format!("fake-nvme: {what}: {e}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = load(&args).and_then(|fabric| run(&fabric, &args[1..]));
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(f) => {
            eprintln!("{}", f.message);
            ExitCode::FAILURE
        }
    }
}

fn load(args: &[String]) -> Res<Fabric> {
    let argv0 = args.first().cloned().unwrap_or_default();
    let dir = Path::new(&argv0)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| {
            fail(format!(
                "fake-nvme: invoke me by a path (argv[0] is {argv0:?}), not through PATH"
            ))
        })?;
    let config_path = dir.join("fabric.json");
    let text = fs::read_to_string(&config_path)
        .map_err(|e| io_fail(&format!("read {}", config_path.display()), e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| io_fail("fabric.json", e))?;
    let path = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(PathBuf::from)
            .ok_or_else(|| fail(format!("fake-nvme: fabric.json lacks {k:?}")))
    };
    Ok(Fabric {
        argv0: argv0.clone(),
        sys: path("sys_root")?,
        dev: path("dev_root")?,
        exports: path("exports")?,
        state: path("state_dir")?,
        multipath: v.get("multipath").and_then(Value::as_bool).unwrap_or(true),
    })
}

fn run(f: &Fabric, args: &[String]) -> Res<String> {
    let cmd = args.first().map(String::as_str).unwrap_or("");
    let rest = args.get(1..).unwrap_or(&[]);
    fs::create_dir_all(f.state.join("ctrl")).map_err(|e| io_fail("state dir", e))?;
    match cmd {
        "version" => Ok("nvme version 2.3 (fake-nvme over loop devices)\nlibnvme version 1.3\n".into()),
        "connect" => {
            let _lock = Lock::take(f)?;
            connect(f, rest)
        }
        "disconnect" => {
            let opts = options(rest)?;
            let nqn = opts
                .get("n")
                .ok_or_else(|| fail("disconnect: --nqn or --device required"))?;
            let _lock = Lock::take(f)?;
            let mut faults = Faults::read(f);
            if faults.disconnect_fail > 0 {
                faults.disconnect_fail -= 1;
                faults.write(f)?;
                return Err(fail(format!("Failed to disconnect by NQN: {nqn}: Device or resource busy")));
            }
            let n = disconnect(f, |c| c.nqn == *nqn)?;
            Ok(format!("NQN:{nqn} disconnected {n} controller(s)\n"))
        }
        "disconnect-all" => {
            let _lock = Lock::take(f)?;
            disconnect(f, |_| true)?;
            Ok(String::new())
        }
        "list-subsys" => list_subsys(f, rest),
        "ns-rescan" => {
            let _lock = Lock::take(f)?;
            rescan(f, rest)
        }
        "fault" => {
            let _lock = Lock::take(f)?;
            fault(f, rest)
        }
        "__appear" => {
            // The detached child of a delayed connect.
            let ctrl = rest.first().cloned().unwrap_or_default();
            let ms: u64 = rest.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            std::thread::sleep(Duration::from_millis(ms));
            let _lock = Lock::take(f)?;
            if let Some(c) = Ctrl::read(f, &ctrl) {
                // When the namespace started to appear, for the benchmark's
                // "device appears → driver uses it" figure. Taken before the
                // writes (a reader may see the device before this process
                // gets to record anything), so the figure errs high by the
                // time the writes take, never low.
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                write_namespace(f, &c)?;
                let record = json!({"controller": ctrl, "unix_us": now.as_micros() as u64});
                let appeared = f.state.join("appeared.jsonl");
                let mut log = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&appeared)
                    .map_err(|e| io_fail("appeared.jsonl", e))?;
                writeln!(log, "{record}").map_err(|e| io_fail("appeared.jsonl", e))?;
            }
            Ok(String::new())
        }
        other => Err(fail(format!("fake-nvme: unknown command {other:?} (connect, disconnect, disconnect-all, list-subsys, ns-rescan, version, fault)"),
        )),
    }
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

/// nvme-cli options: `-x V`, `--long V`, `--long=V`, mapped to the short letter.
fn options(args: &[String]) -> Res<BTreeMap<String, String>> {
    let long = |name: &str| -> Option<&'static str> {
        Some(match name {
            "transport" => "t",
            "traddr" => "a",
            "trsvcid" => "s",
            "nqn" => "n",
            "ctrl-loss-tmo" => "l",
            "reconnect-delay" => "c",
            "keep-alive-tmo" => "k",
            "hostnqn" => "q",
            "hostid" => "I",
            "output-format" => "o",
            "device" => "d",
            _ => return None,
        })
    };
    let mut out = BTreeMap::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let (key, inline) = if let Some(l) = a.strip_prefix("--") {
            let (name, value) = match l.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (l, None),
            };
            let key = long(name).ok_or_else(|| fail(format!("unrecognized option '--{name}'")))?;
            (key.to_string(), value)
        } else if let Some(s) = a.strip_prefix('-') {
            if s.len() != 1 {
                return Err(fail(format!("unrecognized option '{a}'")));
            }
            (s.to_string(), None)
        } else {
            out.insert(format!("arg{i}"), a.clone());
            i += 1;
            continue;
        };
        let value = match inline {
            Some(v) => v,
            None => {
                i += 1;
                args.get(i)
                    .cloned()
                    .ok_or_else(|| fail(format!("option '{a}' requires an argument")))?
            }
        };
        out.insert(key, value);
        i += 1;
    }
    Ok(out)
}

fn connect(f: &Fabric, args: &[String]) -> Res<String> {
    // Recorded first, failing or not: tests check what the driver asked for.
    let record = json!({ "unix_ms": now_ms() as u64, "args": args });
    let mut log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(f.state.join("connects.jsonl"))
        .map_err(|e| io_fail("connects.jsonl", e))?;
    writeln!(log, "{record}").map_err(|e| io_fail("connects.jsonl", e))?;

    let o = options(args)?;
    let need = |k: &str, what: &str| {
        o.get(k)
            .cloned()
            .ok_or_else(|| fail(format!("required argument [--{what} | -{k}] not specified")))
    };
    let transport = need("t", "transport")?;
    let addr = need("a", "traddr")?;
    let port = need("s", "trsvcid")?;
    let nqn = need("n", "nqn")?;
    if transport != "tcp" {
        return Err(fail(format!(
            "could not add new controller: invalid transport type {transport}"
        )));
    }
    for (k, name) in [
        ("l", "ctrl-loss-tmo"),
        ("c", "reconnect-delay"),
        ("k", "keep-alive-tmo"),
    ] {
        if let Some(v) = o.get(k) {
            if v.parse::<i64>().is_err() {
                return Err(fail(format!("invalid value for --{name}: {v}")));
            }
        }
    }

    let mut faults = Faults::read(f);
    if faults.connect_fail > 0 {
        faults.connect_fail -= 1;
        faults.write(f)?;
        return Err(if faults.connect_fail_kind == "definite" {
            fail("Failed to write to /dev/nvme-fabrics: Invalid argument\ncould not add new controller: invalid arguments/configuration")
        } else {
            fail(REFUSED)
        });
    }

    if Ctrl::all(f).iter().any(|c| c.nqn == nqn) {
        return Err(fail("already connected"));
    }

    // Is anything listening there, and is the NQN exported at that port?
    let exports: Value = fs::read_to_string(&f.exports)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let listening = exports["nvme_address"].as_str() == Some(addr.as_str())
        && exports["exports"].as_array().is_some_and(|a| {
            a.iter()
                .any(|e| e["port"].as_u64().map(|p| p.to_string()) == Some(port.clone()))
        });
    if !listening {
        return Err(fail("Failed to write to /dev/nvme-fabrics: Connection refused\ncould not add new controller: failed to write to nvme-fabrics device",
        ));
    }
    let export = exports["exports"]
        .as_array()
        .and_then(|a| {
            a.iter().find(|e| {
                e["nqn"].as_str() == Some(nqn.as_str())
                    && e["port"].as_u64().map(|p| p.to_string()) == Some(port.clone())
            })
        })
        .cloned()
        .ok_or_else(|| fail(NOT_EXPORTED))?;
    // A disk with an allow list admits only the listed host NQNs; the
    // kernel answers any other host as it answers an NQN not exported
    // (EIO). Without `-q` this fake knows no host NQN: refused.
    if let Some(allowed) = export["allowed_hosts"].as_array().filter(|a| !a.is_empty()) {
        let host = o.get("q").map(String::as_str).unwrap_or("");
        if !allowed.iter().any(|h| h.as_str() == Some(host)) {
            return Err(fail(NOT_EXPORTED));
        }
    }
    let backing = export["backing_file"]
        .as_str()
        .ok_or_else(|| fail("fake-nvme: export without backing_file"))?;

    // The kernel's numbering: the lowest free instance of each kind.
    let lowest_free = |dir: &Path, prefix: &str| -> u32 {
        (0..)
            .find(|n| !dir.join(format!("{prefix}{n}")).exists())
            .unwrap_or(0)
    };
    let instance = lowest_free(&f.sys.join("class/nvme"), "nvme");
    let subsys = lowest_free(&f.sys.join("class/nvme-subsystem"), "nvme-subsys");
    let loop_dev = run_tool("losetup", &["--find", "--show", backing])?;
    let ctrl = Ctrl {
        name: format!("nvme{instance}"),
        instance,
        subsys,
        nqn: nqn.clone(),
        address: addr.clone(),
        port: port.clone(),
        loop_dev: loop_dev.trim().to_string(),
        host_nqn: o.get("q").cloned().unwrap_or_default(),
    };
    ctrl.write(f)?;

    let cdir = f.sys.join("class/nvme").join(&ctrl.name);
    let tmo = o.get("l").cloned().unwrap_or_else(|| "600".into());
    let attrs = [
        ("subsysnqn", nqn.clone()),
        ("state", "live".to_string()),
        ("transport", "tcp".to_string()),
        ("address", format!("traddr={addr},trsvcid={port}")),
        // The kernel shows a negative ctrl_loss_tmo as "off".
        (
            "ctrl_loss_tmo",
            if tmo.starts_with('-') { "off".into() } else { tmo },
        ),
        (
            "reconnect_delay",
            o.get("c").cloned().unwrap_or_else(|| "10".into()),
        ),
        ("kato", o.get("k").cloned().unwrap_or_else(|| "5".into())),
        ("hostnqn", ctrl.host_nqn.clone()),
        ("cntlid", "1".to_string()),
    ];
    for (name, value) in attrs {
        write_attr(&cdir.join(name), &value)?;
    }
    let sdir = f.sys.join("class/nvme-subsystem").join(ctrl.subsys_name());
    write_attr(&sdir.join("subsysnqn"), &nqn)?;
    let _ = symlink(&cdir, sdir.join(&ctrl.name));

    let faults = Faults::read(f);
    if faults.device_delay_ms > 0 {
        // The device shows up later, as udev would make it: from a detached
        // child in its own process group, with no inherited pipes.
        Command::new(&f.argv0)
            .args(["__appear", &ctrl.name, &faults.device_delay_ms.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| io_fail("spawn the delayed namespace", e))?;
    } else {
        write_namespace(f, &ctrl)?;
    }
    Ok(String::new())
}

/// Writes a sysfs attribute whole: a kernel's attributes never show up
/// empty or half-written, so a reader polling the tree must not see that
/// from the fake either (temporary file, then rename).
fn write_attr(path: &Path, value: &str) -> Res<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| io_fail(&format!("mkdir {}", dir.display()), e))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, format!("{value}\n")).map_err(|e| io_fail(&format!("write {}", tmp.display()), e))?;
    fs::rename(&tmp, path).map_err(|e| io_fail(&format!("rename {}", path.display()), e))
}

fn run_tool(program: &str, args: &[&str]) -> Res<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| io_fail(&format!("run {program}"), e))?;
    if !out.status.success() {
        return Err(fail(format!(
            "fake-nvme: {program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// (major, minor, bytes) of a loop device.
fn loop_info(loop_dev: &str) -> Res<(u32, u32, u64)> {
    let meta = fs::metadata(loop_dev).map_err(|e| io_fail(&format!("stat {loop_dev}"), e))?;
    let rdev = meta.rdev() as libc::dev_t;
    let name = Path::new(loop_dev)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let sectors: u64 = fs::read_to_string(format!("/sys/class/block/{name}/size"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    Ok((libc::major(rdev), libc::minor(rdev), sectors * 512))
}

fn write_namespace(f: &Fabric, c: &Ctrl) -> Res<()> {
    let (ns, hidden) = c.namespace(f.multipath);
    let (mut major, mut minor, bytes) = loop_info(&c.loop_dev)?;
    if Faults::read(f).unreadable {
        major = NO_SUCH_MAJOR;
        minor = c.instance;
    }
    let dir = if f.multipath {
        f.sys.join("class/nvme-subsystem").join(c.subsys_name()).join(&ns)
    } else {
        f.sys.join("class/nvme").join(&c.name).join(&ns)
    };
    write_attr(&dir.join("dev"), &format!("{major}:{minor}"))?;
    write_attr(&dir.join("size"), &(bytes / 512).to_string())?;
    write_attr(&dir.join("nsid"), "1")?;
    fs::create_dir_all(dir.join("holders")).map_err(|e| io_fail("holders", e))?;
    let block = f.sys.join("class/block");
    fs::create_dir_all(&block).map_err(|e| io_fail("class/block", e))?;
    let _ = fs::remove_file(block.join(&ns));
    let _ = symlink(&dir, block.join(&ns));
    if let Some(h) = hidden {
        let hdir = f.sys.join("class/nvme").join(&c.name).join(&h);
        write_attr(&hdir.join("size"), &(bytes / 512).to_string())?;
        let _ = fs::remove_file(block.join(&h));
        let _ = symlink(&hdir, block.join(&h));
    }
    fs::create_dir_all(&f.dev).map_err(|e| io_fail("dev root", e))?;
    let node = f.dev.join(&ns);
    let _ = fs::remove_file(&node);
    run_tool(
        "mknod",
        &[
            node.to_str().unwrap_or_default(),
            "b",
            &major.to_string(),
            &minor.to_string(),
        ],
    )?;
    Ok(())
}

/// Detaches every controller `pick` selects; returns how many.
fn disconnect(f: &Fabric, pick: impl Fn(&Ctrl) -> bool) -> Res<usize> {
    let mut n = 0;
    for c in Ctrl::all(f).into_iter().filter(|c| pick(c)) {
        let (ns, hidden) = c.namespace(f.multipath);
        let _ = fs::remove_file(f.dev.join(&ns));
        let block = f.sys.join("class/block");
        let _ = fs::remove_file(block.join(&ns));
        if let Some(h) = &hidden {
            let _ = fs::remove_file(block.join(h));
        }
        let _ = fs::remove_dir_all(f.sys.join("class/nvme").join(&c.name));
        let sdir = f.sys.join("class/nvme-subsystem").join(c.subsys_name());
        let _ = fs::remove_file(sdir.join(&c.name));
        // The subsystem goes with its last controller.
        let others = Ctrl::all(f)
            .iter()
            .any(|o| o.name != c.name && o.subsys == c.subsys);
        if !others {
            let _ = fs::remove_dir_all(&sdir);
        }
        // losetup -d of a device still open (mounted) only marks it for
        // detach on last close, as the kernel does with a lost controller.
        let _ = run_tool("losetup", &["-d", &c.loop_dev]);
        let _ = fs::remove_file(Ctrl::path(f, &c.name));
        n += 1;
    }
    Ok(n)
}

fn list_subsys(f: &Fabric, args: &[String]) -> Res<String> {
    let o = options(args)?;
    let ctrls = Ctrl::all(f);
    let mut subsystems: BTreeMap<u32, Value> = BTreeMap::new();
    for c in &ctrls {
        let state = fs::read_to_string(f.sys.join("class/nvme").join(&c.name).join("state"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let path = json!({
            "Name": c.name,
            "Transport": "tcp",
            "Address": format!("traddr={},trsvcid={}", c.address, c.port),
            "State": state,
        });
        let entry = subsystems
            .entry(c.subsys)
            .or_insert_with(|| json!({ "Name": c.subsys_name(), "NQN": c.nqn, "Paths": [] }));
        if let Some(paths) = entry["Paths"].as_array_mut() {
            paths.push(path);
        }
    }
    let host_nqn = ctrls
        .iter()
        .map(|c| c.host_nqn.clone())
        .find(|h| !h.is_empty())
        .unwrap_or_else(|| "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-00000000fa6e".into());
    if o.get("o").map(String::as_str) == Some("json") {
        let v = json!([{
            "HostNQN": host_nqn,
            "HostID": "00000000-0000-0000-0000-00000000fa6e",
            "Subsystems": subsystems.into_values().collect::<Vec<_>>(),
        }]);
        return Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&v).map_err(|e| io_fail("json", e))?
        ));
    }
    let mut out = String::new();
    for s in subsystems.values() {
        out.push_str(&format!(
            "{} - NQN={}\n",
            s["Name"].as_str().unwrap_or(""),
            s["NQN"].as_str().unwrap_or("")
        ));
        for p in s["Paths"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                " +- {} {} {} {}\n",
                p["Name"].as_str().unwrap_or(""),
                p["Transport"].as_str().unwrap_or(""),
                p["Address"].as_str().unwrap_or(""),
                p["State"].as_str().unwrap_or("")
            ));
        }
    }
    Ok(out)
}

fn rescan(f: &Fabric, args: &[String]) -> Res<String> {
    let dev = args
        .iter()
        .find(|a| !a.starts_with('-'))
        .ok_or_else(|| fail("ns-rescan: a controller device is required (e.g. /dev/nvme0)"))?;
    let name = Path::new(dev)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let c = Ctrl::read(f, name).ok_or_else(|| fail(format!("{dev}: No such device")))?;
    run_tool("losetup", &["-c", &c.loop_dev])?;
    let (_, _, bytes) = loop_info(&c.loop_dev)?;
    let (ns, hidden) = c.namespace(f.multipath);
    let dir = if f.multipath {
        f.sys.join("class/nvme-subsystem").join(c.subsys_name()).join(&ns)
    } else {
        f.sys.join("class/nvme").join(&c.name).join(&ns)
    };
    if dir.exists() {
        write_attr(&dir.join("size"), &(bytes / 512).to_string())?;
    }
    if let Some(h) = hidden {
        let hdir = f.sys.join("class/nvme").join(&c.name).join(h);
        if hdir.exists() {
            write_attr(&hdir.join("size"), &(bytes / 512).to_string())?;
        }
    }
    Ok(String::new())
}

fn fault(f: &Fabric, args: &[String]) -> Res<String> {
    let mut faults = Faults::read(f);
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let number = |i: usize| -> Res<u64> {
        arg(i)
            .parse()
            .map_err(|_| fail(format!("fault {}: expected a number, got {:?}", arg(0), arg(i))))
    };
    match arg(0) {
        "connect-fail" => {
            faults.connect_fail = number(1)?;
            faults.connect_fail_kind = match arg(2) {
                "" | "transient" => "transient".into(),
                "definite" => "definite".into(),
                other => return Err(fail(format!("fault connect-fail: kind {other:?}: transient or definite"))),
            };
        }
        "disconnect-fail" => faults.disconnect_fail = number(1)?,
        "device-delay" => faults.device_delay_ms = number(1)?,
        "unreadable" => faults.unreadable = arg(1) == "on",
        "clear" => faults = Faults::default(),
        "state" => {
            let (nqn, state) = (arg(1), arg(2));
            if state.is_empty() {
                return Err(fail("fault state NQN STATE"));
            }
            let mut n = 0;
            for c in Ctrl::all(f).iter().filter(|c| c.nqn == nqn) {
                write_attr(&f.sys.join("class/nvme").join(&c.name).join("state"), state)?;
                n += 1;
            }
            if n == 0 {
                return Err(fail(format!("fault state: {nqn} is not connected")));
            }
            return Ok(format!("{n} controller(s) of {nqn} now {state}\n"));
        }
        other => {
            return Err(fail(format!("fault {other:?}: connect-fail N [transient|definite], disconnect-fail N, device-delay MS, unreadable on|off, state NQN STATE, clear"),
            ))
        }
    }
    faults.write(f)?;
    Ok(format!("{}\n", faults.to_json()))
}
