-- The spine: leads, their revisions and timelines, the outbox, and the audit ledger.
-- Times are RFC 3339 UTC text with microseconds ("2026-11-26T08:00:00.000000Z"), which sorts
-- as it reads in both PostgreSQL and SQLite.

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
    CONSTRAINT leads_agency_case UNIQUE (agency, case_id)
);

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

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL UNIQUE,
    lead_id         TEXT NOT NULL REFERENCES leads (lead_id),
    revision        BIGINT NOT NULL,
    topic           TEXT NOT NULL,
    payload         BLOB NOT NULL,
    headers         TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    claimed_by      TEXT,
    claimed_until   TEXT,
    last_error      TEXT,
    published_at    TEXT,
    kafka_partition BIGINT,
    kafka_offset    BIGINT
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_by_lead ON outbox (lead_id, id);

CREATE TABLE audit_entries (
    seq        BIGINT PRIMARY KEY,
    at         TEXT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    lead_id    TEXT,
    revision   BIGINT,
    details    TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    entry_hash TEXT NOT NULL
);
CREATE INDEX audit_entries_by_lead ON audit_entries (lead_id, seq);

-- One row: the ledger's head. Appenders lock it, so entries chain in commit order.
CREATE TABLE audit_head (
    id        BIGINT PRIMARY KEY CHECK (id = 1),
    seq       BIGINT NOT NULL,
    head_hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, head_hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
BEGIN
    SELECT RAISE(ABORT, 'audit entries are append-only');
END;

CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
BEGIN
    SELECT RAISE(ABORT, 'audit entries are append-only');
END;
