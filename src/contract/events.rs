//! The events the hub and the police adapter exchange on Kafka, as types both sides share.
//!
//! Promise: every event either side publishes is built from these types and every event it
//! consumes is read into them, so the two sides cannot drift apart field by field. Each has a
//! JSON Schema under `schemas/events/` that the tests check the serialised form against. An
//! event that does not read into its type is an error naming what is wrong, never a default.
//!
//! Readers are tolerant of fields they do not know (a later minor change may add one), not of
//! steps they do not know; a change that removes or retypes a field, or renames a step, is a
//! new `schema` version unless the old form stays readable (as `delivery_failed` does).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::contract::lead::{Agency, LeadId, LeadKind};

/// Version of the value published on the leads topics.
pub const LEAD_EVENT_SCHEMA: &str = "leadbridge.lead-event.v1";
/// Version of the reconsideration requests the hub sends on the leads topics.
pub const RECONSIDERATION_SCHEMA: &str = "leadbridge.reconsideration-request.v1";
/// Version of the receipt events on the receipts topic.
pub const RECEIPT_SCHEMA: &str = "leadbridge.receipt.v1";
/// Version of the transparency-log events the police adapter ships on the receipts topic.
pub const LOG_SCHEMA: &str = "leadbridge.log.v1";
/// The Kafka key of every log event: one key keeps them on one partition, in their order.
pub const LOG_EVENT_KEY: &str = "log:police";
/// How the `schema_id` header of a lead event begins: the lead type and schema version follow
/// (`urn:leadbridge:schema:lead:<lead_type>:v1`, the `$id` of the lead's composed schema).
pub const LEAD_EVENT_SCHEMA_URN_PREFIX: &str = "urn:leadbridge:schema:lead:";

/// Why a payload is not the event it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("undecodable: {0}")]
    Undecodable(String),
    #[error("unknown event schema {0:?}")]
    UnknownSchema(String),
}

/// A lead as the hub accepted it, published on `<prefix>.leads.<agency>.v1` under its lead id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeadEvent {
    pub event_id: uuid::Uuid,
    /// Always [`LEAD_EVENT_SCHEMA`].
    pub schema: String,
    pub lead_id: LeadId,
    /// 1 or more.
    pub revision: i64,
    pub agency: Agency,
    /// Text rather than a `LeadType`, so that a reader can tell a lead type it does not know
    /// (a newer hub) from a malformed event.
    pub lead_type: String,
    pub kind: LeadKind,
    pub case_id: String,
    /// SHA-256 (hex) of the canonical JSON of `lead`.
    pub content_sha256: String,
    /// The lead document as accepted.
    pub lead: serde_json::Map<String, Value>,
}

/// The agency asks the police to reconsider a non-filing (Decree 310 art. 9), published on the
/// lead's topic so that it stays in order with the lead's revisions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReconsiderationRequest {
    pub event_id: uuid::Uuid,
    /// Always [`RECONSIDERATION_SCHEMA`].
    pub schema: String,
    pub lead_id: LeadId,
    pub revision: i64,
    pub agency: Agency,
    pub reason: String,
    #[serde(with = "rfc3339_micros")]
    pub requested_at: DateTime<Utc>,
}

/// An event on a leads topic.
#[derive(Clone, Debug, PartialEq)]
pub enum LeadsTopicEvent {
    Lead(LeadEvent),
    Reconsideration(ReconsiderationRequest),
}

impl LeadsTopicEvent {
    /// Reads a leads-topic payload, told apart by its `schema`.
    pub fn decode(payload: &[u8]) -> Result<LeadsTopicEvent, EventError> {
        let value: Value = serde_json::from_slice(payload)
            .map_err(|error| EventError::Undecodable(error.to_string()))?;
        match value.get("schema").and_then(Value::as_str) {
            Some(LEAD_EVENT_SCHEMA) => {
                let event: LeadEvent = typed(value, "lead event")?;
                positive_revision(event.revision)?;
                Ok(LeadsTopicEvent::Lead(event))
            }
            Some(RECONSIDERATION_SCHEMA) => {
                let event: ReconsiderationRequest = typed(value, "reconsideration request")?;
                positive_revision(event.revision)?;
                Ok(LeadsTopicEvent::Reconsideration(event))
            }
            other => Err(EventError::UnknownSchema(
                other.unwrap_or("<none>").to_owned(),
            )),
        }
    }
}

