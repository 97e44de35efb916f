//! The development PKI of the embedded default: a CA, a server certificate for the local
//! listener, and one client certificate per demo principal (`lead-contract.md` §8).
//!
//! Files are written once under `<data_dir>/pki` (mode 0700) and reused on later starts, so the
//! `curl` line a user copied keeps working. Keys are ECDSA P-256, written with mode 0600. The
//! CA's own key is kept there too (`ca.key`, 0600), so `leadbridge pki issue` can mint a
//! certificate for another agency, unit or supervisor later. Not for production: there the
//! operator supplies `server.tls` with their own CA and the hub holds no CA key.

pub mod pem;

use std::path::{Path, PathBuf};

use chrono::{Datelike, Utc};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

use crate::contract::lead::Agency;
use crate::shared::config::TlsSettings;
use crate::shared::identity::{Principal, ORGANIZATION};

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
    #[error("cannot read the development CA: {0}")]
    Load(String),
    #[error("{0} exists already; pass --force to replace it")]
    Exists(PathBuf),
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
        let certificate = ca_params(common_name)?.self_signed(&key)?;
        Ok(DevCa { certificate, key })
    }

    /// The CA written by [`ensure_dev_pki`]: its certificate and key files.
    ///
    /// rcgen signs with a certificate object, so the CA's certificate is rebuilt from the same
    /// subject and key; certificates it issues name that subject as issuer and are signed by
    /// that key, so they verify against the `ca.pem` on disk. The key must be the one of
    /// `ca.pem`: a mismatch is refused rather than producing certificates nobody trusts.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, PkiError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map_err(|error| PkiError::Load(format!("{}: {error}", path.display())))
        };
        let key = KeyPair::from_pem(&read(key_path)?)
            .map_err(|error| PkiError::Load(format!("{}: {error}", key_path.display())))?;
        let on_disk = crate::shared::pki::pem::read_certificates(cert_path)
            .map_err(|error| PkiError::Load(error.to_string()))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&on_disk[0])
            .map_err(|error| PkiError::Load(format!("{}: {error}", cert_path.display())))?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(PkiError::Load(format!(
                "{} is not the key of {}",
                key_path.display(),
                cert_path.display()
            )));
        }
        let common_name = parsed
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .ok_or_else(|| PkiError::Load(format!("{} has no CN", cert_path.display())))?
            .to_owned();
        let certificate = ca_params(&common_name)?.self_signed(&key)?;
        // Issued certificates name the rebuilt subject as issuer; verifiers match it byte for
        // byte against the subject of the `ca.pem` they trust.
        let rebuilt_subject = x509_parser::parse_x509_certificate(certificate.der())
            .map_err(|error| PkiError::Load(error.to_string()))?
            .1
            .subject()
            .as_raw()
            .to_vec();
        if rebuilt_subject != parsed.subject().as_raw() {
            return Err(PkiError::Load(format!(
                "{} was not written by this hub's development PKI",
                cert_path.display()
            )));
        }
        Ok(DevCa { certificate, key })
    }

    pub fn cert_pem(&self) -> String {
        self.certificate.pem()
    }

    /// The CA's private key, PEM.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
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
        let (role, common_name) = principal.subject();
        self.issue_client_with_subject(&[
            (
                DnType::OrganizationName,
                principal.organization(ORGANIZATION),
            ),
            (DnType::OrganizationalUnitName, role),
            (DnType::CommonName, &common_name),
        ])
    }

    /// A client certificate with exactly this subject, in this order. A repeated attribute
    /// (two CNs, say) is written with `DnType::CustomDnType` and its OID, since rcgen keeps one
    /// value per type; the hub must refuse such certificates, and tests need to make them.
    pub fn issue_client_with_subject(
        &self,
        subject: &[(DnType, &str)],
    ) -> Result<IssuedCert, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(subject);
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

fn ca_params(common_name: &str) -> Result<CertificateParams, PkiError> {
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
    Ok(params)
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
            scope: crate::shared::identity::SupervisorScope::Procuratorate,
        },
    ));
    principals
}

