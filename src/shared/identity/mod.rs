//! Who is calling: the principal named by a verified client certificate.
//!
//! Certificates issued by the hub's CA carry the deployment's organisation in the subject's
//! `O`, the role in its organizational unit (`OU=agency|investigator|supervisor`) and the
//! principal in its common name: the agency code (`CN=environment`), the police unit's code
//! (`CN=370300`), or the supervisor's name. The TLS layer has already verified the chain
//! against the client CA; this module only reads the subject.
//!
//! Promise: a subject names a principal only when it is unambiguous — exactly one `O` equal to
//! the configured organisation, exactly one `OU` naming a known role and exactly one non-empty
//! `CN` valid for that role. Anything else (`CN=land,CN=environment`, `OU=supervisor,OU=agency`,
//! a missing or foreign organisation) is refused with the reason, never resolved by taking the
//! first value.

use std::fmt;

use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

use crate::contract::lead::Agency;

/// The organisation of the development PKI and the default of `server.client_organization`.
pub const ORGANIZATION: &str = "LeadBridge";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    Agency(Agency),
    Investigator { unit: String },
    Supervisor { name: String },
}

/// Why a verified certificate names no principal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the client certificate cannot be parsed: {0}")]
    Unparsable(String),
    #[error("the certificate subject must hold exactly one {attribute}; it holds {count}")]
    AttributeCount {
        attribute: &'static str,
        count: usize,
    },
    #[error("the certificate subject's {attribute} is not a UTF-8 or printable string")]
    AttributeEncoding { attribute: &'static str },
    #[error("the certificate belongs to organisation {found:?}, not {expected:?}")]
    ForeignOrganization { found: String, expected: String },
    #[error("OU={0:?} is not a role of this hub (agency, investigator, supervisor)")]
    UnknownRole(String),
    #[error("CN={0:?} is not an agency (environment, land, safety, water)")]
    UnknownAgency(String),
    #[error("the certificate's CN is empty")]
    EmptyName,
}

impl Principal {
    /// The subject's (organizational unit, common name).
    pub fn subject(&self) -> (&'static str, String) {
        match self {
            Principal::Agency(agency) => ("agency", agency.as_str().to_owned()),
            Principal::Investigator { unit } => ("investigator", unit.clone()),
            Principal::Supervisor { name } => ("supervisor", name.clone()),
        }
    }

    /// Reads the principal from a DER certificate whose subject must belong to `organization`.
    pub fn from_certificate(der: &[u8], organization: &str) -> Result<Principal, IdentityError> {
        let (_, certificate) = X509Certificate::from_der(der)
            .map_err(|error| IdentityError::Unparsable(error.to_string()))?;
        let subject = certificate.subject();
        let found = single(subject, "O", |name| {
            name.iter_organization().collect::<Vec<_>>()
        })?;
        if found != organization {
            return Err(IdentityError::ForeignOrganization {
                found,
                expected: organization.to_owned(),
            });
        }
        let role = single(subject, "OU", |name| {
            name.iter_organizational_unit().collect::<Vec<_>>()
        })?;
        let common_name = single(subject, "CN", |name| {
            name.iter_common_name().collect::<Vec<_>>()
        })?;
        if common_name.trim().is_empty() {
            return Err(IdentityError::EmptyName);
        }
        match role.as_str() {
            "agency" => common_name
                .parse()
                .map(Principal::Agency)
                .map_err(|_| IdentityError::UnknownAgency(common_name)),
            "investigator" => Ok(Principal::Investigator { unit: common_name }),
            "supervisor" => Ok(Principal::Supervisor { name: common_name }),
            _ => Err(IdentityError::UnknownRole(role)),
        }
    }
}

/// The one value of `attribute` in `name`; zero or several are refused.
fn single<'a>(
    name: &'a X509Name<'a>,
    attribute: &'static str,
    values: impl Fn(&'a X509Name<'a>) -> Vec<&'a x509_parser::x509::AttributeTypeAndValue<'a>>,
) -> Result<String, IdentityError> {
    let values = values(name);
    if values.len() != 1 {
        return Err(IdentityError::AttributeCount {
            attribute,
            count: values.len(),
        });
    }
    values[0]
        .as_str()
        .map(str::to_owned)
        .map_err(|_| IdentityError::AttributeEncoding { attribute })
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (role, name) = self.subject();
        write!(f, "{role}:{name}")
    }
}

