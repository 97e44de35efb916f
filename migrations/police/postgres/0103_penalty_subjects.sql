-- The penalty cases the adapter received, by subject, for the rules that count earlier
-- administrative penalties (MIN-3, LAND-6, LAND-8, SAND-1, ENV-6, ENV-8): one row per subject a
-- penalty lead's revision names. A subject is 'uscc:' or 'id:' and the upper-cased USCC or ID
-- number (src/police/penalties.rs). The rule reads each case at its latest revision in
-- police_leads, so a revision that is no longer a penalty takes the case out.
CREATE TABLE police_penalty_subjects (
    subject  TEXT NOT NULL,
    lead_id  UUID NOT NULL,
    revision BIGINT NOT NULL,
    PRIMARY KEY (subject, lead_id, revision),
    FOREIGN KEY (lead_id, revision) REFERENCES police_leads (lead_id, revision)
);

-- The penalty leads received before this migration, from their stored documents.
INSERT INTO police_penalty_subjects (subject, lead_id, revision)
SELECT DISTINCT named.subject, named.lead_id, named.revision
FROM (
    SELECT 'uscc:' || upper(btrim(s.value ->> 'uscc')) AS subject, l.lead_id, l.revision
    FROM police_leads l, jsonb_array_elements(l.document::jsonb -> 'subjects') AS s(value)
    WHERE l.kind = 'penalty' AND btrim(coalesce(s.value ->> 'uscc', '')) <> ''
    UNION
    SELECT 'id:' || upper(btrim(s.value ->> 'id_number')), l.lead_id, l.revision
    FROM police_leads l, jsonb_array_elements(l.document::jsonb -> 'subjects') AS s(value)
    WHERE l.kind = 'penalty' AND btrim(coalesce(s.value ->> 'id_number', '')) <> ''
) AS named;
