-- The hub's read-only copy of the police adapter's transparency log (supervision contract §2):
-- the entries and checkpoints the adapter ships over the receipts topic, each entry stored
-- with the leaf hash the adapter computed and checked against its canonical bytes, the tree's
-- subtree hashes computed here, and each checkpoint stored only once its signature (the
-- police key) and its root (this copy's tree) both verify. The tables have the shape of the
-- hub's own log, so one verifier and one proof server read both.
CREATE TABLE police_log_entries (
    idx       BIGINT PRIMARY KEY,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    lead_id   TEXT,
    revision  BIGINT,
    entry     TEXT NOT NULL,
    leaf_hash TEXT NOT NULL
);
CREATE INDEX police_log_entries_by_lead ON police_log_entries (lead_id, idx);

CREATE TABLE police_log_hashes (
    idx  BIGINT PRIMARY KEY,
    hash TEXT NOT NULL
);

CREATE TABLE police_log_head (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    size BIGINT NOT NULL
);
INSERT INTO police_log_head (id, size) VALUES (1, 0);

-- `signed_at` is when the hub received it: the police note carries no time.
CREATE TABLE police_log_checkpoints (
    size      BIGINT PRIMARY KEY,
    root      TEXT NOT NULL,
    note      TEXT NOT NULL,
    signed_at TEXT NOT NULL
);

-- Witnesses' cosignatures of either log's checkpoints: the witness's signature line over the
-- checkpoint body of that size (the body is the stored checkpoint's).
CREATE TABLE log_cosignatures (
    log            TEXT NOT NULL CHECK (log IN ('hub', 'police')),
    witness        TEXT NOT NULL,
    size           BIGINT NOT NULL,
    signature_line TEXT NOT NULL,
    cosigned_at    TEXT NOT NULL,
    PRIMARY KEY (log, witness, size)
);
CREATE TRIGGER police_log_entries_no_update BEFORE UPDATE ON police_log_entries
BEGIN
    SELECT RAISE(ABORT, 'police log entries are append-only');
END;
CREATE TRIGGER police_log_entries_no_delete BEFORE DELETE ON police_log_entries
BEGIN
    SELECT RAISE(ABORT, 'police log entries are append-only');
END;
CREATE TRIGGER police_log_hashes_no_update BEFORE UPDATE ON police_log_hashes
BEGIN
    SELECT RAISE(ABORT, 'police log hashes are append-only');
END;
CREATE TRIGGER police_log_hashes_no_delete BEFORE DELETE ON police_log_hashes
BEGIN
    SELECT RAISE(ABORT, 'police log hashes are append-only');
END;
CREATE TRIGGER police_log_checkpoints_no_update BEFORE UPDATE ON police_log_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'police log checkpoints are append-only');
END;
CREATE TRIGGER police_log_checkpoints_no_delete BEFORE DELETE ON police_log_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'police log checkpoints are append-only');
END;
CREATE TRIGGER log_cosignatures_no_update BEFORE UPDATE ON log_cosignatures
BEGIN
    SELECT RAISE(ABORT, 'log cosignatures are append-only');
END;
CREATE TRIGGER log_cosignatures_no_delete BEFORE DELETE ON log_cosignatures
BEGIN
    SELECT RAISE(ABORT, 'log cosignatures are append-only');
END;
