-- The police adapter's own tables, after the shared outbox and ledger
-- (`migrations/shared/sqlite`; its outbox carries receipts to the hub). The adapter's database
-- may run inside the police network: the leads it received and their deliveries to police
-- units. Times are stored as in the shared schema.
CREATE TABLE police_leads (
    lead_id         TEXT NOT NULL,
    revision        BIGINT NOT NULL,
    agency          TEXT NOT NULL,
    lead_type       TEXT NOT NULL,
    kind            TEXT NOT NULL,
    case_id         TEXT NOT NULL,
    division_code   TEXT NOT NULL,
    summary         TEXT NOT NULL,
    document        TEXT NOT NULL,
    content_sha256  TEXT NOT NULL,
    assessment      TEXT NOT NULL,
    priority        TEXT NOT NULL,
    received_at     TEXT NOT NULL,
    status          TEXT NOT NULL,
    delivered_at    TEXT,
    decision        TEXT,
    decision_reason TEXT,
    police_case_no  TEXT,
    decided_at      TEXT,
    decided_by      TEXT,
    reconsideration_reason       TEXT,
    reconsideration_requested_at TEXT,
    reconsidered_at              TEXT,
    PRIMARY KEY (lead_id, revision)
);

CREATE TABLE police_deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    lead_id          TEXT NOT NULL,
    revision         BIGINT NOT NULL,
    unit             TEXT NOT NULL,
    sink             TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    claimed_by       TEXT,
    claimed_until    TEXT,
    last_error       TEXT,
    delivered_at     TEXT,
    cms_ref          TEXT,
    dead_lettered_at TEXT,
    CONSTRAINT police_deliveries_once UNIQUE (lead_id, revision, unit)
);
CREATE INDEX police_deliveries_pending ON police_deliveries (id) WHERE delivered_at IS NULL AND dead_lettered_at IS NULL;
CREATE INDEX police_deliveries_by_unit ON police_deliveries (unit, delivered_at);
-- The claim asks, for each candidate, whether an earlier delivery of the same lead to the same
-- unit still waits: one probe of exactly the waiting deliveries, keyed by lead and unit.
CREATE INDEX police_deliveries_waiting_by_lead ON police_deliveries (lead_id, unit, id) WHERE delivered_at IS NULL AND dead_lettered_at IS NULL;
