//! `/supervise/v1/keys` and `/supervise/v1/logs/{log}/…` (supervision contract §3): the
//! hub's log, and the hub's copy of the police log, as supervisors' tools read them. Sizes and
//! indexes beyond the latest checkpoint answer 400 (a size) or 404 (an index), so a proof is
//! only ever against a signed tree. The police log's checkpoints are the police adapter's own,
//! checked when they arrived; the hub never signs for the police.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::SuperviseState;
use crate::shared::audit::log::{self, LogTables, StoredCheckpoint};
use crate::shared::audit::witness::{self, WitnessError, WitnessedLog};
use crate::shared::http::extract::{Path, Query};
use crate::shared::http::{with_content_type, ApiError, SupervisorCaller};
use crate::shared::store::StoreError;
use crate::shared::tlog::checkpoint::VerifierKey;

/// At most this many entries per `entries` call.
const MAX_ENTRIES: u64 = 1000;

/// The whole log names every agency's leads: it is the procuratorate's and the reform
/// office's to read; an agency head reads their own agency's evidence bundles instead.
fn whole_log_reader(caller: &SupervisorCaller) -> Result<(), ApiError> {
    match caller.scope.agency() {
        None => Ok(()),
        Some(agency) => Err(ApiError::Forbidden(format!(
            "the whole log is the procuratorate's and the reform office's to read; the head of {agency} reads their agency's leads' evidence"
        ))),
    }
}

/// The tables of the log a path names.
pub(super) fn tables_of(log: &str) -> Result<LogTables, ApiError> {
    match log {
        "hub" => Ok(LogTables::OWN),
        "police" => Ok(LogTables::POLICE_COPY),
        other => Err(ApiError::NotFoundDetail(format!(
            "there is no log {other:?}; the logs are hub and police"
        ))),
    }
}

async fn latest(state: &SuperviseState, tables: LogTables) -> Result<StoredCheckpoint, ApiError> {
    log::latest_checkpoint(&state.store, tables)
        .await?
        .ok_or_else(|| ApiError::NotFoundDetail("the log has no checkpoint yet".into()))
}

fn text(note: String, status: StatusCode) -> Response {
    with_content_type((status, note).into_response(), "text/plain; charset=utf-8")
}

/// The logs' verifier keys (`<name>+<key id>+<base64>`).
#[derive(Serialize, ToSchema)]
pub struct Keys {
    hub: String,
    /// Absent when this process does not hold the police adapter's key.
    #[serde(skip_serializing_if = "Option::is_none")]
    police: Option<String>,
    witnesses: Vec<String>,
}

/// The logs' public keys
#[utoipa::path(
    get,
    path = "/supervise/v1/keys",
    operation_id = "logKeys",
    tag = "supervision",
    responses(
        (status = 200, description = "The verifier keys", body = Keys),
        (status = 401, description = "No client certificate"),
        (status = 403, description = "The caller is not a supervisor"),
    )
)]
pub async fn keys(_caller: SupervisorCaller, state: SuperviseState) -> Json<Keys> {
    Json(Keys {
        hub: state.hub_signer.key.verifier_key(),
        police: state.police_key.as_ref().map(|key| key.text()),
        witnesses: state.witnesses.iter().map(VerifierKey::text).collect(),
    })
}

