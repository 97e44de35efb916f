use std::io;

/// Why the rule book could not be loaded. Every variant is a configuration or data problem
/// found at start-up; the message names the file (or setting) and the problem.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("rule file {file}: cannot read it: {source}")]
    Read {
        file: String,
        #[source]
        source: io::Error,
    },

    #[error("rule file {file}: not a valid rule file: {source}")]
    Malformed {
        file: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("rule file {file}: {rule} names the fact {fact:?}, which lead type {lead_type} does not have")]
    UnknownFact {
        file: String,
        rule: String,
        fact: String,
        lead_type: String,
    },

    #[error(
        "rule file {file}: {rule} refers to the configuration value {name:?}, which does not exist"
    )]
    UnknownConfig {
        file: String,
        rule: String,
        name: String,
    },

    #[error("rule file {file}: {rule} names the lead type {lead_type:?}, which does not exist")]
    UnknownLeadType {
        file: String,
        rule: String,
        lead_type: String,
    },

    #[error("rule file {file}: the id {rule} is used more than once")]
    DuplicateRule { file: String, rule: String },

    #[error("rule file {file}: {rule}: {problem}")]
    InvalidRule {
        file: String,
        rule: String,
        problem: String,
    },

    #[error("rules setting {setting}: {problem}")]
    Setting {
        setting: &'static str,
        problem: String,
    },
}

impl RulesError {
    /// Always false: the file or the settings must be fixed, retrying cannot help.
    pub fn is_retryable(&self) -> bool {
        false
    }
}
