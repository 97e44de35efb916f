//! Who is calling: the principal named by a verified client certificate.
//!
//! Certificates issued by the hub's CA carry the role in the subject's organizational unit
//! (`OU=agency|investigator|supervisor`) and the principal in its common name: the agency code
//! (`CN=environment`), the police unit's code (`CN=370300`), or the supervisor's name. The
//! TLS layer has already verified the chain against the client CA; this module only reads it.

use std::fmt;

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::lead::Agency;

pub const ORGANIZATION: &str = "LeadBridge";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    Agency(Agency),
    Investigator { unit: String },
    Supervisor { name: String },
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

    /// Reads the principal from a DER certificate; `None` when it names no known role.
    pub fn from_certificate(der: &[u8]) -> Option<Principal> {
        let (_, certificate) = X509Certificate::from_der(der).ok()?;
        let subject = certificate.subject();
        let first = |values: Vec<&str>| values.first().map(|v| v.to_string());
        let unit = first(
            subject
                .iter_organizational_unit()
                .filter_map(|a| a.as_str().ok())
                .collect(),
        )?;
        let common_name = first(
            subject
                .iter_common_name()
                .filter_map(|a| a.as_str().ok())
                .collect(),
        )?;
        match unit.as_str() {
            "agency" => common_name.parse().ok().map(Principal::Agency),
            "investigator" if !common_name.is_empty() => {
                Some(Principal::Investigator { unit: common_name })
            }
            "supervisor" if !common_name.is_empty() => {
                Some(Principal::Supervisor { name: common_name })
            }
            _ => None,
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (role, name) = self.subject();
        write!(f, "{role}:{name}")
    }
}
