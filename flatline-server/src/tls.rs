//! Native TLS (`[server.tls]`) and the development certificate of `flatline-server dev`.
//!
//! rustls with the aws-lc-rs provider, TLS 1.2 and 1.3, ALPN `http/1.1` (HTTPS and the WebSocket upgrade share one
//! listener; libsignal-net speaks HTTP/1.1 to it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::Digest as _;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS setup problem, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the certificate and key (e.g. they do not match).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The development certificate could not be created or written.
    #[error("development certificate {path}: {message}")]
    DevCertificate {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

fn pem_error(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// Reads a PEM certificate chain (leaf first).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(pem_error(path, "no CERTIFICATE block"));
    }
    Ok(certs)
}

/// An acceptor for the PEM chain and key in `cert_file` and `key_file`.
pub fn acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, TlsError> {
    let certs = load_certificates(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| pem_error(key_file, e))?;
    acceptor_from_der(certs, key)
}

/// An acceptor for a DER chain and key.
pub fn acceptor_from_der(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The development certificate: where it is and its SHA-256 (of the DER), for clients to pin.
#[derive(Debug, Clone)]
pub struct DevCertificate {
    /// The PEM certificate.
    pub cert_file: PathBuf,
    /// The PEM private key.
    pub key_file: PathBuf,
    /// Lower-case hex SHA-256 of the certificate's DER.
    pub sha256: String,
}

/// File names of the development certificate in the data directory.
pub const DEV_CERT_FILE: &str = "dev-tls-localhost.crt";
/// File name of its key.
pub const DEV_KEY_FILE: &str = "dev-tls-localhost.key";

/// Reuses the self-signed `localhost` (and 127.0.0.1) certificate in `dir`, or creates it (key mode 0600).
pub fn dev_certificate(dir: &Path) -> Result<DevCertificate, TlsError> {
    let cert_file = dir.join(DEV_CERT_FILE);
    let key_file = dir.join(DEV_KEY_FILE);
    let failed = |path: &Path, e: &dyn std::fmt::Display| TlsError::DevCertificate {
        path: path.to_owned(),
        message: e.to_string(),
    };
    if !(cert_file.exists() && key_file.exists()) {
        let generated = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .map_err(|e| failed(&cert_file, &e))?;
        crate::secrets::write_private(&key_file, generated.signing_key.serialize_pem().as_bytes())
            .map_err(|e| failed(&key_file, &e))?;
        std::fs::write(&cert_file, generated.cert.pem()).map_err(|e| failed(&cert_file, &e))?;
    }
    let certs = load_certificates(&cert_file)?;
    let sha256 = certs
        .first()
        .map(|c| hex::encode(sha2::Sha256::digest(c.as_ref())))
        .unwrap_or_default();
    Ok(DevCertificate {
        cert_file,
        key_file,
        sha256,
    })
}