/// What the police did with a lead revision, sent to the hub on `<prefix>.receipts.v1` under
/// the lead id. The hub applies each event id once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReceiptEvent {
    pub event_id: uuid::Uuid,
    /// Always [`RECEIPT_SCHEMA`].
    // Its schema is the agency API's feedback item, which leaves this member out.
    #[schema(ignore)]
    pub schema: String,
    pub lead_id: LeadId,
    pub revision: i64,
    #[serde(with = "rfc3339_micros")]
    #[schema(value_type = String, format = DateTime)]
    pub at: DateTime<Utc>,
    /// `police-adapter`, or `investigator:<unit>` for a decision.
    pub actor: String,
    #[serde(flatten)]
    pub step: ReceiptStep,
}

/// The step a receipt reports (`event`) and what belongs to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ReceiptStep {
    /// The adapter recorded the lead, assessed it and routed it to `units`.
    ReceivedByPolice {
        units: Vec<String>,
        /// The assessment against the criminal thresholds (`police::rules`).
        #[schema(value_type = Object)]
        assessment: Value,
        /// The Decree 310 deadlines now running.
        #[schema(value_type = Vec<Object>)]
        deadlines: Value,
        /// Set when no unit covers the lead's division: the fallback unit that holds it as a
        /// forwarding task (Decree 310 art 7), not as its own case.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        forwarding_task: Option<String>,
    },
    /// A unit not competent for the lead forwarded it (Decree 310 art 7): to another unit of
    /// this system (`to_unit`, which then receives it) or to an organ outside it (`to_organ`).
    Forwarded(ForwardDetails),
    /// A unit's inbox or case-management system took the lead.
    Delivered {
        unit: String,
        sink: String,
        /// The unit's reference for the lead (its case-management number, or the inbox's).
        cms_ref: String,
    },
    /// The adapter gave up delivering to `unit` (the unit refused the lead for good, or the
    /// give-up time passed); the lead is on the dead-letter topic for an operator. Adapters
    /// before this step had its name sent `delivery_failed` without `attempts` for the same
    /// give-up; that form is still read, as this step.
    #[serde(alias = "delivery_failed")]
    DeliveryGivenUp {
        unit: String,
        sink: String,
        error: String,
        /// How many attempts were made; absent from the older form.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attempts: Option<i64>,
    },
    /// The adapter set the message aside (it could not be processed or stored).
    DeadLettered {
        error_class: String,
        error: String,
        source_topic: String,
        source_partition: i32,
        source_offset: i64,
    },
    Filed(DecisionDetails),
    NotFiled(DecisionDetails),
    Returned(DecisionDetails),
    /// The answer to a reconsideration request; `decision` says which.
    Reconsidered(DecisionDetails),
}

/// Where a lead was forwarded and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ForwardDetails {
    /// The unit that forwarded it.
    pub from_unit: String,
    /// The competent unit of this system that receives it now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_unit: Option<String>,
    /// The competent organ outside this system, by name, when it left the system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_organ: Option<String>,
    pub reason: String,
    /// The Decree 310 deadlines the forward leaves running.
    #[schema(value_type = Vec<Object>)]
    pub deadlines: Value,
}

/// A unit's decision on a lead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DecisionDetails {
    pub unit: String,
    /// `filed`, `not_filed` or `returned`.
    pub decision: String,
    pub reason: Option<String>,
    pub police_case_no: Option<String>,
    /// The Decree 310 deadlines the decision leaves running.
    #[schema(value_type = Vec<Object>)]
    pub deadlines: Value,
}

