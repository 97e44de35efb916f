//! The listener's own store: raw packets, hourly values, the leads made and the outbox of lead
//! revisions to push (SQLite by default, PostgreSQL by configuration).
//!
//! Promise: [`ListenerStore::persist`] stores a batch of packets, the hourly values they carry
//! and every lead revision they cause in one transaction, so a packet is answered (CN 9014)
//! only when it, and what it changed, is durable; a packet already stored (same MN, CN,
//! DataTime and part) is stored once and changes nothing. A lead revision leaves the outbox
//! only when the hub answered it, so a hub outage loses nothing. A stored value that does not
//! read back is an error naming its row.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::clues::{self, Draft, HourValue};
use super::config::ListenerConfig;
use crate::contract::lead::Agency;
use crate::contract::validate::{ValidationError, Validator};
use crate::on_backend;
use crate::shared::store::{column, DbJson, DbTime, Dialect, Migrations, Store, StoreError, Tx};

pub static MIGRATIONS: Migrations = Migrations {
    postgres: sqlx::migrate!("./migrations/hj212/postgres"),
    sqlite: sqlx::migrate!("./migrations/hj212/sqlite"),
};

/// `DataTime` as stored: the packet's own 14 digits.
const DATA_TIME: &str = "%Y%m%d%H%M%S";

/// A data packet that passed framing, parsing and the station's password.
#[derive(Clone, Debug)]
pub struct Incoming {
    pub raw: Vec<u8>,
    pub sha256: String,
    pub mn: String,
    pub cn: u16,
    pub data_time: NaiveDateTime,
    /// PNO of a split message, 0 for a whole packet.
    pub part: u32,
    pub qn: Option<String>,
    pub peer: String,
    pub received_at: DateTime<Utc>,
    /// CN 2061 only: each pollutant's average and flag.
    pub hourly: Vec<HourlyReading>,
}

#[derive(Clone, Debug)]
pub struct HourlyReading {
    pub pollutant: String,
    pub avg: Option<(String, f64)>,
    pub flag: Option<String>,
}

/// What storing a packet did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    New,
    /// The same (MN, CN, DataTime, part) was stored before.
    Duplicate,
    /// Stored alone after its group failed, and failed again (never from `persist`).
    Failed,
}

/// A lead revision the batch made.
#[derive(Clone, Debug)]
pub struct Revised {
    pub case_id: String,
    pub revision: i64,
    /// `Some` when the lead failed the hub's checks locally: it is kept, answered, not sent.
    pub refused: Option<String>,
}

/// A lead revision waiting for the hub.
#[derive(Clone, Debug)]
pub struct Waiting {
    pub id: i64,
    pub case_id: String,
    pub revision: i64,
    pub lead: Value,
}

/// The hub's answer to one waiting revision.
#[derive(Clone, Debug)]
pub enum Answer {
    Accepted,
    Replayed,
    Rejected(Value),
    /// 409: the hub holds this case and revision with other content, or a later revision.
    Conflict(Value),
}

/// Renumberings of one case after conflicts before the listener gives up on it.
pub const MAX_RENUMBERING: i64 = 50;

#[derive(Clone)]
pub struct ListenerStore {
    store: Store,
    validator: Validator,
}