/// The latest checkpoint of a log
#[utoipa::path(
    get,
    path = "/supervise/v1/logs/{log}/checkpoint",
    operation_id = "latestCheckpoint",
    tag = "supervision",
    params(("log" = String, Path, description = "hub or police")),
    responses(
        (status = 200, description = "The signed checkpoint (C2SP signed note), with every witness's cosignature it has", content_type = "text/plain", body = String),
        (status = 401, description = "No client certificate"),
        (status = 403, description = "The caller is not a supervisor"),
        (status = 404, description = "No such log, or no checkpoint yet"),
        (status = 503, description = "Database unavailable; retry"),
    )
)]
pub async fn checkpoint(
    _caller: SupervisorCaller,
    state: SuperviseState,
    Path(log): Path<String>,
) -> Result<Response, ApiError> {
    let tables = tables_of(&log)?;
    let latest = latest(&state, tables).await?;
    let served = witness::with_cosignatures(&state.store, &log, latest.size, latest.note).await?;
    Ok(text(served, StatusCode::OK))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct After {
    /// Only checkpoints of a larger tree.
    #[serde(default)]
    after: u64,
}

#[derive(Serialize, ToSchema)]
pub struct Checkpoints {
    /// Signed notes, oldest first (at most 1000).
    checkpoints: Vec<String>,
}

/// Earlier checkpoints of a log
#[utoipa::path(
    get,
    path = "/supervise/v1/logs/{log}/checkpoints",
    operation_id = "listCheckpoints",
    tag = "supervision",
    params(("log" = String, Path, description = "hub or police"), After),
    responses(
        (status = 200, description = "Checkpoints larger than `after`, oldest first", body = Checkpoints),
        (status = 400, description = "A malformed query (invalid_query)"),
        (status = 401, description = "No client certificate"),
        (status = 403, description = "The caller is not a supervisor"),
        (status = 404, description = "No such log"),
        (status = 503, description = "Database unavailable; retry"),
    )
)]
pub async fn checkpoints(
    _caller: SupervisorCaller,
    state: SuperviseState,
    Path(log): Path<String>,
    Query(query): Query<After>,
) -> Result<Json<Checkpoints>, ApiError> {
    let tables = tables_of(&log)?;
    let checkpoints = log::checkpoints_after(&state.store, tables, query.after, 1000).await?;
    Ok(Json(Checkpoints { checkpoints }))
}

