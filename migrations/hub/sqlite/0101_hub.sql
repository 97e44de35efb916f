-- The hub's own tables, after the shared outbox and ledger (`migrations/shared/sqlite`): leads,
-- their revisions and timelines, what the police answered (the assessment and deadlines they
-- computed, every receipt and decision as agency feedback) and the receipts already applied
-- (consumption is idempotent). Times are stored as in the shared schema.

CREATE TABLE leads (
    lead_id          TEXT PRIMARY KEY,
    agency           TEXT NOT NULL,
    case_id          TEXT NOT NULL,
    lead_type        TEXT NOT NULL,
    kind             TEXT NOT NULL,
    current_revision BIGINT NOT NULL,
    status           TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    assessment       TEXT,
    deadlines        TEXT,
    decided_at       TEXT,
    CONSTRAINT leads_agency_case UNIQUE (agency, case_id)
);
-- Republishing looks for leads still `published` (no police receipt) the longest.
CREATE INDEX leads_published_by_update ON leads (updated_at) WHERE status = 'published';

CREATE TABLE lead_revisions (
    lead_id        TEXT NOT NULL REFERENCES leads (lead_id),
    revision       BIGINT NOT NULL,
    content_sha256 TEXT NOT NULL,
    document       TEXT NOT NULL,
    received_at    TEXT NOT NULL,
    status         TEXT NOT NULL,
    PRIMARY KEY (lead_id, revision)
);

CREATE TABLE timeline_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    lead_id  TEXT NOT NULL REFERENCES leads (lead_id),
    revision BIGINT NOT NULL,
    event    TEXT NOT NULL,
    at       TEXT NOT NULL,
    actor    TEXT NOT NULL,
    details  TEXT NOT NULL
);
CREATE INDEX timeline_events_by_lead ON timeline_events (lead_id, id);

CREATE TABLE feedback (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    agency   TEXT NOT NULL,
    lead_id  TEXT NOT NULL REFERENCES leads (lead_id),
    revision BIGINT NOT NULL,
    event    TEXT NOT NULL,
    at       TEXT NOT NULL,
    body     TEXT NOT NULL
);
CREATE INDEX feedback_by_agency ON feedback (agency, id);

CREATE TABLE receipts_applied (
    event_id   TEXT PRIMARY KEY,
    applied_at TEXT NOT NULL
);
