-- The penalty cases the adapter received, by subject, for the rules that count earlier
-- administrative penalties (MIN-3, LAND-6, LAND-8, SAND-1, ENV-6, ENV-8): one row per subject a
-- penalty lead's revision names. A subject is 'uscc:' or 'id:' and the upper-cased USCC or ID
-- number (src/police/penalties.rs). The rule reads each case at its latest revision in
-- police_leads, so a revision that is no longer a penalty takes the case out.
CREATE TABLE police_penalty_subjects (
    subject  TEXT NOT NULL,
    lead_id  TEXT NOT NULL,
    revision INTEGER NOT NULL,
    PRIMARY KEY (subject, lead_id, revision),
    FOREIGN KEY (lead_id, revision) REFERENCES police_leads (lead_id, revision)
);

-- The penalty leads received before this migration, from their stored documents.
INSERT INTO police_penalty_subjects (subject, lead_id, revision)
SELECT DISTINCT named.subject, named.lead_id, named.revision
FROM (
    SELECT 'uscc:' || upper(trim(json_extract(s.value, '$.uscc'))) AS subject, l.lead_id, l.revision
    FROM police_leads l, json_each(l.document, '$.subjects') AS s
    WHERE l.kind = 'penalty' AND trim(coalesce(json_extract(s.value, '$.uscc'), '')) <> ''
    UNION
    SELECT 'id:' || upper(trim(json_extract(s.value, '$.id_number'))), l.lead_id, l.revision
    FROM police_leads l, json_each(l.document, '$.subjects') AS s
    WHERE l.kind = 'penalty' AND trim(coalesce(json_extract(s.value, '$.id_number'), '')) <> ''
) AS named;
