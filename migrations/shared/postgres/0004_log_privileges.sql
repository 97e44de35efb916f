-- The log's tables take no UPDATE, DELETE or TRUNCATE by anyone: the row triggers of 0002 do
-- not see TRUNCATE, so a statement trigger refuses it, and the privileges are revoked from
-- every role, the owner (the hub's own role, which runs these migrations) included. Getting
-- them back takes an explicit GRANT by the owner or a superuser — a deliberate act that
-- `audit verify` and any supervisor's consistency check would then see the effect of.
CREATE TRIGGER log_entries_no_truncate BEFORE TRUNCATE ON log_entries
    FOR EACH STATEMENT EXECUTE FUNCTION audit_entries_append_only();
CREATE TRIGGER log_hashes_no_truncate BEFORE TRUNCATE ON log_hashes
    FOR EACH STATEMENT EXECUTE FUNCTION audit_entries_append_only();
CREATE TRIGGER log_checkpoints_no_truncate BEFORE TRUNCATE ON log_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_entries_append_only();

REVOKE UPDATE, DELETE, TRUNCATE ON log_entries, log_hashes, log_checkpoints FROM PUBLIC;
REVOKE UPDATE, DELETE, TRUNCATE ON log_entries, log_hashes, log_checkpoints FROM CURRENT_USER;
