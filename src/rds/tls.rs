//! TLS trust for the RDS: the rustls client configuration for each `Trust`, and a verifier that remembers the certificate the server presented.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::config::{format_fingerprint, Trust};
use super::error::Error;

/// Where the system's CA bundle usually lives (Debian/Alpine, RHEL, others);
/// absent in a `FROM scratch` image, where Mozilla's roots remain.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The SHA-256 of the last certificate a server presented to this client,
/// kept so a failed handshake can tell the operator what to pin.
#[derive(Debug, Default)]
pub(crate) struct Presented(Mutex<Option<[u8; 32]>>);

impl Presented {
    fn record(&self, digest: [u8; 32]) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(digest);
        }
    }

    /// `sha256:<hex>` of the last presented certificate, if any.
    pub(crate) fn last(&self) -> Option<String> {
        self.0.lock().ok().and_then(|g| g.map(|d| format_fingerprint(&d)))
    }
}

/// SHA-256 of a certificate's DER, the value `--rds-tls-fingerprint` pins.
pub fn certificate_fingerprint(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

enum Check {
    /// Chain and host name checked by webpki against these roots.
    WebPki(Arc<WebPkiServerVerifier>),
    /// Only this exact certificate.
    Pinned([u8; 32]),
    /// Nothing (the operator said so).
    Nothing,
}

/// The verifier for every `Trust`: it records the presented certificate's
/// fingerprint, then checks as the trust mode says. Handshake signatures are
/// always verified, so even a pinned or unchecked peer must hold the key of
/// the certificate it shows.
struct Verifier {
    check: Check,
    provider: Arc<CryptoProvider>,
    presented: Arc<Presented>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.check {
            Check::WebPki(_) => "webpki",
            Check::Pinned(_) => "pinned",
            Check::Nothing => "insecure",
        };
        f.debug_struct("Verifier").field("mode", &mode).finish()
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = certificate_fingerprint(end_entity.as_ref());
        self.presented.record(digest);
        match &self.check {
            Check::WebPki(inner) => {
                inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            // The pin names one exact certificate, which is stronger than any
            // name or chain check: RouterOS's self-signed certificates rarely
            // carry the name or IP the operator uses to reach the box, and
            // they have no chain. Expiry is not checked either: pinning is
            // explicit trust in that certificate, and a RouterOS certificate
            // expiring must not take storage down.
            Check::Pinned(want) => {
                if digest == *want {
                    Ok(ServerCertVerified::assertion())
                } else {
                    // The presented fingerprint is added by `Error::Tls`.
                    Err(rustls::Error::General(format!(
                        "the server certificate is not the pinned {} (--rds-tls-fingerprint)",
                        format_fingerprint(want)
                    )))
                }
            }
            Check::Nothing => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Builds the rustls configuration for `trust`; failed handshakes can later
/// ask `presented` which certificate the server showed.
pub(crate) fn client_config(
    trust: &Trust,
    presented: Arc<Presented>,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let check = match trust {
        Trust::System => Check::WebPki(webpki(system_roots(), &provider)?),
        Trust::CaFile(path) => Check::WebPki(webpki(ca_file_roots(path)?, &provider)?),
        Trust::Fingerprint(digest) => Check::Pinned(*digest),
        Trust::InsecureSkipVerify => Check::Nothing,
    };
    let verifier = Verifier {
        check,
        provider: provider.clone(),
        presented,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| Error::BuildTls {
            reason: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn webpki(roots: RootCertStore, provider: &Arc<CryptoProvider>) -> Result<Arc<WebPkiServerVerifier>, Error> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::BuildTls {
            reason: e.to_string(),
        })
}

fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let env_file = std::env::var_os("SSL_CERT_FILE");
    let candidates = env_file
        .iter()
        .map(Path::new)
        .chain(SYSTEM_CA_BUNDLES.iter().map(Path::new));
    for path in candidates {
        let Ok(pem) = std::fs::read(path) else {
            continue;
        };
        let certs = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok);
        let (added, ignored) = roots.add_parsable_certificates(certs);
        log::debug!(
            "loaded {added} ca certificates from {} ({ignored} ignored)",
            path.display()
        );
        break;
    }
    roots
}

fn ca_file_roots(path: &Path) -> Result<RootCertStore, Error> {
    let pem = std::fs::read(path).map_err(|source| Error::ReadCaFile {
        path: path.to_path_buf(),
        source,
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|source| Error::ParseCaFile {
            path: path.to_path_buf(),
            source,
        })?;
        roots.add(cert).map_err(|source| Error::AddCaCertificate {
            path: path.to_path_buf(),
            source,
        })?;
    }
    if roots.is_empty() {
        return Err(Error::ParseCaFile {
            path: path.to_path_buf(),
            source: rustls::pki_types::pem::Error::NoItemsFound,
        });
    }
    Ok(roots)
}

/// Finds the rustls error inside a ureq transport error, if the failure was
/// a TLS one (ureq wraps it in an `io::Error`).
pub(crate) fn rustls_error(transport: &ureq::Transport) -> Option<&rustls::Error> {
    let mut source = std::error::Error::source(transport);
    while let Some(err) = source {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                    return Some(tls);
                }
            }
        }
        source = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_sha256_of_der() {
        // SHA-256 of the empty input, a well-known value.
        assert_eq!(
            format_fingerprint(&certificate_fingerprint(b"")),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn every_trust_mode_builds() {
        for trust in [
            Trust::System,
            Trust::Fingerprint([1; 32]),
            Trust::InsecureSkipVerify,
        ] {
            assert!(client_config(&trust, Arc::default()).is_ok(), "{trust:?}");
        }
    }

    #[test]
    fn missing_or_empty_ca_file_is_a_clear_error() {
        let e = client_config(&Trust::CaFile("/nonexistent/ca.pem".into()), Arc::default()).unwrap_err();
        assert!(matches!(e, Error::ReadCaFile { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/ca.pem"));

        let dir = std::env::temp_dir().join(format!("rds-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let e = client_config(&Trust::CaFile(path.clone()), Arc::default()).unwrap_err();
        assert!(matches!(e, Error::ParseCaFile { .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
