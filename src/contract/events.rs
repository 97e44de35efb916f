//! The events the hub and the police adapter exchange on Kafka.

/// Version of the value published on the leads topics.
pub const LEAD_EVENT_SCHEMA: &str = "leadbridge.lead-event.v1";
/// Version of the reconsideration requests the hub sends on the leads topics.
pub const RECONSIDERATION_SCHEMA: &str = "leadbridge.reconsideration-request.v1";
/// Version of the receipt events on the receipts topic.
pub const RECEIPT_SCHEMA: &str = "leadbridge.receipt.v1";
/// How the `schema_id` header of a lead event begins: the lead type and schema version follow
/// (`urn:leadbridge:schema:lead:<lead_type>:v1`, the `$id` of the lead's composed schema).
pub const LEAD_EVENT_SCHEMA_URN_PREFIX: &str = "urn:leadbridge:schema:lead:";
