-- turnstore schema, version 14, PostgreSQL: the check and the foreign key that 12 added
-- NOT VALID are validated. VALIDATE CONSTRAINT reads every staged step (a few rows) under
-- SHARE UPDATE EXCLUSIVE on turnstore_staged_steps and ROW SHARE on turnstore_turns:
-- reads and writes go on. A staged step without its conversation (none: 12 filled them,
-- its trigger fills new ones) would fail it; 15's SET NOT NULL relies on the validated
-- check and scans nothing.
--
-- turnstore: expand

ALTER TABLE turnstore_staged_steps VALIDATE CONSTRAINT turnstore_staged_steps_conversation_set;

ALTER TABLE turnstore_staged_steps VALIDATE CONSTRAINT turnstore_staged_steps_turn_fkey;
