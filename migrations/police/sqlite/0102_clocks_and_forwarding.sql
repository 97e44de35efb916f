-- Decree 310 forwarding (art 7) and the clocks it moves: the unit that holds the lead now and
-- since when (routing's primary unit, or the unit a forward sent it to: that unit decides, and
-- the police decision clock runs from its receipt), and the forwarding task of a unit not
-- competent for the lead. Rows recorded before this migration have no holder: every unit they
-- were delivered to may act on them, as before.
ALTER TABLE police_leads ADD COLUMN assigned_unit TEXT;
ALTER TABLE police_leads ADD COLUMN assigned_at TEXT;
ALTER TABLE police_leads ADD COLUMN forwarding_since TEXT;
ALTER TABLE police_leads ADD COLUMN forwarded_at TEXT;
ALTER TABLE police_leads ADD COLUMN forwarded_from TEXT;
ALTER TABLE police_leads ADD COLUMN forwarded_to_organ TEXT;
ALTER TABLE police_leads ADD COLUMN forward_reason TEXT;
