-- The police adapter's own tables, after the shared outbox and ledger
-- (`migrations/shared/postgres`; its outbox carries receipts to the hub). The adapter's database
-- may run inside the police network: the leads it received and their deliveries to police
-- units. Types as in the shared schema; `document`
-- is the lead exactly as accepted (the bytes its content hash covers), so it stays TEXT.
CREATE TABLE police_leads (
    lead_id         UUID NOT NULL,
    revision        BIGINT NOT NULL,
    agency          TEXT NOT NULL,
    lead_type       TEXT NOT NULL,
    kind            TEXT NOT NULL,
    case_id         TEXT NOT NULL,
    division_code   TEXT NOT NULL,
    summary         TEXT NOT NULL,
    document        TEXT NOT NULL,
    content_sha256  TEXT NOT NULL,
    assessment      JSONB NOT NULL,
    priority        TEXT NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL,
    status          TEXT NOT NULL,
    delivered_at    TIMESTAMPTZ,
    decision        TEXT,
    decision_reason TEXT,
    police_case_no  TEXT,
    decided_at      TIMESTAMPTZ,
    decided_by      TEXT,
    reconsideration_reason       TEXT,
    reconsideration_requested_at TIMESTAMPTZ,
    reconsidered_at              TIMESTAMPTZ,
    PRIMARY KEY (lead_id, revision)
);

CREATE TABLE police_deliveries (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lead_id          UUID NOT NULL,
    revision         BIGINT NOT NULL,
    unit             TEXT NOT NULL,
    sink             TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    claimed_by       TEXT,
    claimed_until    TIMESTAMPTZ,
    last_error       TEXT,
    delivered_at     TIMESTAMPTZ,
    cms_ref          TEXT,
    dead_lettered_at TIMESTAMPTZ,
    CONSTRAINT police_deliveries_once UNIQUE (lead_id, revision, unit)
);
CREATE INDEX police_deliveries_pending ON police_deliveries (id) WHERE delivered_at IS NULL AND dead_lettered_at IS NULL;
CREATE INDEX police_deliveries_by_unit ON police_deliveries (unit, delivered_at);
-- The claim asks, for each candidate, whether an earlier delivery of the same lead to the same
-- unit still waits: one probe of exactly the waiting deliveries, keyed by lead and unit.
CREATE INDEX police_deliveries_waiting_by_lead ON police_deliveries (lead_id, unit, id) WHERE delivered_at IS NULL AND dead_lettered_at IS NULL;
