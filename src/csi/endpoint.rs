//! Where the server listens: the `unix://` endpoint, the socket path made
//! ready (its directory, a stale socket removed, anything else refused),
//! and the server's start-up errors.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use log::info;

/// A `unix://` endpoint resolved to the socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    path: PathBuf,
}

impl Endpoint {
    /// Accepts `unix:///abs/path` (the CSI convention) or `unix:/abs/path`.
    pub fn parse(value: &str) -> Result<Self, EndpointError> {
        let rest = value
            .strip_prefix("unix://")
            .or_else(|| value.strip_prefix("unix:"))
            .ok_or_else(|| EndpointError::NotUnix(value.to_string()))?;
        if !rest.starts_with('/') || rest.len() < 2 {
            return Err(EndpointError::NotAbsolute(value.to_string()));
        }
        Ok(Endpoint {
            path: PathBuf::from(rest),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The address in the form gRPC core binds and dials.
    pub fn grpc_address(&self) -> String {
        format!("unix:{}", self.path.display())
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unix://{}", self.path.display())
    }
}

#[derive(Debug)]
pub enum EndpointError {
    NotUnix(String),
    NotAbsolute(String),
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointError::NotUnix(v) => {
                write!(
                    f,
                    "{v:?} is not a unix socket endpoint (expected unix:///path/to/csi.sock)"
                )
            }
            EndpointError::NotAbsolute(v) => {
                write!(
                    f,
                    "{v:?} does not name an absolute socket path (expected unix:///path/to/csi.sock)"
                )
            }
        }
    }
}

impl std::error::Error for EndpointError {}

/// Errors of starting and stopping the server.
#[derive(Debug)]
pub enum ServerError {
    /// Something that is not a socket sits where the socket should go.
    SocketPathOccupied(PathBuf),
    RemoveStaleSocket(PathBuf, io::Error),
    CreateSocketDir(PathBuf, io::Error),
    Bind(String, grpcio::Error),
    SetSocketMode(PathBuf, io::Error),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::SocketPathOccupied(p) => write!(
                f,
                "cannot listen on {}: the path exists and is not a socket (not removing it)",
                p.display()
            ),
            ServerError::RemoveStaleSocket(p, _) => {
                write!(f, "cannot remove the stale socket {}", p.display())
            }
            ServerError::CreateSocketDir(p, _) => {
                write!(f, "cannot create the socket directory {}", p.display())
            }
            ServerError::Bind(addr, _) => write!(f, "cannot listen on {addr}"),
            ServerError::SetSocketMode(p, _) => {
                write!(f, "cannot restrict the permissions of {}", p.display())
            }
        }
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServerError::RemoveStaleSocket(_, e)
            | ServerError::CreateSocketDir(_, e)
            | ServerError::SetSocketMode(_, e) => Some(e),
            ServerError::Bind(_, e) => Some(e),
            ServerError::SocketPathOccupied(_) => None,
        }
    }
}

/// Prepares the socket path: creates its directory, removes a stale socket
/// left by an earlier run (gRPC will not bind over it), and refuses to touch
/// anything that is not a socket.
pub(super) fn prepare_socket_path(path: &Path) -> Result<(), ServerError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| ServerError::CreateSocketDir(dir.to_path_buf(), e))?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            info!("removing stale socket {}", path.display());
            fs::remove_file(path).map_err(|e| ServerError::RemoveStaleSocket(path.to_path_buf(), e))
        }
        Ok(_) => Err(ServerError::SocketPathOccupied(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ServerError::RemoveStaleSocket(path.to_path_buf(), e)),
    }
}