/// Sign a checkpoint now
#[utoipa::path(
    post,
    path = "/supervise/v1/logs/{log}/checkpoints",
    operation_id = "signCheckpoint",
    tag = "supervision",
    params(("log" = String, Path, description = "hub or police")),
    responses(
        (status = 201, description = "A checkpoint of the hub's log as it is now, signed now", content_type = "text/plain", body = String),
        (status = 200, description = "The log did not grow since the latest checkpoint, which this is; for the police log, always its latest checkpoint (the adapter signs its own)", content_type = "text/plain", body = String),
        (status = 401, description = "No client certificate"),
        (status = 403, description = "The caller is not a supervisor"),
        (status = 404, description = "No such log, or an empty log"),
        (status = 503, description = "Database unavailable; retry"),
    )
)]
pub async fn sign_checkpoint(
    _caller: SupervisorCaller,
    state: SuperviseState,
    Path(log): Path<String>,
) -> Result<Response, ApiError> {
    if tables_of(&log)? == LogTables::POLICE_COPY {
        // Only the police sign the police log; its latest checkpoint is what there is.
        return Ok(text(
            latest(&state, LogTables::POLICE_COPY).await?.note,
            StatusCode::OK,
        ));
    }
    // Entries still queued belong in what the supervisor asked for.
    log::sequence_all(&state.store).await?;
    let before = log::latest_checkpoint(&state.store, LogTables::OWN).await?;
    let signed = log::sign_checkpoint(&state.store, &state.hub_signer, Utc::now())
        .await?
        .ok_or_else(|| ApiError::NotFoundDetail("the log is empty".into()))?;
    let status = if before.as_ref() == Some(&signed) {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(text(signed.note, status))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Range {
    /// The first index.
    start: u64,
    /// One past the last index; at most `start + 1000`.
    end: u64,
}

#[derive(Serialize, ToSchema)]
pub struct Entries {
    entries: Vec<EntryWithHash>,
}

#[derive(Serialize, ToSchema)]
pub struct EntryWithHash {
    #[schema(value_type = Object)]
    entry: Value,
    leaf_hash: String,
}

/// Entries of a log
#[utoipa::path(
    get,
    path = "/supervise/v1/logs/{log}/entries",
    operation_id = "logEntries",
    tag = "supervision",
    params(("log" = String, Path, description = "hub or police"), Range),
    responses(
        (status = 200, description = "The entries of [start, end)", body = Entries),
        (status = 400, description = "An empty or too large range, or a malformed query"),
        (status = 401, description = "No client certificate"),
        (status = 403, description = "The caller is not a supervisor, or is an agency head"),
        (status = 404, description = "No such log, or the range reaches past the latest checkpoint"),
        (status = 503, description = "Database unavailable; retry"),
    )
)]
pub async fn entries(
    caller: SupervisorCaller,
    state: SuperviseState,
    Path(log): Path<String>,
    Query(range): Query<Range>,
) -> Result<Json<Entries>, ApiError> {
    whole_log_reader(&caller)?;
    let tables = tables_of(&log)?;
    if range.end <= range.start || range.end - range.start > MAX_ENTRIES {
        return Err(ApiError::InvalidQuery(format!(
            "end must be above start and at most {MAX_ENTRIES} past it"
        )));
    }
    let size = latest(&state, tables).await?.size;
    if range.end > size {
        return Err(ApiError::NotFoundDetail(format!(
            "the latest checkpoint covers entries 0 to {}",
            size.saturating_sub(1)
        )));
    }
    let entries = log::entries(&state.store, tables, range.start, range.end)
        .await?
        .into_iter()
        .map(|(entry, leaf_hash)| EntryWithHash { entry, leaf_hash })
        .collect();
    Ok(Json(Entries { entries }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    index: u64,
    tree_size: u64,
}

#[derive(Serialize, ToSchema)]
pub struct InclusionProof {
    leaf_index: u64,
    tree_size: u64,
    leaf_hash: String,
    path: Vec<String>,
}

/// Checks a tree size against the latest checkpoint.
async fn signed_size(
    state: &SuperviseState,
    tables: LogTables,
    size: u64,
    name: &str,
) -> Result<(), ApiError> {
    let latest = latest(state, tables).await?.size;
    if size == 0 || size > latest {
        return Err(ApiError::InvalidQuery(format!(
            "{name} {size} is not between 1 and the latest checkpoint's size {latest}"
        )));
    }
    Ok(())
}

/// An inclusion proof
#[utoipa::path(
    get,
    path = "/supervise/v1/logs/{log}/proof/inclusion",
    operation_id = "inclusionProof",
    tag = "supervision",
    params(("log" = String, Path, description = "hub or police"), InclusionQuery),
    responses(
        (status = 200, description = "The RFC 9162 inclusion proof of the entry in the tree of that size", body = InclusionProof),
        (status = 400, description = "A tree size beyond the latest checkpoint, or a malformed query"),
        (status = 401, description = "No client certificate"),
        (status = 403, description = "The caller is not a supervisor, or is an agency head"),
        (status = 404, description = "No such log, or no such entry in a tree of that size"),
        (status = 503, description = "Database unavailable; retry"),
    )
)]
pub async fn inclusion(
    caller: SupervisorCaller,
    state: SuperviseState,
    Path(log): Path<String>,
    Query(query): Query<InclusionQuery>,
) -> Result<Json<InclusionProof>, ApiError> {
    whole_log_reader(&caller)?;
    let tables = tables_of(&log)?;
    signed_size(&state, tables, query.tree_size, "tree_size").await?;
    if query.index >= query.tree_size {
        return Err(ApiError::NotFoundDetail(format!(
            "a tree of {} entries has no entry {}",
            query.tree_size, query.index
        )));
    }
    let leaf_hash = log::leaf_hash_at(&state.store, tables, query.index)
        .await?
        .ok_or_else(|| {
            ApiError::Internal(
                StoreError::Corrupt(format!("log entry {} is missing", query.index)).to_string(),
            )
        })?;
    let path = log::inclusion_proof(&state.store, tables, query.index, query.tree_size).await?;
    Ok(Json(InclusionProof {
        leaf_index: query.index,
        tree_size: query.tree_size,
        leaf_hash,
        path: path.iter().map(hex::encode).collect(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    first: u64,
    second: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ConsistencyProof {
    first: u64,
    second: u64,
    path: Vec<String>,
}

/// A consistency proof
#[utoipa::path(
    get,
    path = "/supervise/v1/logs/{log}/proof/consistency",
    operation_id = "consistencyProof",
    tag = "supervision",
    params(("log" = String, Path, description = "hub or police"), ConsistencyQuery),
    responses(
        (status = 200, description = "The RFC 9162 consistency proof between the two tree sizes", body = ConsistencyProof),
        (status = 400, description = "A size beyond the latest checkpoint, first above second, or a malformed query"),
        (status = 401, description = "No client certificate"),
        (status = 403, description = "The caller is not a supervisor"),
        (status = 404, description = "No such log"),
        (status = 503, description = "Database unavailable; retry"),
    )
)]
pub async fn consistency(
    caller: SupervisorCaller,
    state: SuperviseState,
    Path(log): Path<String>,
    Query(query): Query<ConsistencyQuery>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    whole_log_reader(&caller)?;
    let tables = tables_of(&log)?;
    signed_size(&state, tables, query.second, "second").await?;
    if query.first == 0 || query.first > query.second {
        return Err(ApiError::InvalidQuery(format!(
            "first {} must be between 1 and second {}",
            query.first, query.second
        )));
    }
    let path = log::consistency_proof(&state.store, tables, query.first, query.second).await?;
    Ok(Json(ConsistencyProof {
        first: query.first,
        second: query.second,
        path: path.iter().map(hex::encode).collect(),
    }))
}

/// The log a witness reaches at `log`, with its key and origin.
fn witnessed<'a>(
    state: &'a SuperviseState,
    log: &'a str,
    hub_key: &'a VerifierKey,
) -> Result<WitnessedLog<'a>, ApiError> {
    let tables = tables_of(log)?;
    let (key, origin) = if tables == LogTables::OWN {
        (hub_key, &state.hub_origin)
    } else {
        (
            state.police_key.as_ref().ok_or_else(|| {
                ApiError::NotFoundDetail("the hub knows no police verifier key".into())
            })?,
            &state.police_origin,
        )
    };
    Ok(WitnessedLog {
        name: log,
        tables,
        key,
        origin,
    })
}

/// Cosign a checkpoint as a witness
#[utoipa::path(
    post,
    path = "/supervise/v1/logs/{log}/cosignatures",
    operation_id = "cosignCheckpoint",
    tag = "supervision",
    params(("log" = String, Path, description = "hub or police")),
    request_body(content = String, content_type = "text/plain", description = "The checkpoint as the log signed it, plus one more signature line: the witness's Ed25519 signature over the same body"),
    responses(
        (status = 201, description = "The cosignature is kept and served with the checkpoint", content_type = "text/plain", body = String),
        (status = 200, description = "The witness had cosigned this checkpoint already", content_type = "text/plain", body = String),
        (status = 400, description = "Not a checkpoint of this log signed by its key"),
        (status = 401, description = "No client certificate"),
        (status = 403, description = "The caller is not a supervisor, or no configured witness key signed it"),
        (status = 404, description = "No such log"),
        (status = 409, description = "Not a checkpoint the log holds, or not consistent with the witness's previous cosigned one"),
        (status = 503, description = "Database unavailable; retry"),
    )
)]
pub async fn cosign(
    _caller: SupervisorCaller,
    state: SuperviseState,
    Path(log): Path<String>,
    body: String,
) -> Result<Response, ApiError> {
    let hub_key = VerifierKey::parse(&state.hub_signer.key.verifier_key())
        .map_err(|error| ApiError::Internal(error.to_string()))?;
    let witnessed = witnessed(&state, &log, &hub_key)?;
    let cosigned = witness::cosign(
        &state.store,
        &witnessed,
        &state.witnesses,
        &body,
        Utc::now(),
    )
    .await
    .map_err(|error| match error {
        WitnessError::Audit(error) => ApiError::from(error),
        WitnessError::Malformed(_) => ApiError::InvalidBody(error.to_string()),
        WitnessError::NotAWitness(_) => ApiError::Forbidden(error.to_string()),
        WitnessError::Inconsistent(_) => ApiError::StateConflict(error.to_string()),
    })?;
    let (_, note) = log::checkpoints_at(&state.store, witnessed.tables, cosigned.size)
        .await?
        .ok_or_else(|| ApiError::Internal("the cosigned checkpoint vanished".into()))?;
    let served = witness::with_cosignatures(&state.store, &log, cosigned.size, note).await?;
    let status = if cosigned.new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(text(served, status))
}
