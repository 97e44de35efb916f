-- The hub's own tables, after the shared outbox and ledger (`migrations/shared/postgres`): leads,
-- their revisions and timelines, what the police answered (the assessment and deadlines they
-- computed, every receipt and decision as agency feedback) and the receipts already applied
-- (consumption is idempotent). Types as in the shared schema; `document`
-- is the lead exactly as accepted (the bytes its content hash covers), so it stays TEXT.

CREATE TABLE leads (
    lead_id          UUID PRIMARY KEY,
    agency           TEXT NOT NULL,
    case_id          TEXT NOT NULL,
    lead_type        TEXT NOT NULL,
    kind             TEXT NOT NULL,
    current_revision BIGINT NOT NULL,
    status           TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    assessment       JSONB,
    deadlines        JSONB,
    decided_at       TIMESTAMPTZ,
    CONSTRAINT leads_agency_case UNIQUE (agency, case_id)
);
-- Republishing looks for leads still `published` (no police receipt) the longest.
CREATE INDEX leads_published_by_update ON leads (updated_at) WHERE status = 'published';

CREATE TABLE lead_revisions (
    lead_id        UUID NOT NULL REFERENCES leads (lead_id),
    revision       BIGINT NOT NULL,
    content_sha256 TEXT NOT NULL,
    document       TEXT NOT NULL,
    received_at    TIMESTAMPTZ NOT NULL,
    status         TEXT NOT NULL,
    PRIMARY KEY (lead_id, revision)
);

CREATE TABLE timeline_events (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lead_id  UUID NOT NULL REFERENCES leads (lead_id),
    revision BIGINT NOT NULL,
    event    TEXT NOT NULL,
    at       TIMESTAMPTZ NOT NULL,
    actor    TEXT NOT NULL,
    details  JSONB NOT NULL
);
CREATE INDEX timeline_events_by_lead ON timeline_events (lead_id, id);

CREATE TABLE feedback (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agency   TEXT NOT NULL,
    lead_id  UUID NOT NULL REFERENCES leads (lead_id),
    revision BIGINT NOT NULL,
    event    TEXT NOT NULL,
    at       TIMESTAMPTZ NOT NULL,
    body     JSONB NOT NULL
);
CREATE INDEX feedback_by_agency ON feedback (agency, id);

CREATE TABLE receipts_applied (
    event_id   TEXT PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL
);
