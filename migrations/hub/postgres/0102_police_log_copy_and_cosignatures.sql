-- The hub's read-only copy of the police adapter's transparency log (supervision contract §2):
-- the entries and checkpoints the adapter ships over the receipts topic, each entry stored
-- with the leaf hash the adapter computed and checked against its canonical bytes, the tree's
-- subtree hashes computed here, and each checkpoint stored only once its signature (the
-- police key) and its root (this copy's tree) both verify. The tables have the shape of the
-- hub's own log, so one verifier and one proof server read both.
CREATE TABLE police_log_entries (
    idx       BIGINT PRIMARY KEY,
    at        TIMESTAMPTZ NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    lead_id   UUID,
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
    signed_at TIMESTAMPTZ NOT NULL
);

-- Witnesses' cosignatures of either log's checkpoints: the witness's signature line over the
-- checkpoint body of that size (the body is the stored checkpoint's).
CREATE TABLE log_cosignatures (
    log            TEXT NOT NULL CHECK (log IN ('hub', 'police')),
    witness        TEXT NOT NULL,
    size           BIGINT NOT NULL,
    signature_line TEXT NOT NULL,
    cosigned_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (log, witness, size)
);

CREATE TRIGGER police_log_entries_append_only BEFORE UPDATE OR DELETE ON police_log_entries
    FOR EACH ROW EXECUTE FUNCTION audit_entries_append_only();
CREATE TRIGGER police_log_hashes_append_only BEFORE UPDATE OR DELETE ON police_log_hashes
    FOR EACH ROW EXECUTE FUNCTION audit_entries_append_only();
CREATE TRIGGER police_log_checkpoints_append_only BEFORE UPDATE OR DELETE ON police_log_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_entries_append_only();
CREATE TRIGGER log_cosignatures_append_only BEFORE UPDATE OR DELETE ON log_cosignatures
    FOR EACH ROW EXECUTE FUNCTION audit_entries_append_only();
CREATE TRIGGER police_log_entries_no_truncate BEFORE TRUNCATE ON police_log_entries
    FOR EACH STATEMENT EXECUTE FUNCTION audit_entries_append_only();
CREATE TRIGGER police_log_hashes_no_truncate BEFORE TRUNCATE ON police_log_hashes
    FOR EACH STATEMENT EXECUTE FUNCTION audit_entries_append_only();
CREATE TRIGGER police_log_checkpoints_no_truncate BEFORE TRUNCATE ON police_log_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_entries_append_only();
CREATE TRIGGER log_cosignatures_no_truncate BEFORE TRUNCATE ON log_cosignatures
    FOR EACH STATEMENT EXECUTE FUNCTION audit_entries_append_only();

REVOKE UPDATE, DELETE, TRUNCATE ON police_log_entries, police_log_hashes, police_log_checkpoints, log_cosignatures FROM PUBLIC;
REVOKE UPDATE, DELETE, TRUNCATE ON police_log_entries, police_log_hashes, police_log_checkpoints, log_cosignatures FROM CURRENT_USER;
