//! Test harness for the real `rds-csi` binary: start it on a socket in a
//! temporary directory, connect CSI clients, stop it with a signal, read its
//! log.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use grpcio::{CallOption, ChannelBuilder, EnvBuilder};

use super::TempDir;
use rds_csi::proto::grpc::{ControllerClient, GroupControllerClient, IdentityClient, NodeClient};

/// The driver binary under test: the stripped static build from dist/ when
/// scripts/test.sh says where it is, else the one cargo built for this run.
pub fn driver_bin() -> PathBuf {
    match std::env::var_os("RDS_CSI_DIST_BIN") {
        Some(p) if Path::new(&p).exists() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_rds-csi")),
    }
}

/// A running driver process.
pub struct Driver {
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub dir: TempDir,
    env: Arc<grpcio::Environment>,
}

/// How to start the driver: extra arguments and environment.
pub struct DriverOpts {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Wait for the socket to appear before returning.
    pub wait: bool,
}

impl Default for DriverOpts {
    fn default() -> Self {
        DriverOpts {
            args: Vec::new(),
            env: Vec::new(),
            wait: true,
        }
    }
}

impl Driver {
    /// Starts `rds-csi serve <args> --endpoint unix://<tmp>/csi.sock`.
    pub fn start(args: &[&str]) -> Driver {
        Driver::start_with(DriverOpts {
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
    }

    pub fn start_with(opts: DriverOpts) -> Driver {
        let dir = TempDir::new("driver");
        let socket = dir.join("csi.sock");
        Driver::start_in(dir, socket, opts)
    }

    /// Starts the driver with its socket at `socket` (which may be stale).
    pub fn start_in(dir: TempDir, socket: PathBuf, opts: DriverOpts) -> Driver {
        let log = dir.join("driver.log");
        let log_file = fs::File::create(&log).expect("create log");
        let mut cmd = Command::new(driver_bin());
        cmd.arg("serve")
            .arg("--endpoint")
            .arg(format!("unix://{}", socket.display()))
            .args(&opts.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log"))
            .stderr(log_file);
        if !opts.env.iter().any(|(k, _)| k == "RDS_CSI_LOG_LEVEL")
            && !opts.args.iter().any(|a| a.starts_with("--log-level"))
        {
            cmd.env("RDS_CSI_LOG_LEVEL", "debug");
        }
        let child = cmd.spawn().expect("start rds-csi");
        let env = Arc::new(EnvBuilder::new().cq_count(1).build());
        let mut driver = Driver {
            child: Some(child),
            socket,
            log,
            dir,
            env,
        };
        if opts.wait {
            driver.wait_for_socket(Duration::from_secs(20));
        }
        driver
    }

    pub fn wait_for_socket(&mut self, limit: Duration) {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            // Connectable, not merely present: a stale socket file from an
            // earlier run exists before the driver replaces it.
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "rds-csi exited with {status} before listening; log:\n{}",
                    self.log_text()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "rds-csi did not create {} within {limit:?}; log:\n{}",
            self.socket.display(),
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn channel(&self) -> grpcio::Channel {
        ChannelBuilder::new(Arc::clone(&self.env)).connect(&format!("unix:{}", self.socket.display()))
    }

    pub fn identity(&self) -> IdentityClient {
        IdentityClient::new(self.channel())
    }

    pub fn controller(&self) -> ControllerClient {
        ControllerClient::new(self.channel())
    }

    pub fn node(&self) -> NodeClient {
        NodeClient::new(self.channel())
    }

    pub fn group_controller(&self) -> GroupControllerClient {
        GroupControllerClient::new(self.channel())
    }

    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .map(|c| c.id() as i32)
            .expect("driver running")
    }

    /// Sends `signal` to the driver.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a pid we spawned and still own.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the driver to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let end = Instant::now() + limit;
        let child = self.child.as_mut().expect("driver running");
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return status;
            }
            if Instant::now() > end {
                let _ = child.kill();
                let log = fs::read_to_string(&self.log).unwrap_or_default();
                panic!("rds-csi did not exit within {limit:?}; log:\n{log}");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs `rds-csi ctl --endpoint <this driver's socket> <args>`: exit
    /// code, stdout, stderr.
    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let endpoint = format!("unix://{}", self.socket.display());
        let mut argv = vec!["ctl", "--endpoint", endpoint.as_str()];
        argv.extend_from_slice(args);
        run_cli(&argv, &[])
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(Duration::from_secs(40))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A call option with a deadline, so a hung driver fails the test instead
/// of hanging it.
pub fn opt(secs: u64) -> CallOption {
    CallOption::default().timeout(Duration::from_secs(secs))
}

/// Runs the driver binary with `args` (not `serve`) and returns its exit
/// code, stdout and stderr.
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(driver_bin())
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run rds-csi");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