impl ReceiptStep {
    /// The `event` name, which is also the lead status the step moves to.
    pub fn name(&self) -> &'static str {
        match self {
            ReceiptStep::ReceivedByPolice { .. } => "received_by_police",
            ReceiptStep::Delivered { .. } => "delivered",
            ReceiptStep::DeliveryGivenUp { .. } => "delivery_given_up",
            ReceiptStep::DeadLettered { .. } => "dead_lettered",
            ReceiptStep::Filed(_) => "filed",
            ReceiptStep::NotFiled(_) => "not_filed",
            ReceiptStep::Returned(_) => "returned",
            ReceiptStep::Reconsidered(_) => "reconsidered",
            ReceiptStep::Forwarded(_) => "forwarded",
        }
    }

    /// The assessment, on a `received_by_police` step.
    pub fn assessment(&self) -> Option<&Value> {
        match self {
            ReceiptStep::ReceivedByPolice { assessment, .. } => Some(assessment),
            _ => None,
        }
    }

    /// The deadlines the step leaves running, when it changes them.
    pub fn deadlines(&self) -> Option<&Value> {
        match self {
            ReceiptStep::ReceivedByPolice { deadlines, .. } => Some(deadlines),
            ReceiptStep::Filed(d)
            | ReceiptStep::NotFiled(d)
            | ReceiptStep::Returned(d)
            | ReceiptStep::Reconsidered(d) => Some(&d.deadlines),
            ReceiptStep::Forwarded(f) => Some(&f.deadlines),
            _ => None,
        }
    }

    /// Whether the step is a unit's decision (first or on reconsideration).
    pub fn is_decision(&self) -> bool {
        matches!(
            self,
            ReceiptStep::Filed(_)
                | ReceiptStep::NotFiled(_)
                | ReceiptStep::Returned(_)
                | ReceiptStep::Reconsidered(_)
        )
    }
}

impl ReceiptEvent {
    pub fn decode(payload: &[u8]) -> Result<ReceiptEvent, EventError> {
        let value: Value = serde_json::from_slice(payload)
            .map_err(|error| EventError::Undecodable(error.to_string()))?;
        match value.get("schema").and_then(Value::as_str) {
            Some(RECEIPT_SCHEMA) => {
                let event: ReceiptEvent = typed(value, "receipt")?;
                positive_revision(event.revision)?;
                Ok(event)
            }
            other => Err(EventError::UnknownSchema(
                other.unwrap_or("<none>").to_owned(),
            )),
        }
    }
}

/// Part of the police adapter's transparency log, shipped to the hub on the receipts topic
/// (supervision contract §2) under [`LOG_EVENT_KEY`]: entries in index order, or one
/// checkpoint the adapter signed. The hub keeps a read-only copy that it checks and serves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogEvent {
    /// Always [`LOG_SCHEMA`].
    pub schema: String,
    /// Always `police`: the hub's own log is never shipped.
    pub log: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<ShippedEntry>,
    /// A signed checkpoint (C2SP signed note) over entries already shipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
}

/// One log entry as its log stores it: the entry object and its leaf hash (hex).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShippedEntry {
    pub index: u64,
    pub entry: Value,
    pub leaf_hash: String,
}

/// An event on the receipts topic.
#[derive(Clone, Debug, PartialEq)]
pub enum ReceiptsTopicEvent {
    Receipt(ReceiptEvent),
    Log(LogEvent),
}

impl ReceiptsTopicEvent {
    /// Reads a receipts-topic payload, told apart by its `schema`.
    pub fn decode(payload: &[u8]) -> Result<ReceiptsTopicEvent, EventError> {
        let value: Value = serde_json::from_slice(payload)
            .map_err(|error| EventError::Undecodable(error.to_string()))?;
        match value.get("schema").and_then(Value::as_str) {
            Some(LOG_SCHEMA) => {
                let event: LogEvent = typed(value, "log event")?;
                if event.log != "police" {
                    return Err(EventError::Undecodable(format!(
                        "log event: log {:?}: only the police log is shipped",
                        event.log
                    )));
                }
                if event.entries.is_empty() == event.checkpoint.is_none() {
                    return Err(EventError::Undecodable(
                        "log event: carries either entries or one checkpoint".into(),
                    ));
                }
                if event
                    .entries
                    .windows(2)
                    .any(|pair| pair[1].index != pair[0].index + 1)
                {
                    return Err(EventError::Undecodable(
                        "log event: entries are not in consecutive index order".into(),
                    ));
                }
                Ok(ReceiptsTopicEvent::Log(event))
            }
            _ => ReceiptEvent::decode(payload).map(ReceiptsTopicEvent::Receipt),
        }
    }
}

