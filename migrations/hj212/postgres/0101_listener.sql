-- The HJ 212 listener's own store (connector contract §4): raw packets as evidence, the
-- hourly values the clues are judged on, the leads made so far, and the outbox of lead
-- revisions still to push to the hub.

-- Every data packet accepted, as received. A station sending the same (MN, CN, DataTime)
-- again — a retry after a lost answer — is stored once; a split message's parts are kept
-- apart by PNO (0 for a whole packet).
CREATE TABLE hj212_packets (
    sha256      TEXT PRIMARY KEY CHECK (length(sha256) = 64),
    mn          TEXT NOT NULL,
    cn          INTEGER NOT NULL,
    data_time   TEXT NOT NULL CHECK (length(data_time) = 14),
    part        INTEGER NOT NULL DEFAULT 0,
    qn          TEXT,
    received_at TIMESTAMPTZ NOT NULL,
    peer        TEXT NOT NULL,
    raw         TEXT NOT NULL,
    UNIQUE (mn, cn, data_time, part)
);

-- Hourly data (CN 2061), one row per pollutant and hour.
CREATE TABLE hj212_hourly (
    mn            TEXT NOT NULL,
    pollutant     TEXT NOT NULL,
    data_time     TEXT NOT NULL CHECK (length(data_time) = 14),
    avg_text      TEXT,
    flag          TEXT,
    packet_sha256 TEXT NOT NULL REFERENCES hj212_packets (sha256),
    packet_size   BIGINT NOT NULL,
    PRIMARY KEY (mn, pollutant, data_time)
);

-- The current revision of each lead the listener made: its evidence's hash decides whether
-- new data revise it.
CREATE TABLE hj212_leads (
    case_id       TEXT PRIMARY KEY,
    lead_type     TEXT NOT NULL,
    mn            TEXT NOT NULL,
    pollutant     TEXT NOT NULL,
    day           TEXT NOT NULL,
    revision      BIGINT NOT NULL CHECK (revision >= 1),
    draft_sha256  TEXT NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

-- Lead revisions to push, in order. A row leaves the queue when the hub answered it:
-- accepted, replayed, or rejected (with the hub's problems).
CREATE TABLE hj212_outbox (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    case_id    TEXT NOT NULL,
    revision   BIGINT NOT NULL,
    lead       JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    answered_at TIMESTAMPTZ,
    outcome    TEXT CHECK (outcome IN ('accepted', 'replayed', 'rejected')),
    problems   JSONB,
    UNIQUE (case_id, revision)
);
CREATE INDEX hj212_outbox_waiting ON hj212_outbox (id) WHERE answered_at IS NULL;
