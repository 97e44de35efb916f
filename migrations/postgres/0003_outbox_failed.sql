-- A message that can never be published (Kafka refuses the data itself, e.g. too large) ends
-- here: `failed_at` is terminal. Such rows are never claimed again, are not backlog, and do not
-- hold back later messages of the same lead.

ALTER TABLE outbox ADD COLUMN failed_at TEXT;
DROP INDEX outbox_unpublished;
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL AND failed_at IS NULL;
