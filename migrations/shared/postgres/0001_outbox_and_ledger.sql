-- The outbox and the audit ledger: one schema, run in every role's database (the hub's and the
-- police adapter's) by the same code, `shared::outbox` and `shared::audit`. A role's own
-- tables come after it, from version 101 on (`migrations/<role>/postgres`).
--
-- Native types: ids are UUID, times TIMESTAMPTZ (microseconds), documents that are queried
-- JSONB; a document whose exact bytes a hash covers stays TEXT. `shared::store::types` reads
-- and writes them.

-- Messages committed with the state they announce; relays lease, publish and mark them.
-- `failed_at` is terminal: Kafka refused the data itself (e.g. too large), so the row is never
-- claimed again, is not backlog, and does not hold back later messages of its lead.
CREATE TABLE outbox (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        TEXT NOT NULL UNIQUE,
    lead_id         UUID NOT NULL,
    revision        BIGINT NOT NULL,
    topic           TEXT NOT NULL,
    payload         BYTEA NOT NULL,
    headers         JSONB NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    claimed_by      TEXT,
    claimed_until   TIMESTAMPTZ,
    last_error      TEXT,
    published_at    TIMESTAMPTZ,
    kafka_partition BIGINT,
    kafka_offset    BIGINT,
    failed_at       TIMESTAMPTZ
);
CREATE INDEX outbox_by_lead ON outbox (lead_id, id);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL AND failed_at IS NULL;
-- The claim asks, for each candidate row, whether an earlier row of the same lead still waits.
-- Without an index on exactly the waiting rows keyed by lead, that question is answered by
-- scanning every waiting row (once per candidate, when statistics are stale): the claim slowed
-- with the square of the backlog. See docs/benchmarks.md, "Outbox claim and pruning".
CREATE INDEX outbox_unpublished_by_lead ON outbox (lead_id, id) WHERE published_at IS NULL AND failed_at IS NULL;
-- The relay prunes published rows oldest first, in bounded batches.
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;

-- The hash-chained ledger. `details` is the canonical JSON the entry's hash covers, kept as
-- the exact text that was hashed.
CREATE TABLE audit_entries (
    seq        BIGINT PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    lead_id    UUID,
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
