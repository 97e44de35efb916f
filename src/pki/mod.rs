//! The development PKI of the embedded default: a CA, a server certificate for the local
//! listener, and one client certificate per demo principal (`lead-contract.md` §8).
//!
//! Files are written once under `<data_dir>/pki` and reused on later starts, so the `curl`
//! line a user copied keeps working. Keys are ECDSA P-256, written with mode 0600. Not for
//! production: there the operator supplies `server.tls` with their own CA.

pub mod pem;

use std::path::{Path, PathBuf};

use chrono::{Datelike, Utc};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

use crate::config::TlsSettings;
use crate::identity::{Principal, ORGANIZATION};
use crate::lead::Agency;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A certificate and its private key, PEM.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// An in-memory certificate authority.
pub struct DevCa {
    certificate: Certificate,
    key: KeyPair,
}

impl DevCa {
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(&[
            (DnType::OrganizationName, ORGANIZATION),
            (DnType::CommonName, common_name),
        ]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, 10);
        let certificate = params.self_signed(&key)?;
        Ok(DevCa { certificate, key })
    }

    pub fn cert_pem(&self) -> String {
        self.certificate.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn issue_server(&self, names: &[&str]) -> Result<IssuedCert, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName((*name).try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params.distinguished_name = name(&[
            (DnType::OrganizationName, ORGANIZATION),
            (DnType::CommonName, names[0]),
        ]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        set_validity(&mut params, 2);
        self.sign(params, key)
    }

    /// A client certificate naming `principal`.
    pub fn issue_client(&self, principal: &Principal) -> Result<IssuedCert, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let (role, common_name) = principal.subject();
        params.distinguished_name = name(&[
            (DnType::OrganizationName, ORGANIZATION),
            (DnType::OrganizationalUnitName, role),
            (DnType::CommonName, &common_name),
        ]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        set_validity(&mut params, 2);
        self.sign(params, key)
    }

    fn sign(&self, params: CertificateParams, key: KeyPair) -> Result<IssuedCert, PkiError> {
        let certificate = params.signed_by(&key, &self.certificate, &self.key)?;
        Ok(IssuedCert {
            cert_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn name(parts: &[(DnType, &str)]) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    for (kind, value) in parts {
        name.push(kind.clone(), *value);
    }
    name
}

fn set_validity(params: &mut CertificateParams, years: i32) {
    let today = Utc::now().date_naive();
    params.not_before = rcgen::date_time_ymd(today.year() - 1, today.month() as u8, 1);
    params.not_after = rcgen::date_time_ymd(today.year() + years, today.month() as u8, 1);
}

/// The demo principals of the embedded default, with their file names.
pub fn demo_principals() -> Vec<(&'static str, Principal)> {
    let mut principals: Vec<(&'static str, Principal)> = Agency::ALL
        .into_iter()
        .map(|agency| (agency.as_str(), Principal::Agency(agency)))
        .collect();
    principals.push((
        "investigator",
        Principal::Investigator {
            unit: "370300".into(),
        },
    ));
    principals.push((
        "supervisor",
        Principal::Supervisor {
            name: "supervisor".into(),
        },
    ));
    principals
}

/// Makes sure `<dir>` holds the development CA, server and demo client certificates, and
/// returns the server's TLS settings. Existing files are kept when all of them are present.
pub fn ensure_dev_pki(dir: &Path) -> Result<TlsSettings, PkiError> {
    let settings = TlsSettings {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        client_ca: dir.join("ca.pem"),
    };
    let mut expected = vec![
        settings.cert.clone(),
        settings.key.clone(),
        settings.client_ca.clone(),
    ];
    for (file, _) in demo_principals() {
        expected.push(dir.join(format!("{file}.pem")));
        expected.push(dir.join(format!("{file}.key")));
    }
    if expected.iter().all(|path| path.exists()) {
        return Ok(settings);
    }
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let ca = DevCa::generate("LeadBridge development CA")?;
    write(&settings.client_ca, &ca.cert_pem(), false)?;
    let server = ca.issue_server(&["localhost", "127.0.0.1", "::1"])?;
    write(&settings.cert, &server.cert_pem, false)?;
    write(&settings.key, &server.key_pem, true)?;
    for (file, principal) in demo_principals() {
        let issued = ca.issue_client(&principal)?;
        write(&dir.join(format!("{file}.pem")), &issued.cert_pem, false)?;
        write(&dir.join(format!("{file}.key")), &issued.key_pem, true)?;
    }
    tracing::info!(dir = %dir.display(), "Generated the development PKI.");
    Ok(settings)
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), PkiError> {
    let fail = |source| PkiError::Write {
        path: path.to_owned(),
        source,
    };
    std::fs::write(path, contents).map_err(fail)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_certificates_carry_their_principal() {
        let ca = DevCa::generate("test CA").unwrap();
        for (_, principal) in demo_principals() {
            let issued = ca.issue_client(&principal).unwrap();
            let der = rustls_pemfile::certs(&mut issued.cert_pem.as_bytes())
                .next()
                .unwrap()
                .unwrap();
            assert_eq!(Principal::from_certificate(&der), Some(principal));
        }
    }

    #[test]
    fn the_dev_pki_is_written_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let settings = ensure_dev_pki(dir.path()).unwrap();
        let ca = std::fs::read_to_string(&settings.client_ca).unwrap();
        for file in [
            "environment",
            "land",
            "safety",
            "water",
            "investigator",
            "supervisor",
        ] {
            assert!(
                dir.path().join(format!("{file}.pem")).exists(),
                "{file}.pem"
            );
            assert!(
                dir.path().join(format!("{file}.key")).exists(),
                "{file}.key"
            );
        }
        ensure_dev_pki(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&settings.client_ca).unwrap(),
            ca,
            "an existing CA is kept"
        );
    }
}