/// The Kafka headers of a dead letter: why and where it was set aside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterHeaders {
    /// A stable snake_case class (`undecodable`, `unknown_lead`, `unstorable`, …).
    pub error_class: String,
    pub error_message: String,
    /// Which stage set it aside (`hub.receipts`, `police-adapter.consume`, …).
    pub stage: String,
    pub origin: DeadLetterOrigin,
}

/// What a dead letter came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeadLetterOrigin {
    /// A consumed message, by its coordinates.
    Consumed {
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// A delivery to a unit that was given up after `attempts`.
    Delivery { unit: String, attempts: i64 },
}

impl DeadLetterHeaders {
    /// The headers in the order they are sent.
    pub fn to_kafka(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("error_class", self.error_class.clone()),
            ("error_message", self.error_message.clone()),
            ("stage", self.stage.clone()),
        ];
        match &self.origin {
            DeadLetterOrigin::Consumed {
                topic,
                partition,
                offset,
            } => headers.extend([
                ("source_topic", topic.clone()),
                ("source_partition", partition.to_string()),
                ("source_offset", offset.to_string()),
            ]),
            DeadLetterOrigin::Delivery { unit, attempts } => {
                headers.extend([("unit", unit.clone()), ("attempts", attempts.to_string())])
            }
        }
        headers
    }
}

/// A delivery given up on, as dead-lettered: the lead and its assessment, so that an operator
/// can hand it over by other means.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GivenUpDelivery {
    pub lead_id: LeadId,
    pub revision: i64,
    pub unit: String,
    pub lead: Value,
    pub assessment: Value,
}

/// Reads `value` into `T`, naming the field at fault (`lead event: revision: invalid type …`).
fn typed<T: serde::de::DeserializeOwned>(value: Value, what: &str) -> Result<T, EventError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        EventError::Undecodable(if path == "." {
            format!("{what}: {inner}")
        } else {
            format!("{what}: {path}: {inner}")
        })
    })
}

fn positive_revision(revision: i64) -> Result<(), EventError> {
    if revision >= 1 {
        Ok(())
    } else {
        Err(EventError::Undecodable(format!(
            "revision {revision} is not a positive integer"
        )))
    }
}

