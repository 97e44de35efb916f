-- SQLite has no TRUNCATE and no privileges: a DELETE without WHERE runs the row triggers of
-- 0002 (their presence turns SQLite's truncate optimisation off), so it is refused too. This
-- migration keeps the two histories in step.
SELECT 1;