/// Makes sure `<dir>` holds the development CA (certificate and key), server and demo client
/// certificates, and returns the server's TLS settings. Existing files are kept when all of
/// them are present; otherwise the whole set is made anew, so every file belongs to one CA.
pub fn ensure_dev_pki(dir: &Path) -> Result<TlsSettings, PkiError> {
    let settings = TlsSettings {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        client_ca: dir.join("ca.pem"),
    };
    let ca_key = dir.join("ca.key");
    let mut expected = vec![
        settings.cert.clone(),
        settings.key.clone(),
        settings.client_ca.clone(),
        ca_key.clone(),
    ];
    for (file, _) in demo_principals() {
        expected.push(dir.join(format!("{file}.pem")));
        expected.push(dir.join(format!("{file}.key")));
    }
    crate::shared::private_fs::private_dir(dir).map_err(|source| PkiError::Write {
        path: dir.to_owned(),
        source,
    })?;
    if expected.iter().all(|path| path.exists()) {
        refresh_demo_certificates(dir)?;
        return Ok(settings);
    }
    let ca = DevCa::generate("LeadBridge development CA")?;
    write(&settings.client_ca, &ca.cert_pem(), false)?;
    write(&ca_key, &ca.key_pem(), true)?;
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

/// Re-issues, with the existing CA, each demo client certificate that no longer names its
/// principal as this build reads it (a supervisor's certificate from before supervisors'
/// `O` named their body), so an older data directory keeps working.
fn refresh_demo_certificates(dir: &Path) -> Result<(), PkiError> {
    let mut ca: Option<DevCa> = None;
    for (file, principal) in demo_principals() {
        let cert = dir.join(format!("{file}.pem"));
        let current = crate::shared::pki::pem::read_certificates(&cert)
            .ok()
            .and_then(|certificates| certificates.into_iter().next())
            .map(|der| Principal::from_certificate(&der, ORGANIZATION));
        if matches!(current, Some(Ok(ref named)) if *named == principal) {
            continue;
        }
        if ca.is_none() {
            ca = Some(DevCa::load(&dir.join("ca.pem"), &dir.join("ca.key"))?);
        }
        let issued = ca
            .as_ref()
            .expect("loaded above")
            .issue_client(&principal)?;
        write(&cert, &issued.cert_pem, false)?;
        write(&dir.join(format!("{file}.key")), &issued.key_pem, true)?;
        tracing::info!(file = %cert.display(), "Re-issued a demo certificate this build reads differently.");
    }
    Ok(())
}

/// Issues a client certificate for `principal` with the development CA in `dir`, as
/// `<dir>/<role>-<name>.pem` and `.key`. Existing files are replaced only when `force`.
pub fn issue_with_dev_ca(
    dir: &Path,
    principal: &Principal,
    force: bool,
) -> Result<(PathBuf, PathBuf), PkiError> {
    let ca = DevCa::load(&dir.join("ca.pem"), &dir.join("ca.key"))?;
    let (role, name) = principal.subject();
    let stem = format!("{role}-{name}");
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}.key"));
    for path in [&cert, &key] {
        if path.exists() && !force {
            return Err(PkiError::Exists(path.clone()));
        }
    }
    let issued = ca.issue_client(principal)?;
    write(&cert, &issued.cert_pem, false)?;
    write(&key, &issued.key_pem, true)?;
    Ok((cert, key))
}

/// Writes `contents`; a private file is created with mode 0600 from the start (and an
/// existing one is narrowed to it), so a key is never readable by others, even briefly.
fn write(path: &Path, contents: &str, private: bool) -> Result<(), PkiError> {
    let fail = |source| PkiError::Write {
        path: path.to_owned(),
        source,
    };
    if private {
        crate::shared::private_fs::write_private(path, contents.as_bytes()).map_err(fail)
    } else {
        std::fs::write(path, contents).map_err(fail)
    }
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
            assert_eq!(
                Principal::from_certificate(&der, ORGANIZATION),
                Ok(principal)
            );
        }
    }

    #[test]
    fn a_demo_certificate_this_build_reads_differently_is_reissued_with_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        ensure_dev_pki(dir.path()).unwrap();
        let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
        let investigator = std::fs::read_to_string(dir.path().join("investigator.pem")).unwrap();
        // A supervisor certificate as older builds wrote it: O=LeadBridge.
        let old = DevCa::load(&dir.path().join("ca.pem"), &dir.path().join("ca.key"))
            .unwrap()
            .issue_client_with_subject(&[
                (DnType::OrganizationName, ORGANIZATION),
                (DnType::OrganizationalUnitName, "supervisor"),
                (DnType::CommonName, "supervisor"),
            ])
            .unwrap();
        std::fs::write(dir.path().join("supervisor.pem"), &old.cert_pem).unwrap();
        ensure_dev_pki(dir.path()).unwrap();
        let der = crate::shared::pki::pem::read_certificates(&dir.path().join("supervisor.pem"))
            .unwrap()
            .remove(0);
        assert!(matches!(
            Principal::from_certificate(&der, ORGANIZATION),
            Ok(Principal::Supervisor { .. })
        ));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("ca.pem")).unwrap(),
            ca
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("investigator.pem")).unwrap(),
            investigator,
            "a certificate that still names its principal is kept"
        );
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

    #[test]
    fn a_certificate_issued_later_by_the_saved_ca_verifies_against_the_same_ca_pem() {
        let dir = tempfile::tempdir().unwrap();
        let settings = ensure_dev_pki(dir.path()).unwrap();
        let principal = Principal::Investigator {
            unit: "370303".into(),
        };
        let (cert, key) = issue_with_dev_ca(dir.path(), &principal, false).unwrap();
        assert!(cert.ends_with("investigator-370303.pem"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&key), 0o600);
            assert_eq!(mode(&dir.path().join("ca.key")), 0o600);
            assert_eq!(mode(dir.path()), 0o700);
        }
        // Verified as the server verifies clients: against ca.pem alone.
        let mut roots = rustls::RootCertStore::empty();
        for certificate in crate::shared::pki::pem::read_certificates(&settings.client_ca).unwrap()
        {
            roots.add(certificate).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let chain = crate::shared::pki::pem::read_certificates(&cert).unwrap();
        verifier
            .verify_client_cert(&chain[0], &[], rustls::pki_types::UnixTime::now())
            .expect("the new certificate chains to the development CA");
        assert_eq!(
            Principal::from_certificate(&chain[0], ORGANIZATION),
            Ok(principal.clone())
        );

        assert!(matches!(
            issue_with_dev_ca(dir.path(), &principal, false),
            Err(PkiError::Exists(_))
        ));
        issue_with_dev_ca(dir.path(), &principal, true).expect("--force replaces");
    }

    #[test]
    fn a_ca_key_that_is_not_the_ca_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        ensure_dev_pki(dir.path()).unwrap();
        let other = DevCa::generate("another CA").unwrap();
        std::fs::write(dir.path().join("ca.key"), other.key_pem()).unwrap();
        let error =
            issue_with_dev_ca(dir.path(), &Principal::Agency(Agency::Land), false).unwrap_err();
        assert!(error.to_string().contains("is not the key of"), "{error}");
    }
}