/// Times on the wire: RFC 3339 in UTC with microseconds (`2026-12-01T08:00:00.000000Z`), the
/// precision both databases keep.
mod rfc3339_micros {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(deserializer)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|at| at.with_timezone(&Utc))
            .map_err(|error| {
                serde::de::Error::custom(format!("{text:?} is not an RFC 3339 time: {error}"))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(name: &str) -> jsonschema::Validator {
        let path = format!(
            "{}/schemas/events/{name}.schema.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let document: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|error| panic!("{path}: {error}"));
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&document)
            .unwrap_or_else(|error| panic!("{path}: {error}"))
    }

    fn conforms(schema_name: &str, value: &Value) {
        let validator = schema(schema_name);
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|error| format!("{} at {}", error, error.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{schema_name}: {errors:?}\n{value:#}");
    }

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T08:30:00.123456Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn lead_event() -> LeadEvent {
        let lead = json!({"summary": "废水总排口总铅浓度超标", "facts": {"n": 1}});
        LeadEvent {
            event_id: uuid::Uuid::now_v7(),
            schema: LEAD_EVENT_SCHEMA.into(),
            lead_id: LeadId::generate(),
            revision: 2,
            agency: Agency::Environment,
            lead_type: "environment.discharge_exceedance".into(),
            kind: LeadKind::Transfer,
            case_id: "ZBHJ-2026-0153".into(),
            content_sha256: "ab".repeat(32),
            lead: lead.as_object().unwrap().clone(),
        }
    }

    fn receipt(step: ReceiptStep) -> ReceiptEvent {
        ReceiptEvent {
            event_id: uuid::Uuid::now_v7(),
            schema: RECEIPT_SCHEMA.into(),
            lead_id: LeadId::generate(),
            revision: 1,
            at: at(),
            actor: "police-adapter".into(),
            step,
        }
    }

    fn every_step() -> Vec<ReceiptStep> {
        let deadlines = json!([{"name": "police_decision", "basis": "国务院令第310号 第八条", "legal": true,
            "party": "police", "starts_at": "2026-12-01T16:30:00.123456+08:00", "length": "3 calendar days",
            "due_at": "2026-12-04T23:59:59.999999+08:00", "last_day": "2026-12-04", "completed_at": null, "state": "running"}]);
        let decision = |decision: &str| DecisionDetails {
            unit: "370303".into(),
            decision: decision.into(),
            reason: (decision != "filed").then(|| "不构成犯罪".to_owned()),
            police_case_no: (decision == "filed").then(|| "A3703032026120001".to_owned()),
            deadlines: deadlines.clone(),
        };
        vec![
            ReceiptStep::ReceivedByPolice {
                units: vec!["370303".into()],
                assessment: json!({"priority": "high", "suspected_offences": []}),
                deadlines: deadlines.clone(),
                forwarding_task: None,
            },
            ReceiptStep::ReceivedByPolice {
                units: vec!["370300".into()],
                assessment: json!({"priority": "low", "suspected_offences": []}),
                deadlines: deadlines.clone(),
                forwarding_task: Some("370300".into()),
            },
            ReceiptStep::Forwarded(ForwardDetails {
                from_unit: "370303".into(),
                to_unit: Some("370305".into()),
                to_organ: None,
                reason: "案发地在临淄区".into(),
                deadlines: deadlines.clone(),
            }),
            ReceiptStep::Forwarded(ForwardDetails {
                from_unit: "370300".into(),
                to_unit: None,
                to_organ: Some("北京市公安局东城分局".into()),
                reason: "案发地在北京市东城区".into(),
                deadlines: deadlines.clone(),
            }),
            ReceiptStep::Delivered {
                unit: "370303".into(),
                sink: "inbox".into(),
                cms_ref: "inbox:1".into(),
            },
            ReceiptStep::DeliveryGivenUp {
                unit: "370303".into(),
                sink: "http".into(),
                error: "422 refused".into(),
                attempts: Some(3),
            },
            ReceiptStep::DeadLettered {
                error_class: "unstorable".into(),
                error: "too large".into(),
                source_topic: "lb.leads.environment.v1".into(),
                source_partition: 2,
                source_offset: 41,
            },
            ReceiptStep::Filed(decision("filed")),
            ReceiptStep::NotFiled(decision("not_filed")),
            ReceiptStep::Returned(decision("returned")),
            ReceiptStep::Reconsidered(decision("filed")),
        ]
    }

    #[test]
    fn every_event_round_trips_and_matches_its_json_schema() {
        let event = lead_event();
        let bytes = serde_json::to_vec(&event).unwrap();
        conforms("lead-event.v1", &serde_json::from_slice(&bytes).unwrap());
        assert_eq!(
            LeadsTopicEvent::decode(&bytes).unwrap(),
            LeadsTopicEvent::Lead(event)
        );

        let request = ReconsiderationRequest {
            event_id: uuid::Uuid::now_v7(),
            schema: RECONSIDERATION_SCHEMA.into(),
            lead_id: LeadId::generate(),
            revision: 1,
            agency: Agency::Water,
            reason: "证据足以证明涉嫌犯罪".into(),
            requested_at: at(),
        };
        let bytes = serde_json::to_vec(&request).unwrap();
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        conforms("reconsideration-request.v1", &value);
        assert_eq!(value["requested_at"], "2026-12-01T08:30:00.123456Z");
        assert_eq!(
            LeadsTopicEvent::decode(&bytes).unwrap(),
            LeadsTopicEvent::Reconsideration(request)
        );

        for step in every_step() {
            let name = step.name();
            let event = receipt(step);
            let bytes = serde_json::to_vec(&event).unwrap();
            let value: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(value["event"], name, "the step's name is its `event`");
            conforms("receipt.v1", &value);
            assert_eq!(ReceiptEvent::decode(&bytes).unwrap(), event, "{name}");
        }
    }

    #[test]
    fn a_log_event_round_trips_matches_its_schema_and_is_told_from_a_receipt() {
        let entries = LogEvent {
            schema: LOG_SCHEMA.into(),
            log: "police".into(),
            entries: vec![
                ShippedEntry {
                    index: 7,
                    entry: json!({"index": 7, "at": "2026-12-01T08:30:00.123456Z", "actor": "police-adapter",
                        "action": "lead.assessed", "lead_id": null, "revision": null, "details": {}}),
                    leaf_hash: "ab".repeat(32),
                },
                ShippedEntry {
                    index: 8,
                    entry: json!({"index": 8, "at": "2026-12-01T08:30:00.123456Z", "actor": "police-adapter",
                        "action": "lead.routed", "lead_id": null, "revision": null, "details": {}}),
                    leaf_hash: "cd".repeat(32),
                },
            ],
            checkpoint: None,
        };
        let checkpoint = LogEvent {
            schema: LOG_SCHEMA.into(),
            log: "police".into(),
            entries: Vec::new(),
            checkpoint: Some("leadbridge/local/police\n9\nAAAA\n\n— k sig\n".into()),
        };
        for event in [entries.clone(), checkpoint] {
            let bytes = serde_json::to_vec(&event).unwrap();
            conforms("log.v1", &serde_json::from_slice(&bytes).unwrap());
            assert_eq!(
                ReceiptsTopicEvent::decode(&bytes).unwrap(),
                ReceiptsTopicEvent::Log(event)
            );
        }
        let receipt = receipt(every_step().remove(0));
        assert_eq!(
            ReceiptsTopicEvent::decode(&serde_json::to_vec(&receipt).unwrap()).unwrap(),
            ReceiptsTopicEvent::Receipt(receipt)
        );

        let refused = |change: &dyn Fn(&mut Value)| {
            let mut value = serde_json::to_value(&entries).unwrap();
            change(&mut value);
            ReceiptsTopicEvent::decode(&serde_json::to_vec(&value).unwrap()).unwrap_err()
        };
        for (why, error) in [
            ("hub log", refused(&|v| v["log"] = json!("hub"))),
            ("no content", refused(&|v| v["entries"] = json!([]))),
            ("both", refused(&|v| v["checkpoint"] = json!("x"))),
            ("gap", refused(&|v| v["entries"][1]["index"] = json!(9))),
            (
                "no hash",
                refused(&|v| {
                    v["entries"][0].as_object_mut().unwrap().remove("leaf_hash");
                }),
            ),
        ] {
            assert!(
                matches!(error, EventError::Undecodable(_)),
                "{why}: {error}"
            );
        }
    }

    #[test]
    fn the_receipt_schema_refuses_a_step_without_its_fields() {
        let delivered = every_step()
            .into_iter()
            .find(|step| step.name() == "delivered")
            .unwrap();
        let mut value = serde_json::to_value(receipt(delivered)).unwrap();
        value.as_object_mut().unwrap().remove("cms_ref");
        assert!(!schema("receipt.v1").is_valid(&value));
        let error = ReceiptEvent::decode(&serde_json::to_vec(&value).unwrap()).unwrap_err();
        assert!(
            matches!(&error, EventError::Undecodable(detail) if detail.contains("cms_ref")),
            "{error}"
        );
    }

    #[test]
    fn a_malformed_event_is_an_error_naming_what_is_wrong_never_a_default() {
        let good = serde_json::to_value(lead_event()).unwrap();
        let with = |change: &dyn Fn(&mut Value)| {
            let mut value = good.clone();
            change(&mut value);
            LeadsTopicEvent::decode(&serde_json::to_vec(&value).unwrap()).unwrap_err()
        };
        let undecodable = |error: EventError, needle: &str| match error {
            EventError::Undecodable(detail) => {
                assert!(detail.contains(needle), "{needle:?} not in {detail:?}")
            }
            other => panic!("expected undecodable, got {other}"),
        };
        undecodable(
            with(&|v| {
                v.as_object_mut().unwrap().remove("lead_id");
            }),
            "lead_id",
        );
        undecodable(with(&|v| v["lead_id"] = json!("not-a-uuid")), "lead_id: ");
        undecodable(with(&|v| v["revision"] = json!(0)), "revision 0");
        undecodable(
            with(&|v| v["revision"] = json!("2")),
            "revision: invalid type",
        );
        undecodable(with(&|v| v["lead"] = json!([1])), "lead: invalid type");
        undecodable(
            with(&|v| v["kind"] = json!("rumour")),
            "kind: unknown variant `rumour`",
        );
        undecodable(with(&|v| v["agency"] = json!("police")), "police");
        assert_eq!(
            with(&|v| v["schema"] = json!("leadbridge.lead-event.v9")),
            EventError::UnknownSchema("leadbridge.lead-event.v9".into())
        );
        assert_eq!(
            LeadsTopicEvent::decode(b"{}").unwrap_err(),
            EventError::UnknownSchema("<none>".into())
        );
        undecodable(LeadsTopicEvent::decode(b"\xff not json").unwrap_err(), "");

        let mut receipt = serde_json::to_value(receipt(every_step().remove(0))).unwrap();
        receipt["at"] = json!("yesterday");
        undecodable(
            ReceiptEvent::decode(&serde_json::to_vec(&receipt).unwrap()).unwrap_err(),
            "RFC 3339",
        );
        receipt["at"] = json!("2026-12-01T08:30:00.123456Z");
        receipt["event"] = json!("vanished");
        undecodable(
            ReceiptEvent::decode(&serde_json::to_vec(&receipt).unwrap()).unwrap_err(),
            "vanished",
        );
    }

    #[test]
    fn a_give_up_in_the_older_form_reads_as_delivery_given_up() {
        let mut value = serde_json::to_value(receipt(ReceiptStep::DeliveryGivenUp {
            unit: "370303".into(),
            sink: "http".into(),
            error: "refused".into(),
            attempts: None,
        }))
        .unwrap();
        assert!(value.get("attempts").is_none(), "{value}");
        value["event"] = json!("delivery_failed");
        let read = ReceiptEvent::decode(&serde_json::to_vec(&value).unwrap()).unwrap();
        assert_eq!(read.step.name(), "delivery_given_up");
    }

    #[test]
    fn an_unknown_field_is_ignored_within_a_version() {
        let mut value = serde_json::to_value(lead_event()).unwrap();
        value["added_later"] = json!(true);
        assert!(LeadsTopicEvent::decode(&serde_json::to_vec(&value).unwrap()).is_ok());
    }

    #[test]
    fn dead_letter_headers_say_why_and_where() {
        let consumed = DeadLetterHeaders {
            error_class: "undecodable".into(),
            error_message: "not JSON".into(),
            stage: "hub.receipts".into(),
            origin: DeadLetterOrigin::Consumed {
                topic: "lb.receipts.v1".into(),
                partition: 1,
                offset: 7,
            },
        };
        assert_eq!(
            consumed.to_kafka(),
            [
                ("error_class", "undecodable".to_owned()),
                ("error_message", "not JSON".to_owned()),
                ("stage", "hub.receipts".to_owned()),
                ("source_topic", "lb.receipts.v1".to_owned()),
                ("source_partition", "1".to_owned()),
                ("source_offset", "7".to_owned()),
            ]
        );
        let given_up = DeadLetterHeaders {
            origin: DeadLetterOrigin::Delivery {
                unit: "370303".into(),
                attempts: 12,
            },
            ..consumed
        };
        let headers = given_up.to_kafka();
        assert_eq!(
            &headers[3..],
            [("unit", "370303".to_owned()), ("attempts", "12".to_owned())]
        );
    }
}
