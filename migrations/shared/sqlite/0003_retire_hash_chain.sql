-- The hash chain gives way to the transparency log (0002), which holds every entry the chain
-- held (queued there by 0002) and every one since. `audit_head` stays: it is the row that
-- decisions on one lead lock to serialise their reads (`LedgerAppender::lock`), and nothing
-- else takes it.
DROP TABLE audit_entries;

-- Every entry, sequenced or still queued, for people and tests who read the trail of a lead:
-- the queued ones have no index yet. `details` is the entry's details as JSON text.
CREATE VIEW log_trail AS
SELECT idx, at, actor, action, lead_id, revision, json_extract(entry, '$.details') AS details
FROM log_entries
UNION ALL
SELECT NULL, at, actor, action, lead_id, revision, details
FROM log_queue;
