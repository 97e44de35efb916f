-- The claim asks, for each candidate row, whether an earlier row of the same lead still waits.
-- Without an index on exactly the waiting rows keyed by lead, that question is answered by
-- scanning every waiting row (once per candidate, when statistics are stale): the claim slowed
-- with the square of the backlog. See docs/benchmarks.md, "Outbox claim and pruning".
CREATE INDEX outbox_unpublished_by_lead ON outbox (lead_id, id) WHERE published_at IS NULL AND failed_at IS NULL;

-- The relay prunes published rows oldest first, in bounded batches.
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