impl ListenerStore {
    pub async fn open(url: &str, validator: Validator) -> Result<ListenerStore, StoreError> {
        Ok(ListenerStore {
            store: Store::connect(url, 4, &MIGRATIONS).await?,
            validator,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The writer revises a lead while the pusher may renumber it: on PostgreSQL each locks
    /// the lead's row first (SQLite has one connection, so one transaction at a time).
    fn lock(&self) -> &'static str {
        match self.store.dialect() {
            Dialect::Postgres => " FOR UPDATE",
            Dialect::Sqlite => "",
        }
    }

    /// Stores `batch` and the lead revisions it causes, in one transaction.
    pub async fn persist(
        &self,
        config: &ListenerConfig,
        batch: &[Incoming],
    ) -> Result<(Vec<Stored>, Vec<Revised>), StoreError> {
        let mut tx = self.store.begin().await?;
        let mut stored = Vec::with_capacity(batch.len());
        // (MN, pollutant, hour) of the new hourly values.
        let mut touched: BTreeSet<(String, String, NaiveDateTime)> = BTreeSet::new();
        let inserted = insert_packets(&mut tx, batch).await?;
        let mut readings: Vec<(&Incoming, &HourlyReading)> = Vec::new();
        for (packet, inserted) in batch.iter().zip(inserted) {
            stored.push(if inserted {
                Stored::New
            } else {
                Stored::Duplicate
            });
            if !inserted {
                continue;
            }
            for reading in &packet.hourly {
                readings.push((packet, reading));
                touched.insert((
                    packet.mn.clone(),
                    reading.pollutant.clone(),
                    packet.data_time,
                ));
            }
        }
        insert_hourly(&mut tx, &readings).await?;
        let mut drafts: Vec<Draft> = Vec::new();
        let mut judged: BTreeSet<(String, &str)> = BTreeSet::new();
        for (mn, pollutant, hour) in &touched {
            let Some(station) = config.stations.get(mn) else {
                continue;
            };
            let day = hour.date();
            if judged.insert((format!("{mn}/{pollutant}/{day}"), clues::EXCEEDANCE))
                && station.limits.contains_key(pollutant)
            {
                let start = day.and_hms_opt(0, 0, 0).expect("midnight exists");
                let hours =
                    hours_between(&mut tx, mn, pollutant, start, start + Duration::days(1)).await?;
                drafts.extend(clues::exceedance(config, station, pollutant, day, &hours));
            }
            // Runs of up to a week before this hour, and a week after it (late packets).
            let hours = hours_between(
                &mut tx,
                mn,
                pollutant,
                *hour - Duration::days(7),
                *hour + Duration::days(8),
            )
            .await?;
            for start_day in clues::tampering_days(config, &hours, *hour) {
                if judged.insert((format!("{mn}/{pollutant}/{start_day}"), clues::TAMPERING)) {
                    drafts.extend(clues::tampering(
                        config, station, pollutant, start_day, &hours,
                    ));
                }
            }
        }
        let mut revised = Vec::new();
        let now = batch
            .iter()
            .map(|p| p.received_at)
            .max()
            .unwrap_or_else(Utc::now);
        for draft in drafts {
            if let Some(revision) = self.revise(&mut tx, draft, now).await? {
                revised.push(revision);
            }
        }
        tx.commit().await?;
        Ok((stored, revised))
    }

    /// Records `draft` as the lead's next revision if its evidence changed, and queues it.
    async fn revise(
        &self,
        tx: &mut Tx,
        draft: Draft,
        now: DateTime<Utc>,
    ) -> Result<Option<Revised>, StoreError> {
        let draft_sha256 = hex::encode(Sha256::digest(
            serde_json::to_vec(&draft.lead).expect("JSON values serialise"),
        ));
        let which = format!("hj212_leads ({})", draft.case_id);
        let current: Option<(i64, String)> = on_backend!(tx.conn(), conn => {
            match sqlx::query(&format!("SELECT revision, draft_sha256 FROM hj212_leads WHERE case_id = $1{}", self.lock()))
                .bind(&draft.case_id)
                .fetch_optional(&mut *conn)
                .await?
            {
                Some(row) => Some((column(&row, "revision", &which)?, column(&row, "draft_sha256", &which)?)),
                None => None,
            }
        });
        if current
            .as_ref()
            .is_some_and(|(_, sha)| *sha == draft_sha256)
        {
            return Ok(None);
        }
        let revision = current.map_or(1, |(revision, _)| revision + 1);
        let offset = chrono::FixedOffset::east_opt(8 * 3600).expect("+08:00");
        let reported = draft
            .evidence_until
            .and_local_timezone(offset)
            .single()
            .map_or(now, |at| at.with_timezone(&Utc))
            .min(now);
        let mut lead = draft.lead;
        lead["source"]["revision"] = revision.into();
        lead["reported_at"] = reported
            .with_timezone(&offset)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
            .into();
        let refused = match self
            .validator
            .validate(Agency::Environment, lead.clone(), now)
        {
            Ok(_) => None,
            Err(ValidationError::Invalid(problems)) => Some(
                serde_json::to_value(&problems)
                    .unwrap_or_else(|_| Value::String(format!("{problems:?}"))),
            ),
            Err(other) => Some(Value::String(other.to_string())),
        };
        let day = draft.day.format("%Y%m%d").to_string();
        let at = DbTime::new(now);
        on_backend!(tx.conn(), conn => {
            sqlx::query(
                "INSERT INTO hj212_leads (case_id, lead_type, mn, pollutant, day, revision, draft_sha256, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (case_id) DO UPDATE SET revision = excluded.revision, \
                 draft_sha256 = excluded.draft_sha256, updated_at = excluded.updated_at",
            )
            .bind(&draft.case_id)
            .bind(draft.lead_type)
            .bind(&draft.mn)
            .bind(&draft.pollutant)
            .bind(&day)
            .bind(revision)
            .bind(&draft_sha256)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "INSERT INTO hj212_outbox (case_id, revision, lead, created_at, answered_at, outcome, problems) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&draft.case_id)
            .bind(revision)
            .bind(DbJson(lead))
            .bind(at)
            .bind(refused.as_ref().map(|_| at))
            .bind(refused.as_ref().map(|_| "rejected"))
            .bind(refused.clone().map(DbJson))
            .execute(&mut *conn)
            .await?;
        });
        Ok(Some(Revised {
            case_id: draft.case_id,
            revision,
            refused: refused.map(|problems| problems.to_string()),
        }))
    }

    /// Up to `limit` revisions the hub has not answered, oldest first.
    pub async fn waiting(&self, limit: i64) -> Result<Vec<Waiting>, StoreError> {
        on_backend!(self.store.db(), pool => {
            let rows = sqlx::query(
                "SELECT id, case_id, revision, lead FROM hj212_outbox WHERE answered_at IS NULL ORDER BY id LIMIT $1",
            )
            .bind(limit)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    let id: i64 = column(row, "id", &"hj212_outbox")?;
                    let which = format!("hj212_outbox ({id})");
                    let DbJson(lead) = column(row, "lead", &which)?;
                    Ok(Waiting {
                        id,
                        case_id: column(row, "case_id", &which)?,
                        revision: column(row, "revision", &which)?,
                        lead,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })
    }

    /// Records the hub's answers; those revisions leave the queue. A conflict on a case's
    /// latest revision means the hub holds the case at another revision with other content
    /// (this store was replaced, or its numbering lost): the lead is queued again as the next
    /// revision, at most [`MAX_RENUMBERING`] times per case.
    pub async fn answered(&self, answers: &[(Waiting, Answer)]) -> Result<(), StoreError> {
        let mut tx = self.store.begin().await?;
        let now = Utc::now();
        let at = DbTime::new(now);
        for (row, answer) in answers {
            let (outcome, problems) = match answer {
                Answer::Accepted => ("accepted", None),
                Answer::Replayed => ("replayed", None),
                Answer::Rejected(problems) | Answer::Conflict(problems) => {
                    ("rejected", Some(DbJson(problems.clone())))
                }
            };
            on_backend!(tx.conn(), conn => sqlx::query(
                "UPDATE hj212_outbox SET answered_at = $1, outcome = $2, problems = $3 WHERE id = $4",
            )
            .bind(at)
            .bind(outcome)
            .bind(problems)
            .bind(row.id)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected()))?;
            if matches!(answer, Answer::Conflict(_)) {
                self.renumber(&mut tx, row, now).await?;
            }
        }
        tx.commit().await
    }

    async fn renumber(
        &self,
        tx: &mut Tx,
        row: &Waiting,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let which = format!("hj212_leads ({})", row.case_id);
        let (latest, refused): (i64, i64) = on_backend!(tx.conn(), conn => {
            let found = sqlx::query(&format!(
                "SELECT revision, (SELECT count(*) FROM hj212_outbox WHERE case_id = $1 AND outcome = 'rejected') AS refused \
                 FROM hj212_leads WHERE case_id = $1{}",
                self.lock()
            ))
            .bind(&row.case_id)
            .fetch_one(&mut *conn)
            .await?;
            (column(&found, "revision", &which)?, column(&found, "refused", &which)?)
        });
        if latest != row.revision {
            // A newer revision is already queued; it supersedes this one.
            return Ok(());
        }
        if refused > MAX_RENUMBERING {
            tracing::error!(case_id = %row.case_id, "the hub keeps refusing this case's revisions; given up");
            return Ok(());
        }
        let revision = latest + 1;
        let mut lead = row.lead.clone();
        lead["source"]["revision"] = revision.into();
        tracing::warn!(case_id = %row.case_id, revision, "the hub holds this case at another revision; sending it as the next one");
        let at = DbTime::new(now);
        on_backend!(tx.conn(), conn => {
            sqlx::query("UPDATE hj212_leads SET revision = $1, updated_at = $2 WHERE case_id = $3")
                .bind(revision)
                .bind(at)
                .bind(&row.case_id)
                .execute(&mut *conn)
                .await?;
            sqlx::query(
                "INSERT INTO hj212_outbox (case_id, revision, lead, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(&row.case_id)
            .bind(revision)
            .bind(DbJson(lead))
            .bind(at)
            .execute(&mut *conn)
            .await?;
        });
        Ok(())
    }

    pub async fn close(&self) {
        self.store.close().await;
    }
}

/// Rows per multi-row `INSERT` (nine parameters each: well under either backend's limit).
const ROWS_PER_STATEMENT: usize = 256;

/// `($1, …, $columns), ($columns+1, …), …` for `rows` rows.
fn values(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|row| {
            let placeholders: Vec<String> = (1..=columns)
                .map(|column| format!("${}", row * columns + column))
                .collect();
            format!("({})", placeholders.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Inserts the packets not stored before; for each packet, whether it is new. A packet that
/// repeats an earlier one of the same batch is a duplicate too.
async fn insert_packets(tx: &mut Tx, batch: &[Incoming]) -> Result<Vec<bool>, StoreError> {
    let mut inserted: std::collections::HashSet<String> = std::collections::HashSet::new();
    for chunk in batch.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO hj212_packets (sha256, mn, cn, data_time, part, qn, received_at, peer, raw) \
             VALUES {} ON CONFLICT DO NOTHING RETURNING sha256",
            values(chunk.len(), 9)
        );
        let returned: Vec<String> = on_backend!(tx.conn(), conn => {
            let mut query = sqlx::query_scalar(&sql);
            for packet in chunk {
                query = query
                    .bind(&packet.sha256)
                    .bind(&packet.mn)
                    .bind(i32::from(packet.cn))
                    .bind(packet.data_time.format(DATA_TIME).to_string())
                    .bind(i32::try_from(packet.part).unwrap_or(i32::MAX))
                    .bind(packet.qn.as_deref())
                    .bind(DbTime::new(packet.received_at))
                    .bind(&packet.peer)
                    .bind(String::from_utf8_lossy(&packet.raw).into_owned());
            }
            query.fetch_all(&mut *conn).await?
        });
        inserted.extend(returned);
    }
    // The first occurrence of an inserted hash is the new one.
    Ok(batch
        .iter()
        .map(|packet| inserted.remove(&packet.sha256))
        .collect())
}

async fn insert_hourly(
    tx: &mut Tx,
    readings: &[(&Incoming, &HourlyReading)],
) -> Result<(), StoreError> {
    for chunk in readings.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO hj212_hourly (mn, pollutant, data_time, avg_text, flag, packet_sha256, packet_size) \
             VALUES {} ON CONFLICT DO NOTHING",
            values(chunk.len(), 7)
        );
        on_backend!(tx.conn(), conn => {
            let mut query = sqlx::query(&sql);
            for (packet, reading) in chunk {
                query = query
                    .bind(&packet.mn)
                    .bind(&reading.pollutant)
                    .bind(packet.data_time.format(DATA_TIME).to_string())
                    .bind(reading.avg.as_ref().map(|(text, _)| text.as_str()))
                    .bind(reading.flag.as_deref())
                    .bind(&packet.sha256)
                    .bind(i64::try_from(packet.raw.len()).unwrap_or(i64::MAX));
            }
            query.execute(&mut *conn).await.map(|done| done.rows_affected())
        })?;
    }
    Ok(())
}

/// A pollutant's hourly values with `from <= DataTime < to`.
async fn hours_between(
    tx: &mut Tx,
    mn: &str,
    pollutant: &str,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> Result<Vec<HourValue>, StoreError> {
    on_backend!(tx.conn(), conn => {
        let rows = sqlx::query(
            "SELECT data_time, avg_text, flag, packet_sha256, packet_size FROM hj212_hourly \
             WHERE mn = $1 AND pollutant = $2 AND data_time >= $3 AND data_time < $4 ORDER BY data_time",
        )
        .bind(mn)
        .bind(pollutant)
        .bind(from.format(DATA_TIME).to_string())
        .bind(to.format(DATA_TIME).to_string())
        .fetch_all(&mut *conn)
        .await?;
        rows.iter().map(|row| {
            let text: String = column(row, "data_time", &"hj212_hourly")?;
            let which = format!("hj212_hourly ({mn}, {pollutant}, {text})");
            let data_time = NaiveDateTime::parse_from_str(&text, DATA_TIME)
                .map_err(|error| StoreError::Corrupt(format!("{which}: data_time: {error}")))?;
            let avg_text: Option<String> = column(row, "avg_text", &which)?;
            let avg = match avg_text {
                Some(text) => {
                    let value: f64 = text.parse().map_err(|_| {
                        StoreError::Corrupt(format!("{which}: avg_text: \"{text}\" is not a number"))
                    })?;
                    Some((text, value))
                }
                None => None,
            };
            let size: i64 = column(row, "packet_size", &which)?;
            Ok(HourValue {
                data_time,
                avg,
                flag: column(row, "flag", &which)?,
                packet_sha256: column(row, "packet_sha256", &which)?,
                packet_size: u64::try_from(size)
                    .map_err(|_| StoreError::Corrupt(format!("{which}: packet_size: {size}")))?,
            })
        }).collect::<Result<Vec<_>, StoreError>>()
    })
}
