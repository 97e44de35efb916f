-- The transparency log (supervision contract §2): every entry of the ledger, in a Merkle tree
-- whose checkpoints the role signs. A state change appends its entries to `log_queue` in its
-- own transaction (no change without its entries); the sequencer moves them into
-- `log_entries` in batches, giving each its index and storing the tree's new subtree hashes,
-- so appending never makes writers wait for one another.
CREATE TABLE log_queue (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       TIMESTAMPTZ NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    lead_id  UUID,
    revision BIGINT,
    details  TEXT NOT NULL
);

-- `entry` is the entry's canonical bytes (RFC 8785), exactly what `leaf_hash` covers; the
-- other columns repeat its fields for queries.
CREATE TABLE log_entries (
    idx       BIGINT PRIMARY KEY,
    at        TIMESTAMPTZ NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    lead_id   UUID,
    revision  BIGINT,
    entry     TEXT NOT NULL,
    leaf_hash TEXT NOT NULL
);
CREATE INDEX log_entries_by_lead ON log_entries (lead_id, idx);

-- The hashes of every complete subtree, at tlog_tiles' stored-hash indexes (hex).
CREATE TABLE log_hashes (
    idx  BIGINT PRIMARY KEY,
    hash TEXT NOT NULL
);

-- One row: how many entries the tree holds. The sequencer locks it.
CREATE TABLE log_head (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    size BIGINT NOT NULL
);
INSERT INTO log_head (id, size) VALUES (1, 0);

-- Signed checkpoints (C2SP signed notes), one per tree size.
CREATE TABLE log_checkpoints (
    size      BIGINT PRIMARY KEY,
    root      TEXT NOT NULL,
    note      TEXT NOT NULL,
    signed_at TIMESTAMPTZ NOT NULL
);

CREATE TRIGGER log_entries_append_only BEFORE UPDATE OR DELETE ON log_entries
    FOR EACH ROW EXECUTE FUNCTION audit_entries_append_only();
CREATE TRIGGER log_hashes_append_only BEFORE UPDATE OR DELETE ON log_hashes
    FOR EACH ROW EXECUTE FUNCTION audit_entries_append_only();
CREATE TRIGGER log_checkpoints_append_only BEFORE UPDATE OR DELETE ON log_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_entries_append_only();

-- What the ledger already holds enters the log first, in its order.
INSERT INTO log_queue (at, actor, action, lead_id, revision, details)
SELECT at, actor, action, lead_id, revision, details FROM audit_entries ORDER BY seq;
