-- What the police answered: the assessment and deadlines they computed, every receipt and
-- decision as agency feedback, and the receipts already applied (consumption is idempotent).

ALTER TABLE leads ADD COLUMN assessment TEXT;
ALTER TABLE leads ADD COLUMN deadlines TEXT;
ALTER TABLE leads ADD COLUMN decided_at TEXT;

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
