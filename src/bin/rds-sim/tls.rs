//! The emulator's TLS identity: a given certificate and key, or a self-signed one generated once per data directory (kept, as a real RDS keeps its certificate across reboots).

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the TLS identity could not be set up.
#[derive(Debug)]
pub enum Error {
    ReadPem {
        path: PathBuf,
        source: io::Error,
    },
    ParsePem {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    GenerateCertificate {
        source: rcgen::Error,
    },
    WriteCertificate {
        path: PathBuf,
        source: io::Error,
    },
    BuildServerConfig {
        source: rustls::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ReadPem { path, .. } => write!(f, "cannot read {}", path.display()),
            Error::ParsePem { path, .. } => {
                write!(f, "no usable pem certificate or key in {}", path.display())
            }
            Error::GenerateCertificate { .. } => f.write_str("cannot generate a self-signed certificate"),
            Error::WriteCertificate { path, .. } => write!(f, "cannot write {}", path.display()),
            Error::BuildServerConfig { .. } => f.write_str("rustls refused the certificate and key"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::ReadPem { source, .. } | Error::WriteCertificate { source, .. } => Some(source),
            Error::ParsePem { source, .. } => Some(source),
            Error::GenerateCertificate { source } => Some(source),
            Error::BuildServerConfig { source } => Some(source),
        }
    }
}

/// A server configuration and the SHA-256 of its leaf certificate.
pub struct Identity {
    pub config: Arc<rustls::ServerConfig>,
    pub fingerprint: [u8; 32],
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    fs::read(path).map_err(|source| Error::ReadPem {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads a PEM certificate chain and private key.
pub fn from_files(cert: &Path, key: &Path) -> Result<Identity, Error> {
    let cert_pem = read(cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| Error::ParsePem {
            path: cert.to_path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(Error::ParsePem {
            path: cert.to_path_buf(),
            source: rustls::pki_types::pem::Error::NoItemsFound,
        });
    }
    let key_pem = read(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| Error::ParsePem {
        path: key.to_path_buf(),
        source,
    })?;
    build(chain, key_der)
}

/// The self-signed identity kept in `<data-dir>/tls/`, generated the first
/// time with the given subject alternative names (DNS names or IPs).
pub fn self_signed(data_dir: &Path, names: &[String]) -> Result<Identity, Error> {
    let dir = data_dir.join("tls");
    let cert_path = dir.join("self-signed.crt");
    let key_path = dir.join("self-signed.key");
    if cert_path.exists() && key_path.exists() {
        return from_files(&cert_path, &key_path);
    }
    let generated = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|source| Error::GenerateCertificate { source })?;
    let write = |path: &Path, text: String| {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        fs::create_dir_all(&dir)
            .and_then(|_| {
                // Only the emulator's user reads the key, as for any TLS key.
                fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(path)
            })
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|source| Error::WriteCertificate {
                path: path.to_path_buf(),
                source,
            })
    };
    write(&key_path, generated.key_pair.serialize_pem())?;
    write(&cert_path, generated.cert.pem())?;
    from_files(&cert_path, &key_path)
}

fn build(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Identity, Error> {
    let digest = ring::digest::digest(&ring::digest::SHA256, chain[0].as_ref());
    let mut fingerprint = [0u8; 32];
    fingerprint.copy_from_slice(digest.as_ref());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|source| Error::BuildServerConfig { source })?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|source| Error::BuildServerConfig { source })?;
    Ok(Identity {
        config: Arc::new(config),
        fingerprint,
    })
}

/// `sha256:<64 lowercase hex>`.
pub fn format_fingerprint(digest: &[u8; 32]) -> String {
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}
