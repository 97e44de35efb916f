//! Who is calling: the principal named by a verified client certificate.
//!
//! Certificates issued by the hub's CA carry the deployment's organisation in the subject's
//! `O`, the role in its organizational unit (`OU=agency|investigator|supervisor`) and the
//! principal in its common name: the agency code (`CN=environment`), the police unit's code
//! (`CN=370300`), or the supervisor's name. The TLS layer has already verified the chain
//! against the client CA; this module only reads the subject.
//!
//! A supervisor's `O` is instead the body it supervises for (supervision contract §1):
//! `procuratorate` or `reform_office` (reads everything) or an agency (`O=land`: that agency's
//! head, who reads only that agency's leads).
//!
//! Promise: a subject names a principal only when it is unambiguous — exactly one `O` (the
//! configured organisation, or a supervisor's body), exactly one `OU` naming a known role and
//! exactly one non-empty `CN` valid for that role. Anything else (`CN=land,CN=environment`, `OU=supervisor,OU=agency`,
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
    Investigator {
        unit: String,
    },
    Supervisor {
        name: String,
        scope: SupervisorScope,
    },
}

/// Whom a supervisor supervises for, from the certificate's `O`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SupervisorScope {
    /// 检察院: reads everything.
    Procuratorate,
    /// The reform office: reads everything.
    ReformOffice,
    /// An agency's head: reads that agency's leads, reports and screenings only.
    Agency(Agency),
}

impl SupervisorScope {
    pub fn as_str(self) -> &'static str {
        match self {
            SupervisorScope::Procuratorate => "procuratorate",
            SupervisorScope::ReformOffice => "reform_office",
            SupervisorScope::Agency(agency) => agency.as_str(),
        }
    }

    pub fn parse(text: &str) -> Option<SupervisorScope> {
        match text {
            "procuratorate" => Some(SupervisorScope::Procuratorate),
            "reform_office" => Some(SupervisorScope::ReformOffice),
            other => other.parse().ok().map(SupervisorScope::Agency),
        }
    }

    /// The agency this scope is limited to, if any.
    pub fn agency(self) -> Option<Agency> {
        match self {
            SupervisorScope::Agency(agency) => Some(agency),
            _ => None,
        }
    }
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
    #[error("a supervisor's O={0:?} is not procuratorate, reform_office or an agency")]
    UnknownSupervisorScope(String),
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
            Principal::Supervisor { name, .. } => ("supervisor", name.clone()),
        }
    }

    /// The subject's `O`: a supervisor's body, else the deployment's `organization`.
    pub fn organization<'a>(&self, organization: &'a str) -> &'a str {
        match self {
            Principal::Supervisor { scope, .. } => scope.as_str(),
            _ => organization,
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
        let role = single(subject, "OU", |name| {
            name.iter_organizational_unit().collect::<Vec<_>>()
        })?;
        if role != "supervisor" && found != organization {
            return Err(IdentityError::ForeignOrganization {
                found,
                expected: organization.to_owned(),
            });
        }
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
            "supervisor" => Ok(Principal::Supervisor {
                name: common_name,
                scope: SupervisorScope::parse(&found)
                    .ok_or(IdentityError::UnknownSupervisorScope(found))?,
            }),
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
    fn a_supervisors_organisation_is_the_body_it_supervises_for() {
        let supervisor = |organization: &'static str| {
            identity_of(&[
                (DnType::OrganizationName, organization),
                (DnType::OrganizationalUnitName, "supervisor"),
                (DnType::CommonName, "张检察官"),
            ])
        };
        assert_eq!(
            supervisor("procuratorate"),
            Ok(Principal::Supervisor {
                name: "张检察官".into(),
                scope: SupervisorScope::Procuratorate
            })
        );
        assert_eq!(
            supervisor("land"),
            Ok(Principal::Supervisor {
                name: "张检察官".into(),
                scope: SupervisorScope::Agency(Agency::Land)
            })
        );
        assert_eq!(
            supervisor("reform_office").map(|p| p.organization(ORGANIZATION).to_owned()),
            Ok("reform_office".into())
        );
        assert_eq!(
            supervisor(ORGANIZATION),
            Err(IdentityError::UnknownSupervisorScope(ORGANIZATION.into()))
        );
        assert_eq!(
            supervisor("police"),
            Err(IdentityError::UnknownSupervisorScope("police".into()))
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