#[cfg(test)]
mod tests {
    use rcgen::DnType;

    use super::*;
    use crate::shared::pki::DevCa;

    /// rcgen keeps one value per attribute type; the same OID as a custom type repeats it.
    const CN: &[u64] = &[2, 5, 4, 3];
    const OU: &[u64] = &[2, 5, 4, 11];
    const O: &[u64] = &[2, 5, 4, 10];

    fn identity_of(subject: &[(DnType, &str)]) -> Result<Principal, IdentityError> {
        let ca = DevCa::generate("identity test CA").unwrap();
        let issued = ca.issue_client_with_subject(subject).unwrap();
        let der = rustls_pemfile::certs(&mut issued.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        Principal::from_certificate(&der, ORGANIZATION)
    }

    fn custom(oid: &[u64]) -> DnType {
        DnType::CustomDnType(oid.to_vec())
    }

    #[test]
    fn a_subject_with_one_of_each_attribute_names_its_principal() {
        let subject = [
            (DnType::OrganizationName, ORGANIZATION),
            (DnType::OrganizationalUnitName, "agency"),
            (DnType::CommonName, "land"),
        ];
        assert_eq!(identity_of(&subject), Ok(Principal::Agency(Agency::Land)));
    }

    #[test]
    fn two_common_names_are_refused_whichever_comes_first() {
        for (first, second) in [("land", "environment"), ("environment", "land")] {
            let subject = [
                (DnType::OrganizationName, ORGANIZATION),
                (DnType::OrganizationalUnitName, "agency"),
                (DnType::CommonName, first),
                (custom(CN), second),
            ];
            assert_eq!(
                identity_of(&subject),
                Err(IdentityError::AttributeCount {
                    attribute: "CN",
                    count: 2
                }),
                "CN={first},CN={second}"
            );
        }
    }

    #[test]
    fn two_roles_are_refused() {
        let subject = [
            (DnType::OrganizationName, ORGANIZATION),
            (DnType::OrganizationalUnitName, "supervisor"),
            (custom(OU), "agency"),
            (DnType::CommonName, "environment"),
        ];
        assert_eq!(
            identity_of(&subject),
            Err(IdentityError::AttributeCount {
                attribute: "OU",
                count: 2
            })
        );
    }

    #[test]
    fn the_organisation_must_be_the_configured_one_exactly_once() {
        let role_and_name = [
            (DnType::OrganizationalUnitName, "agency"),
            (DnType::CommonName, "environment"),
        ];
        assert_eq!(
            identity_of(&role_and_name),
            Err(IdentityError::AttributeCount {
                attribute: "O",
                count: 0
            })
        );
        let foreign = [
            [(DnType::OrganizationName, "Elsewhere")].as_slice(),
            &role_and_name,
        ]
        .concat();
        assert!(matches!(
            identity_of(&foreign),
            Err(IdentityError::ForeignOrganization { .. })
        ));
        let twice = [
            [
                (DnType::OrganizationName, ORGANIZATION),
                (custom(O), ORGANIZATION),
            ]
            .as_slice(),
            &role_and_name,
        ]
        .concat();
        assert_eq!(
            identity_of(&twice),
            Err(IdentityError::AttributeCount {
                attribute: "O",
                count: 2
            })
        );
    }

    #[test]
    fn unknown_roles_agencies_and_empty_names_are_refused() {
        let with = |role: &'static str, name: &'static str| {
            identity_of(&[
                (DnType::OrganizationName, ORGANIZATION),
                (DnType::OrganizationalUnitName, role),
                (DnType::CommonName, name),
            ])
        };
        assert_eq!(
            with("admin", "root"),
            Err(IdentityError::UnknownRole("admin".into()))
        );
        assert_eq!(
            with("agency", "police"),
            Err(IdentityError::UnknownAgency("police".into()))
        );
        assert_eq!(with("investigator", " "), Err(IdentityError::EmptyName));
        assert_eq!(
            with("investigator", "370303"),
            Ok(Principal::Investigator {
                unit: "370303".into()
            })
        );
    }
}
