//! Reading PEM certificate chains and private keys from files, with errors that name the file.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} holds no PEM certificate")]
    NoCertificate(String),
    #[error("{0} holds no PEM private key")]
    NoKey(String),
}

/// Every certificate in the file; at least one.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let display = path.display().to_string();
    let read_error = |source| PemError::Read {
        path: display.clone(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    let certificates = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_error)?;
    if certificates.is_empty() {
        return Err(PemError::NoCertificate(display));
    }
    Ok(certificates)
}

/// The first private key in the file.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let display = path.display().to_string();
    let read_error = |source| PemError::Read {
        path: display.clone(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(read_error)?
        .ok_or(PemError::NoKey(display))
}
