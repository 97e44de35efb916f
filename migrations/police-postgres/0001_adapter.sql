-- The police adapter's own database (it may run inside the police network): the outbox of
-- receipts to the hub and the audit ledger (same tables as the hub's, same code), plus the
-- leads the adapter received and their deliveries to police units.

CREATE TABLE outbox (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        TEXT NOT NULL UNIQUE,
    lead_id         TEXT NOT NULL,
    revision        BIGINT NOT NULL,
    topic           TEXT NOT NULL,
    payload         BYTEA NOT NULL,
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

CREATE FUNCTION audit_entries_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit entries are append-only';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_entries_no_update BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_entries_append_only();

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
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
